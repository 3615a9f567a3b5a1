"""Loopback mirror of the official downloads, for tests that exercise real HTTP.

``build_mirror`` writes archives laid out like the official downloads from the reference data,
and ``LoopbackMirror`` serves a directory on 127.0.0.1 with byte ranges and fault injection::

    directory, files = session_mirror(shared_dir, tmp_path_factory)
    with LoopbackMirror(directory, fail_first={"acdc.zip": 2}) as mirror:
        url = mirror.url(files["acdc"].path)

Test modules import it as ``from mirror import ...``. pytest's default ``prepend`` import mode
puts ``tests/`` on ``sys.path`` when it imports a test module from there.
"""

from __future__ import annotations

import hashlib
import http.server
import json
import re
import shutil
import socket
import threading
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple
from urllib.parse import unquote, urlsplit

ACDC_PATIENT_PATTERN = re.compile(r"patient\d{3}")
# A fixed timestamp keeps the built zip, and so its sha256, the same on every run.
ZIP_DATE_TIME = (2020, 1, 1, 0, 0, 0)


class MirrorFile(NamedTuple):
    """One file of the mirror: path relative to the served directory, hex sha256, size in bytes."""

    path: str
    sha256: str
    size: int


def _sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _describe(directory: Path, relative: str) -> MirrorFile:
    path = directory / relative
    return MirrorFile(relative, _sha256_of(path), path.stat().st_size)


def _zip_add_directory(bundle: zipfile.ZipFile, name: str) -> None:
    info = zipfile.ZipInfo(name.rstrip("/") + "/", date_time=ZIP_DATE_TIME)
    info.external_attr = (0o40755 << 16) | 0x10
    bundle.writestr(info, b"")


def _zip_add_file(bundle: zipfile.ZipFile, name: str, source: Path) -> None:
    info = zipfile.ZipInfo(name, date_time=ZIP_DATE_TIME)
    info.external_attr = 0o100644 << 16
    info.compress_type = zipfile.ZIP_DEFLATED
    with open(source, "rb") as reader, bundle.open(info, "w") as writer:
        shutil.copyfileobj(reader, writer, 1 << 20)


def build_acdc_zip(acdc_training_dir: Path, output: Path) -> list[str]:
    """Write ``output`` as a zip laid out like the official ACDC download; return the file names.

    Every ``patientXXX`` folder of ``acdc_training_dir`` goes to ``database/training/patientXXX/``
    with its files unchanged, in sorted order.
    """
    patients = sorted(p for p in acdc_training_dir.iterdir() if p.is_dir() and ACDC_PATIENT_PATTERN.fullmatch(p.name))
    if not patients:
        raise FileNotFoundError(f"no patientXXX folders in {acdc_training_dir}")
    names: list[str] = []
    with zipfile.ZipFile(output, "w") as bundle:
        _zip_add_directory(bundle, "database")
        _zip_add_directory(bundle, "database/training")
        for patient in patients:
            _zip_add_directory(bundle, f"database/training/{patient.name}")
            for source in sorted(patient.iterdir()):
                name = f"database/training/{patient.name}/{source.name}"
                _zip_add_file(bundle, name, source)
                names.append(name)
    return names


def build_mirror(shared_dir: Path, directory: Path) -> dict[str, MirrorFile]:
    """Write the mirror files into ``directory`` and return them by name.

    Names: ``acdc`` (``acdc.zip``, built from ``data/acdc/training``), ``acdc_scribbles``
    (``acdc_scribbles.zip``, copied unchanged), ``table5_pidinet`` and ``table5_pidinet-tiny``
    (the ``.pth`` files from ``weights/pidinet``, copied unchanged).
    """
    shared_dir = Path(shared_dir)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)

    build_acdc_zip(shared_dir / "data" / "acdc" / "training", directory / "acdc.zip")
    shutil.copyfile(shared_dir / "data" / "acdc_scribbles.zip", directory / "acdc_scribbles.zip")
    for weights in ("table5_pidinet.pth", "table5_pidinet-tiny.pth"):
        shutil.copyfile(shared_dir / "weights" / "pidinet" / weights, directory / weights)

    relative = {
        "acdc": "acdc.zip",
        "acdc_scribbles": "acdc_scribbles.zip",
        "table5_pidinet": "table5_pidinet.pth",
        "table5_pidinet-tiny": "table5_pidinet-tiny.pth",
    }
    return {name: _describe(directory, path) for name, path in relative.items()}


