"""Download, checksum verification and safe extraction of dataset sources (`helpnet fetch`).

A download streams into ``<file>.part``. A later attempt resumes that file with an HTTP
``Range`` request and starts again from zero when the server returns the full body instead.
The final name appears only after the sha256 matches, by an atomic rename. Archives are unpacked
into a temporary sibling directory that replaces the target directory when extraction succeeded,
and members that would land outside it are rejected.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import re
import shutil
import stat
import tarfile
import tempfile
import time
import zipfile
import zlib
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import Any

import requests
import urllib3.exceptions
from tqdm import tqdm

from helpnet.data.sources import EXTRACT_DEFAULT, source_kind
from helpnet.io import write_text

logger = logging.getLogger(__name__)

CHUNK_SIZE = 1 << 20
"""Bytes read from the socket and hashed per step."""
MAX_BACKOFF_S = 60.0
"""Upper bound of one wait between attempts, in seconds."""

# Errors after which a new attempt can succeed: the connection broke, timed out or was cut
# short. urllib3 errors appear because the body is read from the raw stream (see _stream_body).
RETRYABLE_ERRORS: tuple[type[BaseException], ...] = (
    requests.ConnectionError,
    requests.Timeout,
    requests.exceptions.ChunkedEncodingError,
    urllib3.exceptions.HTTPError,
    ConnectionError,
    TimeoutError,
)
RETRYABLE_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})


class DownloadError(RuntimeError):
    """A download that failed for a reason other than a checksum mismatch."""


class _RetryableError(Exception):
    """A failed attempt that the retry loop repeats (truncated body, 5xx response)."""


def sha256_of(path: str | os.PathLike, chunk_size: int = CHUNK_SIZE) -> str:
    """Return the hex sha256 digest of the file at ``path``."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def download_file(
    url: str,
    destination: str | os.PathLike,
    sha256: str | None,
    *,
    retries: int = 5,
    timeout: float = 60.0,
    backoff: float = 2.0,
    session: requests.Session | None = None,
) -> Path:
    """Download ``url`` to ``destination`` and return ``destination``.

    ``sha256`` is the expected hex digest. ``None`` accepts an unverified file: the computed digest
    is logged as a warning and written to ``<destination>.sha256``. An existing ``destination``
    whose digest matches is kept without a download. The body streams to
    ``<destination>.part``, which a later attempt or call resumes. Connection errors, timeouts,
    truncated bodies and 5xx/429 responses are retried up to ``retries`` times, waiting
    ``backoff * 2**(attempt - 1)`` seconds (at most MAX_BACKOFF_S) in between. ``timeout`` is
    the connect and read timeout in seconds.

    Raises ValueError on a checksum mismatch (the partial file is deleted) and DownloadError
    when the server rejects the request or every attempt failed.
    """
    destination = Path(destination)
    expected = sha256.lower() if sha256 is not None else None
    if retries < 0:
        raise ValueError(f"retries must be 0 or more, got {retries}")

    if destination.is_file() and expected is not None:
        if sha256_of(destination) == expected:
            logger.info("%s already present with the expected sha256, so the download is skipped", destination)
            return destination
        logger.warning("%s exists but its sha256 differs from the expected one, so it is downloaded again", destination)

    destination.parent.mkdir(parents=True, exist_ok=True)
    part = destination.with_name(destination.name + ".part")
    own_session = session is None
    session = session or requests.Session()
    try:
        _download_with_retries(session, url, part, retries=retries, timeout=timeout, backoff=backoff)
    finally:
        if own_session:
            session.close()

    actual = sha256_of(part)
    if expected is None:
        logger.warning(
            "no sha256 configured for %s, so the download is unverified; its sha256 is %s. Put `sha256: %s` in "
            "the config to pin this file.",
            url,
            actual,
            actual,
        )
        write_text(destination.with_name(destination.name + ".sha256"), f"{actual}  {destination.name}\n")
    elif actual != expected:
        part.unlink()
        raise ValueError(
            f"sha256 mismatch for {url}: expected {expected}, got {actual}. The file was deleted. "
            "If the publisher changed the file on purpose, update `sha256:` in the config. "
            "Otherwise check the mirror or the network path and try again."
        )
    os.replace(part, destination)
    logger.info("downloaded %s to %s (sha256 %s)", url, destination, actual)
    return destination


