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

# The browser tests drive Debian's Chromium (Playwright's own browser download is not used); the relayed-call
# tests run Debian's coturn as their TURN server, started by the tests on 127.0.0.1, so the service the
# package sets up is turned off again when this installs it.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
APT  := $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get
system-deps:
	@command -v chromium >/dev/null 2>&1 || { $(SUDO) apt-get update -q && $(APT) install -y -q chromium; }
	@command -v turnserver >/dev/null 2>&1 || { $(SUDO) apt-get update -q && $(APT) install -y -q coturn && \
	  { ! command -v systemctl >/dev/null 2>&1 || $(SUDO) systemctl disable --now coturn >/dev/null 2>&1 || true; }; }

test: install system-deps
	$(BIN)/python -m pytest

bench: install
	$(BIN)/python bench/render_model.py

clean:
	rm -rf $(VENV) out build *.egg-info
