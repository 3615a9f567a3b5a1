"""The loopback mirror itself: archive layout, byte ranges and fault injection, checked with http.client."""

from __future__ import annotations

import hashlib
import http.client
import os
import socket
import zipfile
from pathlib import Path

import pytest

from mirror import LoopbackMirror, build_mirror, session_mirror

# Sizes and sha256 digests published for the upstream files (DATA.md, sections 3 and 7).
UPSTREAM = {
    "acdc_scribbles": (1_925_723, "144591d5a90e70f877398af082b6995cc616c1dd5d01a6d470edf183f97c46e1"),
    "table5_pidinet": (2_871_148, "80860ac267258b5f27486e0ef152a211d0b08120f62aeb185a050acc30da486c"),
    "table5_pidinet-tiny": (368_492, "e32b23fff6c1cb9bd4385a1d615023346fc2e3f2f3a8db7f78cc4ce95a14730c"),
}

# ED and ES frame of each reference patient (DATA.md, section 9).
ACDC_FRAMES = {
    "005": ("01", "13"),
    "010": ("01", "13"),
    "024": ("01", "09"),
    "030": ("01", "12"),
    "036": ("01", "12"),
    "039": ("01", "10"),
    "041": ("01", "11"),
    "060": ("01", "14"),
    "064": ("01", "12"),
    "072": ("01", "11"),
}