def session_mirror(shared_dir: Path, tmp_path_factory) -> tuple[Path, dict[str, MirrorFile]]:
    """Return the mirror directory and files, building them once per pytest session.

    ``tmp_path_factory`` is pytest's session-scoped fixture. Several test modules can call this
    and share one build, because the result is stored under the session's base temporary
    directory together with a ``manifest.json``.
    """
    directory = Path(tmp_path_factory.getbasetemp()) / "loopback-mirror"
    manifest = directory / "manifest.json"
    if manifest.is_file():
        stored = json.loads(manifest.read_text(encoding="utf-8"))
        return directory, {name: MirrorFile(*values) for name, values in stored.items()}

    staging = Path(tmp_path_factory.mktemp("loopback-mirror-build"))
    files = build_mirror(shared_dir, staging)
    (staging / "manifest.json").write_text(json.dumps({k: list(v) for k, v in files.items()}), encoding="utf-8")
    staging.rename(directory)
    return directory, files


@dataclass
class RequestRecord:
    """One request the mirror responded to."""

    method: str
    path: str
    range: str | None
    status: int
    bytes_sent: int = 0


@dataclass
class _MirrorState:
    directory: Path
    truncate_once: dict[str, int]
    fail_first: dict[str, int]
    range_support: bool
    stall_once: dict[str, float]
    log: list[RequestRecord] = field(default_factory=list)
    lock: threading.Condition = field(default_factory=threading.Condition)
    in_flight: int = 0


