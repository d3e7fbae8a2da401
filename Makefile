# The verbs people expect. Everything installs into .venv (and SAM CLI into .venv-sam,
# kept apart because its pins differ from the project's).
# The first Python that is 3.11 or newer (python3 is 3.10 on some current distributions).
PYTHON ?= $(shell for p in python3.13 python3.12 python3.11 python3; do $$p -c 'import sys; sys.exit(sys.version_info < (3, 11))' >/dev/null 2>&1 && { echo $$p; break; }; done)
VENV := .venv
BIN := $(VENV)/bin
SAM_VENV := .venv-sam
SAM := $(SAM_VENV)/bin/sam
SECURITY_VENV := .venv-security
# `sam build` for the python3.13 runtime needs a python3.13 on PATH; pyenv can provide it.
export PYENV_VERSION ?= $(shell command -v pyenv >/dev/null 2>&1 && echo "$$(pyenv version-name 2>/dev/null):$$(pyenv versions --bare 2>/dev/null | grep -E '^3\.13\.' | tail -n 1)")

.PHONY: demo test lint typecheck template security build bench clean

$(BIN)/.installed-dev: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $@

# The demo needs only the emulator extra: quicker for a first look.
$(BIN)/.installed-emulator: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[emulator]'
	touch $@

$(SAM):
	$(PYTHON) -m venv $(SAM_VENV)
	$(SAM_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(SAM_VENV)/bin/python -m pip install --quiet aws-sam-cli==1.170.0

## demo: set up, then walk through the product on the embedded AWS (no account, no Docker)
demo: $(BIN)/.installed-emulator
	$(BIN)/cache-ingress demo

## test: set up, then run the whole test suite (CI runs exactly this)
test: $(BIN)/.installed-dev $(SAM)
	SAM_CLI=$(abspath $(SAM)) $(BIN)/pytest

lint: $(BIN)/.installed-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(BIN)/.installed-dev
	$(BIN)/mypy

template: $(BIN)/.installed-dev $(SAM)
	$(BIN)/cfn-lint template.yaml member.yaml
	$(SAM) validate --lint --template template.yaml --region us-east-1
	$(SAM) validate --lint --template member.yaml --region us-east-1

$(SECURITY_VENV)/bin/checkov:
	$(PYTHON) -m venv $(SECURITY_VENV)
	$(SECURITY_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(SECURITY_VENV)/bin/python -m pip install --quiet checkov==3.3.30 bandit==1.9.4 pip-audit==2.10.1

## security: checkov on the template, bandit on the code, pip-audit on what the Lambda bundles
## (it says which packages it could not audit; AUDIT_STRICT=1 fails on them)
security: $(SECURITY_VENV)/bin/checkov
	$(SECURITY_VENV)/bin/checkov -f template.yaml -f member.yaml --framework cloudformation --skip-download --compact --quiet
	$(SECURITY_VENV)/bin/bandit -r functions src -q
	$(SECURITY_VENV)/bin/python scripts/audit_dependencies.py $(if $(AUDIT_STRICT),--strict) functions/authorizer/requirements.txt -- --disable-pip

build: $(SAM)
	$(SAM) build --template template.yaml

## bench: cold start, CPU per event, memory and package size against a bare-boto3 floor
## (options through BENCH_ARGS, e.g. `make bench BENCH_ARGS=--quick`)
bench: $(BIN)/.installed-dev $(SAM)
	SAM_CLI=$(abspath $(SAM)) $(BIN)/python -m benchmarks.run $(BENCH_ARGS)

clean:
	rm -rf $(VENV) $(SAM_VENV) $(SECURITY_VENV) .aws-sam .pytest_cache .mypy_cache .ruff_cache