@pytest.fixture(scope="session")
def mirror_files(shared_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    return session_mirror(shared_dir, tmp_path_factory)


def _get(mirror: LoopbackMirror, path: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", mirror.port, timeout=5)
    try:
        connection.request("GET", path, headers=headers or {})
        response = connection.getresponse()
        body = response.read()
        return response.status, dict(response.getheaders()), body
    finally:
        connection.close()


def test_copied_files_match_upstream(mirror_files) -> None:
    directory, files = mirror_files
    for name, (size, digest) in UPSTREAM.items():
        path = directory / files[name].path
        assert path.stat().st_size == size, name
        assert hashlib.sha256(path.read_bytes()).hexdigest() == digest, name
        assert files[name].size == size, name
        assert files[name].sha256 == digest, name


def test_acdc_zip_layout(mirror_files, shared_dir: Path) -> None:
    directory, files = mirror_files
    expected_files = set()
    for patient, frames in ACDC_FRAMES.items():
        folder = f"database/training/patient{patient}"
        expected_files.add(f"{folder}/Info.cfg")
        for frame in frames:
            expected_files.add(f"{folder}/patient{patient}_frame{frame}.nii.gz")
            expected_files.add(f"{folder}/patient{patient}_frame{frame}_gt.nii.gz")

    with zipfile.ZipFile(directory / files["acdc"].path) as bundle:
        names = [info.filename for info in bundle.infolist() if not info.is_dir()]
        assert len(names) == 50
        assert set(names) == expected_files
        for name in names:
            original = shared_dir / "data" / "acdc" / "training" / Path(name).relative_to("database/training")
            assert bundle.read(name) == original.read_bytes(), name


def test_acdc_zip_is_reproducible(mirror_files, shared_dir: Path, tmp_path: Path) -> None:
    _, files = mirror_files
    rebuilt = build_mirror(shared_dir, tmp_path)
    assert rebuilt["acdc"].sha256 == files["acdc"].sha256


def test_session_mirror_builds_once(mirror_files, shared_dir: Path, tmp_path_factory) -> None:
    directory, files = mirror_files
    stamp = os.stat(directory / files["acdc"].path).st_mtime_ns
    again_directory, again_files = session_mirror(shared_dir, tmp_path_factory)
    assert again_directory == directory
    assert again_files == files
    assert os.stat(directory / files["acdc"].path).st_mtime_ns == stamp


def test_full_get_and_head(mirror_files) -> None:
    directory, files = mirror_files
    data = (directory / "table5_pidinet-tiny.pth").read_bytes()
    with LoopbackMirror(directory) as mirror:
        status, headers, body = _get(mirror, "/table5_pidinet-tiny.pth")
        connection = http.client.HTTPConnection("127.0.0.1", mirror.port, timeout=5)
        connection.request("HEAD", "/table5_pidinet-tiny.pth")
        head = connection.getresponse()
        head_length = head.getheader("Content-Length")
        head.read()
        connection.close()
        assert mirror.url("table5_pidinet-tiny.pth") == f"http://127.0.0.1:{mirror.port}/table5_pidinet-tiny.pth"
    assert status == 200
    assert headers["Content-Length"] == "368492"
    assert headers["Accept-Ranges"] == "bytes"
    assert body == data
    assert head_length == "368492"


def test_range_requests(mirror_files) -> None:
    directory, _ = mirror_files
    data = (directory / "table5_pidinet-tiny.pth").read_bytes()
    with LoopbackMirror(directory) as mirror:
        middle = _get(mirror, "/table5_pidinet-tiny.pth", {"Range": "bytes=100-199"})
        open_end = _get(mirror, "/table5_pidinet-tiny.pth", {"Range": "bytes=368000-"})
        suffix = _get(mirror, "/table5_pidinet-tiny.pth", {"Range": "bytes=-10"})
        beyond = _get(mirror, "/table5_pidinet-tiny.pth", {"Range": "bytes=368492-"})
        log = mirror.requests

    assert middle[0] == 206
    assert middle[1]["Content-Range"] == "bytes 100-199/368492"
    assert middle[2] == data[100:200]
    assert open_end[0] == 206
    assert open_end[1]["Content-Range"] == "bytes 368000-368491/368492"
    assert open_end[2] == data[368000:]
    assert suffix[0] == 206
    assert suffix[2] == data[-10:]
    assert beyond[0] == 416
    assert beyond[1]["Content-Range"] == "bytes */368492"
    assert [record.range for record in log] == ["bytes=100-199", "bytes=368000-", "bytes=-10", "bytes=368492-"]
    assert [record.status for record in log] == [206, 206, 206, 416]


def test_range_support_off_sends_full_body(mirror_files) -> None:
    directory, _ = mirror_files
    with LoopbackMirror(directory, range_support=False) as mirror:
        status, headers, body = _get(mirror, "/table5_pidinet-tiny.pth", {"Range": "bytes=100-"})
    assert status == 200
    assert "Content-Range" not in headers
    assert len(body) == 368_492


def test_unknown_and_escaping_paths_404(mirror_files) -> None:
    directory, _ = mirror_files
    with LoopbackMirror(directory) as mirror:
        missing = _get(mirror, "/missing.zip")
        escaping = _get(mirror, "/../../../../etc/passwd")
        encoded = _get(mirror, "/%2e%2e/%2e%2e/etc/passwd")
    assert missing[0] == 404
    assert escaping[0] == 404
    assert encoded[0] == 404


def test_fail_first_answers_503(mirror_files) -> None:
    directory, _ = mirror_files
    with LoopbackMirror(directory, fail_first={"table5_pidinet-tiny.pth": 2}) as mirror:
        statuses = [_get(mirror, "/table5_pidinet-tiny.pth")[0] for _ in range(3)]
        other = _get(mirror, "/acdc_scribbles.zip")[0]
    assert statuses == [503, 503, 200]
    assert other == 200


def test_truncate_once_cuts_first_transfer(mirror_files) -> None:
    directory, _ = mirror_files
    data = (directory / "table5_pidinet-tiny.pth").read_bytes()
    with LoopbackMirror(directory, truncate_once={"table5_pidinet-tiny.pth": 1000}) as mirror:
        connection = http.client.HTTPConnection("127.0.0.1", mirror.port, timeout=5)
        connection.request("GET", "/table5_pidinet-tiny.pth")
        response = connection.getresponse()
        assert response.getheader("Content-Length") == "368492"
        with pytest.raises(http.client.IncompleteRead) as cut:
            response.read()
        connection.close()
        second = _get(mirror, "/table5_pidinet-tiny.pth")
        log = mirror.requests

    assert cut.value.partial == data[:1000]
    assert second[0] == 200
    assert second[2] == data
    assert [record.bytes_sent for record in log] == [1000, 368_492]


def test_server_stops_on_exit(mirror_files) -> None:
    directory, _ = mirror_files
    with LoopbackMirror(directory) as mirror:
        port = mirror.port
        assert _get(mirror, "/acdc_scribbles.zip")[0] == 200
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()


def test_stall_once_delays_first_response(mirror_files) -> None:
    directory, _ = mirror_files
    with LoopbackMirror(directory, stall_once={"table5_pidinet-tiny.pth": 0.5}) as mirror:
        connection = http.client.HTTPConnection("127.0.0.1", mirror.port, timeout=0.1)
        connection.request("GET", "/table5_pidinet-tiny.pth")
        with pytest.raises(TimeoutError):
            connection.getresponse()
        connection.close()
        second = _get(mirror, "/table5_pidinet-tiny.pth")
    assert second[0] == 200
