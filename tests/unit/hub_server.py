"""A stand-in Hugging Face Hub over real HTTP on 127.0.0.1, for download tests without the internet.

The real `huggingface_hub` client talks to it through `HF_ENDPOINT`, so tests exercise the same
requests and headers a hub download makes:

- `GET /api/models/{repo}[/revision/{rev}]`: `sha` and `siblings` (`?blobs=true` adds sizes/LFS).
- `GET /api/models/{repo}/tree/{rev}[/{path}][?recursive=true]`: the file/folder listing.
- `HEAD|GET /{repo}/resolve/{rev}/{path}`: small git files answer 200 with `ETag`,
  `Content-Length` and `X-Repo-Commit`; LFS files (weights) answer 302 to a second server (the
  "CDN", another origin) with `X-Linked-Size` and `X-Linked-Etag`, as huggingface.co does.
- Byte ranges (`Range: bytes=N-`), which the client uses to resume a dropped download.
- Errors carry `X-Error-Code` (`RepoNotFound`, `RevisionNotFound`, `EntryNotFound`), which the
  client turns into its typed exceptions.

Repos are directories on disk, added as commits (several per repo; a ref such as `main` follows
the latest). Faults: `cut()` promises a file's full length and closes after `keep` bytes on every
request, so even resumed requests fail; `stall()` sends `keep` bytes and then hangs until `heal()`,
so a test can kill the downloader mid-file.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from urllib.parse import parse_qs, unquote, urlencode, urlsplit

# Stored in git LFS by the hub's default .gitattributes (the ones a model repo holds).
LFS_SUFFIXES = (
    ".safetensors",
    ".bin",
    ".h5",
    ".msgpack",
    ".onnx",
    ".ot",
    ".model",
    ".pt",
    ".pth",
    ".ckpt",
    ".tflite",
    ".mlmodel",
)
CHUNK = 64 * 1024
RANGE = re.compile(r"bytes=(\d+)-(\d*)")


def _git_oid(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data, usedforsecurity=False).hexdigest()


@dataclass(frozen=True)
class Blob:
    """One file of one commit: where it lies on disk and the ids the hub reports for it."""

    disk: Path
    size: int
    oid: str  # git object id: of the content, or of the LFS pointer for LFS files
    sha256: str | None = None  # LFS files only
    pointer_size: int | None = None

    @classmethod
    def read(cls, disk: Path, path: str) -> Blob:
        data = disk.read_bytes()
        if not path.endswith(LFS_SUFFIXES):
            return cls(disk, len(data), _git_oid(data))
        sha256 = hashlib.sha256(data).hexdigest()
        pointer = (
            f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {len(data)}\n"
        ).encode()
        return cls(disk, len(data), _git_oid(pointer), sha256, len(pointer))


@dataclass
class Repo:
    commits: dict[str, dict[str, Blob]] = field(default_factory=dict)
    refs: dict[str, str] = field(default_factory=dict)

    def resolve(self, revision: str) -> str | None:
        if revision in self.commits:
            return revision
        return self.refs.get(revision)


@dataclass
class Fault:
    keep: int
    stall: bool
    reached: threading.Event = field(default_factory=threading.Event)


class FakeHub:
    """The hub's state plus its two HTTP servers; use as a context manager."""

    def __init__(self) -> None:
        self.repos: dict[str, Repo] = {}
        self.faults: dict[tuple[str, str], Fault] = {}
        self.requests: list[tuple[str, str]] = []  # (method, path) of every request
        self.sent: list[tuple[str, str]] = []  # (repo, path) of every file body sent
        self._release = threading.Event()
        self._lock = threading.Lock()
        self._api = _Server(self, cdn=False)
        self._cdn = _Server(self, cdn=True)
        self._threads: list[threading.Thread] = []

    @property
    def url(self) -> str:
        """The value for `HF_ENDPOINT`."""
        return self._api.url

    @property
    def cdn_url(self) -> str:
        return self._cdn.url

    def add_commit(self, repo_id: str, directory: Path, ref: str = "main") -> str:
        """Publish `directory`'s files as a new commit of `repo_id`; `ref` moves to it."""
        files = {
            p.relative_to(directory).as_posix(): p
            for p in sorted(directory.rglob("*"))
            if p.is_file()
        }
        tree = {path: Blob.read(disk, path) for path, disk in files.items()}
        repo = self.repos.setdefault(repo_id, Repo())
        digest = hashlib.sha1(usedforsecurity=False)
        digest.update(f"{repo_id}\0{len(repo.commits)}\0".encode())
        for path, blob in tree.items():
            digest.update(f"{path}\0{blob.oid}\0".encode())
        sha = digest.hexdigest()
        repo.commits[sha] = tree
        repo.refs[ref] = sha
        return sha

    def cut(self, repo_id: str, path: str, keep: int) -> None:
        """Every download of `path` stops after `keep` bytes, though its full length is promised."""
        with self._lock:
            self.faults[(repo_id, path)] = Fault(keep, stall=False)

    def stall(self, repo_id: str, path: str, keep: int) -> threading.Event:
        """Downloads of `path` hang after `keep` bytes; the returned event is set once one does."""
        with self._lock:
            fault = self.faults[(repo_id, path)] = Fault(keep, stall=True)
            self._release.clear()
        return fault.reached

    def heal(self) -> None:
        """Serve every file in full again; stalled downloads end (their connections close)."""
        with self._lock:
            self.faults.clear()
            self._release.set()

    def downloads(self, repo_id: str | None = None) -> list[str]:
        """Files whose bodies were sent (in full or not), in order: what clients downloaded."""
        return [path for repo, path in list(self.sent) if repo_id in (None, repo)]

    def __enter__(self) -> FakeHub:
        for server in (self._api, self._cdn):
            thread = threading.Thread(
                target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
            )
            thread.start()
            self._threads.append(thread)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._release.set()
        for server in (self._api, self._cdn):
            server.shutdown()
            server.server_close()
        for thread in self._threads:
            thread.join(timeout=5)

    # -- lookups used by the handler --

    def find_repo(self, rest: str) -> tuple[str, str] | None:
        """Split `{repo_id}{tail}` on the longest known repo id (ids have one or two segments)."""
        for repo_id in sorted(self.repos, key=len, reverse=True):
            if rest == repo_id or rest.startswith(repo_id + "/"):
                return repo_id, rest[len(repo_id) :]
        return None

    def fault(self, repo_id: str, path: str) -> Fault | None:
        with self._lock:
            return self.faults.get((repo_id, path))

    def wait_released(self) -> None:
        self._release.wait(timeout=120)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, hub: FakeHub, cdn: bool) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.hub = hub
        self.cdn = cdn

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: tests read `FakeHub.requests` instead."""

    @property
    def hub(self) -> FakeHub:
        return self.server.hub

    def do_HEAD(self) -> None:
        self._route(head=True)

    def do_GET(self) -> None:
        self._route(head=False)

    def _route(self, head: bool) -> None:
        self.hub.requests.append((self.command, self.path))
        url = urlsplit(self.path)
        query = parse_qs(url.query)
        if self.server.cdn:
            if url.path.startswith("/lfs/"):
                return self._cdn(url.path.removeprefix("/lfs/"), query, head)
            return self._error(404, "EntryNotFound", "no such object", head)
        if url.path.startswith("/api/models/"):
            if head:
                return self._error(405, None, "use GET", head)
            return self._api(url.path.removeprefix("/api/models/"), query)
        # The revision is quoted whole (a branch may contain "/"); the file path keeps its "/".
        found = self.hub.find_repo(url.path.removeprefix("/"))
        match = re.fullmatch(r"/resolve/([^/]+)/(.+)", found[1]) if found else None
        if found is None or match is None:
            return self._error(401, "RepoNotFound", "Repository not found", head)
        return self._resolve(found[0], unquote(match[1]), unquote(match[2]), head)

    # -- /api/models --

    def _api(self, rest: str, query: dict[str, list[str]]) -> None:
        found = self.hub.find_repo(rest)
        if found is None:
            return self._error(401, "RepoNotFound", "Repository not found", False)
        repo_id, tail = found
        repo = self.hub.repos[repo_id]
        parts = tail.removeprefix("/").split("/", 2) if tail else ["revision", "main"]
        if len(parts) < 2 or parts[0] not in ("revision", "tree"):
            return self._error(404, None, "Not found", False)
        parts = [unquote(part) for part in parts]
        sha = repo.resolve(parts[1])
        if sha is None:
            return self._error(404, "RevisionNotFound", f"Invalid rev id: {parts[1]}", False)
        tree = repo.commits[sha]
        if parts[0] == "revision":
            blobs = query.get("blobs", ["false"])[0].lower() == "true"
            return self._json(200, self._info(repo_id, sha, tree, blobs))
        recursive = query.get("recursive", ["False"])[0].lower() == "true"
        listing = self._tree(tree, parts[2] if len(parts) > 2 else "", recursive)
        if listing is None:
            return self._error(404, "EntryNotFound", "Path not found", False, sha)
        return self._json(200, listing)

    @staticmethod
    def _info(repo_id: str, sha: str, tree: dict[str, Blob], blobs: bool) -> dict[str, object]:
        siblings: list[dict[str, object]] = []
        for path, blob in tree.items():
            sibling: dict[str, object] = {"rfilename": path}
            if blobs:
                sibling.update(size=blob.size, blobId=blob.oid)
                if blob.sha256:
                    lfs = {
                        "size": blob.size,
                        "sha256": blob.sha256,
                        "pointerSize": blob.pointer_size,
                    }
                    sibling["lfs"] = lfs
            siblings.append(sibling)
        return {
            "_id": hashlib.sha1(repo_id.encode(), usedforsecurity=False).hexdigest()[:24],
            "id": repo_id,
            "modelId": repo_id,
            "sha": sha,
            "private": False,
            "gated": False,
            "disabled": False,
            "lastModified": "2024-01-01T00:00:00.000Z",
            "tags": ["transformers"],
            "library_name": "transformers",
            "siblings": siblings,
        }

    @staticmethod
    def _tree(tree: dict[str, Blob], under: str, recursive: bool) -> list[dict[str, object]] | None:
        prefix = f"{under.strip('/')}/" if under.strip("/") else ""
        folders: set[str] = set()
        entries: list[dict[str, object]] = []
        for path, blob in tree.items():
            if not path.startswith(prefix):
                continue
            inner = path[len(prefix) :].split("/")
            for depth in range(1, len(inner)):
                if depth == 1 or recursive:
                    folders.add(prefix + "/".join(inner[:depth]))
            if len(inner) > 1 and not recursive:
                continue
            entry: dict[str, object] = {"type": "file", "oid": blob.oid, "size": blob.size}
            entry["path"] = path
            if blob.sha256:
                lfs = {"oid": blob.sha256, "size": blob.size, "pointerSize": blob.pointer_size}
                entry["lfs"] = lfs
            entries.append(entry)
        if prefix and not entries and not folders:
            return None
        dirs = [
            {"type": "directory", "oid": _git_oid(d.encode()), "size": 0, "path": d}
            for d in sorted(folders)
        ]
        return dirs + entries

    # -- /resolve and the CDN --

    def _resolve(self, repo_id: str, revision: str, path: str, head: bool) -> None:
        repo = self.hub.repos[repo_id]
        sha = repo.resolve(revision)
        if sha is None:
            return self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}", head)
        blob = repo.commits[sha].get(path)
        if blob is None:
            return self._error(404, "EntryNotFound", f"{path} does not exist", head, sha)
        common = {"X-Repo-Commit": sha, "ETag": f'"{blob.oid}"'}
        if blob.sha256 is None:
            return self._body(repo_id, path, blob, head, common)
        signed = urlencode({"repo": repo_id, "path": path, "X-Amz-Signature": "stand-in"})
        self.send_response(302)
        for name, value in common.items():
            self.send_header(name, value)
        self.send_header("X-Linked-Size", str(blob.size))
        self.send_header("X-Linked-Etag", f'"{blob.sha256}"')
        self.send_header("Location", f"{self.hub.cdn_url}/lfs/{blob.sha256}?{signed}")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _cdn(self, sha256: str, query: dict[str, list[str]], head: bool) -> None:
        repo_id, path = query.get("repo", [""])[0], query.get("path", [""])[0]
        repo = self.hub.repos.get(repo_id)
        for tree in repo.commits.values() if repo else ():
            blob = tree.get(path)
            if blob is not None and blob.sha256 == sha256:
                return self._body(repo_id, path, blob, head, {"ETag": f'"{sha256}"'})
        return self._error(403, None, "Access Denied", head)

    def _body(
        self, repo_id: str, path: str, blob: Blob, head: bool, headers: dict[str, str]
    ) -> None:
        """Send `blob` (or the requested range of it), honouring a configured fault."""
        start, end = 0, blob.size - 1
        wanted = RANGE.fullmatch(self.headers.get("Range", ""))
        if wanted:
            start = int(wanted[1])
            end = min(int(wanted[2]) if wanted[2] else end, end)
            if start > end and blob.size:
                return self._error(416, None, "Range Not Satisfiable", head)
        length = max(end - start + 1, 0)
        self.send_response(206 if wanted else 200)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(length))
        if wanted:
            self.send_header("Content-Range", f"bytes {start}-{end}/{blob.size}")
        self.end_headers()
        if head:
            return
        self.hub.sent.append((repo_id, path))
        fault = self.hub.fault(repo_id, path)
        send = length if fault is None else max(min(length, fault.keep - start), 0)
        try:
            with blob.disk.open("rb") as fh:
                fh.seek(start)
                while send > 0:
                    chunk = fh.read(min(CHUNK, send))
                    self.wfile.write(chunk)
                    send -= len(chunk)
                self.wfile.flush()
                if fault is not None:
                    fault.reached.set()
                    if fault.stall:
                        self.hub.wait_released()
        except (BrokenPipeError, ConnectionResetError):
            pass
        if fault is not None:
            self.close_connection = True

    # -- plain responses --

    def _json(self, status: int, payload: object) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _error(
        self, status: int, code: str | None, message: str, head: bool, commit: str | None = None
    ) -> None:
        data = b"" if head else json.dumps({"error": message}).encode()
        self.send_response(status)
        if code:
            self.send_header("X-Error-Code", code)
        self.send_header("X-Error-Message", message)
        if commit:
            self.send_header("X-Repo-Commit", commit)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
