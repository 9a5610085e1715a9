"""Loopback stand-ins for where pretrained weights come from (tests/test_weights.py, test_open_models.py).

`ZooMirror` plays a `TIFFIN_WEIGHTS_MIRROR` (plain files by URL path); `LoopbackHub` plays the
Hugging Face Hub as far as `huggingface_hub.snapshot_download`/`hf_hub_download` (2.4.0) go:
  GET  /api/models/{repo}/revision/{rev}        repo_info: the commit sha of a branch or tag
  GET  /api/models/{repo}/tree/{sha}?recursive=  list_repo_tree: one page (no Link header)
  HEAD /{repo}/resolve/{rev}/{file}             metadata: X-Repo-Commit, ETag, Content-Length
  GET  /{repo}/resolve/{rev}/{file}             the bytes
Errors carry the `X-Error-Code` header `hf_raise_for_status` maps to an exception (RepoNotFound,
RevisionNotFound, GatedRepo, EntryNotFound). No Xet headers, so the client takes the plain HTTP
path; no redirects, so HEAD's ETag and size are the file's own. Both servers bind 127.0.0.1 on a
free port, serve from a daemon thread and count requests, so a test can assert "no request".
"""

from __future__ import annotations

import hashlib
import json
import re
import socket
import threading
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote

import pytest

from tiffin.train.weights import MIRROR_ENV


class _Handler(BaseHTTPRequestHandler):
    """Hands every request to the owning `_Loopback`; one connection per request (HTTP/1.0)."""

    def do_GET(self) -> None:
        self.server.owner._handle(self, head=False)

    def do_HEAD(self) -> None:
        self.server.owner._handle(self, head=True)

    def log_message(self, format, *args) -> None:  # noqa: A002 - keep test output quiet
        pass


class _Loopback:
    """An HTTP server on 127.0.0.1 in a background thread; a context manager; `.url`, `.stop()`."""

    def __init__(self) -> None:
        self.requests: Counter[str] = Counter()  # URL path (no query) -> requests seen, HEAD and GET alike
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._server.daemon_threads = True
        self._server.owner = self
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop serving and close the port (a later request is refused at once)."""
        if self._thread.is_alive():
            self._server.shutdown()
            self._thread.join()
        self._server.server_close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def total(self) -> int:
        with self._lock:
            return sum(self.requests.values())

    def _handle(self, handler: BaseHTTPRequestHandler, head: bool) -> None:
        path, _, query = handler.path.partition("?")
        with self._lock:
            self.requests[path] += 1
        self.serve(handler, path, parse_qs(query), head)

    def serve(self, handler, path: str, query: dict, head: bool) -> None:
        raise NotImplementedError

    @staticmethod
    def reply(handler, status: int, body: bytes = b"", headers: dict | None = None, head: bool = False,
              send: int | None = None) -> None:
        """Answer; `send` bytes of the body only (a cut-short transfer: Content-Length stays the full size)."""
        handler.send_response(status)
        for name, value in {"Content-Length": str(len(body)), **(headers or {})}.items():
            handler.send_header(name, value)
        handler.end_headers()
        if not head:
            handler.wfile.write(body if send is None else body[:send])
            handler.wfile.flush()
        if send is not None:  # close now, so the client sees the end of the stream mid-body
            handler.close_connection = True


def closed_port_url() -> str:
    """A loopback URL nothing listens on: connections are refused at once (an unreachable mirror/Hub)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


class ZooMirror(_Loopback):
    """A weights mirror: `files` maps a URL path (`/pytorchvideo/.../X3D_XS.pyth`) to its bytes.

    Paths in `truncate` are answered with their full Content-Length but only half of their bytes.
    """

    def __init__(self, files: dict[str, bytes]) -> None:
        self.files = dict(files)
        self.truncate: set[str] = set()
        super().__init__()

    def serve(self, handler, path, query, head) -> None:
        body = self.files.get(unquote(path))
        if body is None:
            self.reply(handler, 404, b"not found", head=head)
        else:
            send = len(body) // 2 if path in self.truncate else None
            self.reply(handler, 200, body, {"Content-Type": "application/octet-stream"}, head=head, send=send)


@dataclass
class _Repo:
    revisions: dict[str, tuple[str, dict[str, bytes]]]  # branch/tag -> (commit sha, {path: bytes})
    token: str | None = None  # set: a gated repo, whose files need `Authorization: Bearer <token>`
    broken: set[str] = field(default_factory=set)  # files whose GET answers 500 (HEAD still succeeds)

    def commit(self, rev: str) -> tuple[str, dict[str, bytes]] | None:
        """A branch, a tag or a full commit sha, as the Hub resolves them."""
        return self.revisions.get(rev) or next((c for c in self.revisions.values() if c[0] == rev), None)


_API = re.compile(r"^/api/models/([^/]+/[^/]+)/(revision|tree)/([^/]+)(?:/(.*))?$")
_RESOLVE = re.compile(r"^/([^/]+/[^/]+)/resolve/([^/]+)/(.+)$")


