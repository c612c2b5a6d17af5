"""YAML training recipes: what a run is, loaded, merged and checked before anything is touched.

- delphi.recipe.schema: the sections (dataclasses) and every choice a key can take
- delphi.recipe.loading: YAML files with `base:` inheritance and `--set` overrides -> a Recipe
- delphi.recipe.problems: every problem known without training (the one check of validate, suite, train)
- delphi.recipe.model_section: the `model:` section against its transformers config class
- delphi.recipe.optimizer: the optimizer values of `training:`
- delphi.recipe.typecheck: a YAML value against a type annotation
- delphi.recipe.usercode: a user's module (recipe callbacks, `delphi batches --stat`)

Nothing here imports delphi.train: the recipe is the vocabulary that training (`delphi.train.arguments`
builds its TrainingArguments) and every other stage read.
"""

from delphi.recipe.loading import load_recipe, parse_yaml
from delphi.recipe.problems import recipe_problems, refusal
from delphi.recipe.schema import (
    DATA_ORDERS,
    DELPHI_CONTROLLED,
    EXECUTION_KEYS,
    EXECUTION_TRAINING_KEYS,
    KEEP_OPTIMIZER,
    SCAN_PATHS,
    WEIGHT_DECAY_PARAMS,
    CheckpointSchedule,
    DataSection,
    EvaluationSection,
    HubSection,
    Recipe,
    Seeds,
    check_steps,
    identity_changes,
    split_batch,
)
from delphi.recipe.usercode import import_callback

__all__ = [
    "DATA_ORDERS",
    "DELPHI_CONTROLLED",
    "EXECUTION_KEYS",
    "EXECUTION_TRAINING_KEYS",
    "KEEP_OPTIMIZER",
    "SCAN_PATHS",
    "WEIGHT_DECAY_PARAMS",
    "CheckpointSchedule",
    "DataSection",
    "EvaluationSection",
    "HubSection",
    "Recipe",
    "Seeds",
    "check_steps",
    "identity_changes",
    "import_callback",
    "load_recipe",
    "parse_yaml",
    "recipe_problems",
    "refusal",
    "split_batch",
]
