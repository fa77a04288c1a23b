"""A local stand-in for the two model hubs, on 127.0.0.1, speaking exactly the HTTP the real
clients use (read from the installed clients, huggingface_hub's file_download.py and
modelscope_hub's _legacy_api.py / _download.py):

Hugging Face (``HF_ENDPOINT``):
  HEAD /{owner}/{repo}/resolve/{revision}/{file}  -> 200, X-Repo-Commit (40 hex), ETag, size
  GET  same path (with ``Range: bytes=N-`` on resume) -> 200 or 206 with the bytes
ModelScope (``MODELSCOPE_ENDPOINT``):
  GET /api/v1/models/{owner}/{repo}/repo/files?Revision=&Recursive=  -> JSON file list with
      Path, Type, Size, Sha256 (wrapped as {"Code": 200, "Data": {"Files": [...]}})
  GET /api/v1/models/{owner}/{repo}/repo?Revision=&FilePath=  -> the bytes (Range honoured)
Anything else (ModelScope's acceleration probe, unknown repos or files) is a 404.

Faults: ``drop_after[file] = n`` sends the full length in the headers, then n bytes, then closes
the connection; every later request for that file gets 503 (the server went away) until
``heal()``. ``pause(file)`` holds that file's body after its first chunk until ``resume()``
(``paused`` is set once a body is held), so a test can act while a download is in the middle.
Every request is recorded in ``requests`` as (method, path, Range header).
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

COMMIT = "0123456789abcdef0123456789abcdef01234567"
CHUNK = 1 << 16
# Longest a paused body waits for resume(): a test that forgets to resume still ends.
PAUSE_LIMIT_S = 120


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        pass  # a client that went away mid-body (killed, or gave up) is expected here


class FakeHub:
    def __init__(self):
        self.repos: dict[str, dict[str, Path]] = {}   # repo_id -> {name in repo: file on disk}
        self.drop_after: dict[str, int] = {}
        self.paused = threading.Event()      # set while a paused body is being held
        self._pause_file: str | None = None
        self._release = threading.Event()
        self.requests: list[tuple[str, str, str | None]] = []
        self._dropped: set[str] = set()
        self._sha: dict[Path, str] = {}
        self._lock = threading.Lock()
        self.server = _Server(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def serve(self, repo_id: str, files: dict[str, Path]) -> None:
        self.repos[repo_id] = {name: Path(p) for name, p in files.items()}

    def heal(self) -> None:
        """The server is back: no more drops, no more 503s."""
        self.drop_after.clear()
        self._dropped.clear()

    def pause(self, filename: str) -> None:
        self._pause_file = filename
        self._release.clear()
        self.paused.clear()

    def resume(self) -> None:
        self._pause_file = None
        self._release.set()

    def sha256(self, path: Path) -> str:
        with self._lock:
            if path not in self._sha:
                h = hashlib.sha256()
                with open(path, "rb") as f:
                    for block in iter(lambda: f.read(1 << 20), b""):
                        h.update(block)
                self._sha[path] = h.hexdigest()
            return self._sha[path]

    def gets(self, filename: str) -> int:
        """GET requests that asked for ``filename`` (either hub's URL shape)."""
        return sum(1 for m, p, _ in self.requests if m == "GET" and _names(p, filename))

    def heads(self, filename: str) -> int:
        return sum(1 for m, p, _ in self.requests if m == "HEAD" and _names(p, filename))

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(10)

    # -- request handling ---------------------------------------------------------------------
    def _handler(self):
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"   # one request per connection: a drop is unambiguous

            def log_message(self, *args):
                pass

            def do_HEAD(self):
                hub._record(self)
                target = hub._hf_target(self.path)
                if target is None:
                    return hub._not_found(self, head=True)
                hub._send_file(self, *target, head=True)

            def do_GET(self):
                hub._record(self)
                target = hub._hf_target(self.path) or hub._ms_file_target(self.path)
                if target is not None:
                    return hub._send_file(self, *target, head=False)
                listing = hub._ms_listing(self.path)
                if listing is not None:
                    body = json.dumps(listing).encode()
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                    return
                hub._not_found(self, head=False)

        return Handler

    def _record(self, handler) -> None:
        with self._lock:
            self.requests.append((handler.command, handler.path, handler.headers.get("Range")))

    def _hf_target(self, raw_path: str):
        m = re.fullmatch(r"/([^/]+/[^/]+)/resolve/([^/]+)/(.+)", urlsplit(raw_path).path)
        if not m or m.group(1) not in self.repos or m.group(3) not in self.repos[m.group(1)]:
            return None
        return m.group(3), self.repos[m.group(1)][m.group(3)]

    def _ms_file_target(self, raw_path: str):
        parts = urlsplit(raw_path)
        m = re.fullmatch(r"/api/v1/models/([^/]+/[^/]+)/repo", parts.path)
        name = parse_qs(parts.query).get("FilePath", [None])[0]
        if not m or m.group(1) not in self.repos or name not in self.repos[m.group(1)]:
            return None
        return name, self.repos[m.group(1)][name]

    def _ms_listing(self, raw_path: str):
        m = re.fullmatch(r"/api/v1/models/([^/]+/[^/]+)/repo/files", urlsplit(raw_path).path)
        if not m or m.group(1) not in self.repos:
            return None
        files = [{"Name": name, "Path": name, "Type": "blob", "Size": p.stat().st_size,
                  "Sha256": self.sha256(p), "Revision": COMMIT}
                 for name, p in self.repos[m.group(1)].items()]
        return {"Code": 200, "Data": {"Files": files}, "Success": True}

    def _not_found(self, handler, head: bool) -> None:
        body = b'{"Code": 404, "Message": "not found", "Success": false}'
        handler.send_response(404)
        handler.send_header("X-Error-Code", "EntryNotFound")
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        if not head:
            handler.wfile.write(body)

    def _send_file(self, handler, name: str, path: Path, head: bool) -> None:
        size = path.stat().st_size
        if name in self._dropped:
            handler.send_response(503)
            handler.send_header("Content-Length", "0")
            handler.end_headers()
            return
        start = 0
        rng = handler.headers.get("Range")
        if rng and not head:
            m = re.fullmatch(r"bytes=(\d+)-", rng.strip())
            start = int(m.group(1)) if m else 0
        handler.send_response(206 if start else 200)
        handler.send_header("X-Repo-Commit", COMMIT)
        handler.send_header("ETag", f'"{self.sha256(path)}"')
        handler.send_header("Accept-Ranges", "bytes")
        handler.send_header("Content-Length", str(size - start))
        if start:
            handler.send_header("Content-Range", f"bytes {start}-{size - 1}/{size}")
        handler.end_headers()
        if head:
            return
        drop_at = self.drop_after.get(name) if start == 0 else None
        sent = 0
        with open(path, "rb") as f:
            f.seek(start)
            while True:
                want = CHUNK if drop_at is None else min(CHUNK, drop_at - sent)
                block = f.read(want) if want > 0 else b""
                if not block:
                    break
                handler.wfile.write(block)
                sent += len(block)
                if name == self._pause_file:
                    handler.wfile.flush()
                    self.paused.set()
                    self._release.wait(PAUSE_LIMIT_S)
        if drop_at is not None:
            with self._lock:
                self._dropped.add(name)
            handler.wfile.flush()
            handler.close_connection = True
            handler.connection.shutdown(2)   # mid-body: the client sees the connection go


def _names(raw_path: str, filename: str) -> bool:
    parts = urlsplit(raw_path)
    if parts.path.endswith("/" + filename):
        return True
    return parse_qs(parts.query).get("FilePath", [None])[0] == filename
