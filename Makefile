# oncology: the pipeline driver.  `make help` lists every target.
SHELL := /bin/bash
.DEFAULT_GOAL := help
.DELETE_ON_ERROR:

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STORE  ?= store
VERSION ?= champion
PYTEST_ARGS ?=

.PHONY: index-image index-deploy
.PHONY: help install run serve train test docs upload.monitoring release release.version bench soak infra-up infra-down publish e2e docker-requirements k8s-up k8s-down deploy rollback-deployment train-job lint wheel lock proto clean

help: ## Show this help
	@grep -hE '^[a-zA-Z0-9_.-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "} \
		{name[NR] = $$1; text[NR] = $$2; if (length($$1) > width) width = length($$1)} \
		END {for (i = 1; i <= NR; i++) printf "  \033[36m%-" width "s\033[0m  %s\n", name[i], text[i]}'

install: $(VENV)/.installed ## Set up .venv with the locked dependencies and the project (editable)

$(VENV)/.installed: requirements.lock pyproject.toml model/pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.lock
	$(BIN)/python -m pip install --quiet --no-deps -e model -e .
	@touch $@

# the service's own variables are honoured too (`ONCOLOGY_PORT=8090 make serve`, as `ONCOLOGY_PREDICTION_LOG=true
# make serve` is): the recipes pass --host and --port, which would otherwise override them
HOST ?= $(or $(ONCOLOGY_HOST),127.0.0.1)
PORT ?= $(or $(ONCOLOGY_PORT),8080)

run: install ## The main job on local defaults: train, publish to ./store, promote if the gate passes, then serve it
	$(BIN)/oncology train --store $(STORE) --promote
	$(BIN)/oncology serve --store $(STORE) --host $(HOST) --port $(PORT)

serve: install ## Serve the champion of STORE on HOST:PORT (docs at /docs)
	$(BIN)/oncology serve --store $(STORE) --host $(HOST) --port $(PORT)

train: install ## Train and publish a new version without promoting it
	$(BIN)/oncology train --store $(STORE)

# `make test` measures coverage, in the processes the tests start as well (pyproject.toml [tool.coverage]).
# "Unit" tests are those of the model package and of the trainer: they start no server and need no S3; they run
# first, then the rest; both reports land in COVERAGE_DIR: unittest-coverage.json (unit tests alone) and
# test-coverage.json (everything `make test` runs).  PYTEST_ARGS goes to both runs (-x, -k EXPR, ...).
COVERAGE_DIR ?= build/coverage
UNIT_TESTS   := model/tests tests/trainer
# the rest, named by folder: pytest's --ignore does not apply to a path given (or named by testpaths).  Some of
# them import helpers from model/tests (tests/integration/test_s3.py: test_storage.race_create), which a single
# run finds because collecting model/tests put it on sys.path: the second run puts it there itself.
OTHER_TESTS  := tests --ignore=tests/trainer -o pythonpath=model/tests
COVERAGE      = $(BIN)/coverage
COVDATA       = $(abspath $(COVERAGE_DIR))/data

test: install ## Run the test suite (unit, integration with a real S3 server, wheel install) and build the docs (--strict); coverage JSON into build/coverage/
	@rm -rf $(COVERAGE_DIR) && mkdir -p $(COVDATA)/unittest $(COVDATA)/other $(COVERAGE_DIR)/unittest $(COVERAGE_DIR)/test
	@status=0; \
	COVERAGE_FILE=$(COVDATA)/unittest/.coverage $(COVERAGE) run -m pytest $(UNIT_TESTS) $(PYTEST_ARGS) || status=$$?; \
	COVERAGE_FILE=$(COVDATA)/other/.coverage $(COVERAGE) run -m pytest $(OTHER_TESTS) $(PYTEST_ARGS) \
	  || { [ $$? = 5 ] || status=1; }; \
	[ $$status = 5 ] && status=0; \
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir $(abspath $(DOCS_SITE)) || status=1; \
	exit $$status   # 5: PYTEST_ARGS selected nothing in one of the two runs; the docs site is built either way
	@$(COVERAGE) combine --keep -q --data-file=$(COVERAGE_DIR)/unittest/.coverage $(COVDATA)/unittest
	@$(COVERAGE) combine --keep -q --data-file=$(COVERAGE_DIR)/test/.coverage $(COVDATA)/unittest $(COVDATA)/other
	@$(COVERAGE) json -q --data-file=$(COVERAGE_DIR)/unittest/.coverage -o $(COVERAGE_DIR)/unittest-coverage.json
	@$(COVERAGE) json -q --data-file=$(COVERAGE_DIR)/test/.coverage -o $(COVERAGE_DIR)/test-coverage.json
	@echo "coverage: unit tests $$($(COVERAGE) report --data-file=$(COVERAGE_DIR)/unittest/.coverage --format=total)%," \
	  "whole suite $$($(COVERAGE) report --data-file=$(COVERAGE_DIR)/test/.coverage --format=total)% ($(COVERAGE_DIR)/*-coverage.json)"

