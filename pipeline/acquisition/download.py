"""Download one file: resumable, retried, checksum-verified, and never half-written at its destination.

download(url, dest, checksum=...) streams into `dest.part`. An interrupted transfer leaves the .part behind and
the next attempt (or the next run) asks the server for the rest with `Range: bytes=N-`; a server that ignores
the Range header and answers 200 gets a restart from byte 0, a 416 means the .part already holds everything.
Connection errors, stalls (no byte for `timeout` seconds), 5xx/408/429 answers and bodies shorter than their
Content-Length are retried with exponential backoff; other 4xx answers are final. Only a complete file whose
checksum matches is fsynced and renamed onto `dest`, so a file at `dest` is always a finished, verified one, and
a `dest` that already matches costs no request at all.

Only the standard library speaks HTTP here (urllib): `requests` is not a declared dependency. One writer per
`dest` at a time: two processes sharing a .part would interleave their bytes.
"""

from __future__ import annotations

import http.client
import os
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from tqdm import tqdm

from pipeline.io import file_digest, fsync_dir

CHUNK = 1 << 20
CHECKSUMS = {"sha256": 64, "md5": 32}  # algorithm -> hex digits
SCHEMES = ("http", "https", "file")
RETRY_STATUS = {408, 429}  # 4xx answers that mean "later", not "never"
MAX_BACKOFF = 60.0
USER_AGENT = "audioclip-pipeline (python urllib)"


class DownloadError(RuntimeError):
    """A download failed for good; the message names the URL, the attempts and the last reason."""


class ChecksumError(DownloadError):
    """The downloaded bytes do not have the expected checksum; the message names the URL, file and both digests."""


class _Retry(Exception):
    """One attempt failed in a way another attempt may fix; str() is the reason."""


def parse_checksum(checksum: str | None) -> tuple[str, str] | None:
    """'sha256:<hex>', 'md5:<hex>' (Zenodo publishes md5 only) or a bare sha256 hex -> (algorithm, hex)."""
    if not checksum:
        return None
    algorithm, sep, digest = checksum.strip().lower().rpartition(":")
    algorithm = algorithm if sep else "sha256"
    if algorithm not in CHECKSUMS or len(digest) != CHECKSUMS[algorithm] or not all(c in "0123456789abcdef" for c in digest):
        raise ValueError(f"checksum {checksum!r}: expected sha256:<64 hex digits> or md5:<32 hex digits>")
    return algorithm, digest


def download(url: str, dest: str | os.PathLike, *, checksum: str | None = None, retries: int = 5,
             backoff: float = 1.0, timeout: float = 30.0, progress: bool = False) -> Path:
    """Fetch `url` to `dest` and return `dest`.

    retries: attempts after the first; the k-th retry waits backoff * 2**(k-1) seconds (at most 60).
    timeout: seconds to connect and seconds without a byte before an attempt counts as stalled.
    """
    scheme = urllib.parse.urlsplit(url).scheme.lower()
    if scheme not in SCHEMES:
        raise ValueError(f"{url}: unsupported URL scheme {scheme!r}; expected one of {', '.join(SCHEMES)}")
    if retries < 0:
        raise ValueError(f"retries must be >= 0, got {retries}")
    dest = Path(dest)
    want = parse_checksum(checksum)
    if dest.is_file() and (want is None or file_digest(dest, want[0]) == want[1]):
        return dest  # already there (and verified when a hash is known): not a single request
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")

    attempts = retries + 1
    for attempt in range(1, attempts + 1):
        try:
            _attempt(url, part, timeout, progress, desc=dest.name)
            break
        except _Retry as err:
            reason = str(err)
            if attempt < attempts:
                time.sleep(min(backoff * 2 ** (attempt - 1), MAX_BACKOFF))
    else:
        raise DownloadError(f"{url}: download failed after {attempts} attempt(s); last error: {reason}")

    if want is not None:
        got = file_digest(part, want[0])
        if got != want[1]:
            # a wrong file is not resumable into a right one: drop it so the next run starts clean
            part.unlink(missing_ok=True)
            raise ChecksumError(f"{url}: {want[0]} mismatch for {dest}: expected {want[1]}, got {got}; "
                                f"download removed")
    with open(part, "rb") as f:
        os.fsync(f.fileno())
    os.replace(part, dest)
    fsync_dir(dest.parent)
    return dest


def _attempt(url: str, part: Path, timeout: float, progress: bool, desc: str) -> None:
    """One request: append the rest of the file to `part` (or rewrite it). Raises _Retry or DownloadError."""
    offset = part.stat().st_size if part.is_file() else 0
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    if offset:
        request.add_header("Range", f"bytes={offset}-")
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as err:
        err.close()
        if err.code == 416 and offset:
            total = _content_range(err.headers.get("Content-Range"))[1]
            if total == offset:
                return  # nothing left to fetch: the .part is the whole file (the checksum still decides)
            part.unlink(missing_ok=True)  # a .part longer than the file, or a file that changed: start over
            raise _Retry(f"HTTP 416 for a resume at byte {offset} of {total}; restarting from byte 0") from None
        if err.code >= 500 or err.code in RETRY_STATUS:
            raise _Retry(f"HTTP {err.code} {err.reason}") from None
        raise DownloadError(f"{url}: HTTP {err.code} {err.reason} (not retried)") from None
    except (OSError, http.client.HTTPException) as err:  # URLError, refused, reset, connect timeout
        raise _Retry(_describe(err, timeout)) from None

    with response:
        status = getattr(response, "status", None) or 200  # file: URLs carry no status
        if status == 206:
            start = _content_range(response.headers.get("Content-Range"))[0]
            if start != offset:
                part.unlink(missing_ok=True)
                raise _Retry(f"asked to resume at byte {offset}, server sent from byte {start}; restarting")
        else:
            offset = 0  # a 200 answer to a Range request carries the whole file: rewrite from byte 0
        length = response.headers.get("Content-Length")
        expected = offset + int(length) if length and length.strip().isdigit() else None
        with open(part, "ab" if offset else "wb") as f, \
                tqdm(total=expected, initial=offset, unit="B", unit_scale=True, desc=desc, disable=not progress) as bar:
            # read1: whatever has arrived, so a stall loses nothing already received
            read = getattr(response, "read1", response.read)
            try:
                while block := read(CHUNK):
                    f.write(block)
                    bar.update(len(block))
            except (OSError, http.client.HTTPException) as err:  # socket timeout = stall, reset, IncompleteRead
                raise _Retry(_describe(err, timeout)) from None
            # bytes received so far stay in the .part for the next attempt to resume from

    size = part.stat().st_size
    if expected is not None and size < expected:
        raise _Retry(f"connection closed early: {size} of {expected} bytes")
    if expected is not None and size > expected:
        part.unlink(missing_ok=True)
        raise _Retry(f"received {size} bytes, more than the {expected} announced; restarting")


def _content_range(header: str | None) -> tuple[int | None, int | None]:
    """'bytes 100-199/1000' -> (100, 1000); 'bytes */1000' -> (None, 1000); unparsable -> (None, None)."""
    if not header or not header.strip().lower().startswith("bytes"):
        return None, None
    spec = header.strip()[5:].strip()
    span, _, total = spec.partition("/")
    start = span.partition("-")[0].strip()
    return (int(start) if start.isdigit() else None), (int(total) if total.strip().isdigit() else None)


def _describe(err: BaseException, timeout: float) -> str:
    reason = err.reason if isinstance(err, urllib.error.URLError) else err
    if isinstance(reason, TimeoutError):
        return f"stalled: no data for {timeout} s"
    return f"{type(reason).__name__}: {reason}"