class LoopbackHub(_Loopback):
    """A Hugging Face Hub serving model repos from local folders (what `save_pretrained` wrote)."""

    def __init__(self) -> None:
        self.repos: dict[str, _Repo] = {}
        super().__init__()

    def add(self, repo_id: str, revisions: dict[str, Path], token: str | None = None) -> dict[str, str]:
        """Serve `repo_id` with one folder per branch/tag name (`{"main": folder, "v1": other}`);
        `token` makes it gated. Returns each name's commit sha (fixed: a hash of repo and name)."""
        commits = {}
        for name, folder in revisions.items():
            sha = hashlib.sha1(f"{repo_id}@{name}".encode()).hexdigest()
            files = {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(Path(folder).rglob("*"))
                     if p.is_file()}
            commits[name] = (sha, files)
        self.repos[repo_id] = _Repo(commits, token)
        return {name: sha for name, (sha, _) in commits.items()}

    def serve(self, handler, path, query, head) -> None:
        api, resolve = _API.match(path), _RESOLVE.match(path)
        match = api or resolve
        if match is None:
            return self._error(handler, 404, None, "no such route", head)
        repo_id = unquote(match.group(1))
        repo = self.repos.get(repo_id)
        if repo is None:  # the real Hub answers unknown and private repos alike
            return self._error(handler, 404, "RepoNotFound", "Repository not found", head)
        rev = unquote(match.group(3) if api else match.group(2))
        commit = repo.commit(rev)
        if commit is None:
            return self._error(handler, 404, "RevisionNotFound", f"Invalid rev id: {rev}", head)
        sha, files = commit
        if api and api.group(2) == "revision":  # repo_info: public even for a gated repo, as on the Hub
            info = {"id": repo_id, "modelId": repo_id, "sha": sha, "private": False,
                    "gated": "manual" if repo.token else False, "siblings": [{"rfilename": f} for f in files]}
            return self._json(handler, info, head)
        if api:  # list_repo_tree: the file list is public too
            return self._json(handler, self._tree(files, unquote(api.group(4) or ""),
                                                  query.get("recursive") == ["true"]), head)
        if repo.token is not None:  # a gated repo's files: 401 without a token, 403 with another one
            auth = handler.headers.get("Authorization")
            if auth != f"Bearer {repo.token}":
                return self._error(handler, 403 if auth else 401, "GatedRepo",
                                   f"Access to model {repo_id} is restricted.", head)
        name = unquote(resolve.group(3))
        if name not in files:  # X-Repo-Commit lets huggingface_hub cache the absence
            return self._error(handler, 404, "EntryNotFound", f"{name} does not exist", head, {"X-Repo-Commit": sha})
        if name in repo.broken and not head:
            return self._error(handler, 500, None, "Internal Error", head)
        body = files[name]
        # the Hub's ETag is the git blob id, or the sha256 for LFS files: any stable id works as the blob name
        self.reply(handler, 200, body, {"X-Repo-Commit": sha, "ETag": f'"{hashlib.sha256(body).hexdigest()}"',
                                        "Content-Type": "application/octet-stream"}, head=head)

    @staticmethod
    def _tree(files: dict[str, bytes], under: str, recursive: bool) -> list[dict]:
        """The entries below `under`: files with their git blob id (and LFS info for weights), folders."""
        prefix = f"{under.rstrip('/')}/" if under else ""
        entries, folders = [], set()
        for path, body in files.items():
            if not path.startswith(prefix):
                continue
            rest = path[len(prefix):].split("/")
            for depth in range(1, len(rest) if recursive else min(len(rest), 2)):
                folders.add(prefix + "/".join(rest[:depth]))
            if recursive or len(rest) == 1:
                blob = hashlib.sha1(b"blob %d\0" % len(body) + body).hexdigest()
                entry = {"type": "file", "oid": blob, "size": len(body), "path": path}
                if path.endswith((".safetensors", ".bin")):
                    entry["lfs"] = {"oid": hashlib.sha256(body).hexdigest(), "size": len(body), "pointerSize": 134}
                entries.append(entry)
        return [{"type": "directory", "oid": "0" * 40, "size": 0, "path": f} for f in sorted(folders)] + entries

    def _json(self, handler, payload, head: bool) -> None:
        self.reply(handler, 200, json.dumps(payload).encode(), {"Content-Type": "application/json"}, head=head)

    def _error(self, handler, status: int, code: str | None, message: str, head: bool,
               extra: dict | None = None) -> None:
        headers = {"Content-Type": "application/json", "X-Error-Message": message, **(extra or {})}
        if code:
            headers["X-Error-Code"] = code
        self.reply(handler, status, json.dumps({"error": message}).encode(), headers, head=head)


@pytest.fixture(autouse=True)  # autouse in each test module that imports it
def offline_by_construction(tmp_path, monkeypatch):
    """Caches in tmp_path; the mirror, the Hub and huggingface_hub's own import-time endpoint are a closed port."""
    from huggingface_hub import constants

    dead = closed_port_url()
    for name in ("TIFFIN_OFFLINE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN",
                 "HF_OIDC_RESOURCE", "HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "XDG_CACHE_HOME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_ENDPOINT", dead)
    monkeypatch.setenv(MIRROR_ENV, dead)
    # huggingface_hub read HF_ENDPOINT/HF_HOME/HF_HUB_OFFLINE once, at its import; weights.py passes the
    # endpoint and cache it reads now. Point what huggingface_hub read at dead ends, so a call that used
    # them would fail here (and leave the wrong cache behind) instead of reaching huggingface.co.
    wrong_cache = tmp_path / "import-time-hf-cache"
    monkeypatch.setattr(constants, "ENDPOINT", dead)
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", dead + "/{repo_id}/resolve/{revision}/{filename}")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(wrong_cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "hf" / "token"))  # never a developer's token
    monkeypatch.setattr(constants, "HF_STORED_TOKENS_PATH", str(tmp_path / "hf" / "stored_tokens"))
    yield
    assert not wrong_cache.exists(), "huggingface_hub used its import-time cache, not the one weights.py passed"
