# m2fp-queue: every entry point a user or CI needs. `make help` lists them.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= $(shell scripts/find-python310.sh)
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check
CONSTRAINTS := -c requirements/constraints.txt -c requirements/lock.txt
STAMP := $(VENV)/.installed
MODELS ?= models
PYTEST_ARGS ?=

.PHONY: help venv client run test browser nginx iproute2 synthetic-model engine bench bench-outputs bench-scale capacity backfill check-env lock clean-venv compose-env \
	podman base-images wheelhouse images compose-up compose-down bench-compose

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-16s %s\n", $$1, $$2}'

venv: $(STAMP) ## create .venv with the pinned stack (first time: torch download + ~7 min mmcv-full build)

$(STAMP): requirements/*.txt pyproject.toml
	@test -n "$(PYTHON)" || { echo "error: set PYTHON=/path/to/python3.10" >&2; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install $(CONSTRAINTS) -r requirements/torch.txt
	MMCV_WITH_OPS=1 $(PIP) install $(CONSTRAINTS) --no-build-isolation mmcv-full==1.7.1
	$(PIP) install $(CONSTRAINTS) -r requirements/dev.txt
	$(PIP) install --no-deps mediapipe==0.10.14  # the pose model; its dependencies are in requirements/worker.txt
	$(PIP) install --no-deps -e .
	$(PY) -m worker.selfcheck
	touch $@

check-env: $(STAMP) ## verify the inference stack and name the fix for each known failure
	$(PY) -m worker.selfcheck

synthetic-model: $(STAMP) ## write synthetic M2FP checkpoints (tiny + full-size) under models/
	$(PY) -m worker.synthetic --out $(MODELS)/m2fp-synthetic-tiny --size tiny
	$(PY) -m worker.synthetic --out $(MODELS)/m2fp-synthetic-full --size full

engine: $(STAMP) ## build the OpenVINO engine of M2FP_MODEL into MODEL_CACHE_DIR ahead of the first worker start
	$(PY) -m worker.engine_cache

run: $(STAMP) ## start Redis (embedded unless REDIS_URL), the API on 127.0.0.1:PORT (8000) and WORKERS (1) workers
	$(PY) -m scripts.run_local

test: $(STAMP) browser nginx iproute2 images ## run the whole test suite (first installs the page test's browser, the proxy tests' nginx, iproute2, and builds the images)
	$(PY) -m pytest $(PYTEST_ARGS)

# The faults across hosts (tests/test_hosts.py) put each part in a network namespace of
# its own: `ip` from iproute2, run as root.
iproute2: ## install Debian's iproute2 (apt, as root) unless `ip` is there
	@command -v ip >/dev/null || test -x /usr/sbin/ip || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update && apt-get install -y iproute2; \
	  else echo "error: no 'ip' for tests/test_hosts.py. Fix: 'sudo apt-get install -y iproute2' (Debian)" >&2; exit 1; fi; }

# The page's browser test (tests/test_page.py) drives Chromium: Debian's package, since
# Playwright's own browser download cannot be reached from every machine.
CHROMIUM := /usr/bin/chromium
PLAYWRIGHT_BROWSERS := $(or $(PLAYWRIGHT_BROWSERS_PATH),$(HOME)/.cache/ms-playwright)
browser: ## install Debian's chromium (apt, as root) unless /usr/bin/chromium or Playwright's own Chromium is there
	@test -x $(CHROMIUM) || compgen -G "$(PLAYWRIGHT_BROWSERS)/chromium-*" >/dev/null || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update && apt-get install -y chromium; \
	  else echo "error: no Chromium for tests/test_page.py. Fix: 'sudo apt-get install -y chromium' (Debian)," \
	            "or '$(PY) -m playwright install chromium' on a machine with internet" >&2; exit 1; fi; }

# The proxy tests (tests/test_proxy.py) put Debian's nginx in front of the API; each test
# starts its own with its own configuration (the package's service is not used; in a
# container apt does not start it, on a machine with systemd it starts on port 80).
nginx: ## install Debian's nginx (apt, as root) unless nginx is there
	@command -v nginx >/dev/null || test -x /usr/sbin/nginx || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update && apt-get install -y nginx; \
	  else echo "error: no nginx for tests/test_proxy.py. Fix: 'sudo apt-get install -y nginx' (Debian)" >&2; exit 1; fi; }

bench: $(STAMP) ## seconds per photo: stock pipeline vs torch and OpenVINO engines, output resolution, queue overhead
	$(PY) -m scripts.bench

bench-outputs: $(STAMP) ## seconds each group of outputs (keypoints, masks, garments, tryon) adds per photo, by photo size
	$(PY) -m scripts.bench_outputs

lock: $(STAMP) ## rewrite requirements/lock.txt from the working .venv (after changing a pin)
	{ echo "# Full pin set of a working worker + dev environment (pip freeze of .venv), used as a"; \
	  echo "# constraints file by every install step. Regenerate with: make lock"; \
	  $(PIP) freeze | grep -v -E '^(-e|pkg_resources|# Editable)'; } > requirements/lock.txt
	touch $(STAMP)

bench-scale: $(STAMP) ## jobs per minute through 1 and 2 worker processes, peak memory by photo size (default engine)
	$(PY) -m scripts.bench_scale

# Standard library only (a compose host has no virtualenv), as tests/test_compose_env.py runs it.
compose-env: ## write the secrets docker-compose.yml needs into .env (random; never changes a value already there)
	python3 -I -S scripts/compose_env.py

# Containers. Docker where its engine runs; elsewhere Podman from Debian, which builds and
# runs the same Dockerfiles and docker-compose.yml (scripts/containers.py).
podman: ## install Podman, runc and debootstrap (apt, as root) unless podman is there
	@command -v podman >/dev/null && command -v debootstrap >/dev/null || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update && apt-get install -y podman runc debootstrap; \
	  else echo "error: no Podman. Fix: 'sudo apt-get install -y podman runc debootstrap' (Debian), or use Docker" >&2; exit 1; fi; }

base-images: podman ## the base and service images the Dockerfiles and compose name: pulled, or built here where no registry answers
	PYTHON=$(PYTHON) compose/base-images/build.sh

WHEELHOUSE := compose/wheelhouse
wheelhouse: $(WHEELHOUSE)/.complete ## the wheels of this machine's install, for image builds that reach no index

$(WHEELHOUSE)/.complete: $(STAMP) requirements/*.txt
	$(PIP) wheel -q --no-build-isolation $(CONSTRAINTS) -w $(WHEELHOUSE) \
	  -r requirements/torch.txt mmcv-full==1.7.1 -r requirements/worker.txt -r requirements/api.txt
	$(PIP) wheel -q --no-deps -w $(WHEELHOUSE) mediapipe==0.10.14
	touch $@

images: base-images wheelhouse ## build the API and worker images (m2fp-queue/api, m2fp-queue/worker) from the wheelhouse
	$(PY) -m scripts.containers images

WORKERS ?= 1
compose-up: $(STAMP) ## start docker-compose.yml (Docker, or Podman) with WORKERS worker replicas; needs .env (make compose-env) and images
	mkdir -p $(or $(MODEL_DIR),models)  # the worker's read-only model mount must exist
	$(PY) -m scripts.containers up --workers $(WORKERS)

compose-down: $(STAMP) ## stop the compose stack (its volumes stay: no accepted job is lost)
	$(PY) -m scripts.containers down

bench-compose: $(STAMP) images ## jobs per minute through 1, 2 and (where memory allows) 3 worker containers of 1 CPU each, beside processes
	$(PY) -m scripts.bench_compose

capacity: $(STAMP) ## Redis commands, bytes, CPU and memory, API CPU and store writes per job, over 100 jobs
	$(PY) -m scripts.capacity

clean-venv: ## remove the virtual environment
	rm -rf $(VENV)

API_URL ?= http://127.0.0.1:8000
BACKFILL_ARGS ?=
backfill: $(STAMP) ## parse every image of SRC=<folder or s3://bucket/prefix> once through the API at API_URL
	@test -n "$(SRC)" || { echo "usage: make backfill SRC=<folder or s3://bucket/prefix> [API_URL=...] [BACKFILL_ARGS=...]" >&2; exit 2; }
	$(VENV)/bin/m2fp backfill "$(SRC)" --api-url "$(API_URL)" $(BACKFILL_ARGS)

CLIENT_VENV ?= .venv-client
CLIENT_PY := $(CLIENT_VENV)/bin/python
client: $(CLIENT_VENV)/.installed ## a light environment in CLIENT_VENV (.venv-client) with only the client and `m2fp` (no torch, numpy or Celery)

$(CLIENT_VENV)/.installed: requirements/client.txt pyproject.toml $(wildcard m2fp_client/*.py m2fp_contract/*.py)
	@test -n "$(PYTHON)" || { echo "error: set PYTHON=/path/to/python3.10" >&2; exit 1; }
	test -x $(CLIENT_PY) || $(PYTHON) -m venv $(CLIENT_VENV)
	$(CLIENT_PY) -m pip --disable-pip-version-check install -c requirements/lock.txt -r requirements/client.txt
	rm -rf build  # setuptools builds in the tree: never let an earlier build's files into this one
	$(CLIENT_PY) -m pip --disable-pip-version-check install --no-deps --force-reinstall .
	touch $@
