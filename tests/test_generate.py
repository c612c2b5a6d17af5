"""`delphi generate` on a tiny real run: greedy decoding, bad sampling options and devices (one line,
exit 2, before the model is loaded), step folders against --revision."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from tiny import cli_error

from delphi.cli import main
from delphi.devices import available_devices, resolve_device
from delphi.errors import DelphiError
from delphi.generate import generate

SAMPLE = {"prompt": "Once upon a time", "max_new_tokens": 8}


# ---- devices: the shared --device check (fast: nothing is loaded) ----


def test_resolve_device_names_the_device_and_what_there_is():
    here = ", ".join(available_devices())
    assert available_devices()[0] == "cpu"
    assert resolve_device("cpu") == "cpu"
    assert resolve_device(None) == ("cuda" if torch.cuda.is_available() else "cpu")
    for bad, match in {
        "cdua": "--device 'cdua' is not a torch device",
        "cuda:99": "--device 'cuda:99'",
        "meta": "delphi cannot run on 'meta' devices",
    }.items():
        with pytest.raises(DelphiError, match=match) as info:
            resolve_device(bad)
        assert str(info.value).endswith(f"available here: {here}")
    if not torch.cuda.is_available():
        with pytest.raises(DelphiError, match=r"--device 'cuda' is not available \(torch .* without CUDA\)"):
            resolve_device("cuda")


def test_bad_generate_options_fail_before_the_model_is_read(tmp_path, capsys):
    """Every numeric option and the device are checked first: the model here does not even exist."""
    missing = str(tmp_path / "no-run")
    here = ", ".join(available_devices())
    cases = {
        ("--top-k", "-1"): "--top-k -1: expected an integer >= 1",
        ("--top-k", "0"): "--top-k 0: expected an integer >= 1",
        ("-n", "0"): "-n 0: expected the number of samples, an integer >= 1",
        ("--max-new-tokens", "0"): "--max-new-tokens 0: expected an integer >= 1",
        ("--temperature", "-0.5"): "--temperature -0.5: expected a number >= 0",
        ("--temperature", "nan"): "--temperature nan: expected a number >= 0",
        ("--device", "cdua"): f"--device 'cdua' is not a torch device; available here: {here}",
    }
    for option, message in cases.items():
        assert message in cli_error(capsys, ["generate", missing, *option]), option
    assert "no such directory" in cli_error(capsys, ["generate", missing])


# ---- on a tiny trained run ----


@pytest.fixture(scope="module")
def run(stories_data, tmp_path_factory) -> Path:
    """A tiny run with checkpoints step1, step2, step4, step8."""
    from test_logprobs import train_tiny_run

    return train_tiny_run(tmp_path_factory.mktemp("generate"), stories_data, "tiny")


@pytest.mark.slow
def test_greedy_gives_one_sample_whatever_n(run, capsys):
    one = generate(run, n=1, temperature=0, **SAMPLE)
    assert len(one) == 1 and one[0].startswith("Once upon a time")
    assert generate(run, n=3, temperature=0, seed=5, **SAMPLE) == one, "greedy: one sample, seed or not"

    main(["generate", str(run), "--temperature", "0", "--max-new-tokens", "8"])  # default -n 3
    captured = capsys.readouterr()
    assert captured.out == f"--- sample 1\n{one[0]}\n"
    assert "greedy decoding: its 3 samples would all be the same, so it is shown once" in captured.err

    assert len(generate(run, n=3, temperature=0.8, **SAMPLE)) == 3  # sampling still gives n
    main(["generate", str(run), "--top-k", "5", "-n", "2", "--max-new-tokens", "4", "--device", "cpu"])
    assert capsys.readouterr().out.count("--- sample ") == 2


@pytest.mark.slow
def test_a_step_folder_takes_no_other_revision(run, capsys):
    step4 = str(run / "step4")
    assert generate(step4, revision="step4", **SAMPLE) == generate(run, revision="step4", **SAMPLE)
    error = cli_error(capsys, ["generate", step4, "--revision", "step1"])
    assert f"{step4!r} is checkpoint step4 of run {str(run)!r}, but --revision 'step1' names another" in error
    assert f"pass the run directory {str(run)!r} with --revision" in error


@pytest.mark.slow
def test_a_prompt_is_text_even_where_it_spells_a_special_token(run):
    """`<eos>` typed in a prompt is characters, as in the training documents: kept, not a document end."""
    prompt = "The sign said <eos> and <bos>"
    (sample,) = generate(run, prompt=prompt, n=1, temperature=0, max_new_tokens=4)
    assert sample.startswith(prompt)
