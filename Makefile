# Two commands for a fresh machine:
#   make run    install, then run the study (the DVC pipeline) on the embedded offline default
#   make test   install, then run the test suite
PYTHON ?= python3
VENV ?= .venv
PROFILE ?= quick
BIN := $(VENV)/bin
export DVC_NO_ANALYTICS := 1
export MLFLOW_DISABLE_TELEMETRY := true

.PHONY: install run test test-fast report ui plots

install: $(VENV)/.installed

# constraints.txt pins every package (torch 2.14.1 + torchvision 0.29.1 import together on
# a CPU-only machine; an unpinned install may pull a mismatched pair).
$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q --no-compile -c constraints.txt -e '.[workflow,test]'
	@# pip byte-compiles the ~16 000 installed modules one by one (about 60 s of a 130 s
	@# install on 2 cores); compileall does it on every core (30 s). torch ships one test
	@# file in Python 3.12 syntax, skipped as pip skips it; any other module that does not
	@# compile stays as pip would leave it (compiled at each import), hence `|| true`.
	$(BIN)/python -m compileall -qq -j 0 -x py312_intrinsics $(VENV)/lib || true
	touch $@

# The study in the $(PROFILE) profile (quick: the generated data set, three seeds; README's
# Results give the time on 2 AVX512-BF16 and 2 AVX2-only CPU cores), through DVC with JOBS
# independent stages side by side (`rotnet repro`, each stage started warm; JOBS=1 is plain
# `dvc repro` order). It rewrites params.yaml for that profile; `git checkout params.yaml`
# returns to the paper's.
JOBS ?= 2
run: install
	$(BIN)/rotnet params --profile $(PROFILE) --out params.yaml
	PATH=$(abspath $(BIN)):$$PATH $(BIN)/rotnet repro --jobs $(JOBS)
	@echo "Tables and figures: reports/ ; runs: $(BIN)/rotnet ui"

# The test files on TEST_WORKERS processes (pytest-xdist): much of the suite waits on
# subprocesses (DVC, MLflow, a browser), and two files side by side use the second core
# through those waits (on a 2-core AVX2 CPU: 1 144 s one by one, 897 s on 2).
TEST_WORKERS ?= 2
PYTEST = $(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile
test: install
	$(PYTEST) --durations=15

test-fast: install
	$(PYTEST) -m "not slow"

report: install
	$(BIN)/rotnet report

# `dvc plots show` with the vega libraries inline (DVC's own page loads them from a CDN).
plots: install
	$(BIN)/python -m rotnet.offline_plots

ui: install
	$(BIN)/rotnet ui
