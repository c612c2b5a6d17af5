"""Shared fixtures: small real corpora built from delphi's embedded story generator (so a bare clone tests
everything), and the real TinyStories sample (../shared) for the few tests that are about real text."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest
from numerics import threads_under_test

REPO = Path(__file__).resolve().parents[1]
TINYSTORIES = REPO.parent / "shared" / "data" / "tinystories"

# Tests never touch the network: the hub and W&B are unreachable here anyway, so fail fast.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# wandb keeps the sys.stdout it finds when it is first imported: if that first import happens inside a test
# that captures output (capsys; transformers imports wandb to list the reporting integrations), every later
# W&B run of the session writes its history to the closed capture and loses it. Imported here, before any.
if importlib.util.find_spec("wandb") is not None:
    import wandb  # noqa: F401


def pytest_pyfunc_call(pyfuncitem):
    """A test marked `triton_interpreted` runs in its own process with TRITON_INTERPRET=1 (Triton reads it
    once, at import); its outcome there is its outcome here, so it reports as itself, not as a skip."""
    if (
        pyfuncitem.get_closest_marker("triton_interpreted") is None
        or os.environ.get("TRITON_INTERPRET") == "1"
    ):
        return None
    import subprocess
    import sys

    env = {**os.environ, "TRITON_INTERPRET": "1", "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "pytest", pyfuncitem.nodeid, "-q", "-p", "no:cacheprovider"]
    done = subprocess.run(command, env=env, cwd=REPO, capture_output=True, text=True, timeout=900)
    output = done.stdout + done.stderr
    if done.returncode != 0 or "1 passed" not in output:
        pytest.fail(f"under TRITON_INTERPRET=1:\n{output[-5000:]}", pytrace=False)
    return True


@pytest.fixture(autouse=True, scope="session")
def _threads_under_test():
    """Tiny models gain nothing from threads, and on a busy 2-core machine OpenMP spinning makes them 100x
    slower: one torch thread, unless DELPHI_TEST_THREADS asks for more (`make test-numerics` runs the
    cross-layout tests with 1, 2 and 4, since the thread count changes the order of sums).

    Subprocesses started by tests get OMP_NUM_THREADS from the environment for the same reason.
    """
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(threads_under_test())
    if "DELPHI_TEST_THREADS" in os.environ:
        os.environ["OMP_NUM_THREADS"] = str(threads_under_test())
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tinystories() -> Path:
    """Directory of the real TinyStories sample (train/validation parquet, column `story`).

    Only for tests about real text (tokenizer coverage, the tokenization rule on real stories); every
    end-to-end test runs on the embedded corpus (`story_corpus`), so a bare clone skips nothing else.
    """
    if not (TINYSTORIES / "validation-00000.parquet").exists():
        pytest.skip(
            f"this test is about real text and needs the TinyStories sample at {TINYSTORIES}, "
            "which a bare clone does not have"
        )
    return TINYSTORIES


@pytest.fixture(scope="session")
def story_corpus(tmp_path_factory) -> Path:
    """The embedded corpus (delphi.data.stories), 600 train / 100 validation stories: parquet, column `story`."""
    from delphi.data.stories import write_corpus

    root = tmp_path_factory.mktemp("corpus")
    write_corpus(root, train_size=600, validation_size=100, seed=0)
    return root


@pytest.fixture
def text_dir(tmp_path: Path) -> Path:
    """A tiny real parquet text dataset with train/validation splits and a non-text column."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    stories = [
        "Once upon a time, a little cat named Tom found a red ball.",
        'Sara said, "Let us play in the park!" and they ran to the big tree.',
        "The dog was sad because it lost its bone. Then a bird helped it.",
        "Ben and Mia built a tall tower of blocks. It fell, and they laughed.",
    ]
    out = tmp_path / "texts"
    out.mkdir()
    for split, rows in (("train", stories * 5), ("validation", stories[:2])):
        table = pa.table({"story": rows, "n": list(range(len(rows)))})
        pq.write_table(table, out / f"{split}-00000.parquet")
    return out


HUB_TOKEN = "hf_" + "FakeHubT0kenThatMustNeverBeStored42"


@pytest.fixture
def hub_server(tmp_path_factory, monkeypatch):
    """A local hub-compatible server (tests/hub_server.py) that the real huggingface_hub client talks to.

    Sets HF_ENDPOINT, HF_HUB_DISABLE_XET=1, HF_TOKEN (the server rejects writes without it), a fresh
    HF_HOME cache, and clears HF_HUB_OFFLINE; undone after the test. Yields the `HubServer`
    (`.fail(route, times, mode)` injects faults, `.hub.requests` logs every request).
    """
    import importlib

    import datasets.config
    import huggingface_hub.constants
    from hub_server import HubServer

    from delphi.compat import forget_hub_client

    root = tmp_path_factory.mktemp("hub")
    with HubServer(root / "storage", HUB_TOKEN) as server:
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")
        monkeypatch.setenv("HF_TOKEN", HUB_TOKEN)
        monkeypatch.setenv("HF_HOME", str(root / "hf_home"))
        monkeypatch.setattr(datasets.config, "HF_ENDPOINT", server.url)
        monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)
        forget_hub_client(monkeypatch)  # transformers' shared HfApi holds the endpoint it was created with
        importlib.reload(huggingface_hub.constants)  # the endpoint and cache paths are read at import time
        try:
            yield server
        finally:
            monkeypatch.undo()
            importlib.reload(huggingface_hub.constants)


@pytest.fixture
def unreachable_hub(monkeypatch):
    """The hub switched on (HF_HUB_OFFLINE unset, a token set) but unreachable: HF_ENDPOINT on a closed
    port (connection refused at once); undone after the test."""
    import importlib

    import huggingface_hub.constants

    endpoint = "http://127.0.0.1:9"
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", endpoint)
    monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")
    monkeypatch.setenv("HF_TOKEN", HUB_TOKEN)
    importlib.reload(huggingface_hub.constants)  # the endpoint is read at import time
    try:
        yield endpoint
    finally:
        monkeypatch.undo()
        importlib.reload(huggingface_hub.constants)


@pytest.fixture(scope="session")
def stories_data(story_corpus, tmp_path_factory):
    """A folder with `tok/` (a 384-token delphi tokenizer) and `data/` (stories tokenized into 32-token
    sequences), both from the embedded corpus: the input of every tiny end-to-end run (tests/tiny.py)."""
    from delphi.data.sequences import tokenize_dataset
    from delphi.data.tokenizer import train_tokenizer

    root = tmp_path_factory.mktemp("stories")
    train_tokenizer(str(story_corpus), feature="story", split="train", vocab_size=384, out_dir=root / "tok")
    tokenize_dataset(
        str(story_corpus),
        feature="story",
        splits=["train[:60%]", "validation"],
        tokenizer=str(root / "tok"),
        seq_len=32,
        out_dir=root / "data",
    )
    return root
