# Install the lab into .venv inside this kit from wheels\ alone (no network, no index), then
# check it (LABKIT_DATA set to the kit's data\). Windows.
# Run: powershell -ExecutionPolicy Bypass -File install.ps1
# Set $env:PYTHON to pick an interpreter (3.11 or 3.12).
$ErrorActionPreference = "Stop"
Set-Location -Path $PSScriptRoot
function Fail($msg) {
    Write-Host "install.ps1: $msg" -ForegroundColor Red
    Write-Host "install.ps1: NOT READY (see README.txt, 'When something fails')" -ForegroundColor Red
    exit 1
}
$check = "import sys; sys.exit(sys.version_info[:2] not in ((3, 11), (3, 12)))"
$py = @()
if ($env:PYTHON) { $py = @($env:PYTHON) } else {
    foreach ($cand in @(@("py", "-3.12"), @("py", "-3.11"), @("python"))) {
        $exe = $cand[0]; $rest = @($cand | Select-Object -Skip 1)
        if (Get-Command $exe -ErrorAction SilentlyContinue) {
            & $exe @rest -c $check 2>$null
            if ($LASTEXITCODE -eq 0) { $py = $cand; break }
        }
    }
}
if ($py.Count -eq 0) { Fail "no Python 3.11 or 3.12 found; install one from python.org (tick 'Add to PATH') or set `$env:PYTHON" }
$exe = $py[0]; $rest = @($py | Select-Object -Skip 1)
& $exe @rest -c $check
if ($LASTEXITCODE -ne 0) { Fail "$exe is not Python 3.11 or 3.12; the kit has wheels for those" }
Write-Host "install.ps1: making .venv with $($py -join ' ')"
if (-not (Test-Path ".venv\Scripts\python.exe")) {
    & $exe @rest -m venv .venv
    if ($LASTEXITCODE -ne 0) { Fail "could not make a venv" }
}
& .venv\Scripts\python.exe -m pip install --isolated --quiet --disable-pip-version-check `
    --no-index --find-links wheels --only-binary=:all: labkit
if ($LASTEXITCODE -ne 0) { Fail "pip could not install the lab from wheels\ (is this laptop's platform in PLATFORMS.txt?)" }
# The lab finds the demo models and key tables through LABKIT_DATA: this kit's data\ folder.
$env:LABKIT_DATA = Join-Path $PSScriptRoot "data"
& .venv\Scripts\python.exe check.py
if ($LASTEXITCODE -ne 0) { Fail "the lab installed but its check failed (above)" }
