"""A small stand-in for the Hugging Face Hub, bound to 127.0.0.1, serving model folders a test made.

It answers the routes that `huggingface_hub` (and through it `transformers`' `from_pretrained`) calls
to download a file, with the headers the client checks:

- `HEAD|GET /{repo_id}/resolve/{revision}/{filename}`: the file, with `X-Repo-Commit` (a fake
  40-hex commit), `ETag` and `Content-Length` (plus `Range` on GET for resumed downloads);
  a missing file is `404` with `X-Error-Code: EntryNotFound`, an unknown repo `RepoNotFound`,
  an unknown revision `RevisionNotFound` (the codes `hf_raise_for_status` maps to its errors).
- `GET /api/models/{repo_id}[/revision/{revision}]`: repo info (`sha`, `siblings`).
- `GET /api/models/{repo_id}/tree/{revision}[/{path}]`: the file listing.

Every request is recorded as `(method, path)` in `hub.requests`; anything else is a plain 404 and is
also listed in `hub.unhandled`, so a test can see when the client starts calling a new route.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

RESOLVE = re.compile(r"^/(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<file>.+)$")
API_TREE = re.compile(r"^/api/models/(?P<repo>[^/]+/[^/]+)/tree/(?P<rev>[^/]+)(?:/(?P<sub>.*))?$")
API_INFO = re.compile(r"^/api/models/(?P<repo>[^/]+/[^/]+)(?:/revision/(?P<rev>[^/]+))?$")


def fake_commit(repo_id: str) -> str:
    """A stable 40-hex commit id for a repo."""
    return hashlib.sha1(f"calm-fake-hub:{repo_id}".encode()).hexdigest()


class FakeHub:
    """Serve `{repo_id: folder}` over HTTP on 127.0.0.1 in a background thread; `stop()` ends it."""

    def __init__(self, repos: dict[str, Path]) -> None:
        self.repos = {repo_id: Path(folder) for repo_id, folder in repos.items()}
        self.commits = {repo_id: fake_commit(repo_id) for repo_id in self.repos}
        self.requests: list[tuple[str, str]] = []
        self.unhandled: list[tuple[str, str]] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        assert self._server is not None, "start() first"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> FakeHub:
        hub = self

        class Handler(_Handler):
            owner = hub

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="fake-hub", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            assert self._thread is not None
            self._thread.join(timeout=10)
            self._server = None

    def __enter__(self) -> FakeHub:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def paths(self, method: str | None = None) -> list[str]:
        with self._lock:
            return [p for m, p in self.requests if method is None or m == method]

    def _record(self, method: str, path: str, handled: bool) -> None:
        with self._lock:
            self.requests.append((method, path))
            if not handled:
                self.unhandled.append((method, path))

    def files(self, repo_id: str) -> list[Path]:
        root = self.repos[repo_id]
        return sorted(p for p in root.rglob("*") if p.is_file())

    @staticmethod
    def etag(path: Path) -> str:
        return hashlib.sha256(path.read_bytes()).hexdigest()


class _Handler(BaseHTTPRequestHandler):
    owner: FakeHub
    protocol_version = "HTTP/1.0"  # one request per connection: nothing lingers after stop()

    def log_message(self, *args: object) -> None:
        """Quiet: the hub records requests itself."""

    def do_HEAD(self) -> None:
        self._route(body=False)

    def do_GET(self) -> None:
        self._route(body=True)

    # -- routing ---------------------------------------------------------------------------------

    def _route(self, body: bool) -> None:
        path = unquote(urlsplit(self.path).path)
        hub = self.owner
        if match := RESOLVE.match(path):
            hub._record(self.command, path, True)
            self._resolve(match["repo"], match["rev"], match["file"], body)
        elif match := API_TREE.match(path):
            hub._record(self.command, path, True)
            self._tree(match["repo"], match["rev"], match["sub"] or "", body)
        elif match := API_INFO.match(path):
            hub._record(self.command, path, True)
            self._info(match["repo"], match["rev"] or "main", body)
        else:
            hub._record(self.command, path, False)
            self._error(404, None, body, "no such route on the fake hub")

    def _repo_revision(self, repo_id: str, revision: str, body: bool) -> str | None:
        """The repo's commit when the repo and revision exist, else answer the error and None."""
        hub = self.owner
        if repo_id not in hub.repos:
            self._error(404, "RepoNotFound", body, f"Repository Not Found for {repo_id}")
            return None
        commit = hub.commits[repo_id]
        if revision not in ("main", commit):
            self._error(404, "RevisionNotFound", body, f"Invalid rev id: {revision}", commit=None)
            return None
        return commit

    def _resolve(self, repo_id: str, revision: str, filename: str, body: bool) -> None:
        commit = self._repo_revision(repo_id, revision, body)
        if commit is None:
            return
        root = self.owner.repos[repo_id].resolve()
        target = (root / filename).resolve()
        if root not in target.parents or not target.is_file():
            self._error(404, "EntryNotFound", body, f"Entry not found: {filename}", commit=commit)
            return
        data = target.read_bytes()
        start, status = 0, 200
        ranged = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range", ""))
        if body and ranged and int(ranged[1]) < len(data):
            start, status = int(ranged[1]), 206
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(data) - start))
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("ETag", f'"{FakeHub.etag(target)}"')
        self.send_header("X-Repo-Commit", commit)
        self.end_headers()
        if body:
            self.wfile.write(data[start:])

    def _listing(self, repo_id: str) -> list[dict]:
        root = self.owner.repos[repo_id]
        return [
            {"type": "file", "path": p.relative_to(root).as_posix(), "size": p.stat().st_size, "oid": FakeHub.etag(p)}
            for p in self.owner.files(repo_id)
        ]

    def _tree(self, repo_id: str, revision: str, sub: str, body: bool) -> None:
        if self._repo_revision(repo_id, revision, body) is None:
            return
        prefix = sub.strip("/")
        entries = [e for e in self._listing(repo_id) if not prefix or e["path"].startswith(prefix + "/")]
        self._json(entries, body)

    def _info(self, repo_id: str, revision: str, body: bool) -> None:
        commit = self._repo_revision(repo_id, revision, body)
        if commit is None:
            return
        siblings = [{"rfilename": e["path"], "size": e["size"]} for e in self._listing(repo_id)]
        self._json(
            {
                "id": repo_id,
                "modelId": repo_id,
                "sha": commit,
                "private": False,
                "gated": False,
                "disabled": False,
                "tags": [],
                "siblings": siblings,
            },
            body,
        )

    # -- responses -------------------------------------------------------------------------------

    def _json(self, payload: object, body: bool) -> None:
        data = json.dumps(payload).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if body:
            self.wfile.write(data)

    def _error(self, status: int, code: str | None, body: bool, message: str, commit: str | None = None) -> None:
        data = json.dumps({"error": message}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if code:
            self.send_header("X-Error-Code", code)
            self.send_header("X-Error-Message", message)
        if commit:
            self.send_header("X-Repo-Commit", commit)
        self.end_headers()
        if body:
            self.wfile.write(data)
