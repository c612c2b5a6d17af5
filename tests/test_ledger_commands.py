"""The ledger's faces: `delphi ledger`, `delphi batches --sequence`, the recipe key, the hub and the card."""

from __future__ import annotations

import json

import numpy as np
import pytest
from tiny import cli_error, write_recipe

from delphi.errors import DelphiError
from delphi.layout import read_checkpoint_meta
from delphi.train import ledger

# 40 training sequences at batch 8: 5 steps an epoch, 12 steps over epochs 0, 1 and 2
SETTINGS = {
    "ledger": True,
    "data.train_split": "train[:40]",
    "training.max_steps": 12,
    "checkpoints.every": 4,
    "checkpoints.steps": [],
}


@pytest.fixture(scope="module")
def run(stories_data, tmp_path_factory):
    from delphi.recipe import load_recipe
    from delphi.train.run import train

    root = tmp_path_factory.mktemp("ledger-run")
    train(load_recipe([write_recipe(root / "run.yaml", stories_data, root / "run", **SETTINGS)]))
    return root / "run"


def held(run) -> dict:
    table = ledger.read(run).to_pydict()
    return {
        (s, i): (e, loss)
        for s, e, i, loss in zip(table["step"], table["epoch"], table["index"], table["loss"], strict=True)
    }


def cli(capsys, *argv) -> list[str]:
    from delphi.cli import main

    main([str(a) for a in argv])
    return capsys.readouterr().out.splitlines()


def test_hardest_and_easiest_at_a_step(run, capsys):
    rows = held(run)
    at5 = sorted(((loss, i) for (s, i), (_, loss) in rows.items() if s == 5), reverse=True)
    lines = cli(capsys, "ledger", run, "--hardest", 3, "--step", 5)
    assert lines[0].split("\t") == ["rank", "step", "epoch", "index", "loss"]
    got = [line.split("\t") for line in lines[1:]]
    assert [int(r[3]) for r in got] == [i for _, i in at5[:3]]
    assert [r[:3] for r in got] == [["1", "5", "0"], ["2", "5", "0"], ["3", "5", "0"]]
    assert [float(r[4]) for r in got] == pytest.approx([loss for loss, _ in at5[:3]], abs=5e-5)
    easiest = cli(capsys, "ledger", run, "--easiest", 100)  # K past the batch: the whole step, newest
    assert len(easiest) == 1 + 8 and {line.split("\t")[1] for line in easiest[1:]} == {"12"}
    losses = [float(line.split("\t")[4]) for line in easiest[1:]]
    assert losses == sorted(losses) and losses[0] == pytest.approx(
        min(loss for (s, _), (_, loss) in rows.items() if s == 12), abs=5e-5
    )


def test_decode_shows_each_sequences_text(run, stories_data, capsys):
    from delphi.data.tokenizer import load_tokenizer
    from delphi.train.data import load_token_split

    lines = cli(capsys, "ledger", run, "--hardest", 2, "--step", 7, "--decode")
    assert lines[0].endswith("\ttext")
    train = load_token_split(stories_data / "data", "train[:40]")
    tokenizer = load_tokenizer(stories_data / "tok")
    for line in lines[1:]:
        index, text = int(line.split("\t")[3]), line.split("\t")[5]
        want = tokenizer.decode(list(train[index]["tokens"])).replace("\n", "\\n")
        assert text == repr(want if len(want) <= 100 else want[:100] + "...")


def test_batches_sequence_shows_its_loss_in_every_epoch(run, capsys):
    rows = held(run)
    index = next(i for (s, i), (e, _) in sorted(rows.items()) if e == 0)
    mine = {s: (e, loss) for (s, i), (e, loss) in rows.items() if i == index}
    lines = cli(capsys, "batches", run, "--sequence", index, "--no-tokens")
    assert lines[0].split("\t")[:4] == ["step", "position", "index", "loss"]
    printed = {int(line.split("\t")[0]): float(line.split("\t")[3]) for line in lines[1:]}
    assert printed.keys() == mine.keys() and len({e for e, _ in mine.values()}) >= 2
    assert printed == pytest.approx({s: loss for s, (_, loss) in mine.items()}, abs=5e-5)
    table_out = run.parent / "seq.parquet"
    cli(capsys, "batches", run, "--sequence", index, "--out", table_out)
    import pyarrow.parquet as pq

    table = pq.read_table(table_out).to_pydict()
    assert table["loss"] == [mine[s][1] for s in table["step"]]  # float32, as the ledger holds it


