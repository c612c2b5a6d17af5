"""Publish checkpoints to the hub, each on its own branch `step{N}` (the final one also on `main`), with the
run's training ledger up to that step (`ledger/`) when it has one.

One function does the work for both the in-training uploader and `delphi push`:
`publish_checkpoint_to_hub` stages a checkpoint (hard links to its files, minus optimizer state
unless asked, plus a model card), makes each branch hold exactly those files, verifies the branch
file by file, and retries with exponential backoff. It never raises: a failure is a result.

During training `HubUploader` runs that in a background thread fed by a bounded queue, so uploads
overlap training, and memory and disk stay bounded (a full queue makes the next checkpoint wait).
Staging happens when the checkpoint is saved, so later deletions in the run folder (older optimizer
state with keep_optimizer="latest") cannot race with an upload: the hard links keep the bytes.
A failed upload never stops training and never touches the checkpoint folder; `delphi push`
publishes what is missing later.
"""

from __future__ import annotations

import logging
import queue
import shutil
import threading
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

from delphi.atomic import link_or_copy
from delphi.errors import DelphiError
from delphi.hub.client import (
    branches_on_hub,
    compare_with_remote,
    download_revision,
    ensure_repo,
    local_files,
    publish_folder,
    remote_files,
)
from delphi.hub.manifest import update_manifest
from delphi.hub.repo_run import RepoRun, check_repo_run, replace_old_run
from delphi.inputs import parse_hub_ref
from delphi.layout import (
    HUB_RESUME_DIR,
    HUB_STAGING_DIR,
    LEDGER_DIR,
    MAIN_BRANCH,
    MANIFEST_FILE,
    branch_name,
    has_resume_state,
    is_complete,
    is_resume_state,
    list_checkpoints,
    parse_step,
)
from delphi.model_card import model_card

log = logging.getLogger("delphi.hub")
# huggingface_hub warns on each parquet file committed to a model repo ("you are about to commit a data
# file"); a run's training ledger (ledger/*.parquet) belongs with its checkpoints on purpose. A filter on
# that message alone, set once: the uploader runs in a thread, where catch_warnings() would race.
warnings.filterwarnings(
    "ignore", message="It seems that you are about to commit a data file", category=UserWarning
)

MAX_RETRY_WAIT = 300.0


def stage_checkpoint(
    folder: Path, staging_root: Path, repo_id: str, *, include_optimizer: bool, is_final: bool
) -> Path:
    """A folder of exactly what goes to the hub for `folder`: hard links (copies where links fail) + README.md."""
    folder, staging_root = Path(folder), Path(staging_root)
    staged = staging_root / folder.name
    if staged.exists():
        shutil.rmtree(staged)
    staged.mkdir(parents=True)
    for rel, path in local_files(folder).items():
        if rel == "README.md" or (is_resume_state(rel) and not include_optimizer):
            continue
        target = staged / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        link_or_copy(path, target)
    _stage_ledger(folder, staged)
    (staged / "README.md").write_text(model_card(folder, repo_id, is_final=is_final))
    return staged


def _stage_ledger(folder: Path, staged: Path) -> None:
    """The run's training ledger up to this checkpoint (its parts ending at or before the step), as
    `ledger/` in the branch: each `step{N}` holds the rows of steps 1..N (delphi.train.ledger)."""
    from delphi.train.ledger import parts

    step = parse_step(folder.name)
    held = [path for _, last, path in parts(folder.parent) if step is not None and last <= step]
    if held:
        (staged / LEDGER_DIR).mkdir()
    for path in held:
        link_or_copy(path, staged / LEDGER_DIR / path.name)


@dataclass
class BranchResult:
    branch: str
    status: str  # "uploaded" | "unchanged" (already on the hub, verified) | "failed"
    attempts: int
    seconds: float
    error: str | None = None


def describe_error(err: Exception) -> str:
    """An exception as one short line for a summary or a log (the hub's messages run to many lines)."""
    text = str(err).strip().splitlines()[0] if str(err).strip() else ""
    return f"{type(err).__name__}: {text}"[:300]


# HTTP answers that a retry cannot change: a bad request, no permission, no such repo or route, too large
PERMANENT_STATUSES = frozenset({400, 401, 403, 404, 413, 422})


def tolerated_on(branch: str):
    """Files a branch may hold beyond the checkpoint's: resume state pushed earlier on purpose, and on
    `main` the manifest (`checkpoints.json`)."""
    if branch == MAIN_BRANCH:
        return lambda path: is_resume_state(path) or path == MANIFEST_FILE
    return is_resume_state


