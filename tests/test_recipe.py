"""Recipes: inheritance, merge order, overrides, strict validation, batch layout, round trip."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from delphi.errors import DelphiError
from delphi.recipe import Recipe, import_callback, load_recipe, split_batch
from delphi.train.arguments import training_arguments

REPO = Path(__file__).resolve().parents[1]

MINIMAL = {
    "model": {
        "architecture": "LlamaForCausalLM",
        "vocab_size": 64,
        "hidden_size": 8,
        "intermediate_size": 16,
        "num_attention_heads": 2,
        "num_hidden_layers": 1,
        "max_position_embeddings": 32,
    },
    "tokenizer": "some/tokenizer",
    "data": {"path": "some/dataset"},
    "seq_len": 32,
    "batch_size": 8,
    "training": {"learning_rate": 1.0e-3, "num_train_epochs": 1},
}


def write(path: Path, data: dict | str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return path


def problems(tmp_path: Path, data: dict, overrides=()) -> str:
    """The message of the DelphiError that loading `data` (from bad.yaml) must raise."""
    path = write(tmp_path / "bad.yaml", data)
    with pytest.raises(DelphiError) as e:
        load_recipe([path], overrides)
    return str(e.value)


def with_(section: str, **values) -> dict:
    return {**MINIMAL, section: {**MINIMAL.get(section, {}), **values}}


# ---------------------------------------------------------------- inheritance and merging


def test_bases_chain_over_levels_with_paths_relative_to_each_file(tmp_path):
    write(tmp_path / "common/base.yaml", {**MINIMAL, "checkpoints": {"every": 10, "steps": [1, 2]}})
    write(
        tmp_path / "arch/base-arch.yaml",
        {"base": "../common/base.yaml", "model": {"hidden_size": 16, "num_attention_heads": 4}},
    )
    child = write(
        tmp_path / "arch/sizes/small.yaml",
        {"base": "../base-arch.yaml", "model": {"num_hidden_layers": 3}, "training": {"learning_rate": 0.5}},
    )
    recipe = load_recipe([child])

    assert recipe.name == "small"
    # dicts merge key by key across all three levels; the nearest file wins
    assert recipe.model["hidden_size"] == 16
    assert recipe.model["num_attention_heads"] == 4
    assert recipe.model["num_hidden_layers"] == 3
    assert recipe.model["vocab_size"] == MINIMAL["model"]["vocab_size"]
    assert recipe.training == {"learning_rate": 0.5, "num_train_epochs": 1}
    assert recipe.checkpoints.every == 10
    assert [Path(s).name for s in recipe.sources] == ["base.yaml", "base-arch.yaml", "small.yaml"]


def test_later_base_in_a_list_wins_and_lists_replace(tmp_path):
    write(tmp_path / "a.yaml", {**MINIMAL, "checkpoints": {"steps": [1, 2, 4]}, "seq_len": 16})
    write(tmp_path / "b.yaml", {"checkpoints": {"steps": [5]}, "seq_len": 24})
    recipe = load_recipe([write(tmp_path / "r.yaml", {"base": ["a.yaml", "b.yaml"]})])
    assert recipe.seq_len == 24
    assert recipe.checkpoints.steps == [5]


def test_several_files_merge_in_order_and_the_last_names_the_run(tmp_path):
    first = write(tmp_path / "first.yaml", {**MINIMAL, "batch_size": 4, "seeds": {"init": 1, "data": 2}})
    second = write(tmp_path / "second.yaml", {"batch_size": 16, "seeds": {"data": 7}})
    recipe = load_recipe([first, second])
    assert recipe.batch_size == 16
    assert (recipe.seeds.init, recipe.seeds.data) == (1, 7)
    assert recipe.name == "second"
    assert recipe.out_dir == "out/second"
    assert recipe.tokens_per_step == 16 * MINIMAL["seq_len"]


def test_base_cycle_is_reported(tmp_path):
    write(tmp_path / "a.yaml", {**MINIMAL, "base": "b.yaml"})
    write(tmp_path / "b.yaml", {"base": "a.yaml"})
    with pytest.raises(DelphiError, match="cycle"):
        load_recipe([tmp_path / "a.yaml"])


def test_missing_base_and_bad_yaml_name_the_file(tmp_path):
    child = write(tmp_path / "child.yaml", {**MINIMAL, "base": "nowhere.yaml"})
    with pytest.raises(DelphiError, match=r"nowhere.yaml does not exist \(the base named in .*child.yaml\)"):
        load_recipe([child])
    broken = write(tmp_path / "broken.yaml", "model: [unclosed\n")
    with pytest.raises(DelphiError, match="broken.yaml is not valid YAML"):
        load_recipe([broken])


# ---------------------------------------------------------------- overrides


def test_overrides_are_parsed_as_yaml_values(tmp_path):
    path = write(tmp_path / "r.yaml", MINIMAL)
    recipe = load_recipe(
        [path],
        [
            "training.learning_rate=1e-3",
            "checkpoints.steps=[1, 2]",
            "micro_batch_size=null",
            "wandb=team/stories",
            "model.hidden_size=12",
            "training.warmup_steps=5",
        ],
    )
    assert recipe.training["learning_rate"] == 1e-3 and isinstance(recipe.training["learning_rate"], float)
    assert recipe.checkpoints.steps == [1, 2]
    assert recipe.micro_batch_size is None
    assert recipe.wandb_entity_project == ("team", "stories")
    assert recipe.model["hidden_size"] == 12
    assert recipe.training["warmup_steps"] == 5


def test_an_override_creating_a_key_is_validated_and_named(tmp_path):
    message = problems(tmp_path, MINIMAL, ["training.learning_rat=1"])
    assert "--set training.learning_rat=1" in message
    assert "did you mean 'learning_rate'?" in message


def test_override_without_equals_is_rejected(tmp_path):
    path = write(tmp_path / "r.yaml", MINIMAL)
    with pytest.raises(DelphiError, match="KEY=VALUE"):
        load_recipe([path], ["training.learning_rate"])


def test_exponent_floats_without_a_dot_are_numbers(tmp_path):
    path = write(tmp_path / "r.yaml", yaml.safe_dump(MINIMAL).replace("0.001", "5e-4"))
    assert load_recipe([path]).training["learning_rate"] == 5e-4


# ---------------------------------------------------------------- validation errors


def test_unknown_key_suggests_the_right_one_and_names_the_file(tmp_path):
    message = problems(tmp_path, {**MINIMAL, "chekpoints": {"every": 3}})
    assert "unknown key 'chekpoints'" in message
    assert "bad.yaml" in message
    assert "did you mean 'checkpoints'?" in message


def test_unknown_nested_key_gives_its_path(tmp_path):
    message = problems(tmp_path, with_("data", pth="x"))
    assert "unknown key 'data.pth' in" in message and "did you mean 'path'?" in message


def test_wrong_type_names_key_value_and_expected_type(tmp_path):
    message = problems(tmp_path, {**MINIMAL, "seq_len": "512"})
    assert "seq_len in" in message and "bad.yaml" in message
    assert "'512'" in message and "expected int" in message


def test_unknown_training_key_suggests_a_trainingarguments_field(tmp_path):
    message = problems(tmp_path, with_("training", lerning_rate=1e-3))
    assert "training.lerning_rate" in message and "bad.yaml" in message
    assert "TrainingArguments" in message and "did you mean 'learning_rate'?" in message


def test_bad_training_enum_value_suggests_the_right_one(tmp_path):
    message = problems(tmp_path, with_("training", lr_scheduler_type="cosin"))
    assert "training.lr_scheduler_type" in message and "did you mean 'cosine'?" in message


def test_wrongly_typed_training_value_is_caught_before_training(tmp_path):
    message = problems(tmp_path, with_("training", learning_rate="fast"))
    assert "training.learning_rate" in message and "'fast'" in message and "expected float" in message


@pytest.mark.parametrize(
    "training, fragment",
    [
        ({"max_steps": 0}, "training.max_steps in"),
        ({"max_steps": -5}, "is -5: must be a positive number of optimizer steps, or -1 to train"),
        ({"num_train_epochs": 0}, "training.num_train_epochs in"),
    ],
)
def test_a_run_length_of_zero_steps_is_refused(tmp_path, training, fragment):
    # Trainer would read max_steps 0 as "use the epochs" and the run would never be complete
    message = problems(tmp_path, with_("training", **training))
    assert fragment in message and ("must be a positive" in message or "must be positive" in message)


def test_zero_epochs_are_fine_when_max_steps_decides(tmp_path):
    recipe = load_recipe([write(tmp_path / "r.yaml", with_("training", num_train_epochs=0, max_steps=5))])
    assert recipe.training["max_steps"] == 5


@pytest.mark.parametrize(
    "key, value, pointer",
    [
        ("per_device_train_batch_size", 4, "batch_size"),
        ("gradient_accumulation_steps", 2, "batch_size / micro_batch_size"),
        ("seed", 1, "seeds.init"),
        ("data_seed", 1, "seeds.data"),
        ("output_dir", "x", "out_dir"),
        ("save_steps", 10, "checkpoints"),
        ("eval_strategy", "steps", "checkpoints"),
        ("resume_from_checkpoint", "x", "resume"),
    ],
)
def test_training_keys_delphi_controls_point_to_the_delphi_key(tmp_path, key, value, pointer):
    message = problems(tmp_path, with_("training", **{key: value}))
    assert f"training.{key} in" in message and "bad.yaml" in message
    assert "set by delphi" in message and f"use {pointer}" in message


def test_report_to_wandb_points_to_the_wandb_key(tmp_path):
    message = problems(tmp_path, with_("training", report_to=["wandb"]))
    assert "training.report_to" in message and "wandb: 'entity/project'" in message


def test_unknown_architecture_suggests_a_causal_lm_class(tmp_path):
    message = problems(tmp_path, with_("model", architecture="LlamaForCausalLm"))
    assert "model.architecture in" in message and "bad.yaml" in message
    assert "did you mean 'LlamaForCausalLM'?" in message


def test_unknown_model_config_key_suggests_the_config_field(tmp_path):
    message = problems(tmp_path, with_("model", hidden_sise=12))
    assert "model.hidden_sise in" in message and "bad.yaml" in message
    assert "LlamaConfig" in message and "did you mean 'hidden_size'?" in message


def test_model_value_rejected_by_the_config_class_is_reported(tmp_path):
    message = problems(tmp_path, with_("model", num_attention_heads=3))  # 8 is not divisible by 3
    assert "model in" in message and "not a multiple" in message


def test_an_unknown_rope_parameter_suggests_the_right_one(tmp_path):
    rope = {"rope_type": "default", "rope_thetaa": 500.0}
    message = problems(tmp_path, with_("model", rope_parameters=rope))
    assert "model.rope_parameters.rope_thetaa in" in message and "did you mean 'rope_theta'?" in message


def test_a_size_below_one_is_named_before_any_weights(tmp_path):
    model = {**MINIMAL["model"], "num_hidden_layers": 0, "intermediate_size": -16}
    message = problems(tmp_path, {**MINIMAL, "model": model})
    assert "model.num_hidden_layers in" in message and "is 0: a size or count must be at least 1" in message
    assert "model.intermediate_size in" in message and "is -16" in message


def test_missing_required_keys_are_listed(tmp_path):
    message = problems(tmp_path, {k: v for k, v in MINIMAL.items() if k not in ("tokenizer", "seq_len")})
    assert "missing required key 'tokenizer'" in message
    assert "missing required key 'seq_len'" in message


def test_errors_name_the_file_that_set_the_bad_key(tmp_path):
    write(tmp_path / "base.yaml", with_("training", seed=3))
    child = write(tmp_path / "child.yaml", {"base": "base.yaml", "seq_len": "long"})
    with pytest.raises(DelphiError) as e:
        load_recipe([child])
    lines = str(e.value).splitlines()
    assert any("training.seed" in line and "base.yaml" in line for line in lines)
    assert any("seq_len" in line and "child.yaml" in line for line in lines)


def test_all_problems_come_in_one_error(tmp_path):
    data = {**with_("training", lerning_rate=1, seed=2), "chekpoints": {}, "batch_size": "big"}
    message = problems(tmp_path, data)
    assert "4 problem(s)" in message
    for fragment in ("lerning_rate", "training.seed", "chekpoints", "batch_size"):
        assert fragment in message


@pytest.mark.parametrize(
    "section, values, fragment",
    [
        (None, {"micro_batch_size": 3}, "must divide batch_size (8)"),
        (None, {"seq_len": 64}, "exceeds model.max_position_embeddings (32)"),
        (None, {"wandb": "a/b/c"}, "entity/project"),
        ("checkpoints", {"keep_optimizer": "some"}, "'latest', 'all', 'none'"),
        (None, {"callbacks": ["no_such_module_xyz:Callback"]}, "cannot be imported"),
        (None, {"callbacks": ["delphi.errors:DelphiError"]}, "not a transformers.TrainerCallback"),
    ],
)
def test_value_checks(tmp_path, section, values, fragment):
    data = with_(section, **values) if section else {**MINIMAL, **values}
    assert fragment in problems(tmp_path, data)


def test_callbacks_resolve_to_trainer_callback_classes(tmp_path):
    from transformers import PrinterCallback

    path = write(tmp_path / "r.yaml", {**MINIMAL, "callbacks": ["transformers:PrinterCallback"]})
    recipe = load_recipe([path])
    assert [import_callback(spec, recipe.search_dirs) for spec in recipe.callbacks] == [PrinterCallback]


# ---------------------------------------------------------------- batch layout and TrainingArguments


@pytest.mark.parametrize(
    "batch, micro, world, expected",
    [
        (256, None, 1, (256, 1)),
        (256, None, 2, (128, 1)),
        (256, None, 4, (64, 1)),
        (256, None, 8, (32, 1)),
        (256, 64, 1, (64, 4)),
        (256, 64, 2, (64, 2)),
        (256, 64, 4, (64, 1)),
        (256, 16, 8, (16, 2)),
    ],
)
def test_split_batch(batch, micro, world, expected):
    per_device, accumulation = split_batch(batch, micro, world)
    assert (per_device, accumulation) == expected
    assert per_device * accumulation * world == batch


@pytest.mark.parametrize("batch, micro, world", [(256, None, 3), (256, 64, 8), (256, 48, 2)])
def test_split_batch_names_all_three_numbers_when_they_do_not_divide(batch, micro, world):
    with pytest.raises(DelphiError) as e:
        split_batch(batch, micro, world)
    for number in (batch, micro, world):
        if number is not None:
            assert str(number) in str(e.value)


def test_training_arguments_derive_batch_seeds_and_output(tmp_path):
    path = write(tmp_path / "run.yaml", {**MINIMAL, "batch_size": 16, "micro_batch_size": 4})
    recipe = load_recipe([path], ["seeds.init=5", "seeds.data=6"])
    args = training_arguments(recipe, 2, save_strategy="no")
    assert (args.per_device_train_batch_size, args.gradient_accumulation_steps) == (4, 2)
    assert args.per_device_eval_batch_size == 4
    assert (args.seed, args.data_seed) == (5, 6)
    assert args.output_dir == "out/run"
    assert args.learning_rate == MINIMAL["training"]["learning_rate"]
    assert args.report_to == []
    assert args.save_strategy == "no"


def test_training_arguments_report_to_wandb_when_the_wandb_key_is_set(tmp_path):
    path = write(
        tmp_path / "r.yaml", {**MINIMAL, "wandb": "stories", **with_("training", report_to=["tensorboard"])}
    )
    args = training_arguments(load_recipe([path]), 1)
    assert args.report_to == ["tensorboard", "wandb"]


# ---------------------------------------------------------------- serialization


def test_to_dict_round_trips_through_yaml(tmp_path):
    recipe = load_recipe([REPO / "recipes/stories/llama2-100k.yaml"], ["training.learning_rate=1e-3"])
    saved = write(tmp_path / "saved/recipe.yaml", recipe.dump_yaml())
    again = load_recipe([saved])
    assert again == recipe
    assert again.to_dict() == recipe.to_dict()
    assert isinstance(again, Recipe) and again.name == "llama2-100k"
    assert "{name}" not in recipe.dump_yaml()
    assert yaml.safe_load(recipe.dump_yaml())["training"]["learning_rate"] == 1e-3


def test_a_users_module_is_found_the_same_way_for_callbacks_and_batch_stats(tmp_path, monkeypatch):
    from delphi.recipe.usercode import import_callback, import_function

    recipes, work = tmp_path / "recipes", tmp_path / "work"
    recipes.mkdir()
    work.mkdir()
    code = "from transformers import TrainerCallback\n\nclass Note(TrainerCallback):\n    pass\n\n"
    code += "def stat(step, tokens):\n    return step\n"
    (recipes / "usermod_beside_recipe.py").write_text(code)
    monkeypatch.chdir(work)
    monkeypatch.setattr("sys.path", list(__import__("sys").path))  # the module's folder is added to it
    for spec in ("usermod_beside_recipe.py", "usermod_beside_recipe"):
        assert import_callback(f"{spec}:Note", [recipes]).__name__ == "Note"
        assert import_function(f"{spec}:stat", [recipes])(3, None) == 3
    with pytest.raises(DelphiError, match=rf"no module named 'nowhere_mod' \(looked in {work}, {recipes}"):
        import_callback("nowhere_mod:Note", [recipes])
    with pytest.raises(DelphiError, match="is not a transformers.TrainerCallback subclass"):
        import_callback("usermod_beside_recipe:stat", [recipes])
