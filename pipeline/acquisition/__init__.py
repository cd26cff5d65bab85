"""Fetch the raw datasets: resumable verified downloads, safe archive extraction, AudioSet clips from video sites.

download.py  download(url, dest, checksum=...): resumable HTTP(S)/file download, retried, checksum-verified
archives.py  safe_extract(archive, dest): zip/tar extraction that refuses paths escaping dest and links
audioset.py  fetch_audioset(root): AudioSet segments -> audio/<stem>.wav + frames/<stem>/*.jpg, resumable
sources.py   what the acquisition rules call: each dataset of the paper profile fetched or found in place

Import the module you need (nothing is re-exported here): the CLI imports download.py at start-up for its error
type, and re-exporting audioset.py here would add its yt-dlp and pandas, half a second, to every command.
"""
