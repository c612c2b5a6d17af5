"""Thin, error-translating wrappers over `huggingface_hub` for what delphi does on the hub.

The hub is optional: every function here is only called when the user named a repo, and each
turns network/auth failures into a `DelphiError` that says what to do, before expensive work
when possible (`ensure_repo` is called first, as a reachability and permission check).
The token comes from `HF_TOKEN` or `hf auth login`, through huggingface_hub itself; delphi
never reads, logs or stores it.

Publishing a folder to a branch is checked, not trusted: `compare_with_remote` holds the local
files against the branch's file list (LFS sha256 for large files, git blob sha1 for small ones,
sizes for both), and `publish_folder` treats any difference after an upload as a failure.
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from pathlib import Path

from delphi.errors import DelphiError
from delphi.inputs import endpoint, require_reachable
from delphi.layout import MAIN_BRANCH, parse_step

log = logging.getLogger("delphi.hub")

# the hub's own file, present on every branch; never ours to compare or delete
HUB_MANAGED = frozenset({".gitattributes"})


def hub_error(action: str, repo_id: str, err: Exception) -> DelphiError:
    """A one-line, actionable reason for a failed hub call (the token itself never appears)."""
    from huggingface_hub.errors import (
        EntryNotFoundError,
        HfHubHTTPError,
        LocalTokenNotFoundError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    if isinstance(err, LocalTokenNotFoundError):
        hint = "no hub token found; set HF_TOKEN or run `hf auth login`"
    elif isinstance(err, RepositoryNotFoundError):
        hint = "the repo does not exist or is private (set HF_TOKEN for private repos)"
    elif isinstance(err, RevisionNotFoundError):
        hint = "that branch does not exist"
    elif isinstance(err, EntryNotFoundError):
        hint = "that file does not exist there"
    elif isinstance(err, OfflineModeIsEnabled):
        hint = "HF_HUB_OFFLINE is set; unset it to reach the hub"
    elif isinstance(err, HfHubHTTPError) and getattr(err, "response", None) is not None:
        status = err.response.status_code
        if status in (401, 403):
            hint = "check that HF_TOKEN (or `hf auth login`) gives write access to it"
        else:
            hint = f"the hub answered HTTP {status}"
    else:
        hint = f"the hub at {endpoint()} could not be reached ({type(err).__name__}); check your network"
    return DelphiError(f"could not {action} hub repo {repo_id!r}: {hint}")


# what to do when the hub cannot be reached to publish to it (reading: delphi.inputs.READ_OFFLINE)
PUBLISH_LATER = "Nothing was uploaded; run the same command again once the hub answers"


def ensure_repo(
    repo_id: str, *, repo_type: str = "model", private: bool = False, advice: str = PUBLISH_LATER
) -> str:
    """Create `repo_id` if needed and return its URL; fails fast (with `advice`) when the hub is unreachable."""
    from huggingface_hub import HfApi

    require_reachable(f"{repo_type} repo {repo_id!r}", advice)
    try:
        return str(HfApi().create_repo(repo_id, repo_type=repo_type, private=private, exist_ok=True))
    except Exception as e:  # network errors come in many types (requests/httpx/OSError)
        raise hub_error("create or open", repo_id, e) from e


def upload_dir(
    folder: str | Path, repo_id: str, *, repo_type: str = "model", commit_message: str = "Upload from delphi"
) -> str:
    """Upload a local folder in one commit and return the commit URL."""
    from huggingface_hub import HfApi

    try:
        info = HfApi().upload_folder(
            folder_path=str(folder),
            repo_id=repo_id,
            repo_type=repo_type,
            commit_message=commit_message,
        )
    except Exception as e:
        raise hub_error("upload to", repo_id, e) from e
    return str(getattr(info, "commit_url", info))


# ---- what is on a branch, and does it equal a local folder ----


@dataclass(frozen=True)
class RemoteFile:
    size: int
    sha256: str | None  # LFS files: sha256 of the content
    git_sha1: str  # git blob id (of the content for regular files, of the LFS pointer for LFS files)


def remote_files(repo_id: str, revision: str, *, repo_type: str = "model") -> dict[str, RemoteFile] | None:
    """{path: RemoteFile} of every file on `revision`; None when the branch does not exist."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import RevisionNotFoundError

    try:
        entries = list(
            HfApi().list_repo_tree(repo_id, revision=revision, repo_type=repo_type, recursive=True)
        )
    except RevisionNotFoundError:
        return None
    return {
        e.path: RemoteFile(e.size, e.lfs.sha256 if e.lfs else None, e.blob_id)
        for e in entries
        if hasattr(e, "blob_id")  # files, not folders
    }


def branch_heads(repo_id: str, *, repo_type: str = "model") -> dict[str, str]:
    """{branch: commit} of every branch of a repo, `main` first, then `step{N}` by N, then the rest by name."""
    from huggingface_hub import HfApi

    refs = HfApi().list_repo_refs(repo_id, repo_type=repo_type)
    heads = {b.name: b.target_commit for b in refs.branches}

    def order(name: str):
        step = parse_step(name)
        return (name != MAIN_BRANCH, step is None, step or 0, name)

    return {name: heads[name] for name in sorted(heads, key=order)}


def branches_on_hub(repo_id: str) -> list[str] | None:
    """Every branch of a repo (see `branch_heads`), or None when the hub cannot say."""
    try:
        return list(branch_heads(repo_id))
    except Exception:  # the summary then names what was published instead
        return None


