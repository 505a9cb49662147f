# The two set-up commands of the README: `make run` and `make test`. Both create .venv themselves.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: run test check fix lint lint-python tests-fast docs bench soak audit clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.installed-run: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[mlflow]'
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[test]'
	touch $@ $(VENV)/.installed-run

run: $(VENV)/.installed-run
	$(BIN)/hokusai-registry serve $(ARGS)

# checkov in its own environment: its pinned dependencies would fight the project's.
CHECKOV := $(VENV)/tools/checkov
$(CHECKOV)/.installed: | $(BIN)/python
	$(PYTHON) -m venv $(CHECKOV)
	$(CHECKOV)/bin/pip install -q checkov
	touch $@

# The Python linters, shared by `make check`, `make test` (through lint) and .pre-commit-config.yaml, fastest
# first: ruff, ruff format, bandit, the import contracts of pyproject.toml ([tool.importlinter]: rooms import
# only downward, policy and core are pure, no import cycles), then mypy --strict on src, tests, bench and soak.
LINTED := src tests bench soak
define PYTHON_LINTERS
	$(BIN)/ruff check $(LINTED)
	$(BIN)/ruff format --check $(LINTED)
	$(BIN)/bandit -q -r src
	$(BIN)/lint-imports --no-logo
	$(BIN)/mypy --strict src tests bench soak
endef

# The single-sign-on tests' OpenID Connect provider (tests/support/oidc_provider.py), in its own environment
# for the same reason: its Flask pins would fight MLflow's.
NANOIDP := $(VENV)/tools/nanoidp
$(NANOIDP)/.installed: | $(BIN)/python
	$(PYTHON) -m venv $(NANOIDP)
	$(NANOIDP)/bin/pip install -q nanoidp==3.4.0
	touch $@

lint: $(VENV)/.installed-test $(CHECKOV)/.installed
	$(CHECKOV)/bin/checkov -d deploy --config-file deploy/.checkov.yaml
	$(PYTHON_LINTERS)

lint-python: $(VENV)/.installed-test
	$(PYTHON_LINTERS)

# The tests that need no MLflow, no browser and no other machine: pure policy (tests/unit) and the gateway
# driven in process (tests/inprocess, when it exists). `make check` runs them after lint-python.
FAST_TESTS := $(wildcard tests/unit tests/inprocess)
tests-fast: $(VENV)/.installed-test
	$(BIN)/pytest -q $(FAST_TESTS) $(PYTEST_ARGS)

# The edit-test loop, in under two minutes: lint-python, then tests-fast (`make -k check` runs the tests
# even when a linter fails).
check: lint-python tests-fast

# Rewrites what ruff can fix: lint fixes, then formatting.
fix: $(VENV)/.installed-test
	$(BIN)/ruff check --fix $(LINTED)
	$(BIN)/ruff format $(LINTED)

# Older MLflow clients, each in its own environment, for the client-compatibility tests.
COMPAT_MLFLOW := 2.9.2 2.22.5
COMPAT_CLIENTS := $(foreach version,$(COMPAT_MLFLOW),$(VENV)/compat/mlflow-$(version)/.installed)

$(VENV)/compat/mlflow-%/.installed: | $(BIN)/python
	$(PYTHON) -m venv $(VENV)/compat/mlflow-$*
	$(VENV)/compat/mlflow-$*/bin/pip install -q "mlflow-skinny==$*" scikit-learn pandas
	touch $@

# Debian's Chromium for the browser tests (Playwright drives it and never downloads a browser of its own).
# Installing needs root; without it the browser tests skip and say why.
CHROMIUM := /usr/bin/chromium
$(CHROMIUM):
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium \
	  || (apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium) \
	  || echo "could not install chromium (needs root and Debian's packages): browser tests will skip"

# The whole suite with coverage of the package, in pytest and in every process it starts (gateways,
# their workers, bench): [tool.coverage.*] in pyproject.toml, which also holds the floor (fail_under).
# `make test COVERAGE= PYTEST_ARGS=tests/e2e/test_auth.py` runs a part without the floor.
# Two pytest-xdist workers, a test file each at a time (module fixtures start MLflows and gateways once):
# most of the suite waits on servers, so two take much less time than one. `PARALLEL=` runs serially.
COVERAGE ?= --cov --cov-report=term
PARALLEL ?= -n 2 --dist loadfile
test: lint $(COMPAT_CLIENTS) $(CHROMIUM) $(NANOIDP)/.installed
	$(BIN)/pytest $(COVERAGE) $(PARALLEL) $(PYTEST_ARGS)

# The peers `make bench` measures that need an environment of their own (bench/peers.py): mlflow-oidc-auth,
# whose pins would fight the project's, with uvloop and httptools as every MLflow of the bench runs. It needs
# Python >= 3.12 (a MappingProxyType dataclass default, hashable only since 3.12): python3.12 or python3.13,
# also through pyenv; without one, the report says so. Installed by `make bench` only (minutes), not `make test`.
OIDC_AUTH := $(VENV)/peers/mlflow-oidc-auth
PEERS_PYTHON ?= $(shell for version in 3.12 3.13; do \
	PYENV_VERSION=$$version python$$version -c 'import sys; print(sys.executable)' 2>/dev/null && break; done)
$(OIDC_AUTH)/.installed: | $(BIN)/python
	@if [ -z "$(PEERS_PYTHON)" ]; then echo "no Python >= 3.12 for mlflow-oidc-auth: bench reports it as not run"; \
	else $(PEERS_PYTHON) -m venv $(OIDC_AUTH) \
	  && $(OIDC_AUTH)/bin/pip install -q mlflow-oidc-auth==11.0.2 uvloop==0.23.0 httptools==0.9.0 \
	  && touch $@ || echo "could not install mlflow-oidc-auth: bench reports it as not run"; fi

# Minutes, not part of `make test`; installs wrk and nginx from Debian's packages when missing (root), and
# the peers' environments. BENCH_ARGS=--quick skips the peers (and does not install them).
bench: $(VENV)/.installed-test $(if $(findstring --quick,$(BENCH_ARGS)),,$(OIDC_AUTH)/.installed)
	$(BIN)/python -m bench $(BENCH_ARGS)

# Minutes, not part of `make test` (which runs a short variant): 100 real MLflow clients through one gateway.
soak: $(VENV)/.installed-test
	$(BIN)/python -m soak $(SOAK_ARGS)

# Known vulnerabilities in the installed packages. Needs PyPI's advisory data for exactly these versions
# (network); --strict fails when a package cannot be audited instead of passing silently.
audit: $(VENV)/.installed-test
	$(BIN)/pip install -q pip-audit
	$(BIN)/pip-audit --skip-editable --strict

docs: $(VENV)/.installed-run
	$(BIN)/hokusai-registry config-reference > docs/configuration.md

clean:
	rm -rf $(VENV) registry-data test-output .import_linter_cache