# ---- documentation ---------------------------------------------------------------------------------
# mkdocs.yml and docs/: `make test` builds the site with --strict (a broken link, a missing page or anchor fails it;
# never with --quiet, which hides the warnings that --strict counts).  NO_MKDOCS_2_WARNING: no banner about Material's future.
DOCS_SITE ?= build/site
DOCS_PORT ?= 8000

docs: install ## Serve the documentation site on http://127.0.0.1:DOCS_PORT (default 8000), rebuilt on every save
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs serve --dev-addr 127.0.0.1:$(DOCS_PORT)

# MANIFEST_BASE: where reporting tools read STORE (e.g. the S3 copy of a local store); default: STORE itself
MANIFEST_BASE ?=

upload.monitoring: test ## Test, then upload the coverage and VERSION's test KPIs to STORE (written once per version)
	$(BIN)/oncology monitoring upload --store $(STORE) --version $(VERSION) --coverage-dir $(COVERAGE_DIR)$(if $(MANIFEST_BASE), --manifest-base $(MANIFEST_BASE))

# `make release`: test -> upload.monitoring -> publish -> deploy, each a prerequisite of the next (so the order
# holds with -j too, and the first failure stops the chain).  The links exist only when release is a goal:
# `make publish` and `make deploy` alone keep no prerequisite on the steps before them.
ifneq ($(filter release,$(MAKECMDGOALS)),)
test: release.version
publish: upload.monitoring
deploy: publish
endif

release: deploy ## The release chain for model VERSION: test -> upload.monitoring -> publish -> deploy; stops at the first failure

release.version:
	@case "$(VERSION)" in champion|latest|"") echo "make release needs VERSION=<model version>, e.g. VERSION=1.0.2" >&2; exit 2;; esac

# ---- containers, registry, package index -----------------------------------------------------------
BASE_IMAGE ?= oncology-base:bookworm

infra-up: install ## Start the local infrastructure on 127.0.0.1: S3 :8333, dockerd, base image, registry :5000, index :8081
	infra/up.sh >/dev/null

infra-down: ## Stop all of the local infrastructure (state is kept in .infra/)
	infra/down.sh

# INDEX=host (default): the host's pypiserver of infra/pypi.sh, for a machine without a cluster; INDEX=cluster: the
# index that `make index-deploy` runs on the cluster (its Service and Secret; INDEX_URL=http://HOST:PORT/ for
# another address of it, e.g. a port-forward)
INDEX ?= host
INDEX_URL ?=
# more options of deploy/publish.py, e.g. PUBLISH_ARGS='--image webservice'
PUBLISH_ARGS ?=

publish: install ## Publish VERSION (default: champion) of STORE: its wheel to the package index (INDEX=host|cluster), both images to the registry
	@case "$(INDEX)" in host|cluster) ;; *) echo "INDEX must be host or cluster, not '$(INDEX)'" >&2; exit 2;; esac
	$(if $(filter cluster,$(INDEX)),$(CLUSTER_GUARD))
	eval "$$(infra/up.sh docker base-image registry $(if $(filter host,$(INDEX)),pypi))" && \
	$(if $(filter cluster,$(INDEX)),eval "$$(KUBECTL='$(K8S)' INDEX_URL='$(INDEX_URL)' deploy/index/cluster-env.sh)" && )\
	$(BIN)/python deploy/publish.py --version $(VERSION) --store $(STORE) --registry "$$ONCOLOGY_REGISTRY" --base-image $(BASE_IMAGE) $(PUBLISH_ARGS)

e2e: install ## End-to-end tier: images, registry, index, S3 (and Kubernetes) for real; needs root (~20 min; the Kubernetes build once, ~9-44 min)
	$(BIN)/pytest tests/e2e -m e2e $(PYTEST_ARGS)

docker-requirements: install ## Re-resolve deploy/docker/*/requirements.txt (pinned, hashed) within requirements.lock
	deploy/docker/requirements.sh