def local_files(folder: str | Path) -> dict[str, Path]:
    """{posix path relative to folder: file} of every file under `folder`."""
    folder = Path(folder)
    return {p.relative_to(folder).as_posix(): p for p in sorted(folder.rglob("*")) if p.is_file()}


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _git_sha1(path: Path) -> str:
    digest = hashlib.sha1(b"blob %d\0" % path.stat().st_size)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def compare_with_remote(
    local: dict[str, Path], remote: dict[str, RemoteFile] | None, *, tolerated_extra=lambda path: False
) -> list[str]:
    """Differences between local files and a branch, one line each; [] when the branch holds exactly them.

    A remote file not in `local` is a difference unless the hub manages it (`.gitattributes`) or
    `tolerated_extra(path)` says it may stay (e.g. optimizer state pushed earlier on purpose).
    """
    if remote is None:
        return ["the branch does not exist"]
    problems = []
    for path, file in local.items():
        theirs = remote.get(path)
        if theirs is None:
            problems.append(f"{path}: missing on the hub")
            continue
        size = file.stat().st_size
        if theirs.size != size:
            problems.append(f"{path}: {theirs.size} bytes on the hub, {size} locally")
        elif theirs.sha256 is not None and theirs.sha256 != sha256_file(file):
            problems.append(f"{path}: sha256 differs from the local file")
        elif theirs.sha256 is None and theirs.git_sha1 != _git_sha1(file):
            problems.append(f"{path}: git blob id differs from the local file")
    for path in sorted(set(remote) - set(local)):
        if path not in HUB_MANAGED and not tolerated_extra(path):
            problems.append(f"{path}: on the hub but not in the local folder")
    return problems


class VerificationError(Exception):
    """A branch does not hold what was just uploaded to it."""


def publish_folder(
    folder: str | Path,
    repo_id: str,
    branch: str,
    *,
    commit_message: str,
    tolerated_extra=lambda path: False,
    repo_type: str = "model",
) -> str:
    """Make `branch` hold exactly the files of `folder`, then check it does.

    Returns "unchanged" when the branch already matched (nothing is uploaded) or "uploaded".
    Creates the branch (from `main`) if needed and deletes remote files that `folder` lacks, except
    the hub's own and `tolerated_extra` ones. Raises (any exception) on failure, including
    `VerificationError` when the branch's file list, sizes or hashes differ after the upload.
    """
    from huggingface_hub import HfApi

    api = HfApi()
    local = local_files(folder)
    before = remote_files(repo_id, branch, repo_type=repo_type)
    if not compare_with_remote(local, before, tolerated_extra=tolerated_extra):
        return "unchanged"
    created = before is None
    if created:
        api.create_branch(repo_id, branch=branch, repo_type=repo_type, exist_ok=True)
        before = remote_files(repo_id, branch, repo_type=repo_type) or {}  # a new branch starts as main
    stale = [p for p in before if p not in local and p not in HUB_MANAGED and not tolerated_extra(p)]
    try:
        api.upload_folder(
            folder_path=str(folder),
            repo_id=repo_id,
            repo_type=repo_type,
            revision=branch,
            commit_message=commit_message,
            delete_patterns=[glob_escape(p) for p in stale] or None,
        )
        problems = compare_with_remote(
            local, remote_files(repo_id, branch, repo_type=repo_type), tolerated_extra=tolerated_extra
        )
        if problems:
            raise VerificationError(
                f"branch {branch} differs from what was uploaded: " + "; ".join(problems[:5])
            )
    except BaseException:
        if created:  # a new branch starts as a copy of main: left behind, it would name main's model stepN
            _drop_unfinished_branch(api, local, repo_id, branch, repo_type, tolerated_extra)
        raise
    return "uploaded"


def _drop_unfinished_branch(
    api, local: dict, repo_id: str, branch: str, repo_type: str, tolerated_extra
) -> None:
    """Delete a branch this upload created unless it holds `local` after all (a commit that landed but whose
    answer was lost counts as published: the caller checks the hub before it gives up)."""
    try:
        if compare_with_remote(
            local, remote_files(repo_id, branch, repo_type=repo_type), tolerated_extra=tolerated_extra
        ):
            api.delete_branch(repo_id, branch=branch, repo_type=repo_type)
    except Exception as e:  # the upload's own error is the one to report
        log.warning("hub %s: could not delete branch %s after its upload failed: %s", repo_id, branch, e)


def glob_escape(path: str) -> str:
    """`path` as an fnmatch pattern that matches only itself."""
    return re.sub(r"([*?\[])", r"[\1]", path)


def download_revision(repo_id: str, revision: str, dest: str | Path, *, repo_type: str = "model") -> Path:
    """Download every file of `revision` into `dest` (a plain folder, not the cache layout)."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import RepositoryNotFoundError, RevisionNotFoundError

    try:
        path = snapshot_download(repo_id, revision=revision, repo_type=repo_type, local_dir=str(dest))
    except RevisionNotFoundError as e:
        raise DelphiError(f"hub repo {repo_id!r} has no branch {revision!r}") from e
    except RepositoryNotFoundError as e:
        raise DelphiError(
            f"hub repo {repo_id!r} not found (or private: set HF_TOKEN or run `hf auth login`)"
        ) from e
    except Exception as e:
        raise hub_error(f"download {revision!r} of", repo_id, e) from e
    return Path(path)
