"""`checkpoints.json` on a hub repo's `main`: the list of checkpoints a run published, to check it against.

```json
{"format": 1, "run": "llama2-100k", "final_step": 12,
 "checkpoints": [{"step": 1, "branch": "step1", "tokens_seen": 256, "eval_loss": 5.61,
                  "commit": "<the branch's commit>", "sha256": "<sha256 of model.safetensors>"}, ...]}
```

Written by `delphi push` and by a training run's uploader after the branches it names were published and
verified; `delphi verify` holds the hub against it (and against each branch's own `checkpoint.json`).
The commit of `main` itself is not listed: writing the manifest moves it.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import yaml

from delphi.hub.client import sha256_file
from delphi.layout import MAIN_BRANCH, MANIFEST_FILE, META_NAME, RECIPE_FILE, WEIGHTS_FILE, parse_step

log = logging.getLogger("delphi.hub")

FORMAT = 1


def read_manifest(repo_id: str) -> dict | None:
    """The manifest on `main`, or None when there is none (or it is not valid JSON)."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, RevisionNotFoundError

    try:
        text = Path(hf_hub_download(repo_id, MANIFEST_FILE, revision=MAIN_BRANCH)).read_text()
    except (EntryNotFoundError, RevisionNotFoundError):
        return None
    try:
        data = json.loads(text)
    except ValueError:
        return None
    return data if isinstance(data, dict) and isinstance(data.get("checkpoints"), list) else None


def entry(folder: Path, branch: str, commit: str) -> dict:
    """A manifest entry for a published checkpoint folder (its own `checkpoint.json` and weights)."""
    meta = json.loads((Path(folder) / META_NAME).read_text())
    weights = Path(folder) / WEIGHTS_FILE
    return {
        "step": meta.get("step", parse_step(branch)),
        "branch": branch,
        "tokens_seen": meta.get("tokens_seen"),
        "eval_loss": meta.get("eval_loss"),
        "commit": commit,
        "sha256": sha256_file(weights) if weights.is_file() else None,
    }


def update_manifest(repo_id: str, published: dict[str, Path], *, replace: bool = False) -> str:
    """Record `published` ({branch: local checkpoint folder}, each verified on its branch) in the manifest.

    Entries of other branches are kept unless `replace` (a run that replaced the repo's previous one) or
    their branch is gone. Returns "updated" or "unchanged"; raises on a hub failure.
    """
    from huggingface_hub import CommitOperationAdd, HfApi

    api = HfApi()
    heads = {b.name: b.target_commit for b in api.list_repo_refs(repo_id).branches}
    old = None if replace else read_manifest(repo_id)
    entries = {e["branch"]: e for e in (old or {}).get("checkpoints", []) if e.get("branch") in heads}
    for branch, folder in published.items():
        if branch != MAIN_BRANCH and branch in heads:
            entries[branch] = entry(folder, branch, heads[branch])
    newest = max(published.values(), key=lambda f: parse_step(Path(f).name) or -1, default=None)
    run, final = (old or {}).get("run"), (old or {}).get("final_step")
    if newest is not None:
        recipe = (
            yaml.safe_load((Path(newest) / RECIPE_FILE).read_text())
            if (Path(newest) / RECIPE_FILE).is_file()
            else {}
        )
        run = (recipe or {}).get("name", run)
        meta = json.loads((Path(newest) / META_NAME).read_text())
        if meta.get("max_steps") is not None and meta.get("step", 0) >= meta["max_steps"]:
            final = meta["step"]
    manifest = {
        "format": FORMAT,
        "run": run,
        "final_step": final,
        "checkpoints": sorted(entries.values(), key=lambda e: (e.get("step") or 0, e["branch"])),
    }
    if old == manifest:
        return "unchanged"
    text = json.dumps(manifest, indent=1) + "\n"
    api.create_commit(
        repo_id,
        operations=[CommitOperationAdd(MANIFEST_FILE, text.encode())],
        commit_message=f"delphi: {MANIFEST_FILE} ({len(entries)} checkpoints)",
        revision=MAIN_BRANCH,
    )
    return "updated"
