"""delphi.hub and the tokenizer/dataset pushes, through the real huggingface_hub client over HTTP.

The hub is `tests/hub_server.py` on 127.0.0.1 (the `hub_server` fixture); nothing is mocked.
"""

from __future__ import annotations

import pytest
from conftest import HUB_TOKEN

from delphi.errors import DelphiError
from delphi.hub.client import (
    VerificationError,
    compare_with_remote,
    ensure_repo,
    local_files,
    publish_folder,
    remote_files,
)
from delphi.inputs import parse_hub_ref

# raised inside huggingface_hub's LFS upload, not by delphi
pytestmark = pytest.mark.filterwarnings("ignore:Use 'content=<...>':DeprecationWarning")


def test_parse_hub_ref(tmp_path):
    assert parse_hub_ref("org/stories-mamba-100k@step400") == ("org/stories-mamba-100k", "step400")
    assert parse_hub_ref("org/name") is None
    assert parse_hub_ref("out/run/step4") is None
    local = tmp_path / "a@step4"
    local.mkdir()
    assert parse_hub_ref(str(local)) is None  # an existing path is a path


def _folder(root, files: dict[str, bytes]):
    root.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return root


def test_publish_folder_makes_the_branch_equal_and_is_idempotent(hub_server, tmp_path):
    ensure_repo("org/m")
    big = bytes(range(256)) * 400  # binary: stored in LFS
    folder = _folder(
        tmp_path / "a", {"config.json": b'{"a": 1}\n', "model.safetensors": big, "sub/x.txt": b"x"}
    )

    assert publish_folder(folder, "org/m", "step1", commit_message="one") == "uploaded"
    remote = remote_files("org/m", "step1")
    assert remote["model.safetensors"].sha256 is not None and remote["config.json"].sha256 is None
    assert compare_with_remote(local_files(folder), remote) == []
    assert hub_server.files("org/m", "step1")["model.safetensors"] == big

    commits = hub_server.hub.count("commit")
    assert publish_folder(folder, "org/m", "step1", commit_message="again") == "unchanged"
    assert hub_server.hub.count("commit") == commits

    # a file that left the folder leaves the branch; tolerated extras (optimizer state) stay
    hub_server.hub.commit(
        hub_server.hub.repos[("model", "org/m")],
        "step1",
        [{"key": "file", "value": {"path": "optimizer.pt", "content": "AA==", "encoding": "base64"}}],
    )
    (folder / "sub" / "x.txt").unlink()
    status = publish_folder(
        folder, "org/m", "step1", commit_message="three", tolerated_extra=lambda p: p == "optimizer.pt"
    )
    assert status == "uploaded"
    assert set(hub_server.files("org/m", "step1")) == {
        ".gitattributes",
        "config.json",
        "model.safetensors",
        "optimizer.pt",
    }
    assert remote_files("org/m", "nope") is None


def test_a_corrupted_upload_is_detected(hub_server, tmp_path):
    ensure_repo("org/m")
    folder = _folder(tmp_path / "a", {"config.json": b"{}\n", "model.safetensors": b"\0" * 5000})
    hub_server.hub.tamper("model.safetensors")
    with pytest.raises(VerificationError, match="model.safetensors"):
        publish_folder(folder, "org/m", "step2", commit_message="x")
    # the branch this upload created held the corrupted file: it is deleted, not left to stand for step2
    assert "step2" not in hub_server.branches("org/m")
    publish_folder(folder, "org/m", "step2", commit_message="x")  # a branch that exists, corrupted later:
    hub_server.hub.tamper("model.safetensors")  # (the server corrupts the next upload of this file)
    (folder / "model.safetensors").write_bytes(b"\1" * 5000)
    with pytest.raises(VerificationError, match="model.safetensors"):
        publish_folder(folder, "org/m", "step2", commit_message="x")
    problems = compare_with_remote(local_files(folder), remote_files("org/m", "step2"))
    assert problems and "model.safetensors" in problems[0]  # kept (it was not ours to delete), and detected
    (folder / "config.json").write_bytes(b'{"b": 2}\n')
    hub_server.hub.tamper("config.json")  # a regular (non-LFS) file: checked by git blob id
    with pytest.raises(VerificationError, match="config.json"):
        publish_folder(folder, "org/m", "step2", commit_message="x")
    assert publish_folder(folder, "org/m", "step2", commit_message="x") == "uploaded"  # heals


