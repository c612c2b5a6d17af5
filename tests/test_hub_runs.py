"""A hub repo holds one run and can be checked: the manifest (`checkpoints.json` on main), `delphi verify`
with each fault planted by the real client, `delphi push` and training refusing a repo that holds another
run unless --overwrite, curves reading each branch's own metadata, the Python API on the hub, and what a
hub resume leaves behind. Real runs, real processes, real HTTP to tests/hub_server.py.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tiny import ENV, MODEL, REPO, run_process, write_recipe

from delphi.errors import DelphiError
from delphi.hub.push import push_run
from delphi.hub.verify import verify_repo
from delphi.layout import list_checkpoints

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore:Use 'content=<...>':DeprecationWarning")]


@pytest.fixture(scope="module")
def runs(stories_data, tmp_path_factory) -> dict[str, Path]:
    """Two different runs: `a` (steps 1, 2, 4, 8) and `b`, a wider model (steps 1, 3, 6, 8)."""
    from test_logprobs import train_tiny_run

    root = tmp_path_factory.mktemp("hubruns")
    return {
        "a": train_tiny_run(root, stories_data, "tiny-a"),
        "b": train_tiny_run(
            root,
            stories_data,
            "tiny-b",
            model={**MODEL, "hidden_size": 32, "intermediate_size": 64},
            **{"checkpoints.steps": [1, 3, 6]},
        ),  # fmt: skip
    }


def cli(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    """`python -m delphi ARGS` as a real process, in the environment as the hub_server fixture set it now
    (HF_ENDPOINT, HF_TOKEN, no HF_HUB_OFFLINE): tiny.ENV is the environment at import, before any fixture."""
    env = {**os.environ, "PYTHONPATH": ENV["PYTHONPATH"], "OMP_NUM_THREADS": ENV["OMP_NUM_THREADS"]}
    return subprocess.run(
        [sys.executable, "-m", "delphi", *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=300
    )


def steps_of(run: Path) -> set[str]:
    return {folder.name for _, folder in list_checkpoints(run)}


# ---- one run per repo ----


def test_push_refuses_a_repo_holding_another_run_unless_overwrite(hub_server, runs):
    first = cli("push", str(runs["a"]), "--repo", "org/mix2")
    assert first.returncode == 0, first.stderr
    assert hub_server.branches("org/mix2") == steps_of(runs["a"]) | {"main"}
    before = {b: hub_server.files("org/mix2", b) for b in hub_server.branches("org/mix2")}

    refused = cli("push", str(runs["b"]), "--repo", "org/mix2")
    assert refused.returncode == 2, refused.stdout + refused.stderr
    line = refused.stderr.strip()
    assert len(line.splitlines()) == 1 and "holds a different run" in line
    assert "model.hidden_size: 16 -> 32" in line and "--overwrite" in line
    assert {b: hub_server.files("org/mix2", b) for b in hub_server.branches("org/mix2")} == before

    replaced = cli("push", str(runs["b"]), "--repo", "org/mix2", "--overwrite")
    assert replaced.returncode == 0, replaced.stderr
    assert "replaces the run it holds" in replaced.stderr and "model.hidden_size: 16 -> 32" in replaced.stderr
    assert hub_server.branches("org/mix2") == steps_of(runs["b"]) | {"main"}  # step2, step4 are gone
    assert "removed (another run's): step2, step4" in replaced.stdout
    assert "5 branch(es) on the hub: main, step1, step3, step6, step8" in replaced.stdout
    final = (runs["b"] / "step8" / "model.safetensors").read_bytes()
    assert hub_server.files("org/mix2", "main")["model.safetensors"] == final
    manifest = json.loads(hub_server.files("org/mix2")["checkpoints.json"])
    assert [e["branch"] for e in manifest["checkpoints"]] == ["step1", "step3", "step6", "step8"]
    assert manifest["run"] == "tiny-b"
    assert verify_repo("org/mix2")[0] == []


def test_training_refuses_a_hub_repo_holding_another_run(hub_server, runs, stories_data, tmp_path):
    from test_logprobs import train_tiny_run

    push_run(runs["a"], "org/taken", retry_wait=0.05)
    with pytest.raises(
        DelphiError, match=r"holds a different run.*model\.hidden_size: 16 -> 32.*Nothing was trained"
    ):
        train_tiny_run(
            tmp_path, stories_data, "tiny-b", model={**runs_model(32)}, **{"checkpoints.steps": [1, 3, 6]},
            hub={"repo": "org/taken", "retry_wait": 0.05},
        )  # fmt: skip
    assert not (tmp_path / "tiny-b").exists()
    assert hub_server.branches("org/taken") == steps_of(runs["a"]) | {"main"}

    from delphi.recipe import load_recipe
    from delphi.train.run import train

    summary = train(load_recipe([tmp_path / "tiny-b.yaml"]), overwrite=True)
    assert hub_server.branches("org/taken") == {"main", "step1", "step3", "step6", "step8"}
    assert summary["hub"]["removed"] == ["step2", "step4"] and summary["hub"]["failed"] == {}
    assert summary["hub"]["on_hub"] == ["main", "step1", "step3", "step6", "step8"]
    final = (tmp_path / "tiny-b" / "step8" / "model.safetensors").read_bytes()
    assert hub_server.files("org/taken", "main")["model.safetensors"] == final
    assert json.loads(hub_server.files("org/taken")["checkpoints.json"])["run"] == "tiny-b"
    assert verify_repo("org/taken")[0] == []


def test_an_overwrite_that_published_nothing_leaves_the_replaced_run_whole(hub_server, runs):
    """--overwrite removes the old run only once the new one is on the hub: if no checkpoint of it could be
    published, the repo keeps the old run as it was (branches, final model, manifest), as an out_dir does."""
    push_run(runs["a"], "org/kept", retry_wait=0.05)
    before = {b: hub_server.files("org/kept", b) for b in hub_server.branches("org/kept")}
    hub_server.fail("commit", times=None, mode="403", match="org/kept")  # no permission: every upload fails
    summary = push_run(runs["b"], "org/kept", overwrite=True, retry_wait=0.05)
    hub_server.hub.clear_faults()
    assert summary["published"] == [] and summary["removed"] == [] and len(summary["failed"]) == 5
    # no branch left behind either: a branch whose upload failed is deleted (it began as a copy of main)
    assert {b: hub_server.files("org/kept", b) for b in hub_server.branches("org/kept")} == before
    assert verify_repo("org/kept")[0] == []


def runs_model(hidden: int) -> dict:
    return {**MODEL, "hidden_size": hidden, "intermediate_size": 2 * hidden}


# ---- delphi verify ----


def test_verify_reports_each_fault_planted_on_the_hub(hub_server, runs, tmp_path):
    from huggingface_hub import CommitOperationAdd, HfApi

    api = HfApi()
    a = runs["a"]

    def published(repo: str) -> str:
        push_run(a, repo, retry_wait=0.05)
        assert verify_repo(repo)[0] == []
        return repo

    def upload(repo: str, branch: str, path: str, data: bytes) -> None:
        api.create_commit(repo, [CommitOperationAdd(path, data)], commit_message="plant", revision=branch)

    clean = cli("verify", published("org/clean"))
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert clean.stdout.strip() == "org/clean: ok (4 step branches and main, complete)"

    api.delete_branch(published("org/f-missing"), branch="step4")
    problems = verify_repo("org/f-missing")[0]
    assert "missing branch step4: the recipe's checkpoint schedule saves step 4" in problems
    assert "checkpoints.json lists step4, but the hub has no such branch" in problems

    meta = json.loads((a / "step2" / "checkpoint.json").read_text())
    upload(published("org/f-step"), "step2", "checkpoint.json", json.dumps({**meta, "step": 4}).encode())
    assert "step2: its checkpoint.json says step 4" in verify_repo("org/f-step")[0]

    upload(
        published("org/f-dup"), "step2", "model.safetensors", (a / "step1" / "model.safetensors").read_bytes()
    )
    assert any(p.startswith("step1, step2: the same weights") for p in verify_repo("org/f-dup")[0])

    upload(
        published("org/f-main"), "main", "model.safetensors", (a / "step4" / "model.safetensors").read_bytes()
    )
    assert "main differs from the final step step8: model.safetensors differs" in verify_repo("org/f-main")[0]

    repo = published("org/f-manifest")
    manifest = json.loads(hub_server.files(repo)["checkpoints.json"])
    manifest["checkpoints"].append({**manifest["checkpoints"][0], "step": 16, "branch": "step16"})
    upload(repo, "main", "checkpoints.json", json.dumps(manifest).encode())
    assert verify_repo(repo)[0] == ["checkpoints.json lists step16, but the hub has no such branch"]

    failed = cli("verify", "org/clean", "org/f-dup")
    assert failed.returncode == 1, failed.stdout + failed.stderr
    lines = failed.stdout.strip().splitlines()
    assert lines[0] == "org/clean: ok (4 step branches and main, complete)"
    assert lines[-1].startswith("org/f-dup: ") and "problem(s)" in lines[-1]
    bad = cli("verify", "not a repo")
    assert bad.returncode == 2 and "expected 'org/name'" in bad.stderr
    # metadata only: no weights were downloaded by any verify of this test
    assert not any(
        p.endswith("model.safetensors") and m == "GET"
        for m, r, p, _ in hub_server.hub.requests
        if r == "resolve"
    )


# ---- readers of a repo take each branch's metadata from that branch ----


def test_curves_of_a_repo_holding_two_runs_draw_two_lines(hub_server, runs, tmp_path):
    """A repo published before delphi refused mixing (both runs' branches, as `delphi push` once left it)."""
    from delphi.evaluate.curves import load_curves, plot_curves
    from delphi.hub.client import ensure_repo
    from delphi.hub.publish import publish_checkpoint_to_hub, stage_checkpoint

    ensure_repo("org/old-mix")
    for run, steps in ((runs["a"], ("step2", "step4")), (runs["b"], ("step1", "step3", "step6", "step8"))):
        for step in steps:
            staged = stage_checkpoint(
                run / step, tmp_path / "staging", "org/old-mix", include_optimizer=False, is_final=False
            )
            publish_checkpoint_to_hub(staged, "org/old-mix", [step], retry_wait=0.05)
    curves = {c.name: c for c in load_curves("org/old-mix")}
    assert set(curves) == {"tiny-a", "tiny-b"}
    assert [p[2] for p in curves["tiny-a"].points] == [2, 4]
    assert [p[2] for p in curves["tiny-b"].points] == [1, 3, 6, 8]
    assert curves["tiny-a"].parameters < curves["tiny-b"].parameters
    _, table = plot_curves(["org/old-mix"], tmp_path / "mix.png")
    with open(table, newline="") as f:
        rows = list(csv.DictReader(f))
    assert {(r["run"], r["step"], r["parameters"]) for r in rows if r["run"] == "tiny-a"} == {
        ("tiny-a", "2", str(curves["tiny-a"].parameters)),
        ("tiny-a", "4", str(curves["tiny-a"].parameters)),
    }


# ---- the Python API on the hub ----


def test_runs_checkpoints_and_load_on_the_hub_match_the_local_run(hub_server, runs):
    import delphi

    for name, run in runs.items():
        push_run(run, f"org/api-{name}", retry_wait=0.05)
    found = delphi.runs("org/api-")
    assert [r.source for r in found] == ["org/api-a", "org/api-b"]
    local = {r.name: r for r in delphi.runs(runs["a"].parent)}
    for remote in found:
        assert (remote.name, remote.status, remote.step, remote.parameters, remote.seeds) == (
            local[remote.name].name,
            "done",
            8,
            local[remote.name].parameters,
            local[remote.name].seeds,
        )
    assert delphi.runs("org/api-a")[0].recipe == local["tiny-a"].recipe

    remote_ckpts = delphi.checkpoints("org/api-a")
    local_ckpts = delphi.checkpoints(runs["a"])
    assert [(c.step, c.tokens_seen, c.eval_loss) for c in remote_ckpts] == [
        (c.step, c.tokens_seen, c.eval_loss) for c in local_ckpts
    ]
    assert [c.reference for c in remote_ckpts] == [f"org/api-a@step{s}" for s in (1, 2, 4, 8)]

    ids = torch.tensor([[0, 5, 9, 17, 3]])
    expected, tok = delphi.load(runs["a"], step=4)
    for ref, step in (("org/api-a", 4), ("org/api-a@step4", None), (remote_ckpts[2].reference, None)):
        model, remote_tok = delphi.load(ref, step=step)
        assert torch.equal(model(ids).logits, expected(ids).logits)  # the same file, read through the hub
        assert remote_tok("Once upon a time")["input_ids"] == tok("Once upon a time")["input_ids"]
    final, _ = delphi.load("org/api-a")  # main: the final model
    assert torch.equal(final(ids).logits, delphi.load(runs["a"])[0](ids).logits)
    with pytest.raises(DelphiError, match="names branch step4 of 'org/api-a', but --revision 'step2'"):
        delphi.load("org/api-a@step4", step=2)
    # the commands take the same references
    sample = ["generate", "-n", "1", "--max-new-tokens", "6", "--seed", "0", "--device", "cpu"]
    remote = cli(*sample[:1], "org/api-a@step4", *sample[1:])
    assert remote.returncode == 0, remote.stderr
    assert remote.stdout == cli(*sample[:1], str(runs["a"] / "step4"), *sample[1:]).stdout


# ---- what a hub resume leaves behind ----


def test_a_refused_hub_resume_leaves_a_fresh_out_dir_as_it_was(hub_server, runs, stories_data, tmp_path):
    push_run(runs["a"], "org/llb", retry_wait=0.05)  # without optimizer state
    recipe = write_recipe(tmp_path / "r.yaml", stories_data, tmp_path / "fresh", name="tiny-a",
                          data={"path": str(stories_data / "data"), "validation_size": 16},
                          checkpoints={"steps": [1, 2, 4]}, **{"training.max_steps": 8})  # fmt: skip
    refused = cli("train", str(recipe), "--set", "resume=org/llb@step4", cwd=tmp_path)
    assert refused.returncode == 2 and "no optimizer state" in refused.stderr, refused.stderr
    assert not (tmp_path / "fresh").exists()
    (tmp_path / "empty").mkdir()
    refused = cli(
        "train", str(recipe), "--set", f"out_dir={tmp_path / 'empty'}", "--set", "resume=org/llb@step4"
    )
    assert refused.returncode == 2 and list((tmp_path / "empty").iterdir()) == []


def test_run_context_names_the_delphi_that_made_it_wherever_it_ran(tmp_path):
    """Started outside any git checkout: the cwd's git state is null, delphi's own source commit is not."""
    script = "import json; from delphi.provenance import run_context; print(json.dumps(run_context()))"
    out = run_process([sys.executable, "-c", script], cwd=tmp_path, check=True)
    context = json.loads(out.stdout)
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, check=True)
    assert context["git"] is None
    assert context["delphi"]["version"] == context["packages"]["delphi"]
    assert context["delphi"]["commit"] == head.stdout.strip() and isinstance(context["delphi"]["dirty"], bool)
    # an installed copy (no git checkout around the package): the version alone
    shutil.copytree(REPO / "delphi", tmp_path / "site" / "delphi")
    out = run_process(
        [sys.executable, "-c", script], {"PYTHONPATH": str(tmp_path / "site")}, cwd=tmp_path, check=True
    )
    assert json.loads(out.stdout)["delphi"] == {
        "version": context["delphi"]["version"],
        "commit": None,
        "dirty": None,
    }