bench: install ## Benchmark the service (Flask and FastAPI references, HTTP floor, prediction log and shedding on/off, overload, canary/shadow release cost), the dashboard, drift and the monitoring data plane (several minutes)
	$(BIN)/python benchmarks/run.py
	$(BIN)/python benchmarks/predlog.py --http
	$(BIN)/python benchmarks/shedding.py
	$(BIN)/python benchmarks/report.py
	$(BIN)/python benchmarks/drift.py
	$(BIN)/python benchmarks/dataplane.py --quick
	$(BIN)/python benchmarks/overload.py
	$(BIN)/python benchmarks/release.py

SOAK_SECONDS ?= 600
soak: install ## Soak the service: 64 connections, a champion promotion (hot reload) every minute, every answer checked (SOAK_SECONDS, default 600)
	$(BIN)/python benchmarks/soak.py --duration $(SOAK_SECONDS) --connections 64 --promote-every 60

# ---- Kubernetes ------------------------------------------------------------------------------------
k8s-up: ## Start the local two-node Kubernetes 1.20 cluster (builds its binaries once, ~9 min); then: export KUBECONFIG=.infra/k8s/kubeconfig
	infra/k8s/build.sh >/dev/null
	infra/k8s/up.sh

k8s-down: ## Stop the local cluster and leave nothing behind
	infra/k8s/down.sh

TEAM     ?= ml-platform
REGISTRY ?= 127.0.0.1:5000
OVERLAY  ?= deploy/k8s/overlays/local
KUBECTL  ?= kubectl
CONTEXT  ?=
ROLLOUT_TIMEOUT ?= 120s
WEBSERVICE_SELECTOR = app=oncology-webservice,team=$(TEAM)
K8S = $(KUBECTL)$(if $(CONTEXT), --context=$(CONTEXT))
# kubectl with no configuration talks to localhost:8080, where the prediction service itself may listen:
# the cluster targets refuse to guess, and need KUBECONFIG, CONTEXT or a current context.
CLUSTER_GUARD = @test -n "$(CONTEXT)" || test -n "$$KUBECONFIG" || $(KUBECTL) config current-context >/dev/null 2>&1 \
	|| { echo "make $@ acts on a Kubernetes cluster and none is chosen: set KUBECONFIG (make k8s-up prints it) or CONTEXT=<kubectl context>" >&2; exit 2; }

deploy: ## Roll the web service's Deployment out to image VERSION (REGISTRY, TEAM, KUBECONFIG or CONTEXT); fails if the rollout does not complete
	@case "$(VERSION)" in champion|latest) echo "make deploy needs VERSION=<image tag>, e.g. VERSION=1.0.2" >&2; exit 2;; esac
	$(CLUSTER_GUARD)
	$(K8S) set image deployments -l $(WEBSERVICE_SELECTOR) oncology-webservice=$(REGISTRY)/oncology-webservice:$(VERSION)
	$(K8S) rollout status deployments -l $(WEBSERVICE_SELECTOR) --timeout=$(ROLLOUT_TIMEOUT)

rollback-deployment: ## Undo the web service Deployment's last rollout and wait (the model alias: oncology models rollback)
	$(CLUSTER_GUARD)
	$(K8S) rollout undo deployments -l $(WEBSERVICE_SELECTOR)
	$(K8S) rollout status deployments -l $(WEBSERVICE_SELECTOR) --timeout=$(ROLLOUT_TIMEOUT)

JOB_TIMEOUT ?= 600

train-job: install ## Run the training Job with trainer image VERSION; wait; print its logs and the version it published
	@case "$(VERSION)" in champion|latest) echo "make train-job needs VERSION=<image tag>, e.g. VERSION=1.0.1" >&2; exit 2;; esac
	$(CLUSTER_GUARD)
	$(K8S) delete job oncology-train --ignore-not-found --wait=true
	$(K8S) kustomize $(OVERLAY) | $(BIN)/python deploy/k8s/job.py --image $(REGISTRY)/oncology-trainer:$(VERSION) | $(K8S) apply -f -
	@FAILED="the training Job failed; see its output above" deploy/k8s/wait_job.sh oncology-train $(patsubst %s,%,$(JOB_TIMEOUT)) $(K8S)
	@$(K8S) logs job/oncology-train | grep -oE 'published model version [0-9.]+|version [0-9.]+ in [^ ]+ already holds this very model' | tail -1