def test_plot_draws_each_steps_spread(run, tmp_path, capsys):
    from delphi.evaluate.ledger import step_quantiles

    lines = cli(capsys, "ledger", run, "--plot", tmp_path / "figs" / "ledger.png")
    assert lines == [f"plot -> {tmp_path / 'figs' / 'ledger.png'}"]
    assert (tmp_path / "figs" / "ledger.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    steps, quantiles, mean = step_quantiles(run)
    rows = held(run)
    assert steps.tolist() == list(range(1, 13))
    for k, step in enumerate(steps.tolist()):
        losses = np.array([loss for (s, _), (_, loss) in rows.items() if s == step], dtype=np.float64)
        assert quantiles[k, 1] == pytest.approx(np.median(losses)) and mean[k] == pytest.approx(losses.mean())
        assert quantiles[k, 0] <= quantiles[k, 1] <= quantiles[k, 2]


def test_bad_input_is_one_line(run, tmp_path, capsys):
    (tmp_path / "plain").mkdir()
    assert "has no training ledger" in cli_error(
        capsys, ["ledger", str(tmp_path / "plain"), "--hardest", "3"]
    )
    assert "holds steps 1..12, not step 13" in cli_error(
        capsys, ["ledger", str(run), "--hardest", "3", "--step", "13"]
    )
    for option in ("--hardest", "--easiest"):
        assert f"{option} must be a whole number >= 1, got 0" in cli_error(
            capsys, ["ledger", str(run), option, "0"]
        )
    assert "must end in .png" in cli_error(capsys, ["ledger", str(run), "--plot", str(tmp_path / "x.txt")])
    assert "--hardest must be a whole number >= 1, got -2" in cli_error(
        capsys, ["ledger", str(run), "--hardest", "-2"]
    )


def test_the_recipe_key_is_validated_and_not_part_of_the_runs_identity(stories_data, tmp_path):
    from delphi.recipe import load_recipe

    bad = write_recipe(tmp_path / "bad.yaml", stories_data, tmp_path / "out", ledger="yes")
    with pytest.raises(DelphiError, match="ledger") as error:
        load_recipe([bad])
    assert "\n" not in str(error.value)
    misspelled = write_recipe(tmp_path / "typo.yaml", stories_data, tmp_path / "out", ledgr=True)
    with pytest.raises(DelphiError, match="'ledger'"):
        load_recipe([misspelled])
    on = load_recipe([write_recipe(tmp_path / "on.yaml", stories_data, tmp_path / "out", ledger=True)])
    off = load_recipe([write_recipe(tmp_path / "off.yaml", stories_data, tmp_path / "out")])
    assert on.ledger and not off.ledger and on.identity() == off.identity()


def test_checkpoints_record_the_ledger_and_the_card_describes_it(run):
    from delphi.model_card import model_card

    meta = read_checkpoint_meta(run / "step8")["ledger"]
    assert meta == ledger.summary(run, up_to=8).as_meta() | {"columns": ["step", "epoch", "index", "loss"]}
    assert (meta["rows"], meta["first_step"], meta["last_step"]) == (64, 1, 8)
    card = model_card(run / "step8", "org/x", is_final=False)
    assert "## Training ledger" in card and "64 rows for steps 1 to 8" in card
    assert json.dumps(meta)  # plain JSON


@pytest.mark.slow
def test_the_ledger_goes_to_the_hub_with_each_checkpoint(run, hub_server, stories_data, tmp_path):
    """`delphi push` and the uploader during training: each `step{N}` branch holds the parts of steps 1..N."""
    from delphi.hub.push import push_run
    from delphi.recipe import load_recipe
    from delphi.train.run import train

    summary = push_run(run, "org/ledger", retry_wait=0.05)
    assert summary["failed"] == {}
    parts = {last: path for _, last, path in ledger.parts(run)}
    for step in (4, 8, 12):
        files = hub_server.files("org/ledger", f"step{step}")
        on_hub = {name for name in files if name.startswith("ledger/")}
        assert on_hub == {f"ledger/{parts[s].name}" for s in parts if s <= step}
        assert all(files[f"ledger/{parts[s].name}"] == parts[s].read_bytes() for s in parts if s <= step)
        assert "## Training ledger" in files["README.md"].decode()
    assert {n for n in hub_server.files("org/ledger", "main") if n.startswith("ledger/")} == {
        f"ledger/{p.name}" for p in parts.values()
    }

    settings = SETTINGS | {"training.max_steps": 8, "hub": {"repo": "org/trained", "retry_wait": 0.05}}
    recipe = write_recipe(tmp_path / "hub.yaml", stories_data, tmp_path / "hubrun", **settings)
    trained = train(load_recipe([recipe]))
    assert trained["hub"]["failed"] == {}
    files = hub_server.files("org/trained", "main")
    assert sorted(n for n in files if n.startswith("ledger/")) == [
        f"ledger/{ledger.part_name(1, 4)}",
        f"ledger/{ledger.part_name(5, 8)}",
    ]
    assert np.isfinite(ledger.read(tmp_path / "hubrun").column("loss").to_numpy()).all()
