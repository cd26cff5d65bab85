"""download(): resume, retries, checksum and no-op behaviour against a fault-injecting server on 127.0.0.1."""

import hashlib
import os
import socket

import pytest

from pipeline.acquisition.download import ChecksumError, DownloadError, download, parse_checksum
from pipeline.io import file_digest

pytestmark = pytest.mark.reliability  # README: What is guaranteed

FAST = {"backoff": 0.01, "timeout": 0.5}  # short waits keep the retry tests quick


@pytest.fixture
def blob(server):
    """A 200 kB random file served as 'blob.bin'; returns (name, bytes, sha256)."""
    data = os.urandom(200_000)
    (server.root / "blob.bin").write_bytes(data)
    return "blob.bin", data, hashlib.sha256(data).hexdigest()


def test_complete_download_verifies_checksum(server, blob, tmp_path):
    name, data, digest = blob
    dest = tmp_path / "out" / "blob.bin"
    assert download(server.url(name), dest, checksum=digest, **FAST) == dest
    assert dest.read_bytes() == data
    assert not dest.with_name("blob.bin.part").exists()
    assert len(server.requests) == 1 and server.requests[0].range is None


def test_interrupted_download_resumes_with_range(server, blob, tmp_path):
    name, data, digest = blob
    server.fault(name, "drop")  # headers promise 200 kB, the body stops at 100 kB
    dest = download(server.url(name), tmp_path / "blob.bin", checksum=digest, **FAST)
    first, second = server.requests_for(name)
    assert first.range is None
    assert second.range == f"bytes={len(data) // 2}-"  # asked only for the rest
    assert dest.read_bytes() == data


def test_stalled_download_times_out_and_resumes(server, blob, tmp_path):
    name, data, digest = blob
    server.fault(name, "stall")  # half the body, then silence longer than the 0.5 s timeout
    dest = download(server.url(name), tmp_path / "blob.bin", checksum=digest, **FAST)
    assert [r.range for r in server.requests_for(name)] == [None, f"bytes={len(data) // 2}-"]
    assert dest.read_bytes() == data


def test_server_ignoring_range_restarts_from_zero(server, blob, tmp_path):
    name, data, digest = blob
    dest = tmp_path / "blob.bin"
    dest.with_name("blob.bin.part").write_bytes(b"x" * 1000)  # a stale partial file
    server.fault(name, "ignore-range")  # 200 + the whole file: appending would corrupt it
    download(server.url(name), dest, checksum=digest, **FAST)
    assert server.requests_for(name)[0].range == "bytes=1000-"
    assert dest.read_bytes() == data


def test_complete_part_file_is_finished_after_416(server, blob, tmp_path):
    name, data, digest = blob
    dest = tmp_path / "blob.bin"
    dest.with_name("blob.bin.part").write_bytes(data)  # killed after the last byte, before the rename
    download(server.url(name), dest, checksum=digest, **FAST)
    assert [r.range for r in server.requests] == [f"bytes={len(data)}-"]
    assert dest.read_bytes() == data


def test_wrong_checksum_raises_and_leaves_nothing(server, blob, tmp_path):
    name, data, digest = blob
    dest = tmp_path / "blob.bin"
    wrong = "0" * 64
    with pytest.raises(ChecksumError) as err:
        download(server.url(name), dest, checksum=wrong, **FAST)
    message = str(err.value)
    assert server.url(name) in message and wrong in message and digest in message
    assert not dest.exists() and not dest.with_name("blob.bin.part").exists()


def test_server_errors_are_retried_until_success(server, blob, tmp_path):
    name, data, digest = blob
    server.fault(name, "error", times=2)
    download(server.url(name), tmp_path / "blob.bin", checksum=digest, **FAST)
    assert [r.fault for r in server.requests_for(name)] == ["error", "error", None]
    assert (tmp_path / "blob.bin").read_bytes() == data


def test_retry_budget_exhausted_names_url_and_reason(server, blob, tmp_path):
    name, _, _ = blob
    server.fault(name, "error", times=None)  # every request fails
    with pytest.raises(DownloadError) as err:
        download(server.url(name), tmp_path / "blob.bin", retries=2, **FAST)
    message = str(err.value)
    assert server.url(name) in message and "3 attempt" in message and "HTTP 500" in message
    assert len(server.requests_for(name)) == 3
    assert not (tmp_path / "blob.bin").exists()


def test_client_errors_are_not_retried(server, tmp_path):
    with pytest.raises(DownloadError, match="HTTP 404"):
        download(server.url("absent.bin"), tmp_path / "absent.bin", retries=3, **FAST)
    assert len(server.requests) == 1


def test_connection_refused_is_retried_then_reported(tmp_path):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/x.bin"
    with pytest.raises(DownloadError, match="2 attempt") as err:
        download(url, tmp_path / "x.bin", retries=1, **FAST)
    assert url in str(err.value) and "Refused" in str(err.value)


def test_existing_file_means_no_request(server, blob, tmp_path):
    name, data, digest = blob
    dest = tmp_path / "blob.bin"
    dest.write_bytes(data)
    download(server.url(name), dest, checksum=digest, **FAST)
    download(server.url(name), dest, **FAST)  # no hash known: an existing file is taken as is
    assert server.requests == []


def test_existing_file_with_wrong_hash_is_replaced(server, blob, tmp_path):
    name, data, digest = blob
    dest = tmp_path / "blob.bin"
    dest.write_bytes(b"an older version")
    download(server.url(name), dest, checksum=digest, **FAST)
    assert dest.read_bytes() == data and len(server.requests) == 1


def test_file_urls_work_and_other_schemes_are_refused(blob, server, tmp_path):
    name, data, digest = blob
    dest = download((server.root / name).as_uri(), tmp_path / "copy.bin", checksum=digest)
    assert dest.read_bytes() == data
    for url in ("ftp://127.0.0.1/x", "javascript:alert(1)", "/just/a/path"):
        with pytest.raises(ValueError, match="unsupported URL scheme"):
            download(url, tmp_path / "never")
    assert not (tmp_path / "never").exists()


def test_file_digest_matches_hashlib_across_chunks(tmp_path):
    data = os.urandom(10_000)
    (tmp_path / "f").write_bytes(data)
    assert file_digest(tmp_path / "f", chunk=999) == hashlib.sha256(data).hexdigest()
    assert file_digest(tmp_path / "f", "md5", chunk=999) == hashlib.md5(data).hexdigest()


def test_md5_checksums_as_zenodo_publishes_them(server, tmp_path):
    data = os.urandom(5_000)
    (server.root / "us8k.tar.gz").write_bytes(data)
    url = server.url("us8k.tar.gz")
    assert parse_checksum(f"MD5:{hashlib.md5(data).hexdigest()}") == ("md5", hashlib.md5(data).hexdigest())
    assert parse_checksum(hashlib.sha256(data).hexdigest())[0] == "sha256"
    download(url, tmp_path / "a", checksum=f"md5:{hashlib.md5(data).hexdigest()}")
    assert (tmp_path / "a").read_bytes() == data
    with pytest.raises(ChecksumError, match="md5 mismatch"):
        download(url, tmp_path / "b", checksum="md5:" + "0" * 32)
    for bad in ("md5:abc", "crc32:" + "0" * 8, "sha256:" + "g" * 64):
        with pytest.raises(ValueError, match="expected sha256"):
            download(url, tmp_path / "c", checksum=bad)