lint: install ## Static checks: ruff and mypy --strict
	$(BIN)/ruff check src model/src tests model/tests deploy benchmarks
	$(BIN)/mypy
	$(BIN)/hadolint deploy/docker/*/Dockerfile deploy/index/Dockerfile

wheel: install ## Build the oncology-model wheel carrying VERSION (default: champion) from STORE into dist/
	$(BIN)/oncology wheel --store $(STORE) --model $(VERSION) --out dist

lock: ## Re-resolve requirements.lock from pyproject.toml (needs the package index)
	$(BIN)/python -m pip install --quiet uv
	$(BIN)/uv pip compile pyproject.toml --extra dev --no-emit-package oncology-model --no-emit-package oncology --python-version 3.11 -o requirements.lock
	deploy/docker/requirements.sh

proto: install ## Regenerate the gRPC code of the Open Inference Protocol (src/oncology/webservice/proto/) from its .proto
	PYTHON=$(BIN)/python src/oncology/webservice/proto/generate.sh

clean: ## Remove build output and caches (keeps .venv and the store)
	rm -rf build dist .pytest_cache .mypy_cache .ruff_cache .coverage htmlcov

# ---- monitoring ------------------------------------------------------------------------------------
.PHONY: alerts-check
alerts-check: ## promtool check + unit tests of deploy/monitoring/alerts.yml (installs Debian's prometheus if missing; root)
	python3 infra/prometheus.py check

# ---- drift -----------------------------------------------------------------------------------------
DRIFT_ARGS    ?=
DRIFT_TIMEOUT ?= 300

.PHONY: drift-job
drift-job: install ## Run oncology drift once on the cluster (trainer image VERSION, DRIFT_ARGS='--since 30d'); wait; print its report; fail on drift
	@case "$(VERSION)" in champion|latest) echo "make drift-job needs VERSION=<image tag>, e.g. VERSION=1.0.1" >&2; exit 2;; esac
	$(CLUSTER_GUARD)
	$(K8S) delete job oncology-drift --ignore-not-found --wait=true
	$(K8S) kustomize $(OVERLAY) | $(BIN)/python deploy/k8s/job.py --image $(REGISTRY)/oncology-trainer:$(VERSION) \
	  | $(BIN)/python deploy/k8s/drift_job.py --args "$(DRIFT_ARGS)" | $(K8S) apply -f -
	@FAILED="the drift Job failed: drift flagged (exit 1) or nothing could be checked (exit 2); see its output above" \
	  deploy/k8s/wait_job.sh oncology-drift $(DRIFT_TIMEOUT) $(K8S)

# ---- the package index on the cluster ----------------------------------------------------------------
INDEX_OVERLAY ?= deploy/k8s/index/local
INDEX_USER    ?= oncology
INDEX_IMAGE_TAG = $(shell $(PYTHON) deploy/index/image.py --tag-only)

index-image: install ## Build the package index image (pypiserver, packages in S3) and push it to the local registry
	eval "$$(infra/up.sh docker base-image registry)" && \
	$(BIN)/python deploy/index/image.py --registry "$$ONCOLOGY_REGISTRY" --base-image $(BASE_IMAGE)

index-deploy: install ## Run the package index on the cluster (INDEX_OVERLAY, REGISTRY); its password Secret is made once (INDEX_PASSWORD, or random)
	$(CLUSTER_GUARD)
	@$(K8S) get secret oncology-index >/dev/null 2>&1 || { \
	  password='$(INDEX_PASSWORD)'; [ -n "$$password" ] || password=$$(head -c 18 /dev/urandom | base64 | tr -d '/+=' | cut -c1-20); \
	  $(K8S) create secret generic oncology-index --from-literal=username=$(INDEX_USER) --from-literal=password="$$password" >/dev/null \
	  && echo "created the Secret oncology-index (user $(INDEX_USER))"; }
	$(K8S) kustomize $(INDEX_OVERLAY) | $(BIN)/python deploy/index/render.py --image $(REGISTRY)/oncology-index:$(INDEX_IMAGE_TAG) | $(K8S) apply -f -
	$(K8S) rollout status deployment/oncology-index --timeout=$(ROLLOUT_TIMEOUT)
	@# a ready pod is not yet in the Service: until its address is, the ClusterIP refuses connections
	@for i in $$(seq 120); do \
	  [ -n "$$($(K8S) get endpoints oncology-index -o 'jsonpath={.subsets[*].addresses[*].ip}')" ] && exit 0; sleep 0.5; \
	done; echo "index-deploy: the Service oncology-index has no ready address after 60 s" >&2; exit 1
