"""A small hub-compatible HTTP server for tests: the routes `huggingface_hub` (2.x) calls, on 127.0.0.1.

Also listing repos (`list_models(author=, search=)`) and deleting branches. It keeps git-like state per repo (branches pointing at commits, each commit a full file list), stores
file contents by sha256 in a folder, speaks the LFS batch + PUT protocol, and answers tree,
paths-info, repo info and resolve (HEAD metadata headers, GET with Range) the way the client expects.
It checks `Authorization: Bearer <token>` for every write and for reads of private repos.

Fault injection, for tests of retries: `fail(route, times, mode)` makes the next `times` requests of
a route (optionally only those whose path contains `match`) answer 500, drop the connection, or
("lost") do the work and then drop the connection, so the client never hears that it succeeded;
`tamper(path)` makes the next commit store different bytes for `path` (a silent corruption the
uploader must detect). `requests` logs every (method, route, path, status).

Run alone: `python tests/hub_server.py [PORT]` (token "hf_test").
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import re
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

LFS_EXTENSIONS = (".safetensors", ".bin", ".pt", ".pth", ".parquet", ".arrow", ".npy", ".gz", ".zip")
LFS_MIN_SIZE = 1_000_000  # the real hub also stores large text files in LFS
GITATTRIBUTES = (
    b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n*.parquet filter=lfs diff=lfs merge=lfs -text\n"
)


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def lfs_pointer(sha256: str, size: int) -> bytes:
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


@dataclass
class Entry:
    """One file of one commit."""

    sha256: str
    size: int
    lfs: bool

    git_oid: str = ""  # git blob sha1 of a regular file's bytes

    def blob_id(self) -> str:
        return git_blob_sha1(lfs_pointer(self.sha256, self.size)) if self.lfs else self.git_oid


@dataclass
class Repo:
    repo_type: str
    repo_id: str
    private: bool
    branches: dict[str, str] = field(default_factory=dict)  # name -> commit id
    commits: dict[str, dict[str, Entry]] = field(default_factory=dict)  # commit id -> {path: Entry}


class HubError(Exception):
    def __init__(self, status: int, message: str, code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.code = status, message, code


@dataclass
class _Fault:
    route: str
    remaining: int | None  # None: forever
    mode: str  # "500" | "drop" | "lost"
    match: str


class FakeHub:
    """The state and logic of the fake hub, independent of HTTP."""

    def __init__(self, storage: Path, token: str):
        self.storage = Path(storage)
        self.storage.mkdir(parents=True, exist_ok=True)
        self.token = token
        self.repos: dict[tuple[str, str], Repo] = {}
        self.lock = threading.RLock()
        self.faults: list[_Fault] = []
        self.tampered: set[str] = set()
        self.requests: list[tuple[str, str, str, int]] = []

    # ---- test controls ----

    def fail(self, route: str, times: int | None = 1, mode: str = "500", match: str = "") -> None:
        """Make the next `times` requests of `route` (whose path contains `match`) fail; None = forever.
        `mode`: an HTTP status to answer with ("500", "403", ...), "drop" the connection, or "lost": do the
        work and drop the answer."""
        if not (mode in ("drop", "lost") or (mode.isdigit() and 400 <= int(mode) < 600)):
            raise ValueError(
                f"mode must be an HTTP error status such as '500', or 'drop' or 'lost', got {mode!r}"
            )
        with self.lock:
            self.faults.append(_Fault(route, times, mode, match))

    def clear_faults(self) -> None:
        with self.lock:
            self.faults.clear()
            self.tampered.clear()

    def tamper(self, path: str) -> None:
        """The next commit that adds `path` stores different bytes than it was sent."""
        with self.lock:
            self.tampered.add(path)

    def take_fault(self, route: str, path: str) -> str | None:
        with self.lock:
            for fault in self.faults:
                if fault.route == route and fault.match in path and fault.remaining != 0:
                    if fault.remaining is not None:
                        fault.remaining -= 1
                    return fault.mode
        return None

    def count(self, route: str, method: str | None = None) -> int:
        return sum(1 for m, r, _, _ in self.requests if r == route and (method is None or m == method))

    # ---- storage ----

    def blob_path(self, sha256: str) -> Path:
        return self.storage / "blobs" / sha256

    def store_blob(self, data: bytes) -> str:
        sha = hashlib.sha256(data).hexdigest()
        path = self.blob_path(sha)
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f"{sha}.{uuid.uuid4().hex}.tmp")
            tmp.write_bytes(data)
            tmp.replace(path)
        return sha

    def files(self, repo: Repo, revision: str) -> tuple[str, dict[str, Entry]]:
        commit = repo.branches.get(revision) or (revision if revision in repo.commits else None)
        if commit is None:
            raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        return commit, repo.commits[commit]

    # ---- repos, branches, commits ----

    def create_repo(self, repo_type: str, repo_id: str, private: bool) -> Repo:
        with self.lock:
            key = (repo_type, repo_id)
            if key in self.repos:
                raise HubError(409, "You already created this repo")
            repo = Repo(repo_type, repo_id, private)
            sha = self.store_blob(GITATTRIBUTES)
            first = {".gitattributes": Entry(sha, len(GITATTRIBUTES), False, git_blob_sha1(GITATTRIBUTES))}
            commit = uuid.uuid4().hex + uuid.uuid4().hex[:8]
            repo.commits[commit] = first
            repo.branches["main"] = commit
            self.repos[key] = repo
            return repo

    def create_branch(self, repo: Repo, branch: str, starting_point: str | None) -> None:
        with self.lock:
            if branch in repo.branches:
                raise HubError(409, f"Branch {branch} already exists")
            commit, _ = self.files(repo, starting_point or "main")
            repo.branches[branch] = commit

    def delete_branch(self, repo: Repo, branch: str) -> None:
        with self.lock:
            if branch == "main":
                raise HubError(403, "You cannot delete the default branch")
            if branch not in repo.branches:
                raise HubError(404, f"Invalid rev id: {branch}", "RevisionNotFound")
            del repo.branches[branch]

    def commit(self, repo: Repo, revision: str, lines: list[dict]) -> str:
        with self.lock:
            _, current = self.files(repo, revision)
            files = dict(current)
            for line in lines:
                key, value = line.get("key"), line.get("value", {})
                if key == "header":
                    continue
                path = value["path"]
                if key == "file":
                    data = base64.b64decode(value["content"])
                    if path in self.tampered:
                        self.tampered.discard(path)
                        data = data + b"\n"
                    files[path] = Entry(self.store_blob(data), len(data), False, git_blob_sha1(data))
                elif key == "lfsFile":
                    if not self.blob_path(value["oid"]).exists():
                        raise HubError(400, f"LFS object {value['oid']} of {path} was never uploaded")
                    if path in self.tampered:  # point at other (existing) bytes: a silent corruption
                        self.tampered.discard(path)
                        data = self.blob_path(value["oid"]).read_bytes()[:-1]
                        files[path] = Entry(self.store_blob(data), len(data), True)
                    else:
                        files[path] = Entry(value["oid"], int(value["size"]), True)
                elif key == "deletedFile":
                    if path not in files:
                        raise HubError(404, f"A file with this name doesn't exist: {path}", "EntryNotFound")
                    del files[path]
                elif key == "deletedFolder":
                    prefix = path.rstrip("/") + "/"
                    files = {p: e for p, e in files.items() if not p.startswith(prefix)}
                else:
                    raise HubError(400, f"unsupported commit operation {key!r}")
            commit = hashlib.sha1(uuid.uuid4().bytes).hexdigest()
            repo.commits[commit] = files
            repo.branches[revision] = commit
            return commit


def _tree_entry(path: str, entry: Entry) -> dict:
    out = {"type": "file", "oid": entry.blob_id(), "size": entry.size, "path": path}
    if entry.lfs:
        out["lfs"] = {
            "oid": entry.sha256,
            "size": entry.size,
            "pointerSize": len(lfs_pointer(entry.sha256, entry.size)),
        }
    return out


def _folders(files: dict[str, Entry]) -> set[str]:
    return {"/".join(p.split("/")[:i]) for p in files for i in range(1, p.count("/") + 1)}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    hub: FakeHub  # set on the subclass made by `serve`

    def log_message(self, format, *args):  # quiet
        pass

    # ---- plumbing ----

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(chunks)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _send(self, status: int, body: bytes = b"", headers: dict | None = None, head: bool = False) -> None:
        self.send_response(status)
        headers = {"Content-Type": "application/json", **(headers or {})}
        headers.setdefault("Content-Length", str(len(body)))
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()
        if not head and self.command != "HEAD":  # a HEAD answer has headers only, even for errors
            self.wfile.write(body)
        self._status = status

    def _json(self, status: int, data, headers: dict | None = None) -> None:
        self._send(status, json.dumps(data).encode(), headers)

    def _authorized(self) -> bool:
        return self.headers.get("Authorization", "") == f"Bearer {self.hub.token}"

    def _repo(self, repo_type: str, repo_id: str, *, write: bool = False) -> Repo:
        repo = self.hub.repos.get((repo_type, repo_id))
        if write and not self._authorized():
            raise HubError(401, "Invalid credentials in Authorization header")
        if repo is None or (repo.private and not self._authorized()):
            raise HubError(404, "Repository not found", "RepoNotFound")
        return repo

    def do_GET(self):
        self._dispatch("GET")

    def do_HEAD(self):
        self._dispatch("HEAD")

    def do_POST(self):
        self._dispatch("POST")

    def do_PUT(self):
        self._dispatch("PUT")

    def do_DELETE(self):
        self._dispatch("DELETE")

    def _dispatch(self, method: str) -> None:
        self._status = 0
        url = urlsplit(self.path)
        route, handler, params = self._route(method, url.path)
        body = self._body() if method in ("POST", "PUT") else b""
        fault = self.hub.take_fault(route, url.path)
        try:
            if fault == "drop":
                self.close_connection = True
                self.connection.shutdown(2)  # the client sees the connection reset, no answer
                self._status = -1
            elif fault is not None and fault.isdigit():
                self._json(int(fault), {"error": "injected failure"})
            elif fault == "lost" and handler is not None:
                answer, self.wfile = self.wfile, io.BytesIO()  # the work is done, the answer goes nowhere
                try:
                    handler(method, body, parse_qs(url.query), *params)
                finally:
                    self.wfile = answer
                self.close_connection = True
                self.connection.shutdown(2)
                self._status = -2
            elif handler is None:
                raise HubError(404, f"no route for {method} {url.path}")
            else:
                handler(method, body, parse_qs(url.query), *params)
        except HubError as e:
            headers = {"X-Error-Code": e.code} if e.code else {}
            headers["X-Error-Message"] = e.message
            self._json(e.status, {"error": e.message}, headers)
        finally:
            self.hub.requests.append((method, route, url.path, self._status))

    _ROUTES = [
        ("POST", "create", r"/api/repos/create"),
        ("POST", "validate-yaml", r"/api/validate-yaml"),
        ("GET", "whoami", r"/api/whoami-v2"),
        ("GET", "list", r"/api/(models|datasets)"),
        ("POST", "branch", r"/api/(models|datasets)/([^/]+/[^/]+)/branch/([^/]+)"),
        ("DELETE", "delete-branch", r"/api/(models|datasets)/([^/]+/[^/]+)/branch/([^/]+)"),
        ("GET", "refs", r"/api/(models|datasets)/([^/]+/[^/]+)/refs"),
        ("POST", "preupload", r"/api/(models|datasets)/([^/]+/[^/]+)/preupload/([^/]+)"),
        ("POST", "commit", r"/api/(models|datasets)/([^/]+/[^/]+)/commit/([^/]+)"),
        ("GET", "tree", r"/api/(models|datasets)/([^/]+/[^/]+)/tree/([^/]+)(?:/(.*))?"),
        ("POST", "paths-info", r"/api/(models|datasets)/([^/]+/[^/]+)/paths-info/([^/]+)"),
        ("GET", "info", r"/api/(models|datasets)/([^/]+/[^/]+)(?:/revision/([^/]+))?"),
        ("POST", "lfs-batch", r"/(datasets/)?([^/]+/[^/]+)\.git/info/lfs/objects/batch"),
        ("PUT", "lfs-upload", r"/lfs-upload/([0-9a-f]{64})"),
        ("GET", "resolve", r"/(datasets/)?([^/]+/[^/]+)/resolve/([^/]+)/(.+)"),
        ("HEAD", "resolve", r"/(datasets/)?([^/]+/[^/]+)/resolve/([^/]+)/(.+)"),
    ]

    def _route(self, method: str, path: str):
        for m, name, pattern in self._ROUTES:
            match = re.fullmatch(pattern, path)
            if match and m == method:
                groups = [unquote(g) if g is not None else None for g in match.groups()]
                return name, getattr(self, "_" + name.replace("-", "_")), groups
        return "unknown", None, []

    @staticmethod
    def _type(plural_or_prefix: str | None) -> str:
        return "dataset" if plural_or_prefix and plural_or_prefix.startswith("dataset") else "model"

    # ---- routes ----

    def _whoami(self, method, body, query):
        if not self._authorized():
            raise HubError(401, "Invalid credentials in Authorization header")
        self._json(200, {"type": "user", "name": "tester", "orgs": [], "auth": {}})

    def _validate_yaml(self, method, body, query):
        self._json(200, {})

    def _create(self, method, body, query):
        if not self._authorized():
            raise HubError(401, "Invalid credentials in Authorization header")
        data = json.loads(body or b"{}")
        repo_id = f"{data.get('organization') or 'tester'}/{data['name']}"
        repo_type = data.get("type") or "model"
        private = bool(data.get("private")) or data.get("visibility") == "private"
        prefix = "" if repo_type == "model" else f"{repo_type}s/"
        url = f"http://{self.headers['Host']}/{prefix}{repo_id}"
        try:
            self.hub.create_repo(repo_type, repo_id, private)
        except HubError as e:  # the hub names the existing repo's url in its 409 answer
            self._json(e.status, {"error": e.message, "url": url}, {"X-Error-Message": e.message})
            return
        self._json(200, {"url": url, "name": repo_id})

    def _branch(self, method, body, query, plural, repo_id, branch):
        repo = self._repo(self._type(plural), repo_id, write=True)
        self.hub.create_branch(repo, branch, json.loads(body or b"{}").get("startingPoint"))
        self._json(200, {})

    def _delete_branch(self, method, body, query, plural, repo_id, branch):
        repo = self._repo(self._type(plural), repo_id, write=True)
        self.hub.delete_branch(repo, branch)
        self._json(200, {})

    def _list(self, method, body, query, plural):
        """Repos of a type, filtered as the hub does by `author` (owner) and `search` (substring of the id)."""
        author, search = query.get("author", [""])[0], query.get("search", [""])[0]
        out = [
            {"_id": repo.repo_id, "id": repo.repo_id, "private": repo.private, "tags": []}
            for (kind, _), repo in sorted(self.hub.repos.items())
            if kind == self._type(plural)
            and (not author or repo.repo_id.split("/")[0] == author)
            and search.lower() in repo.repo_id.lower()
            and (not repo.private or self._authorized())
        ]
        self._json(200, out)

    def _refs(self, method, body, query, plural, repo_id):
        repo = self._repo(self._type(plural), repo_id)
        branches = [
            {"name": n, "ref": f"refs/heads/{n}", "targetCommit": c} for n, c in repo.branches.items()
        ]
        self._json(200, {"branches": branches, "tags": [], "converts": []})

    def _preupload(self, method, body, query, plural, repo_id, revision):
        repo = self._repo(self._type(plural), repo_id, write=True)
        _, files = self.hub.files(repo, revision)
        out = []
        for f in json.loads(body)["files"]:
            sample = base64.b64decode(f["sample"])
            lfs = f["path"].endswith(LFS_EXTENSIONS) or f["size"] >= LFS_MIN_SIZE or b"\0" in sample
            entry = files.get(f["path"])
            oid = None
            if entry is not None:
                oid = entry.sha256 if entry.lfs else entry.blob_id()
            out.append(
                {
                    "path": f["path"],
                    "uploadMode": "lfs" if lfs else "regular",
                    "shouldIgnore": False,
                    "oid": oid,
                }
            )
        self._json(200, {"files": out, "commitOid": self.hub.files(repo, revision)[0]})

    def _lfs_batch(self, method, body, query, prefix, repo_id):
        self._repo(self._type(prefix), repo_id, write=True)
        objects = []
        for obj in json.loads(body)["objects"]:
            item = {"oid": obj["oid"], "size": obj["size"]}
            if not self.hub.blob_path(obj["oid"]).exists():
                href = f"http://{self.headers['Host']}/lfs-upload/{obj['oid']}"
                item["actions"] = {"upload": {"href": href, "header": {}}}
            objects.append(item)
        self._json(
            200, {"transfer": "basic", "objects": objects}, {"Content-Type": "application/vnd.git-lfs+json"}
        )

    def _lfs_upload(self, method, body, query, oid):
        if hashlib.sha256(body).hexdigest() != oid:
            raise HubError(400, f"uploaded bytes do not hash to {oid}")
        self.hub.store_blob(body)
        self._send(200)

    def _commit(self, method, body, query, plural, repo_id, revision):
        repo = self._repo(self._type(plural), repo_id, write=True)
        lines = [json.loads(line) for line in body.splitlines() if line.strip()]
        commit = self.hub.commit(repo, revision, lines)
        prefix = "" if repo.repo_type == "model" else f"{repo.repo_type}s/"
        url = f"http://{self.headers['Host']}/{prefix}{repo_id}/commit/{commit}"
        self._json(200, {"commitUrl": url, "commitOid": commit, "pullRequestUrl": None, "success": True})

    def _tree(self, method, body, query, plural, repo_id, revision, path):
        repo = self._repo(self._type(plural), repo_id)
        _, files = self.hub.files(repo, revision)
        prefix = (path or "").strip("/")
        recursive = query.get("recursive", ["False"])[0].lower() == "true"
        under = {p: e for p, e in files.items() if not prefix or p.startswith(prefix + "/")}
        if prefix and not under:
            raise HubError(404, f"{prefix} does not exist", "EntryNotFound")
        depth = prefix.count("/") + 1 if prefix else 0
        out = [
            {"type": "directory", "oid": hashlib.sha1(d.encode()).hexdigest(), "size": 0, "path": d}
            for d in sorted(_folders(under))
            if (not prefix or d.startswith(prefix + "/")) and (recursive or d.count("/") == depth)
        ]
        out += [_tree_entry(p, e) for p, e in sorted(under.items()) if recursive or p.count("/") == depth]
        self._json(200, out)

    def _paths_info(self, method, body, query, plural, repo_id, revision):
        repo = self._repo(self._type(plural), repo_id)
        _, files = self.hub.files(repo, revision)
        form = parse_qs(body.decode())
        out = []
        folders = _folders(files)
        for path in form.get("paths", []):
            path = path.strip("/")
            if path in files:
                out.append(_tree_entry(path, files[path]))
            elif path in folders or path == "":
                out.append(
                    {
                        "type": "directory",
                        "oid": hashlib.sha1(path.encode()).hexdigest(),
                        "size": 0,
                        "path": path,
                    }
                )
        self._json(200, out)

    def _info(self, method, body, query, plural, repo_id, revision):
        repo = self._repo(self._type(plural), repo_id)
        commit, files = self.hub.files(repo, revision or "main")
        siblings = [{"rfilename": p, "size": e.size} for p, e in sorted(files.items())]
        self._json(
            200,
            {
                "_id": repo_id,
                "id": repo_id,
                "sha": commit,
                "private": repo.private,
                "disabled": False,
                "gated": False,
                "downloads": 0,
                "likes": 0,
                "tags": [],
                "lastModified": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime()),
                "siblings": siblings,
            },
        )

    def _resolve(self, method, body, query, prefix, repo_id, revision, path):
        repo = self._repo(self._type(prefix), repo_id)
        commit, files = self.hub.files(repo, revision)
        entry = files.get(path)
        if entry is None:
            raise HubError(404, f"Entry not found: {path}", "EntryNotFound")
        headers = {
            "X-Repo-Commit": commit,
            "ETag": f'"{entry.sha256 if entry.lfs else entry.blob_id()}"',
            "Accept-Ranges": "bytes",
            "Content-Type": "application/octet-stream",
        }
        if entry.lfs:
            headers["X-Linked-Etag"] = f'"{entry.sha256}"'
            headers["X-Linked-Size"] = str(entry.size)
        data = self.hub.blob_path(entry.sha256).read_bytes()
        status = 200
        ranged = re.fullmatch(r"bytes=(\d*)-(\d*)", self.headers.get("Range", ""))
        if ranged and method == "GET":
            start = int(ranged.group(1) or 0)
            end = min(int(ranged.group(2)) if ranged.group(2) else len(data) - 1, len(data) - 1)
            headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
            data, status = data[start : end + 1], 206
        headers["Content-Length"] = str(len(data))
        self._send(status, data, headers, head=method == "HEAD")


class HubServer:
    """A running fake hub on 127.0.0.1; `url` is what HF_ENDPOINT should be."""

    def __init__(self, storage: Path, token: str, port: int = 0):
        self.hub = FakeHub(storage, token)
        handler = type("Handler", (_Handler,), {"hub": self.hub})
        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True, name="fake-hub")

    def __enter__(self) -> HubServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    # conveniences for tests
    def use_in_this_process(self, home: Path, token: str) -> None:
        """Point this process's huggingface_hub at the server, for good (benchmarks; tests use conftest's
        `hub_server` fixture, which undoes it): HF_ENDPOINT, no Xet, a token, a fresh HF_HOME, online."""
        import importlib
        import os

        import huggingface_hub.constants

        os.environ.pop("HF_HUB_OFFLINE", None)
        os.environ.update(
            HF_ENDPOINT=self.url,
            HF_HUB_DISABLE_XET="1",
            HF_TOKEN=token,
            HF_HOME=str(home),
            HF_HUB_DISABLE_PROGRESS_BARS="1",
        )
        importlib.reload(huggingface_hub.constants)  # the endpoint and cache paths are read at import time

    def fail(self, route: str, times: int | None = 1, mode: str = "500", match: str = "") -> None:
        self.hub.fail(route, times, mode, match)

    def branches(self, repo_id: str, repo_type: str = "model") -> set[str]:
        return set(self.hub.repos[(repo_type, repo_id)].branches)

    def files(self, repo_id: str, revision: str = "main", repo_type: str = "model") -> dict[str, bytes]:
        """{path: bytes} of a branch, as stored."""
        repo = self.hub.repos[(repo_type, repo_id)]
        _, entries = self.hub.files(repo, revision)
        return {p: self.hub.blob_path(e.sha256).read_bytes() for p, e in entries.items()}


if __name__ == "__main__":
    import sys
    import tempfile

    with HubServer(Path(tempfile.mkdtemp()), "hf_test", int(sys.argv[1]) if len(sys.argv) > 1 else 0) as s:
        print(f"fake hub at {s.url} (token hf_test)", flush=True)
        s.thread.join()
