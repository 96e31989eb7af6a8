#!/usr/bin/env bash
# Install the lab into .venv inside this kit from wheels/ alone (no network, no index),
# then check it (LABKIT_DATA set to the kit's data/). Linux and macOS.
# Set PYTHON to pick an interpreter (3.11 or 3.12).
set -euo pipefail
cd "$(dirname "$0")"
fail() { echo "install.sh: $*" >&2; echo "install.sh: NOT READY (see README.txt, 'When something fails')" >&2; exit 1; }
if [ -z "${PYTHON:-}" ]; then
  for p in python3.12 python3.11 python3; do
    if command -v "$p" >/dev/null 2>&1 && "$p" -c 'import sys; sys.exit(sys.version_info[:2] not in ((3, 11), (3, 12)))' 2>/dev/null; then
      PYTHON=$p; break
    fi
  done
fi
[ -n "${PYTHON:-}" ] || fail "no Python 3.11 or 3.12 found; install one (python.org) or set PYTHON=/path/to/python3.12"
"$PYTHON" -c 'import sys; sys.exit(sys.version_info[:2] not in ((3, 11), (3, 12)))' \
  || fail "$PYTHON is Python $("$PYTHON" -c 'import platform; print(platform.python_version())'); the kit has wheels for 3.11 and 3.12"
echo "install.sh: making .venv with $PYTHON ($("$PYTHON" --version 2>&1))"
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv || fail "could not make a venv (on Debian/Ubuntu: sudo apt install python3-venv)"
# --isolated: no pip.conf or PIP_* settings of this laptop (an index, constraints) can interfere.
.venv/bin/python -m pip install --isolated --quiet --disable-pip-version-check \
  --no-index --find-links wheels --only-binary=:all: labkit \
  || fail "pip could not install the lab from wheels/ (is this laptop's platform in PLATFORMS.txt?)"
# The lab finds the demo models and key tables through LABKIT_DATA: this kit's data/ folder.
export LABKIT_DATA="$(pwd)/data"
.venv/bin/python check.py || fail "the lab installed but its check failed (above)"
