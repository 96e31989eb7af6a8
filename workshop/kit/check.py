"""The laptop check after install: the lab's own set-up check, then a demo file read.
The install scripts run it with LABKIT_DATA set to the kit's data/ folder."""

import sys

import labkit as lk

table = lk.doctor()
print(table.to_string(index=False))
bad = table[~table["ok"]]
if not bad.empty:
    sys.exit("NOT READY: " + "; ".join(f"{r.check}: {r.note}" for r in bad.itertuples()))
model = lk.open_model(lk.zoo.path("demo_sd1_single"))  # found through LABKIT_DATA
print(f"demo model: {model}"[:200])
print(f"READY: this laptop runs the lab (Python {sys.version.split()[0]}); start it with the start script.")