def _download_with_retries(
    session: requests.Session,
    url: str,
    part: Path,
    *,
    retries: int,
    timeout: float,
    backoff: float,
) -> None:
    attempts = retries + 1
    for attempt in range(1, attempts + 1):
        try:
            _download_attempt(session, url, part, timeout=timeout)
            return
        except (_RetryableError, *RETRYABLE_ERRORS) as error:
            if attempt == attempts:
                raise DownloadError(
                    f"download of {url} failed after {attempts} attempt(s): {error}. "
                    f"The partial file {part} is kept and the next run resumes it. Check the "
                    "network or the URL, or raise --retries/--timeout."
                ) from error
            delay = min(backoff * 2 ** (attempt - 1), MAX_BACKOFF_S)
            logger.warning(
                "attempt %d/%d for %s failed: %s; retrying in %.2f s", attempt, attempts, url, error, delay
            )
            time.sleep(delay)


def _download_attempt(session: requests.Session, url: str, part: Path, *, timeout: float) -> None:
    """Fetch ``url`` into ``part`` once, resuming from the bytes already in ``part``."""
    offset = part.stat().st_size if part.exists() else 0
    # Content codings would make the Range offsets refer to encoded bytes, so ask for none.
    headers = {"Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"

    with session.get(url, headers=headers, stream=True, timeout=timeout) as response:
        status = response.status_code
        if status == 416 and offset:
            total = _total_from_content_range(response.headers.get("Content-Range", ""))
            if total == offset:
                logger.info("%s is already complete (%d bytes)", part, offset)
                return
            logger.warning(
                "server rejected the resume of %s at byte %d (HTTP 416), so the download starts again from zero",
                part,
                offset,
            )
            part.unlink()
            return _download_attempt(session, url, part, timeout=timeout)
        if status in RETRYABLE_STATUS or status >= 500:
            raise _RetryableError(f"HTTP {status} {response.reason}")
        if status >= 400:
            raise DownloadError(
                f"download of {url} failed: HTTP {status} {response.reason}. Check the url in the "
                "source spec, because the file may have moved."
            )

        if status == 206:
            start = _start_from_content_range(response.headers.get("Content-Range", ""))
            if start != offset:
                logger.warning(
                    "server returned the range starting at byte %s for a request at byte %d of %s, "
                    "so the download starts again from zero",
                    start,
                    offset,
                    url,
                )
                part.unlink()
                return _download_attempt(session, url, part, timeout=timeout)
            mode = "ab"
            logger.info("resuming %s at byte %d", url, offset)
        else:
            if offset:
                logger.info("server ignored the Range request for %s, so the download starts again from byte 0", url)
            offset = 0
            mode = "wb"

        length = response.headers.get("Content-Length")
        total = offset + int(length) if length is not None and length.isdigit() else None
        written = _stream_body(response, part, mode, offset=offset, total=total)

    if total is not None and offset + written != total:
        raise _RetryableError(f"transfer ended after {offset + written} of {total} bytes")


def _stream_body(response: requests.Response, part: Path, mode: str, *, offset: int, total: int | None) -> int:
    written = 0
    progress = tqdm(
        total=total,
        initial=offset,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        desc=part.name.removesuffix(".part"),
        disable=None,
        leave=False,
    )
    # Read the raw stream: requests' iter_content drops bytes already received when the
    # connection breaks mid-chunk, and those bytes are what the next attempt resumes from.
    with open(part, mode) as handle, progress:
        for chunk in response.raw.stream(CHUNK_SIZE, decode_content=False):
            handle.write(chunk)
            written += len(chunk)
            progress.update(len(chunk))
    return written


def _start_from_content_range(value: str) -> int | None:
    match = re.fullmatch(r"\s*bytes\s+(\d+)-(\d+)/(\d+|\*)\s*", value)
    return int(match.group(1)) if match else None


def _total_from_content_range(value: str) -> int | None:
    match = re.fullmatch(r"\s*bytes\s+(?:\*|\d+-\d+)/(\d+)\s*", value)
    return int(match.group(1)) if match else None


# ---------------------------------------------------------------------------------------------
# Extraction


def _is_apple_metadata(name: str) -> bool:
    """Return whether ``name`` is macOS metadata (``__MACOSX/`` folders, ``._*`` AppleDouble files)."""
    parts = PurePosixPath(name.replace("\\", "/")).parts
    return "__MACOSX" in parts or (bool(parts) and parts[-1].startswith("._"))


def _member_path(root: Path, name: str, archive: Path) -> Path:
    """Return where member ``name`` lands under ``root``; raise ValueError if that is outside."""
    normalized = name.replace("\\", "/")
    parts = PurePosixPath(normalized).parts
    if (
        normalized.startswith("/")
        or re.match(r"^[A-Za-z]:", normalized)
        or ".." in parts
    ):
        raise ValueError(
            f"unsafe member {name!r} in archive {archive}: its path leaves the extraction directory. "
            "The archive may be malicious; obtain it again from the official source."
        )
    return root.joinpath(*parts)


def _is_within(path: str | os.PathLike, root: str | os.PathLike) -> bool:
    path = os.path.normpath(os.path.abspath(path))
    root = os.path.normpath(os.path.abspath(root))
    return os.path.commonpath([path, root]) == root


def _extract_zip(archive: Path, root: Path) -> int:
    extracted = 0
    with zipfile.ZipFile(archive) as bundle:
        members = bundle.infolist()
        # Check every name before writing anything.
        for info in members:
            if not _is_apple_metadata(info.filename):
                _member_path(root, info.filename, archive)

        for info in members:
            if _is_apple_metadata(info.filename):
                continue
            target = _member_path(root, info.filename, archive)
            if target == root:
                continue
            if stat.S_ISLNK(info.external_attr >> 16):
                logger.warning("skipping symbolic link %r in %s", info.filename, archive)
                continue
            if info.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            # Zip symlinks are skipped, so no extracted link can redirect this write. The realpath
            # check guards that invariant.
            if not _is_within(os.path.realpath(target.parent), os.path.realpath(root)):
                raise ValueError(f"unsafe member {info.filename!r} in archive {archive}: it resolves outside the target")
            with bundle.open(info) as source, open(target, "wb") as sink:
                shutil.copyfileobj(source, sink, CHUNK_SIZE)
            extracted += 1
    return extracted


def _check_tar_member(member: tarfile.TarInfo, root: Path, archive: Path) -> None:
    target = _member_path(root, member.name, archive)
    if member.issym():
        link = member.linkname
        resolved = link if os.path.isabs(link) else os.path.join(os.path.dirname(target), link)
        if not _is_within(resolved, root):
            raise ValueError(
                f"unsafe symbolic link {member.name!r} -> {link!r} in archive {archive}: it points "
                "outside the extraction directory. Obtain the archive again from the official source."
            )
    elif member.islnk():
        link = member.linkname
        resolved = link if os.path.isabs(link) else os.path.join(root, link)
        if not _is_within(resolved, root):
            raise ValueError(
                f"unsafe hard link {member.name!r} -> {link!r} in archive {archive}: it points "
                "outside the extraction directory. Obtain the archive again from the official source."
            )
    elif not (member.isfile() or member.isdir()):
        raise ValueError(
            f"unsupported member {member.name!r} in archive {archive}: device files and FIFOs "
            "are not extracted. Obtain the archive again from the official source."
        )


def _extract_tar(archive: Path, root: Path) -> int:
    with tarfile.open(archive, mode="r:*") as bundle:
        members = [member for member in bundle.getmembers() if not _is_apple_metadata(member.name)]
        for member in members:
            _check_tar_member(member, root, archive)
        try:
            # The data filter (Python 3.11.4+) repeats the link checks against links created
            # during extraction and drops set-uid bits and ownership.
            bundle.extractall(root, members=members, filter="data")
        except tarfile.FilterError as error:
            raise ValueError(f"unsafe member in archive {archive}: {error}") from error
    return sum(1 for member in members if member.isfile())


def extract_archive(archive: str | os.PathLike, target: str | os.PathLike) -> Path:
    """Extract a zip or tar(.gz/.bz2/.xz) ``archive`` into the directory ``target``.

    The format is detected from the content, since download URLs often lack an extension.
    Members whose path leaves ``target`` (``..``, absolute paths) and tar links that point
    outside it raise ValueError naming the member and the archive. Symbolic links in zip files,
    ``__MACOSX/`` folders and ``._*`` AppleDouble files are skipped. The contents go into a
    temporary sibling directory that replaces ``target`` only when extraction succeeded, so
    ``target`` never contains a partial extraction.
    """
    archive = Path(archive)
    target = Path(target)
    if not archive.is_file():
        raise FileNotFoundError(f"archive {archive} not found")
    target.parent.mkdir(parents=True, exist_ok=True)

    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".extracting", dir=target.parent))
    try:
        try:
            # NOTE: not tried on the real ACDC archive, which Info-ZIP unzip extracts only with
            # UNZIP_DISABLE_ZIPBOMB_DETECTION=TRUE. Python 3.11.7's zipfile has no zip-bomb
            # check. Newer Python releases were not tried on it.
            if zipfile.is_zipfile(archive):
                count = _extract_zip(archive, staging)
            elif tarfile.is_tarfile(archive):
                count = _extract_tar(archive, staging)
            else:
                raise ValueError(
                    f"{archive} is neither a zip nor a tar archive. Check the url, or set "
                    "`extract: false` if the source is a single file"
                )
        except (zipfile.BadZipFile, tarfile.TarError, EOFError, zlib.error) as error:
            raise ValueError(
                f"archive {archive} is corrupt ({error}). Delete it and download it again."
            ) from error
        # mkdtemp makes the directory private to its owner, so give it the usual permissions.
        os.chmod(staging, 0o755)
        _replace_directory(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    logger.info("extracted %d files from %s into %s", count, archive, target)
    return target


def _replace_directory(source: Path, target: Path) -> None:
    # os.replace cannot overwrite a non-empty directory, so move the old one aside first.
    if target.exists() or target.is_symlink():
        old = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".old", dir=target.parent))
        os.replace(target, old / "previous")
        os.replace(source, target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(source, target)


# ---------------------------------------------------------------------------------------------
# Source-level fetch and CLI


def fetch_source(
    spec: Mapping[str, Any],
    output: str | os.PathLike,
    *,
    name: str = "source",
    retries: int = 5,
    timeout: float = 60.0,
    backoff: float = 2.0,
    keep_archive: bool = False,
) -> Path:
    """Download a URL source spec to ``output`` and return ``output``.

    With ``extract: true`` (the default), ``output`` is the directory of extracted contents. The archive is
    downloaded to ``<output>.archive`` and deleted after extraction unless ``keep_archive``.
    Otherwise ``output`` is the downloaded file.
    """
    if source_kind(name, spec) != "url":
        raise ValueError(
            f"source {name!r}: helpnet fetch only downloads url sources, got {dict(spec)!r}. "
            "Path and demo sources need no download."
        )
    output = Path(output)
    if not spec.get("extract", EXTRACT_DEFAULT):
        return download_file(
            spec["url"], output, spec["sha256"], retries=retries, timeout=timeout, backoff=backoff
        )

    archive = output.with_name(output.name + ".archive")
    download_file(spec["url"], archive, spec["sha256"], retries=retries, timeout=timeout, backoff=backoff)
    extract_archive(archive, output)
    if not keep_archive:
        archive.unlink()
    return output


def _run_fetch(args: argparse.Namespace) -> int:
    try:
        spec = json.loads(args.spec)
    except json.JSONDecodeError as error:
        raise ValueError(f"--spec is not valid JSON ({error}): {args.spec!r}") from error
    fetch_source(
        spec,
        args.output,
        name=args.name,
        retries=args.retries,
        timeout=args.timeout,
        backoff=args.backoff,
        keep_archive=args.keep_archive,
    )
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``fetch`` subcommand."""
    parser = subparsers.add_parser(
        "fetch",
        help="download a url source, verify its sha256 and extract it",
        description=(
            "Download a url source spec, verify its sha256 and either extract the archive into "
            "the directory OUTPUT (extract: true, the default) or save the file as OUTPUT "
            "(extract: false)."
        ),
    )
    parser.add_argument(
        "--spec",
        required=True,
        help='source spec as JSON, e.g. \'{"url": "https://...", "sha256": null, "extract": true}\'',
    )
    parser.add_argument("--output", required=True, type=Path, help="extraction directory or downloaded file")
    parser.add_argument("--name", default="source", help="source name used in messages (default: source)")
    parser.add_argument("--retries", type=int, default=5, help="retries after a failed attempt (default: 5)")
    parser.add_argument(
        "--timeout", type=float, default=60.0, help="connect and read timeout in seconds (default: 60)"
    )
    parser.add_argument(
        "--backoff",
        type=float,
        default=2.0,
        help="wait before the first retry in seconds, doubled after each failure (default: 2)",
    )
    parser.add_argument(
        "--keep-archive", action="store_true", help="keep <OUTPUT>.archive after extraction"
    )
    parser.set_defaults(func=_run_fetch)
