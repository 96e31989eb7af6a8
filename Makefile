# The two commands in README.md: `make lab` and `make test`. The rest are helpers.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PORT ?= 8888

.PHONY: lab test install lint bench zoo clean

$(PY):
	$(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)

# torch first, from the CPU build on disk (an unpinned torch pulls the CUDA build),
# then the lab with its dev tools under the same constraints.
$(STAMP): $(PY) pyproject.toml constraints.txt
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt torch==2.13.0
	$(PY) -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

lab: $(STAMP)
	HF_HUB_OFFLINE=1 DIFFUSERS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 \
	JUPYTERLAB_SETTINGS_DIR=$(CURDIR)/jupyter/user-settings \
	$(VENV)/bin/jupyter lab --no-browser --port=$(PORT) \
	  --ServerApp.root_dir=notebooks --LabApp.default_url=/lab/tree/00_welcome.ipynb \
	  --ServerApp.open_browser=False --allow-root

test: $(STAMP)
	$(VENV)/bin/ruff check labkit tests benchmarks
	HF_HUB_OFFLINE=1 DIFFUSERS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 MPLBACKEND=Agg \
	$(PY) -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check labkit tests benchmarks
	$(VENV)/bin/ruff format --check labkit tests benchmarks

bench: $(STAMP)
	for b in benchmarks/bench_*.py; do $(PY) $$b || exit 1; done

zoo: $(STAMP)
	$(PY) -m labkit.zoo build

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache test-output