def _is_permanent(err: Exception) -> bool:
    return getattr(getattr(err, "response", None), "status_code", None) in PERMANENT_STATUSES


def publish_checkpoint_to_hub(
    staged: Path,
    repo_id: str,
    branches: list[str],
    *,
    retries: int = 3,
    retry_wait: float = 10.0,
    sleep=time.sleep,
) -> list[BranchResult]:
    """Publish a staged folder to each branch, verified; up to `retries` retries of a failure that may pass
    (not a permission or not-found answer), waits doubling from `retry_wait`."""
    results = []
    for branch in branches:
        started = time.perf_counter()
        for attempt in range(retries + 1):
            try:
                status = publish_folder(
                    staged,
                    repo_id,
                    branch,
                    commit_message=f"delphi: {staged.name}" + (" (final)" if branch == MAIN_BRANCH else ""),
                    tolerated_extra=tolerated_on(branch),
                )
                results.append(BranchResult(branch, status, attempt + 1, time.perf_counter() - started))
                log.info("hub %s@%s: %s (attempt %d)", repo_id, branch, status, attempt + 1)
                break
            except Exception as e:  # any failure is retried, then reported; training goes on
                error = describe_error(e)
                if attempt < retries and not _is_permanent(e):
                    wait = min(retry_wait * 2**attempt, MAX_RETRY_WAIT)
                    log.warning("hub %s@%s: %s; retrying in %.1fs", repo_id, branch, error, wait)
                    sleep(wait)
                    continue
                if _branch_holds(staged, repo_id, branch):  # the commit landed, only its answer was lost
                    log.info("hub %s@%s: uploaded (verified after: %s)", repo_id, branch, error)
                    results.append(
                        BranchResult(branch, "uploaded", attempt + 1, time.perf_counter() - started)
                    )
                else:
                    log.error(
                        "hub %s@%s: failed after %d attempt(s): %s", repo_id, branch, attempt + 1, error
                    )
                    results.append(
                        BranchResult(branch, "failed", attempt + 1, time.perf_counter() - started, error)
                    )
                break
    return results


def _branch_holds(staged: Path, repo_id: str, branch: str) -> bool:
    """True if `branch` already holds exactly the staged files (checked file by file); False if it does not
    or the hub cannot say."""
    try:
        remote = remote_files(repo_id, branch)
    except Exception:  # the hub is still failing: the branch stays "failed"
        return False
    return not compare_with_remote(local_files(staged), remote, tolerated_extra=tolerated_on(branch))


def summarize(
    repo_id: str,
    results: list[BranchResult],
    *,
    offline: bool = False,
    on_hub: list[str] | None = None,
    manifest: str | None = None,
    removed: list[str] | None = None,
) -> dict:
    """What this run published (verified) and what failed, per branch (the last result of a branch wins);
    `on_hub`: every branch the repo holds afterwards; `manifest`: how updating `checkpoints.json` went;
    `removed`: branches deleted because they held another run (`--overwrite`)."""
    last = {r.branch: r for r in results}
    return {
        "on_hub": on_hub,
        "manifest": manifest,
        "removed": removed or [],
        "repo": repo_id,
        "offline": offline,
        "published": [b for b, r in last.items() if r.status != "failed"],
        "uploaded": [b for b, r in last.items() if r.status == "uploaded"],
        "unchanged": [b for b, r in last.items() if r.status == "unchanged"],
        "failed": {b: r.error for b, r in last.items() if r.status == "failed"},
        "results": [asdict(r) for r in results],
    }


def format_summary(summary: dict, run_dir: str | Path) -> str:
    repo = summary["repo"]
    if summary["offline"]:
        return f"hub {repo}: trained offline, nothing uploaded; publish with `delphi push {run_dir} --repo {repo}`"
    on_hub = summary.get("on_hub")
    if on_hub is None:  # the hub could not list its branches: what this run published
        lines = [
            f"hub {repo}: {len(summary['published'])} branch(es) published: {', '.join(summary['published'])}"
        ]
    else:
        lines = [f"hub {repo}: {len(on_hub)} branch(es) on the hub: {', '.join(on_hub)}"]
        others = [b for b in on_hub if b not in summary["published"]]
        if others:
            lines.append(f"hub {repo}: not published by this run: {', '.join(others)}")
    if summary.get("removed"):
        lines.append(f"hub {repo}: removed (another run's): {', '.join(summary['removed'])}")
    manifest = summary.get("manifest")
    if manifest and manifest not in ("updated", "unchanged"):
        lines.append(f"hub {repo}: {MANIFEST_FILE} on main could not be updated: {manifest}")
    if summary["failed"]:
        lines.append(f"hub {repo}: {len(summary['failed'])} failed:")
        lines += [f"  {branch}: {error}" for branch, error in summary["failed"].items()]
        lines.append(f"retry with `delphi push {run_dir} --repo {repo}`")
    return "\n".join(lines)


