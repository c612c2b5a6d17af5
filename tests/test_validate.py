"""`delphi validate`: every recipe of a folder checked and sized on the meta device."""

from __future__ import annotations

import shutil
from pathlib import Path

from delphi.validate import format_table, validate_paths

REPO = Path(__file__).resolve().parents[1]


def nominal(path: str) -> float:
    size = Path(path).stem.split("-")[1]
    return float(size[:-1]) * {"k": 1e3, "m": 1e6}[size[-1]]


def test_the_stories_suite_validates_with_sensible_sizes():
    rows = validate_paths([REPO / "recipes/stories"])
    assert len(rows) == 20
    assert [r["error"] for r in rows] == [""] * 20
    assert not any(Path(r["recipe"]).name.startswith("base") for r in rows)
    for row in rows:
        family = "LlamaForCausalLM" if Path(row["recipe"]).name.startswith("llama2") else "MambaForCausalLM"
        assert row["architecture"] == family
        assert abs(row["parameters"] - nominal(row["recipe"])) / nominal(row["recipe"]) < 0.25, row
        assert 0 < row["non_embedding"] < row["parameters"]
        assert row["tokens_per_step"] == 256 * 512
    table = format_table(rows)
    largest = max(rows, key=lambda r: r["parameters"])
    assert Path(largest["recipe"]).name in table and f"{largest['parameters']:,}" in table
    assert "ERROR" not in table
    assert len(table.splitlines()) == 22  # header, rule, 20 rows


def test_a_broken_recipe_is_a_row_with_an_error_not_an_exception(tmp_path):
    shutil.copy(REPO / "recipes/stories/base.yaml", tmp_path / "base.yaml")
    shutil.copy(REPO / "recipes/stories/base-llama2.yaml", tmp_path / "base-llama2.yaml")
    (tmp_path / "good.yaml").write_text((REPO / "recipes/stories/llama2-100k.yaml").read_text())
    (tmp_path / "typo.yaml").write_text("base: base-llama2.yaml\nmodel:\n  hidden_sise: 12\n")
    rows = validate_paths([tmp_path, tmp_path / "missing.yaml"])
    by_name = {Path(r["recipe"]).name: r for r in rows}
    assert set(by_name) == {"good.yaml", "typo.yaml", "missing.yaml"}
    assert by_name["good.yaml"]["error"] == "" and by_name["good.yaml"]["parameters"] > 0
    assert "did you mean 'hidden_size'" in by_name["typo.yaml"]["error"]
    assert "does not exist" in by_name["missing.yaml"]["error"]
    table = format_table(rows)
    assert "ERROR" in table and "hidden_sise" in table


def test_a_folder_without_recipes_is_an_error_not_a_pass(tmp_path, capsys):
    from tiny import cli_error

    (tmp_path / "empty").mkdir()
    (tmp_path / "only-bases").mkdir()
    shutil.copy(REPO / "recipes/stories/base.yaml", tmp_path / "only-bases" / "base.yaml")
    for folder in ("empty", "only-bases"):
        line = cli_error(capsys, ["validate", str(tmp_path / folder)])
        assert f"no recipe files (*.yaml, not base*.yaml) under {tmp_path / folder}" in line
