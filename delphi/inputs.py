"""Is an input a local path or a hub id? One rule for every command, so a typo reads as a typo.

Most inputs (tokenizer, dataset, model, resume) take either a local path or a hub id `org/name`. A
mistyped path must not surface as a hub error ("Repo id must be in the form ...") or a network
timeout: anything that does not exist locally and either looks like a path (starts with `.`, `/` or
`~`, or has more than one `/`) or cannot be a hub id is reported as a missing path, with the nearest
existing name beside it when there is one. An output directory is checked the same way before any
work: it must be a directory, or creatable under one, that this process may write to. An input that
can only be on the hub is tried once, quickly, before the first real request (`require_reachable`).
"""

from __future__ import annotations

import difflib
import functools
import os
import re
from pathlib import Path

from delphi.errors import DelphiError

HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_HUB_REF = re.compile(r"^([\w.-]+/[\w.-]+)@([\w.-]+)$")


def looks_like_path(text: str) -> bool:
    """Starts with `.`, `/` or `~`, has more than one `/`, or its first part is a local directory."""
    if text.startswith((".", "/", "~")) or text.count("/") > 1 or (os.sep != "/" and os.sep in text):
        return True
    first, sep, _ = text.partition("/")
    return bool(sep) and os.path.isdir(first)


def is_hub_id(text: str) -> bool:
    """True for `org/name` strings that do not exist as a local path."""
    return (
        not os.path.exists(os.path.expanduser(text))
        and not looks_like_path(text)
        and bool(HUB_ID.match(text))
    )


def parse_hub_ref(ref: str) -> tuple[str, str] | None:
    """("org/name", "step400") for "org/name@step400"; None for anything else (e.g. a local path)."""
    match = _HUB_REF.match(ref.strip())
    if match is None or os.path.exists(ref):
        return None
    return match.group(1), match.group(2)


def missing_path_error(text: str, *, what: str, files_ok: bool = False) -> DelphiError:
    """'no such directory: X (what); did you mean Y?', naming the closest existing sibling when there is one."""
    message = f"no such {'file or directory' if files_ok else 'directory'}: {text!r} ({what})"
    path = Path(text).expanduser()
    first_missing = path
    while not first_missing.parent.exists() and first_missing.parent != first_missing:
        first_missing = first_missing.parent
    if first_missing != path:
        message += f"; {str(first_missing)!r} does not exist either"
    parent = first_missing.parent
    siblings = (
        sorted(p.name for p in parent.iterdir() if not p.name.startswith(".")) if parent.is_dir() else []
    )
    close = difflib.get_close_matches(first_missing.name, siblings, n=1, cutoff=0.6)
    if close:
        message += f"; did you mean {str(parent / close[0])!r}?"
    return DelphiError(message)


def check_local_or_hub(text: str, *, what: str, files_ok: bool = False) -> str:
    """'local' if `text` exists, 'hub' if it can only be a hub id (and the hub answers); else a DelphiError:
    the missing path, or the unreachable hub with what to do offline."""
    if os.path.exists(os.path.expanduser(text)):
        return "local"
    if is_hub_id(text):
        require_reachable(f"{what} {text!r}")
        return "hub"
    raise missing_path_error(text, what=what, files_ok=files_ok)


def check_local(text: str, *, what: str, files_ok: bool = False) -> Path:
    """`text` as an existing local path, or the missing-path DelphiError."""
    path = Path(text).expanduser()
    if not path.exists():
        raise missing_path_error(text, what=what, files_ok=files_ok)
    return path


def check_output_dir(path: str | os.PathLike, *, what: str = "--out-dir") -> Path:
    """`path` as a directory that exists or can be created, and that this process may write into; else
    one DelphiError naming it (a file in the way, or no write permission), before any work starts."""
    path = Path(path).expanduser()
    if path.exists() and not path.is_dir():
        raise DelphiError(f"{what} {str(path)!r} is a file, not a directory")
    nearest = path
    while not nearest.exists() and nearest != nearest.parent:
        nearest = nearest.parent
    if not nearest.is_dir():
        raise DelphiError(
            f"{what} {str(path)!r} cannot be created: {str(nearest)!r} is a file, not a directory"
        )
    if not os.access(nearest, os.W_OK | os.X_OK):
        raise DelphiError(f"{what} {str(path)!r} is not writable: no write permission in {str(nearest)!r}")
    return path


# ---- is the hub there at all?

REACH_TIMEOUT = 5.0  # seconds to wait for the hub to answer at all, before any real request
# what to do when the hub cannot be reached to read an input from it
READ_OFFLINE = (
    "To work offline: set HF_HUB_OFFLINE=1 to use files already in the local cache, or point `tokenizer:` / "
    "`data.path:` (or the command's input) at a local copy"
)


def endpoint() -> str:
    import huggingface_hub.constants

    return os.environ.get("HF_ENDPOINT") or huggingface_hub.constants.ENDPOINT


def require_reachable(needed_for: str, advice: str = READ_OFFLINE) -> None:
    """Fail fast, with what to do offline, when the hub cannot be reached at all.

    One short request through huggingface_hub's own HTTP session (so proxies and certificates are
    honoured) before the first real one: without it, an offline machine spends about a minute in
    huggingface_hub's retries, printing each one twice, before the real error. Any HTTP answer counts
    as reachable; with HF_HUB_OFFLINE set nothing is sent (files come from the local cache).
    """
    import huggingface_hub.constants

    if huggingface_hub.constants.HF_HUB_OFFLINE:
        return
    problem = _unreachable(endpoint())
    if problem:
        raise DelphiError(
            f"the hub at {endpoint()} could not be reached ({problem}), needed for {needed_for}"
            + (f". {advice}" if advice else "")
        )


@functools.cache
def _unreachable(url: str) -> str | None:
    from huggingface_hub.utils import get_session

    try:
        get_session().head(url, timeout=REACH_TIMEOUT)
    except Exception as e:  # transport errors of httpx / requests / OSError, depending on versions
        text = " ".join(str(e).split()) or type(e).__name__
        return text[:200]
    return None