class _MirrorHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: "_MirrorServer"

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - signature of the base class
        pass

    def do_HEAD(self) -> None:
        self._serve_counted(send_body=False)

    def do_GET(self) -> None:
        self._serve_counted(send_body=True)

    def _serve_counted(self, send_body: bool) -> None:
        # A client can see the last byte before the handler has logged the request, so
        # LoopbackMirror.requests waits until no handler is running.
        state = self.server.state
        with state.lock:
            state.in_flight += 1
        try:
            self._serve(send_body)
        finally:
            with state.lock:
                state.in_flight -= 1
                state.lock.notify_all()

    def _record(self, relative: str, status: int, sent: int = 0) -> None:
        state = self.server.state
        with state.lock:
            state.log.append(RequestRecord(self.command, relative, self.headers.get("Range"), status, sent))

    def _send_empty(self, relative: str, status: int, extra: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for key, value in (extra or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", "0")
        self.end_headers()
        self._record(relative, status)

    def _serve(self, send_body: bool) -> None:
        state = self.server.state
        relative = unquote(urlsplit(self.path).path).lstrip("/")
        root = state.directory.resolve()
        path = (root / relative).resolve()

        with state.lock:
            stall = state.stall_once.pop(relative, 0.0)
        if stall:
            time.sleep(stall)

        with state.lock:
            failures_left = state.fail_first.get(relative, 0)
            if failures_left:
                state.fail_first[relative] = failures_left - 1
        if failures_left:
            self._send_empty(relative, 503, {"Retry-After": "0"})
            return
        if not path.is_relative_to(root) or not path.is_file():
            self._send_empty(relative, 404)
            return

        size = path.stat().st_size
        start, end, status = 0, size - 1, 200
        requested = self.headers.get("Range")
        if requested and state.range_support:
            parsed = _parse_range(requested, size)
            if parsed is None:
                self._send_empty(relative, 416, {"Content-Range": f"bytes */{size}"})
                return
            start, end = parsed
            status = 206

        length = end - start + 1
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Accept-Ranges", "bytes" if state.range_support else "none")
        self.send_header("Content-Length", str(length))
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.end_headers()
        if not send_body:
            self._record(relative, status)
            return

        with state.lock:
            cut = state.truncate_once.pop(relative, None)
        limit = length if cut is None else min(cut, length)
        sent = self._send_file(path, start, limit)
        self._record(relative, status, sent)
        if cut is not None:
            # Close with fewer bytes than Content-Length announced, like a dropped connection.
            self.close_connection = True
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)

    def _send_file(self, path: Path, start: int, count: int) -> int:
        sent = 0
        with open(path, "rb") as handle:
            handle.seek(start)
            while sent < count:
                chunk = handle.read(min(1 << 16, count - sent))
                if not chunk:
                    break
                try:
                    self.wfile.write(chunk)
                except (BrokenPipeError, ConnectionResetError):
                    break
                sent += len(chunk)
        return sent


def _parse_range(value: str, size: int) -> tuple[int, int] | None:
    """Return the first and last byte of a single ``bytes=`` range, or None if unsatisfiable."""
    match = re.fullmatch(r"\s*bytes=(\d*)-(\d*)\s*", value)
    if not match or (not match.group(1) and not match.group(2)):
        return None
    first, last = match.groups()
    if not first:
        suffix = int(last)
        if suffix == 0:
            return None
        return max(size - suffix, 0), size - 1
    start = int(first)
    end = min(int(last), size - 1) if last else size - 1
    if start >= size or end < start:
        return None
    return start, end


class _MirrorServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    state: _MirrorState

    def handle_error(self, request, client_address) -> None:
        # Clients that time out or drop the connection on purpose make writes fail here.
        # Those failures are part of the tests, so they are not printed.
        pass


class LoopbackMirror:
    """HTTP server on 127.0.0.1 (a free port) that serves ``directory``, for use as a context manager.

    - Single byte ranges get 206 with ``Content-Range``; unsatisfiable ones get 416. With
      ``range_support=False`` the server ignores ``Range`` and always sends 200.
    - ``truncate_once={path: nbytes}`` announces the full length but closes the connection after
      ``nbytes`` body bytes, on the first GET of ``path`` only.
    - ``fail_first={path: n}`` responds 503 to the first ``n`` requests for ``path``.
    - ``stall_once={path: seconds}`` waits that long before responding to the first request for
      ``path``, which makes a client with a shorter read timeout give up.
    - Unknown paths get 404.

    ``requests`` lists every request in order.
    """

    def __init__(
        self,
        directory: Path,
        *,
        truncate_once: dict[str, int] | None = None,
        fail_first: dict[str, int] | None = None,
        range_support: bool = True,
        stall_once: dict[str, float] | None = None,
    ) -> None:
        self._state = _MirrorState(
            directory=Path(directory),
            truncate_once=dict(truncate_once or {}),
            fail_first=dict(fail_first or {}),
            range_support=range_support,
            stall_once=dict(stall_once or {}),
        )
        self._server: _MirrorServer | None = None
        self._thread: threading.Thread | None = None

    def __enter__(self) -> "LoopbackMirror":
        server = _MirrorServer(("127.0.0.1", 0), _MirrorHandler)
        server.state = self._state
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        assert self._server is not None and self._thread is not None
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    @property
    def port(self) -> int:
        assert self._server is not None, "LoopbackMirror is not running; use it in a with block"
        return self._server.server_address[1]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url(self, relative: str) -> str:
        """Return the URL of ``relative`` (a path under the served directory)."""
        return f"{self.base_url}/{relative.lstrip('/')}"

    @property
    def requests(self) -> list[RequestRecord]:
        """Return the logged requests in order, waiting for any response still being sent."""
        with self._state.lock:
            self._state.lock.wait_for(lambda: self._state.in_flight == 0, timeout=5)
            return list(self._state.log)
