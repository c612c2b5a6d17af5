"""The recipe's `evaluation:` section: lm-evaluation-harness tasks on the model in memory at every checkpoint,
right after the validation loss, their numbers in `checkpoint.json` (with the loss, under `eval`) and in
`Trainer.log` (so every tracker gets them) as `eval_{task}_{metric}`.

A `TrainerCallback` (`on_evaluate`, which `Trainer.evaluate` calls with the metrics it returns): only process
0 runs the tasks, on the unwrapped model, while the others wait at a barrier; the numbers are then broadcast,
so every process returns the same metrics. The harness seeds Python's, numpy's and torch's generators; their
states are put back afterwards, so a run with evaluation trains exactly as one without (the section is not
part of the run's identity).
"""

from __future__ import annotations

import logging
import random
import time

from transformers import TrainerCallback

from delphi.errors import DelphiError

logger = logging.getLogger(__name__)


def _rng_states() -> dict:
    import numpy as np
    import torch

    states = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def _restore(states: dict) -> None:
    import numpy as np
    import torch

    random.setstate(states["python"])
    np.random.set_state(states["numpy"])
    torch.set_rng_state(states["torch"])
    if "cuda" in states:
        torch.cuda.set_rng_state_all(states["cuda"])


class TaskEvaluation(TrainerCallback):
    """Runs `section.tasks` (with its limit, num_fewshot, batch_size) at every evaluation of `trainer`."""

    def __init__(self, trainer, section) -> None:
        from delphi.evaluate.harness import check_task_names, load_tasks, require_lm_eval, task_manager

        if getattr(trainer, "is_fsdp_enabled", False):
            raise DelphiError(
                "evaluation.tasks cannot run under FSDP (process 0 alone holds no whole model); "
                "evaluate the checkpoints afterwards with `delphi eval`"
            )
        self.version = require_lm_eval()
        self.trainer = trainer
        self.section = section
        manager = task_manager(names=list(section.tasks))
        self.tasks = load_tasks(manager, check_task_names(manager, list(section.tasks)), section.num_fewshot)
        self.seconds = 0.0  # all task evaluations so far, for the cost of in-loop evaluation

    def run_tasks(self) -> dict[str, float]:
        from delphi.evaluate.harness import evaluate, harness_model

        trainer = self.trainer
        model = trainer.accelerator.unwrap_model(trainer.model)
        was_training = model.training
        states = _rng_states()
        model.eval()
        try:
            lm = harness_model(model, trainer.processing_class, batch_size=self.section.batch_size)
            metrics = {}
            for name in self.tasks.names:
                result = evaluate(
                    lm, self.tasks, name, limit=self.section.limit, num_fewshot=self.section.num_fewshot
                )
                for row in result["rows"]:
                    metrics[f"eval_{row['task']}_{row['metric']}"] = row["value"]
            return metrics
        finally:
            _restore(states)
            model.train(was_training)

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        from accelerate.utils import broadcast_object_list

        trainer = self.trainer
        started = time.perf_counter()
        box = [None]
        if trainer.accelerator.is_main_process:
            box = [self.run_tasks()]
        if trainer.accelerator.num_processes > 1:
            broadcast_object_list(box, from_process=0)  # the others wait here, then take process 0's numbers
        seconds = time.perf_counter() - started
        self.seconds += seconds
        task_metrics = {**box[0], "eval_tasks_seconds": seconds}
        if metrics is not None:
            metrics.update(
                task_metrics
            )  # what Trainer.evaluate returns: DelphiTrainer saves it per checkpoint
        trainer.log(task_metrics)
        if args.should_log:
            logger.info("evaluation tasks at step %d took %.1f s", state.global_step, seconds)
        return control
