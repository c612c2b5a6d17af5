"""Thin, error-translating wrappers over `huggingface_hub` for the upload paths delphi uses.

The hub is optional: every function here is only called when the user named a repo, and each
turns network/auth failures into a `DelphiError` that says what to do, before expensive work
when possible (`ensure_repo` is called first, as a reachability and permission check).
The token comes from `HF_TOKEN` or `hf auth login`, through huggingface_hub itself; delphi
never reads, logs or stores it.
"""

from __future__ import annotations

import os
from pathlib import Path

from delphi.errors import DelphiError


def _explain(action: str, repo_id: str, err: Exception) -> DelphiError:
    from huggingface_hub.errors import HfHubHTTPError, LocalTokenNotFoundError, OfflineModeIsEnabled

    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    if isinstance(err, LocalTokenNotFoundError):
        hint = "no hub token found; set HF_TOKEN or run `hf auth login`"
    elif isinstance(err, OfflineModeIsEnabled):
        hint = "HF_HUB_OFFLINE is set; unset it to upload"
    elif isinstance(err, HfHubHTTPError) and getattr(err, "response", None) is not None:
        status = err.response.status_code
        if status in (401, 403):
            hint = "check that HF_TOKEN (or `hf auth login`) gives write access to it"
        else:
            hint = f"the hub answered HTTP {status}"
    else:
        hint = f"the hub at {endpoint} could not be reached ({type(err).__name__}); check your network"
    return DelphiError(f"could not {action} hub repo {repo_id!r}: {hint}")


def ensure_repo(repo_id: str, *, repo_type: str = "model", private: bool = False) -> str:
    """Create `repo_id` if needed and return its URL; fails fast when the hub is unreachable."""
    from huggingface_hub import HfApi

    try:
        return str(HfApi().create_repo(repo_id, repo_type=repo_type, private=private, exist_ok=True))
    except Exception as e:  # network errors come in many types (requests/httpx/OSError)
        raise _explain("create or open", repo_id, e) from e


def upload_dir(
    folder: str | Path,
    repo_id: str,
    *,
    repo_type: str = "model",
    path_in_repo: str | None = None,
    revision: str | None = None,
    commit_message: str = "Upload from delphi",
    allow_patterns: list[str] | None = None,
) -> str:
    """Upload a local folder in one commit and return the commit URL."""
    from huggingface_hub import HfApi

    try:
        info = HfApi().upload_folder(
            folder_path=str(folder),
            repo_id=repo_id,
            repo_type=repo_type,
            path_in_repo=path_in_repo,
            revision=revision,
            commit_message=commit_message,
            allow_patterns=allow_patterns,
        )
    except Exception as e:
        raise _explain("upload to", repo_id, e) from e
    return str(getattr(info, "commit_url", info))