def test_only_failures_that_may_pass_are_retried(hub_server, tmp_path):
    from delphi.hub.publish import publish_checkpoint_to_hub

    ensure_repo("org/m")
    folder = _folder(tmp_path / "step1", {"config.json": b"{}\n", "model.safetensors": b"\0" * 5000})
    waits: list[float] = []
    hub_server.fail("commit", times=None, mode="403", match="/commit/step1")  # no permission: final
    hub_server.fail("commit", times=2, mode="500", match="/commit/main")  # a server hiccup: passes
    step1, main = publish_checkpoint_to_hub(
        folder, "org/m", ["step1", "main"], retries=3, retry_wait=1.0, sleep=waits.append
    )
    assert (step1.status, step1.attempts) == ("failed", 1) and "403" in step1.error
    assert (main.status, main.attempts) == ("uploaded", 3)
    assert waits == [1.0, 2.0]  # the 500s only


def test_private_repo_needs_the_token(hub_server, tmp_path, monkeypatch):
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import RepositoryNotFoundError

    ensure_repo("org/secret", private=True)
    publish_folder(_folder(tmp_path / "a", {"a.txt": b"hi"}), "org/secret", "main", commit_message="x")
    assert open(hf_hub_download("org/secret", "a.txt", cache_dir=tmp_path / "c1"), "rb").read() == b"hi"
    monkeypatch.delenv("HF_TOKEN")
    monkeypatch.setenv("HF_HUB_DISABLE_IMPLICIT_TOKEN", "1")
    import importlib

    import huggingface_hub.constants

    importlib.reload(huggingface_hub.constants)
    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download("org/secret", "a.txt", cache_dir=tmp_path / "c2")
    with pytest.raises(DelphiError, match="org/other.*(token|HF_TOKEN)"):
        ensure_repo("org/other")


@pytest.mark.slow
def test_tokenizer_and_dataset_round_trip_through_the_hub(hub_server, text_dir, tmp_path):
    import datasets
    from transformers import AutoTokenizer

    from delphi.data.sequences import tokenize_dataset
    from delphi.data.splits import load_split
    from delphi.data.tokenizer import load_tokenizer, train_tokenizer

    # the corpus itself as a hub dataset: every input that takes a path takes a hub id
    ensure_repo("org/texts", repo_type="dataset")
    publish_folder(text_dir, "org/texts", "main", commit_message="texts", repo_type="dataset")
    assert load_split("org/texts", "validation")["story"] == load_split(str(text_dir), "validation")["story"]

    train_tokenizer(
        "org/texts", feature="story", vocab_size=300, out_repo="org/tok", out_dir=tmp_path / "tok"
    )
    tok = AutoTokenizer.from_pretrained("org/tok")
    assert (tok.bos_token_id, tok.eos_token_id, tok.pad_token_id) == (0, 1, 2)
    assert load_tokenizer("org/tok").get_vocab() == load_tokenizer(tmp_path / "tok").get_vocab()

    tokenize_dataset(
        "org/texts", feature="story", splits=["train", "validation"], tokenizer="org/tok", seq_len=16,
        chunk_size=5, out_repo="org/tokens", out_dir=tmp_path / "tokens",
    )  # fmt: skip
    on_hub = hub_server.files("org/tokens", repo_type="dataset")
    assert "data/train-00000.parquet" in on_hub and "data/validation-00000.parquet" in on_hub
    remote = datasets.load_dataset("org/tokens", split="train")
    local = datasets.load_dataset(str(tmp_path / "tokens"), split="train")
    assert remote["tokens"] == local["tokens"] and len(remote) > 0
    for data in on_hub.values():
        assert HUB_TOKEN.encode() not in data
