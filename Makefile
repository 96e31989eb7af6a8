# The commands in README.md: `make lab`, `make test` and `make test-fast`. The rest are helpers.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PORT ?= 8888
OFFLINE := HF_HUB_OFFLINE=1 DIFFUSERS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 MPLBACKEND=Agg
# The browser tests drive Debian's Chromium through Playwright (which cannot download a browser
# of its own offline), with DejaVu fonts for readable screenshots. .ci/run installs the same
# packages before `make test`, which then finds them and runs no apt-get of its own.
BROWSER_PACKAGES := chromium fonts-dejavu-core
CHROMIUM ?= $(or $(shell command -v chromium 2>/dev/null),/usr/bin/chromium)
FONT ?= /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf
# The fast subset: everything but the browser, notebook and slow tests (pytest markers).
FAST := not browser and not notebook and not slow

.PHONY: lab test test-fast browser-deps install lint bench zoo clean

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

# Chromium first, so a missing browser stops the run before the long install, not 7 errors deep.
test: browser-deps $(STAMP)
	$(VENV)/bin/ruff check labkit tests benchmarks
	$(OFFLINE) $(PY) -m pytest $(PYTEST_ARGS)

test-fast: $(STAMP)
	$(VENV)/bin/ruff check labkit tests benchmarks
	$(OFFLINE) $(PY) -m pytest -m "$(FAST)" $(PYTEST_ARGS)

# Chromium and the fonts for the browser tests: installed with apt-get when run as root,
# otherwise named with the command to install them.
browser-deps:
	@missing=""; [ -x "$(CHROMIUM)" ] || missing="Chromium ($(CHROMIUM))"; \
	[ -f "$(FONT)" ] || missing="$${missing:+$$missing and }the DejaVu fonts ($(FONT))"; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  echo "make: the browser tests need $$missing: apt-get install $(BROWSER_PACKAGES)"; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  apt-get update -qq && \
	  apt-get install -y -qq --no-install-recommends $(BROWSER_PACKAGES) >/dev/null || exit 1; \
	  [ -x /usr/bin/chromium ] || { echo "make: apt-get installed no /usr/bin/chromium" >&2; exit 1; }; \
	else \
	  printf '%s\n' "" \
	    "make test: the browser tests need $$missing: not found here." \
	    "Install what they need with:" "" \
	    "    sudo apt-get install -y --no-install-recommends $(BROWSER_PACKAGES)" "" \
	    "then run make test again; or run all but the browser and notebook tests: make test-fast" \
	    "" >&2; \
	  exit 1; \
	fi

lint: $(STAMP)
	$(VENV)/bin/ruff check labkit tests benchmarks
	$(VENV)/bin/ruff format --check labkit tests benchmarks

bench: $(STAMP)
	for b in benchmarks/bench_*.py; do $(PY) $$b || exit 1; done

zoo: $(STAMP)
	$(PY) -m labkit.zoo build

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache test-output

# The offline workshop kit (README, "Teaching a workshop"): dist/labkit-workshop/ with wheels for
# each platform and Python, the notebooks, data/ and install/start scripts; its size at the end.
# data/ travels once, beside the wheels: the kit's scripts set LABKIT_DATA to it (`make lab` needs
# no LABKIT_DATA: the editable install finds the checkout's data/).
# A slim kit: make workshop PLATFORMS=linux PYTHONS=3.11
PLATFORMS ?= linux,macos,windows
PYTHONS ?= 3.11,3.12
WORKSHOP_DIR ?= dist/labkit-workshop
.PHONY: workshop
workshop: $(STAMP)
	$(PY) workshop/build.py --platforms "$(PLATFORMS)" --pythons "$(PYTHONS)" --out "$(WORKSHOP_DIR)"