class HubUploader:
    """A worker thread that publishes checkpoints from a bounded queue while training continues.

    After each upload that leaves the queue empty, it records what was published in the manifest
    (`checkpoints.json` on `main`), so bursts of checkpoints cost one manifest commit.
    """

    def __init__(
        self,
        repo_id: str,
        run_dir: str | Path,
        *,
        include_optimizer: bool = False,
        retries: int = 3,
        retry_wait: float = 10.0,
        max_pending: int = 4,
        repo_run: RepoRun | None = None,
    ):
        self.repo_id = repo_id
        self.run_dir = Path(run_dir)
        self.include_optimizer = include_optimizer
        self.retries, self.retry_wait = retries, retry_wait
        self.repo_run = (
            repo_run  # what the repo held (None: not checked); with --overwrite, replaced at close
        )
        # this run replaces the repo's previous one: its first manifest starts afresh
        self.replace = bool(repo_run and repo_run.replaces)
        self.staging_root = self.run_dir / HUB_STAGING_DIR
        shutil.rmtree(self.staging_root, ignore_errors=True)  # left by a run that was killed
        self.results: list[BranchResult] = []
        self.manifest: str | None = None
        self._unrecorded: dict[str, Path] = {}
        self._queue: queue.Queue = queue.Queue(maxsize=max_pending)
        self._thread = threading.Thread(target=self._work, name="delphi-hub-upload", daemon=True)
        self._thread.start()

    def submit(self, folder: Path, *, is_final: bool) -> None:
        """Stage `folder` now and queue its upload (waits while `max_pending` uploads are queued)."""
        step = parse_step(Path(folder).name)
        branches = [branch_name(step)] + ([MAIN_BRANCH] if is_final else [])
        try:
            staged = stage_checkpoint(
                folder,
                self.staging_root,
                self.repo_id,
                include_optimizer=self.include_optimizer,
                is_final=is_final,
            )
        except Exception as e:  # a local problem (disk full, ...) must not stop training either
            log.error("hub %s: could not stage %s: %s", self.repo_id, folder, describe_error(e))
            self.results += [
                BranchResult(b, "failed", 0, 0.0, f"staging: {describe_error(e)}") for b in branches
            ]
            return
        if self._queue.full():
            log.info(
                "hub %s: %d uploads pending; waiting for one to finish", self.repo_id, self._queue.qsize()
            )
        self._queue.put((staged, branches))

    def _work(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                self._record()
                return
            staged, branches = job
            try:
                results = publish_checkpoint_to_hub(
                    staged, self.repo_id, branches, retries=self.retries, retry_wait=self.retry_wait
                )
                self.results += results
                if results and results[0].status != "failed":
                    self._unrecorded[results[0].branch] = self.run_dir / staged.name
            except BaseException as e:  # never let the worker die silently
                self.results += [BranchResult(b, "failed", 0, 0.0, describe_error(e)) for b in branches]
            finally:
                shutil.rmtree(staged, ignore_errors=True)
            if self._queue.empty():
                self._record()

    def _record(self) -> None:
        """Add what was published since the last time to the manifest; a failure is logged and retried
        with the next checkpoint (and reported in the summary if it never succeeds)."""
        if not self._unrecorded:
            return
        try:
            self.manifest = update_manifest(self.repo_id, self._unrecorded, replace=self.replace)
            self._unrecorded, self.replace = {}, False
        except Exception as e:  # the checkpoints are on the hub; only their list is behind
            self.manifest = describe_error(e)
            log.warning("hub %s: could not update %s: %s", self.repo_id, MANIFEST_FILE, self.manifest)

    def close(self) -> dict:
        """Wait for every queued upload to finish; return the summary."""
        self._queue.put(None)
        self._thread.join()
        shutil.rmtree(self.staging_root, ignore_errors=True)
        return summarize(
            self.repo_id, self.results, on_hub=branches_on_hub(self.repo_id), manifest=self.manifest
        )


def check_hub(recipe, *, overwrite: bool = False):
    """Before training: can the run's hub repo be reached (it is created if needed), and does it hold no
    other run (`delphi.hub.repo_run`; with `overwrite` it is replaced)?

    A `RepoRun`: publish while training. None: no hub repo, or unreachable with `hub.offline_ok`, so train
    offline and publish later. Unreachable without it, or holding another run: a DelphiError, and nothing
    is trained.
    """
    hub = recipe.hub
    if not hub.repo:
        return None
    try:
        ensure_repo(hub.repo, private=hub.private, advice="")  # the advice for a training run is below
    except DelphiError as e:
        if not hub.offline_ok:
            raise DelphiError(
                f"{e}. Nothing was trained. Set hub.offline_ok: true to train offline and publish later "
                f"with `delphi push {recipe.out_dir} --repo {hub.repo}`"
            ) from e
        log.warning("%s; training offline (hub.offline_ok): publish later with `delphi push %s --repo %s`",
                    e, recipe.out_dir, hub.repo)  # fmt: skip
        return None
    try:
        return check_repo_run(hub.repo, recipe.to_dict(), overwrite=overwrite, run_dir=str(recipe.out_dir))
    except DelphiError as e:
        raise DelphiError(f"{e}. Nothing was trained") from e


def open_hub_uploader(recipe, repo_run=None) -> HubUploader:
    """Start the background uploader of a run whose hub repo `check_hub` found reachable (main process)."""
    hub = recipe.hub
    log.info("hub %s: each checkpoint goes to its branch step{N}, the final model to main", hub.repo)
    uploader = HubUploader(
        hub.repo,
        recipe.out_dir,
        include_optimizer=hub.push_optimizer,
        retries=hub.retries,
        retry_wait=hub.retry_wait,
        repo_run=repo_run,
    )
    return uploader


def close_hub_uploader(uploader: HubUploader | None, recipe, *, main_process: bool = True) -> dict | None:
    """Wait for the uploads, delete a replaced run's branches this run does not have, log and return the
    summary (None without a hub repo, or off the main process)."""
    if not recipe.hub.repo or not main_process:
        return None
    if uploader is None:
        summary = summarize(recipe.hub.repo, [], offline=True)
    else:
        log.info("hub %s: waiting for uploads to finish", recipe.hub.repo)
        summary = uploader.close()
        summary["removed"] = _remove_replaced(uploader, recipe, summary)
        if summary["removed"]:
            summary["on_hub"] = branches_on_hub(recipe.hub.repo)
    for line in format_summary(summary, recipe.out_dir).splitlines():
        (log.warning if summary["failed"] or summary["offline"] else log.info)("%s", line)
    return summary


def _remove_replaced(uploader: HubUploader, recipe, summary: dict) -> list[str]:
    """With --overwrite: what of the replaced run goes once this run has uploaded (`replace_old_run`). Only
    when this session published a checkpoint is the out_dir this run's (else it may hold the replaced run,
    moved back); then the branches of its earlier sessions (a resumed --overwrite run) are its own: kept."""
    repo_run = uploader.repo_run
    published = set(summary["published"])
    if repo_run is None or not repo_run.replaces or not published:
        return []
    earlier = {branch_name(step) for step, _ in list_checkpoints(recipe.out_dir)} - set(summary["failed"])
    try:
        return replace_old_run(recipe.hub.repo, repo_run, published | earlier)
    except Exception as e:  # the new run is published; the old branches are named for removal by hand
        log.error(
            "hub %s: could not delete the replaced run's branches: %s", recipe.hub.repo, describe_error(e)
        )
        return []


def download_checkpoint(ref: str, out_dir: Path) -> Path:
    """Download hub branch "org/name@step400" into `{out_dir}/.hub-resume/` and check it can be resumed from.

    In the out_dir (not only this machine's hub cache) because every process of the run reads it, on
    every machine. It is removed once the run has its own first checkpoint, when the run ends, and when
    the check fails (`drop_hub_resume`), so nothing of it stays behind.
    """
    repo_id, revision = parse_hub_ref(ref)
    dest = Path(out_dir) / HUB_RESUME_DIR / revision  # main process only; the others read it (shared out_dir)
    if dest.exists():
        shutil.rmtree(dest)
    log.info("downloading %s to resume from it", ref)
    try:
        download_revision(repo_id, revision, dest)
        if not is_complete(dest):
            raise DelphiError(f"resume {ref!r}: that branch is not a delphi checkpoint (no checkpoint.json)")
        if not has_resume_state(dest):
            raise DelphiError(
                f"resume {ref!r}: that branch has no optimizer state; only runs with hub.push_optimizer: true "
                "(or `delphi push --include-optimizer`) publish what resuming needs"
            )
    except BaseException:
        drop_hub_resume(out_dir)
        raise
    return dest


def drop_hub_resume(out_dir: str | Path) -> None:
    """Remove what `download_checkpoint` put in the out_dir (nothing else)."""
    shutil.rmtree(Path(out_dir) / HUB_RESUME_DIR, ignore_errors=True)
