#!/usr/bin/env bash
# One-step set-up: Debian's ffmpeg (if missing), a .venv with the pinned dependencies, the package itself.
# Usage: ./setup.sh            (re-running it is safe and quick when everything is already there)
set -euo pipefail
cd "$(dirname "$0")"

PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}

if ! command -v ffmpeg >/dev/null 2>&1; then
  echo "setup: installing ffmpeg (Debian package)"
  SUDO=""
  [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1 && SUDO="sudo"
  if command -v apt-get >/dev/null 2>&1; then
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq ffmpeg >/dev/null
  else
    echo "setup: no apt-get here; install ffmpeg with your system's package manager and re-run" >&2
    exit 1
  fi
fi

"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || {
  echo "setup: Python >= 3.11 is required ($("$PYTHON" --version 2>&1) found); set PYTHON=..." >&2
  exit 1
}

[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --upgrade pip
"$VENV/bin/python" -m pip install --quiet -e ".[test]"
"$VENV/bin/python" -c 'import torch, torchaudio, open_clip, snakemake, dvc, mlflow; print("setup: ok, torch", torch.__version__)'
echo "setup: done. Next:  . $VENV/bin/activate && snakemake --cores all results/table3.csv"
