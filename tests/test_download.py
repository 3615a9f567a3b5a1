"""Downloads, checksums, safe extraction and source specs, against a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import hashlib
import io
import json
import logging
import socket
import stat
import tarfile
import zipfile
from pathlib import Path

import pytest

from helpnet.cli import main
from helpnet.data.download import DownloadError, download_file, extract_archive, fetch_source
from helpnet.data.sources import resolve_source, source_target, validate_source_spec
from mirror import LoopbackMirror, session_mirror

# sha256 digests published for the upstream files (DATA.md, sections 3 and 7).
SCRIBBLES_SHA256 = "144591d5a90e70f877398af082b6995cc616c1dd5d01a6d470edf183f97c46e1"
PIDINET_SHA256 = "80860ac267258b5f27486e0ef152a211d0b08120f62aeb185a050acc30da486c"
PIDINET_TINY_SHA256 = "e32b23fff6c1cb9bd4385a1d615023346fc2e3f2f3a8db7f78cc4ce95a14730c"

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

FAST = {"backoff": 0.0, "timeout": 5.0}


@pytest.fixture(scope="session")
def mirror_dir(shared_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory, _ = session_mirror(shared_dir, tmp_path_factory)
    return directory


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _listing(directory: Path) -> set[str]:
    return {str(path.relative_to(directory)) for path in directory.rglob("*")}


# ---------------------------------------------------------------------------------------------
# download_file


def test_download_verifies_sha256(mirror_dir: Path, tmp_path: Path) -> None:
    destination = tmp_path / "out" / "acdc_scribbles.zip"
    with LoopbackMirror(mirror_dir) as mirror:
        result = download_file(mirror.url("acdc_scribbles.zip"), destination, SCRIBBLES_SHA256, **FAST)
        log = mirror.requests

    assert result == destination
    assert hashlib.sha256(destination.read_bytes()).hexdigest() == SCRIBBLES_SHA256
    assert sorted(p.name for p in destination.parent.iterdir()) == ["acdc_scribbles.zip"]
    assert len(log) == 1
    assert log[0].range is None


def test_download_uppercase_sha256_accepted(mirror_dir: Path, tmp_path: Path) -> None:
    destination = tmp_path / "tiny.pth"
    with LoopbackMirror(mirror_dir) as mirror:
        download_file(mirror.url("table5_pidinet-tiny.pth"), destination, PIDINET_TINY_SHA256.upper(), **FAST)
    assert destination.stat().st_size == 368_492


def test_download_resumes_truncated_transfer(mirror_dir: Path, tmp_path: Path, caplog) -> None:
    destination = tmp_path / "pidinet.pth"
    with LoopbackMirror(mirror_dir, truncate_once={"table5_pidinet.pth": 1_000_000}) as mirror:
        with caplog.at_level(logging.WARNING, logger="helpnet.data.download"):
            download_file(mirror.url("table5_pidinet.pth"), destination, PIDINET_SHA256, **FAST)
        log = mirror.requests

    assert destination.read_bytes() == (mirror_dir / "table5_pidinet.pth").read_bytes()
    assert len(log) == 2
    assert log[0].range is None
    assert log[0].bytes_sent == 1_000_000
    assert log[1].range == "bytes=1000000-"
    assert log[1].status == 206
    assert log[1].bytes_sent == 2_871_148 - 1_000_000
    assert "attempt 1/6" in caplog.text
    assert not (tmp_path / "pidinet.pth.part").exists()


def test_download_resumes_existing_part(mirror_dir: Path, tmp_path: Path) -> None:
    data = (mirror_dir / "table5_pidinet-tiny.pth").read_bytes()
    destination = tmp_path / "tiny.pth"
    (tmp_path / "tiny.pth.part").write_bytes(data[:100_000])
    with LoopbackMirror(mirror_dir) as mirror:
        download_file(mirror.url("table5_pidinet-tiny.pth"), destination, PIDINET_TINY_SHA256, **FAST)
        log = mirror.requests

    assert destination.read_bytes() == data
    assert [(record.range, record.status) for record in log] == [("bytes=100000-", 206)]


def test_download_restarts_when_range_ignored(mirror_dir: Path, tmp_path: Path) -> None:
    data = (mirror_dir / "table5_pidinet-tiny.pth").read_bytes()
    destination = tmp_path / "tiny.pth"
    # Bytes that are not a prefix of the file: appending to them would fail the checksum.
    (tmp_path / "tiny.pth.part").write_bytes(b"\xff" * 5000)
    with LoopbackMirror(mirror_dir, range_support=False) as mirror:
        download_file(mirror.url("table5_pidinet-tiny.pth"), destination, PIDINET_TINY_SHA256, **FAST)
        log = mirror.requests

    assert destination.read_bytes() == data
    assert [(record.range, record.status) for record in log] == [("bytes=5000-", 200)]


def test_download_complete_part_gets_416(mirror_dir: Path, tmp_path: Path) -> None:
    data = (mirror_dir / "table5_pidinet-tiny.pth").read_bytes()
    destination = tmp_path / "tiny.pth"
    (tmp_path / "tiny.pth.part").write_bytes(data)
    with LoopbackMirror(mirror_dir) as mirror:
        download_file(mirror.url("table5_pidinet-tiny.pth"), destination, PIDINET_TINY_SHA256, **FAST)
        log = mirror.requests

    assert destination.read_bytes() == data
    assert [record.status for record in log] == [416]


def test_download_oversized_part_restarts(mirror_dir: Path, tmp_path: Path) -> None:
    data = (mirror_dir / "table5_pidinet-tiny.pth").read_bytes()
    destination = tmp_path / "tiny.pth"
    (tmp_path / "tiny.pth.part").write_bytes(data + b"stale tail")
    with LoopbackMirror(mirror_dir) as mirror:
        download_file(mirror.url("table5_pidinet-tiny.pth"), destination, PIDINET_TINY_SHA256, retries=0, **FAST)
        log = mirror.requests

    assert destination.read_bytes() == data
    assert [(record.range, record.status) for record in log] == [("bytes=368502-", 416), (None, 200)]


def test_download_retries_503(mirror_dir: Path, tmp_path: Path, caplog) -> None:
    destination = tmp_path / "tiny.pth"
    with LoopbackMirror(mirror_dir, fail_first={"table5_pidinet-tiny.pth": 2}) as mirror:
        with caplog.at_level(logging.WARNING, logger="helpnet.data.download"):
            download_file(mirror.url("table5_pidinet-tiny.pth"), destination, PIDINET_TINY_SHA256, retries=3, **FAST)
        log = mirror.requests

    assert [record.status for record in log] == [503, 503, 200]
    assert "attempt 1/4" in caplog.text
    assert "attempt 2/4" in caplog.text
    assert "HTTP 503" in caplog.text
    assert destination.stat().st_size == 368_492


def test_download_gives_up_after_retries(mirror_dir: Path, tmp_path: Path) -> None:
    destination = tmp_path / "tiny.pth"
    with LoopbackMirror(mirror_dir, fail_first={"table5_pidinet-tiny.pth": 10}) as mirror:
        with pytest.raises(DownloadError, match=r"after 3 attempt\(s\).*HTTP 503"):
            download_file(mirror.url("table5_pidinet-tiny.pth"), destination, PIDINET_TINY_SHA256, retries=2, **FAST)
        log = mirror.requests

    assert len(log) == 3
    assert not destination.exists()


def test_download_404_not_retried(mirror_dir: Path, tmp_path: Path) -> None:
    with LoopbackMirror(mirror_dir) as mirror:
        url = mirror.url("missing.zip")
        with pytest.raises(DownloadError, match="HTTP 404") as failure:
            download_file(url, tmp_path / "missing.zip", PIDINET_SHA256, **FAST)
        log = mirror.requests

    assert url in str(failure.value)
    assert len(log) == 1
    assert list(tmp_path.iterdir()) == []


def test_download_connection_refused_retried(tmp_path: Path, caplog) -> None:
    url = f"http://127.0.0.1:{_free_port()}/file.bin"
    with caplog.at_level(logging.WARNING, logger="helpnet.data.download"):
        with pytest.raises(DownloadError, match=r"after 2 attempt\(s\)"):
            download_file(url, tmp_path / "file.bin", None, retries=1, **FAST)
    assert "attempt 1/2" in caplog.text


def test_download_retries_read_timeout(mirror_dir: Path, tmp_path: Path, caplog) -> None:
    destination = tmp_path / "tiny.pth"
    with LoopbackMirror(mirror_dir, stall_once={"table5_pidinet-tiny.pth": 0.6}) as mirror:
        with caplog.at_level(logging.WARNING, logger="helpnet.data.download"):
            download_file(
                mirror.url("table5_pidinet-tiny.pth"), destination, PIDINET_TINY_SHA256, retries=2, backoff=0.0, timeout=0.2
            )
        log = mirror.requests

    assert destination.stat().st_size == 368_492
    assert "attempt 1/3" in caplog.text
    assert "timed out" in caplog.text
    assert [record.status for record in log] == [200, 200]


def test_download_wrong_sha256_deletes_file(mirror_dir: Path, tmp_path: Path) -> None:
    destination = tmp_path / "pidinet.pth"
    with LoopbackMirror(mirror_dir) as mirror:
        url = mirror.url("table5_pidinet.pth")
        with pytest.raises(ValueError) as failure:
            download_file(url, destination, PIDINET_TINY_SHA256, **FAST)

    message = str(failure.value)
    assert PIDINET_TINY_SHA256 in message
    assert PIDINET_SHA256 in message
    assert url in message
    assert "sha256:" in message
    assert list(tmp_path.iterdir()) == []


def test_download_without_sha256_writes_digest(mirror_dir: Path, tmp_path: Path, caplog) -> None:
    destination = tmp_path / "tiny.pth"
    with LoopbackMirror(mirror_dir) as mirror:
        with caplog.at_level(logging.WARNING, logger="helpnet.data.download"):
            download_file(mirror.url("table5_pidinet-tiny.pth"), destination, None, **FAST)

    assert destination.stat().st_size == 368_492
    assert (tmp_path / "tiny.pth.sha256").read_text() == f"{PIDINET_TINY_SHA256}  tiny.pth\n"
    assert PIDINET_TINY_SHA256 in caplog.text


def test_download_skips_verified_existing_file(mirror_dir: Path, tmp_path: Path) -> None:
    destination = tmp_path / "tiny.pth"
    destination.write_bytes((mirror_dir / "table5_pidinet-tiny.pth").read_bytes())
    with LoopbackMirror(mirror_dir) as mirror:
        download_file(mirror.url("table5_pidinet-tiny.pth"), destination, PIDINET_TINY_SHA256, **FAST)
        log = mirror.requests
    assert log == []


# ---------------------------------------------------------------------------------------------
# extract_archive


def test_extract_scribble_zip_skips_macos_entries(shared_dir: Path, tmp_path: Path) -> None:
    target = extract_archive(shared_dir / "data" / "acdc_scribbles.zip", tmp_path / "scribbles")
    files = [path for path in target.rglob("*") if path.is_file()]

    assert len(files) == 200
    assert all(path.name.endswith("_scribble.nii.gz") for path in files)
    assert all(path.parent == target / "acdc_scribbles" for path in files)
    assert not any(path.name.startswith("._") for path in target.rglob("*"))
    assert not (target / "__MACOSX").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scribbles"]


def test_extract_acdc_zip_layout(mirror_dir: Path, shared_dir: Path, tmp_path: Path) -> None:
    target = extract_archive(mirror_dir / "acdc.zip", tmp_path / "acdc")
    training = target / "database" / "training"

    assert sorted(p.name for p in training.iterdir()) == [f"patient{p}" for p in ACDC_FRAMES]
    for patient, (ed, es) in ACDC_FRAMES.items():
        folder = training / f"patient{patient}"
        expected = {
            "Info.cfg",
            f"patient{patient}_frame{ed}.nii.gz",
            f"patient{patient}_frame{ed}_gt.nii.gz",
            f"patient{patient}_frame{es}.nii.gz",
            f"patient{patient}_frame{es}_gt.nii.gz",
        }
        assert {p.name for p in folder.iterdir()} == expected, patient
        original = shared_dir / "data" / "acdc" / "training" / f"patient{patient}" / f"patient{patient}_frame{es}_gt.nii.gz"
        assert (folder / original.name).read_bytes() == original.read_bytes(), patient


def test_extract_replaces_existing_target(tmp_path: Path) -> None:
    archive = tmp_path / "new.zip"
    with zipfile.ZipFile(archive, "w") as bundle:
        bundle.writestr("fresh.txt", "new")
    target = tmp_path / "target"
    target.mkdir()
    (target / "stale.txt").write_text("old")

    extract_archive(archive, target)

    assert sorted(p.name for p in target.iterdir()) == ["fresh.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["new.zip", "target"]


def test_extract_zip_rejects_parent_member(tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    archive = work / "evil.zip"
    with zipfile.ZipFile(archive, "w") as bundle:
        bundle.writestr("good.txt", "fine")
        bundle.writestr("../evil", "escaped")
    before = _listing(tmp_path)

    with pytest.raises(ValueError, match=r"'\.\./evil'.*evil\.zip"):
        extract_archive(archive, work / "target")

    assert _listing(tmp_path) == before
    assert not (tmp_path / "evil").exists()


def test_extract_zip_rejects_absolute_member(tmp_path: Path) -> None:
    archive = tmp_path / "absolute.zip"
    with zipfile.ZipFile(archive, "w") as bundle:
        bundle.writestr("/tmp/abs_x", "x")
    with zipfile.ZipFile(archive) as bundle:
        assert bundle.namelist() == ["/tmp/abs_x"]

    with pytest.raises(ValueError, match="/tmp/abs_x"):
        extract_archive(archive, tmp_path / "target")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["absolute.zip"]


def test_extract_zip_skips_symlink(tmp_path: Path) -> None:
    archive = tmp_path / "links.zip"
    with zipfile.ZipFile(archive, "w") as bundle:
        link = zipfile.ZipInfo("link_to_etc")
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        bundle.writestr(link, "/etc")
        bundle.writestr("data.txt", "payload")

    target = extract_archive(archive, tmp_path / "target")

    assert sorted(p.name for p in target.iterdir()) == ["data.txt"]


def _tar_with(path: Path, *members: tarfile.TarInfo, payload: bytes = b"payload") -> Path:
    with tarfile.open(path, "w:gz") as bundle:
        good = tarfile.TarInfo("good.txt")
        good.size = len(payload)
        bundle.addfile(good, io.BytesIO(payload))
        for member in members:
            bundle.addfile(member)
    return path


def _link(name: str, target: str, kind: bytes = tarfile.SYMTYPE) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    return info


@pytest.mark.parametrize(
    ("member", "fragment"),
    [
        (_link("etc_link", "/etc"), "etc_link"),
        (_link("sub/up", "../../etc"), "sub/up"),
        (_link("hard", "../outside.txt", tarfile.LNKTYPE), "hard"),
        (_link("hard_abs", "/etc/passwd", tarfile.LNKTYPE), "hard_abs"),
    ],
    ids=["symlink-absolute", "symlink-relative", "hardlink-relative", "hardlink-absolute"],
)
def test_extract_tar_rejects_outside_links(tmp_path: Path, member: tarfile.TarInfo, fragment: str) -> None:
    archive = _tar_with(tmp_path / "links.tar.gz", member)
    with pytest.raises(ValueError, match=rf"{fragment}.*links\.tar\.gz"):
        extract_archive(archive, tmp_path / "target")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["links.tar.gz"]


def test_extract_tar_rejects_parent_member(tmp_path: Path) -> None:
    archive = tmp_path / "evil.tar"
    with tarfile.open(archive, "w") as bundle:
        info = tarfile.TarInfo("../evil")
        info.size = 3
        bundle.addfile(info, io.BytesIO(b"bad"))

    with pytest.raises(ValueError, match=r"'\.\./evil'.*evil\.tar"):
        extract_archive(archive, tmp_path / "target")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["evil.tar"]


def test_extract_tar_keeps_inside_symlink(tmp_path: Path) -> None:
    archive = _tar_with(tmp_path / "ok.tar.gz", _link("alias.txt", "good.txt"))
    target = extract_archive(archive, tmp_path / "target")
    assert (target / "alias.txt").is_symlink()
    assert (target / "alias.txt").read_bytes() == b"payload"


def test_extract_tar_skips_macos_entries(tmp_path: Path) -> None:
    archive = tmp_path / "mac.tar"
    with tarfile.open(archive, "w") as bundle:
        for name in ("data/volume.nii.gz", "data/._volume.nii.gz", "__MACOSX/data/._volume.nii.gz"):
            info = tarfile.TarInfo(name)
            info.size = 1
            bundle.addfile(info, io.BytesIO(b"x"))
    target = extract_archive(archive, tmp_path / "target")
    assert _listing(target) == {"data", "data/volume.nii.gz"}


def test_extract_tar_with_dot_prefix(tmp_path: Path) -> None:
    # `tar -czf x.tar.gz .` stores the root as "." and members as "./name".
    archive = tmp_path / "dot.tar.gz"
    with tarfile.open(archive, "w:gz") as bundle:
        root = tarfile.TarInfo(".")
        root.type = tarfile.DIRTYPE
        bundle.addfile(root)
        member = tarfile.TarInfo("./sub/file.txt")
        member.size = 4
        bundle.addfile(member, io.BytesIO(b"data"))
    target = extract_archive(archive, tmp_path / "target")
    assert (target / "sub" / "file.txt").read_bytes() == b"data"

def test_extract_rejects_non_archive(tmp_path: Path) -> None:
    archive = tmp_path / "plain.bin"
    archive.write_bytes(b"not an archive at all" * 40)
    with pytest.raises(ValueError, match="neither a zip nor a tar"):
        extract_archive(archive, tmp_path / "target")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plain.bin"]


def test_extract_rejects_corrupt_zip(mirror_dir: Path, tmp_path: Path) -> None:
    archive = tmp_path / "cut.zip"
    data = (mirror_dir / "acdc_scribbles.zip").read_bytes()
    # The end-of-central-directory record survives, so the file still passes zipfile.is_zipfile.
    archive.write_bytes(data[:200] + bytes(len(data) - 400) + data[-200:])
    with pytest.raises(ValueError, match="corrupt"):
        extract_archive(archive, tmp_path / "target")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cut.zip"]


# ---------------------------------------------------------------------------------------------
# Source specs


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [
        ({}, "exactly one of url, path or demo"),
        ({"url": "https://example.org/a.zip", "path": "/data"}, "found: url, path"),
        ({"url": "https://example.org/a.zip", "sha256": "xyz", "extract": True}, "64 hexadecimal digits"),
        ({"url": "https://example.org/a.zip", "sha256": "a" * 63, "extract": True}, "64 hexadecimal digits"),
        ({"url": "https://example.org/a.zip", "extract": True}, "sha256: null"),
        ({"url": "https://example.org/a.zip", "sha265": "a" * 64}, "unknown key"),
        ({"url": "ftp://example.org/a.zip", "sha256": None}, "http:// or https://"),
        ({"url": "https://example.org/a.zip", "sha256": None, "extract": "yes"}, "true or false"),
        ({"url": "https://example.org/dir/", "sha256": None, "extract": False}, "filename"),
        ({"url": "https://example.org/a", "sha256": None, "extract": False, "filename": "../x"}, "plain file name"),
        ({"url": "https://example.org/a.zip", "sha256": None, "filename": "a.zip"}, "extract is false"),
        ({"path": "/data", "sha256": "a" * 64}, "unknown key"),
        ({"demo": {}, "filename": "x"}, "unknown key"),
        ({"url": "https://example.org/a.zip", "sha256": None, "extract": True, "filename": "a.zip"}, "extract is false"),
        ({"path": ""}, "non-empty"),
        ({"path": "/data", "obtain": 3}, "obtain"),
        ({"demo": 8}, "demo must be a mapping"),
        ("https://example.org/a.zip", "must be a mapping"),
    ],
)
def test_validate_source_spec_rejects(spec, fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment.replace("(", r"\(").replace(")", r"\)")) as failure:
        validate_source_spec("images", spec)
    assert "'images'" in str(failure.value)


def test_validate_source_name_rejected() -> None:
    with pytest.raises(ValueError, match="plain directory name"):
        validate_source_spec("../images", {"demo": {}})


def test_resolve_source_paths(tmp_path: Path) -> None:
    resources = tmp_path / "resources"
    archive = {"url": "https://example.org/files/acdc.zip", "sha256": None, "extract": True}
    single = {"url": "https://example.org/w/table5_pidinet.pth?raw=1", "sha256": PIDINET_SHA256, "extract": False}
    renamed = {"url": "https://example.org/api/download", "sha256": None, "extract": False, "filename": "acdc.zip"}
    default = {"url": "https://example.org/files/acdc.zip", "sha256": None}
    # A schema validator that fills defaults adds `extract` to local and demo sources too.
    local_with_default = {"path": str(tmp_path), "extract": True}
    local = {"path": str(tmp_path), "obtain": "request it from the organisers"}

    assert resolve_source("images", archive, "acdc", resources) == resources / "acdc" / "images"
    assert resolve_source("weights", single, "acdc", resources) == resources / "acdc" / "weights" / "table5_pidinet.pth"
    assert resolve_source("raw", renamed, "acdc", resources) == resources / "acdc" / "raw" / "acdc.zip"
    assert resolve_source("synthetic", {"demo": {"subjects": 4}}, "demo", resources) == resources / "demo" / "synthetic"
    assert resolve_source("images", local, "mscmr", resources) == tmp_path
    assert source_target("images", archive, "acdc", resources) == resources / "acdc" / "images"
    assert resolve_source("images", default, "acdc", resources) == resources / "acdc" / "images"
    assert resolve_source("images", local_with_default, "acdc", resources) == tmp_path
    assert resolve_source("synthetic", {"demo": {}, "extract": True}, "demo", resources) == resources / "demo" / "synthetic"


def test_resolve_missing_local_path(tmp_path: Path) -> None:
    missing = tmp_path / "MSCMR_dataset"
    spec = {"path": str(missing), "obtain": "register at the MS-CMRSeg 2019 challenge site"}

    with pytest.raises(FileNotFoundError) as failure:
        resolve_source("images", spec, "mscmr", tmp_path / "resources")

    message = str(failure.value)
    assert str(missing) in message
    assert "register at the MS-CMRSeg 2019 challenge site" in message
    assert "registration" in message
    assert "datasets.mscmr.sources.images.path" in message
    assert resolve_source("images", spec, "mscmr", tmp_path / "resources", must_exist=False) == missing


def test_fetch_source_rejects_path_spec(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="only downloads url sources"):
        fetch_source({"path": str(tmp_path)}, tmp_path / "out")


# ---------------------------------------------------------------------------------------------
# helpnet fetch


def test_cli_fetch_extracts_archive(mirror_dir: Path, tmp_path: Path) -> None:
    output = tmp_path / "resources" / "acdc" / "scribbles"
    with LoopbackMirror(mirror_dir, fail_first={"acdc_scribbles.zip": 1}) as mirror:
        spec = {"url": mirror.url("acdc_scribbles.zip"), "sha256": SCRIBBLES_SHA256, "extract": True}
        code = main(["fetch", "--spec", json.dumps(spec), "--output", str(output), "--backoff", "0"])

    assert code == 0
    assert len(list(output.rglob("*.nii.gz"))) == 200
    assert sorted(p.name for p in output.parent.iterdir()) == ["scribbles"]


def test_cli_fetch_single_file(mirror_dir: Path, tmp_path: Path) -> None:
    output = tmp_path / "weights" / "table5_pidinet-tiny.pth"
    with LoopbackMirror(mirror_dir) as mirror:
        spec = {"url": mirror.url("table5_pidinet-tiny.pth"), "sha256": None, "extract": False}
        code = main(["fetch", "--spec", json.dumps(spec), "--output", str(output), "--retries", "0", "--timeout", "5"])

    assert code == 0
    assert hashlib.sha256(output.read_bytes()).hexdigest() == PIDINET_TINY_SHA256
    assert (output.parent / "table5_pidinet-tiny.pth.sha256").is_file()


def test_cli_fetch_keep_archive_without_sha256(mirror_dir: Path, tmp_path: Path) -> None:
    output = tmp_path / "acdc"
    with LoopbackMirror(mirror_dir) as mirror:
        spec = {"url": mirror.url("acdc.zip"), "sha256": None, "extract": True}
        code = main(["fetch", "--spec", json.dumps(spec), "--output", str(output), "--keep-archive"])

    assert code == 0
    archive = tmp_path / "acdc.archive"
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    assert (tmp_path / "acdc.archive.sha256").read_text().split()[0] == digest
    assert len(list((output / "database" / "training").iterdir())) == 10


def test_cli_fetch_bad_checksum_fails(mirror_dir: Path, tmp_path: Path) -> None:
    output = tmp_path / "pidinet.pth"
    with LoopbackMirror(mirror_dir) as mirror:
        spec = {"url": mirror.url("table5_pidinet.pth"), "sha256": "0" * 64, "extract": False}
        code = main(["fetch", "--spec", json.dumps(spec), "--output", str(output)])

    assert code == 1
    assert list(tmp_path.iterdir()) == []


def test_cli_fetch_invalid_json(tmp_path: Path) -> None:
    assert main(["fetch", "--spec", "{url:", "--output", str(tmp_path / "x")]) == 1

