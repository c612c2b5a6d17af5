"""What transformers 4 makes of delphi's files: run by the transformers 4 venv that `make test-tf4` builds.

    python tests/transformers4_load.py CASES_DIR

`CASES_DIR/cases.json` lists folders (a tokenizer folder, step folders) and texts, written by
`tests/test_transformers4.py` with the current transformers. For each folder this loads the tokenizer and,
where there is one, the model with transformers 4's Auto classes, exactly as a user would, and writes
`CASES_DIR/tf4.json` (token ids, the config values that matter, versions) and
`CASES_DIR/tf4-logits.safetensors` (a folder that fails to load gets its error instead); the test compares them with the current transformers'. It imports
nothing of delphi and needs only torch, transformers 4 and safetensors.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
import transformers
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM, AutoTokenizer


def load_case(case: dict) -> tuple[dict, torch.Tensor | None]:
    tokenizer = AutoTokenizer.from_pretrained(case["path"])
    report = {
        "tokenizer_class": type(tokenizer).__name__,
        "ids": [tokenizer(text).input_ids for text in case["texts"]],
        "decoded": [tokenizer.decode(tokenizer(text).input_ids) for text in case["texts"]],
        "specials": [tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id],
    }
    if not case["model"]:
        return report, None
    model = AutoModelForCausalLM.from_pretrained(case["path"]).eval()
    config = model.config
    report["config"] = {
        "use_cache": config.use_cache,
        "rope_theta": getattr(config, "rope_theta", None),
        "rope_scaling": getattr(config, "rope_scaling", None),
    }
    # the same input the test feeds the current transformers: <bos> and the first text's ids
    input_ids = torch.tensor([[tokenizer.bos_token_id, *report["ids"][0]]])
    with torch.no_grad():
        logits = model(input_ids=input_ids).logits[0]
    return report, logits


def main(cases_dir: Path) -> None:
    torch.set_num_threads(1)  # as in the test: the same kernels with the same reduction order
    cases = json.loads((cases_dir / "cases.json").read_text())
    reports, logits = {}, {}
    for case in cases:
        try:
            reports[case["name"]], case_logits = load_case(case)
        except Exception as e:  # reported per folder, so one run shows everything a release cannot load
            reports[case["name"]], case_logits = {"error": f"{type(e).__name__}: {e}"}, None
        if case_logits is not None:
            logits[case["name"]] = case_logits.contiguous()
    result = {"transformers": transformers.__version__, "torch": torch.__version__, "cases": reports}
    (cases_dir / "tf4.json").write_text(json.dumps(result, indent=1))
    save_file(logits, str(cases_dir / "tf4-logits.safetensors"))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
