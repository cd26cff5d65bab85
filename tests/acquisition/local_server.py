"""A local HTTP file server with injectable faults, for the acquisition tests (nothing leaves 127.0.0.1).

A plain module (not conftest.py) so tests can import it under a name no other test folder uses.

FileServer(root) serves the files of `root` on 127.0.0.1:<free port> with `Range: bytes=N-` support (206, and
416 past the end) and logs every request. fault(name, kind, times) makes the next `times` requests for `name`
misbehave (times=None: every request):
    'drop'         send the headers with the full Content-Length, then half the body, then close
    'error'        answer 500
    'stall'        send half the body, then go silent for `stall_seconds` (longer than the client's timeout)
    'ignore-range' answer 200 with the whole file to a Range request
"""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit

FAULTS = ("drop", "error", "stall", "ignore-range")
CONTENT_TYPES = {".mp4": "video/mp4", ".m4a": "audio/mp4"}


@dataclass
class Request:
    method: str
    name: str
    headers: dict[str, str]
    fault: str | None = None

    @property
    def range(self) -> str | None:
        return self.headers.get("Range")


@dataclass
class FileServer:
    root: Path
    stall_seconds: float = 2.0
    requests: list[Request] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._faults: dict[str, list[str]] = {}
        self._sticky: dict[str, str] = {}
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._httpd.daemon_threads = True
        self._httpd.block_on_close = False  # a stalled handler must not hold up teardown
        self._httpd.files = self
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)
        self._thread.start()

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{quote(name)}"

    def fault(self, name: str, kind: str, times: int | None = 1) -> None:
        assert kind in FAULTS, kind
        with self._lock:
            if times is None:
                self._sticky[name] = kind
            else:
                self._faults.setdefault(name, []).extend([kind] * times)

    def requests_for(self, name: str) -> list[Request]:
        return [r for r in self.requests if r.name == name]

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def _next_fault(self, name: str) -> str | None:
        with self._lock:
            queue = self._faults.get(name)
            return queue.pop(0) if queue else self._sticky.get(name)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"  # one request per connection: 'drop' and 'stall' stay simple

    def log_message(self, *args) -> None:  # keep test output clean
        pass

    def do_GET(self) -> None:
        self._serve(body=True)

    def do_HEAD(self) -> None:
        self._serve(body=False)

    def _serve(self, body: bool) -> None:
        files: FileServer = self.server.files
        name = unquote(urlsplit(self.path).path).lstrip("/")
        fault = files._next_fault(name)
        files.requests.append(Request(self.command, name, dict(self.headers), fault))
        path = files.root / name
        if fault == "error":
            self.send_error(500, "injected fault")
            return
        if "/" in name or name in ("", ".", "..") or not path.is_file():
            self.send_error(404, "File not found")
            return
        data = path.read_bytes()
        start, status = 0, 200
        match = re.fullmatch(r"bytes=(\d+)-", (self.headers.get("Range") or "").strip())
        if match and fault != "ignore-range":
            start = int(match[1])
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            status = 206
        payload = data[start:]
        self.send_response(status)
        self.send_header("Content-Type", CONTENT_TYPES.get(path.suffix, "application/octet-stream"))
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("Accept-Ranges", "bytes")
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.end_headers()
        if not body:
            return
        try:
            if fault in ("drop", "stall"):
                self.wfile.write(payload[: len(payload) // 2])
                self.wfile.flush()
                if fault == "stall":
                    time.sleep(files.stall_seconds)
                return  # the connection closes here, short of the promised length
            self.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (as it should after a stall)
