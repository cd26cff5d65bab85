"""Fetch the raw datasets: resumable verified downloads, safe archive extraction, AudioSet clips from video sites.

download.py  download(url, dest, checksum=...): resumable HTTP(S)/file download, retried, checksum-verified
archives.py  safe_extract(archive, dest): zip/tar extraction that refuses paths escaping dest and links
audioset.py  fetch_audioset(root): AudioSet segments -> audio/<stem>.wav + frames/<stem>/*.jpg, resumable
"""

from .archives import UnsafeArchiveError, safe_extract
from .audioset import fetch_audioset
from .download import ChecksumError, DownloadError, download, parse_checksum

__all__ = ["ChecksumError", "DownloadError", "UnsafeArchiveError", "download", "fetch_audioset", "parse_checksum",
           "safe_extract"]
