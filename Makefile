# The two set-up commands of the README: `make demo` and `make test`. Each creates the virtual
# environment and installs the project when needed, and is quick when everything is already there.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.install-stamp

.PHONY: demo test docs install bench clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/cxrgan demo --out demo

# The user guide and API reference (mkdocs.yml) into site/; --strict fails on a broken link or a missing page.
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet

# The layer contract (.importlinter), the documentation build, then the tests: two workers, each test file on one worker (its module
# fixtures train once). loadfile, not loadgroup: with pytest 9.2 the xdist_group marks are silently ignored
# (pytest-xdist issue #1386).
test: $(STAMP)
	$(BIN)/lint-imports
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet
	$(BIN)/python -m pytest -q -n 2 --dist loadfile

bench: $(STAMP)
	$(BIN)/cxrgan bench
	$(BIN)/python benchmarks/bench_prepare.py
	$(BIN)/python benchmarks/bench_train.py
	$(BIN)/python benchmarks/bench_metrics.py

clean:
	rm -rf demo .pytest_cache
