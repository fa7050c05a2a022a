# Two commands on a fresh machine: `make demo` and `make test`. Both build their own virtualenv.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

# Lambda dependency layer, built without Docker from manylinux wheels for the Lambda runtime. Keep in step
# with LAMBDA_PYTHON / LAMBDA_ARCH in infra/config.py (the app refuses a layer built for another ABI).
LAMBDA_PYTHON     := 3.13
LAMBDA_ARCH       := aarch64
LAMBDA_DEPS       := build/lambda-deps
LAMBDA_DEPS_STAMP := build/.lambda-deps-installed
# The cdk CLI (npm package aws-cdk), pinned and installed under build/ by this Makefile, never by hand.
CDK_CLI_VERSION := 2.1148.1
CDK_STAMP       := build/cdk-cli/.installed-$(CDK_CLI_VERSION)
CDK             := PATH="$(CURDIR)/$(VENV)/bin:$$PATH" build/cdk-cli/node_modules/.bin/cdk

.PHONY: test demo synth bench venv clean lambda-deps cdk-cli deploy bootstrap

venv: $(STAMP)

# Re-install whenever a requirements file changes.
$(STAMP): requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $(STAMP)

# The cdk CLI too: tests/infra runs a real `cdk synth`.
test: $(STAMP) $(CDK_STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

demo: $(STAMP)
	$(PY) -m local demo

# A deployable cloud assembly in cdk.out (add context with CDK_ARGS="-c stage=prod -c vendors=elevate,qualifio").
synth: $(STAMP) $(LAMBDA_DEPS_STAMP) $(CDK_STAMP)
	$(CDK) synth $(CDK_ARGS)

deploy: $(STAMP) $(LAMBDA_DEPS_STAMP) $(CDK_STAMP)
	$(CDK) deploy $(CDK_ARGS)

# Once per account and region: CDK_ARGS=aws://123456789012/eu-west-1
bootstrap: $(STAMP) $(CDK_STAMP)
	$(CDK) bootstrap $(CDK_ARGS)

bench: $(STAMP)
	$(PY) -m bench

lambda-deps: $(LAMBDA_DEPS_STAMP)

# Only the venv's pip is needed (order-only): a change to requirements-dev.txt must not rebuild the layer.
$(LAMBDA_DEPS_STAMP): requirements.txt | $(STAMP)
	rm -rf $(LAMBDA_DEPS)
	$(PY) -m pip install --quiet --no-compile --disable-pip-version-check --only-binary=:all: \
	  --platform manylinux2014_$(LAMBDA_ARCH) --platform manylinux_2_28_$(LAMBDA_ARCH) \
	  --implementation cp --python-version $(LAMBDA_PYTHON) \
	  --target $(LAMBDA_DEPS)/python -r requirements.txt
	touch $@

cdk-cli: $(CDK_STAMP)

$(CDK_STAMP):
	rm -rf build/cdk-cli
	npm install --silent --no-save --no-audit --no-fund --prefix build/cdk-cli aws-cdk@$(CDK_CLI_VERSION)
	touch $@

clean:
	rm -rf $(VENV) build cdk.out .pytest_cache
