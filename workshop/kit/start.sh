#!/usr/bin/env bash
# Start JupyterLab on the welcome notebook, offline, as the lab's `make lab` does.
# PORT=8888 by default; OPEN_BROWSER=0 to not open a browser.
set -euo pipefail
cd "$(dirname "$0")"
[ -x .venv/bin/jupyter ] || { echo "start.sh: run 'bash install.sh' first" >&2; exit 1; }
KIT=$(pwd)
export HF_HUB_OFFLINE=1 DIFFUSERS_OFFLINE=1 TRANSFORMERS_OFFLINE=1
export JUPYTERLAB_SETTINGS_DIR="$KIT/jupyter/user-settings"
# The demo models and key tables: the kit's data/ (the lab's wheel holds none).
export LABKIT_DATA="$KIT/data"
browser=True; [ "${OPEN_BROWSER:-1}" = 0 ] && browser=False
exec .venv/bin/jupyter lab --port="${PORT:-8888}" --ip=127.0.0.1 \
  --ServerApp.root_dir="$KIT/notebooks" --LabApp.default_url=/lab/tree/00_welcome.ipynb \
  --ServerApp.open_browser=$browser --LabApp.news_url=None --LabApp.extension_manager=readonly \
  --allow-root
