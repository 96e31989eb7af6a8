"""The laptop check after install: the lab's own set-up check, then the demo file read."""

import sys
from pathlib import Path

import labkit as lk

KIT = Path(__file__).resolve().parent
table = lk.doctor()
print(table.to_string(index=False))
bad = table[~table["ok"]]
if not bad.empty:
    sys.exit("NOT READY: " + "; ".join(f"{r.check}: {r.note}" for r in bad.itertuples()))
model = lk.open_model(KIT / "data" / "demo_sd1.safetensors")
print(f"demo model: {model}"[:200])
print(f"READY: this laptop runs the lab (Python {sys.version.split()[0]}); start it with the start script.")
