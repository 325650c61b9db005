# Two commands on a fresh machine (see README):  make demo   and   make test
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install demo test bench clean

$(STAMP): pyproject.toml setup.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip
	$(BIN)/pip install -e ".[dev,train]"
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(BIN)/gramcast demo --out out

test: install
	$(BIN)/python -m pytest

bench: install
	$(BIN)/python bench/render_model.py

clean:
	rm -rf $(VENV) out build *.egg-info
