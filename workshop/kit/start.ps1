# Start JupyterLab on the welcome notebook, offline, as the lab's `make lab` does. Windows.
# Run: powershell -ExecutionPolicy Bypass -File start.ps1   ($env:PORT to change 8888;
# $env:OPEN_BROWSER = "0" to not open a browser)
$ErrorActionPreference = "Stop"
Set-Location -Path $PSScriptRoot
if (-not (Test-Path ".venv\Scripts\jupyter.exe")) { Write-Host "start.ps1: run install.ps1 first" -ForegroundColor Red; exit 1 }
$kit = (Get-Location).Path
$env:HF_HUB_OFFLINE = "1"; $env:DIFFUSERS_OFFLINE = "1"; $env:TRANSFORMERS_OFFLINE = "1"
$env:JUPYTERLAB_SETTINGS_DIR = Join-Path $kit "jupyter\user-settings"
# The demo models and key tables: the kit's data\ (the lab's wheel holds none).
$env:LABKIT_DATA = Join-Path $kit "data"
$port = if ($env:PORT) { $env:PORT } else { "8888" }
$browser = if ($env:OPEN_BROWSER -eq "0") { "False" } else { "True" }
& .venv\Scripts\jupyter.exe lab --port=$port --ip=127.0.0.1 `
    "--ServerApp.root_dir=$kit\notebooks" --LabApp.default_url=/lab/tree/00_welcome.ipynb `
    "--ServerApp.open_browser=$browser" --LabApp.news_url=None --LabApp.extension_manager=readonly
