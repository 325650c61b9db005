# Two commands on a fresh machine (see README):  make demo   and   make test
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install system-deps demo test bench clean

$(STAMP): pyproject.toml setup.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip
	$(BIN)/pip install -e ".[dev,train]"
	touch $(STAMP)

install: $(STAMP)

# Enroll the bundled sample portrait, write a turntable, then stream it (Ctrl-C stops the server).
demo: install
	$(BIN)/gramcast demo --out out
	$(BIN)/gramcast serve --avatar out/avatar.gca

# The browser tests drive Debian's Chromium (Playwright's own browser download is not used).
system-deps:
	@command -v chromium >/dev/null 2>&1 || { \
	  SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  $$SUDO apt-get update -q && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q chromium; }

test: install system-deps
	$(BIN)/python -m pytest

bench: install
	$(BIN)/python bench/render_model.py

clean:
	rm -rf $(VENV) out build *.egg-info
