# Berth: `make run` brings the whole stack up on this machine, `make test`
# runs every test against the real PostgreSQL, Keystone, Docker and OVS.

SHELL        := /usr/bin/env bash
GO           ?= go
BIN          := bin
RUN_DIR      ?= .run
TEST_TIMEOUT ?= 30m
GOFLAGS_TEST ?= -count=1 -shuffle=on

# Daemons and tools built into $(BIN)/ (berth, the CLI, only once it exists).
CMDS := berth-region berth-imagesvc berth-hostagent berth-stack \
        $(if $(wildcard cmd/berth/main.go),berth)

.DEFAULT_GOAL := help

.PHONY: help
help: ## Show this help
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z0-9_-]+:.*## / {printf "  \033[36m%-12s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

.PHONY: deps
deps: ## Install the system packages the stack and tests need (apt; only what is missing)
	@scripts/install-deps.sh

.PHONY: build
build: ## Compile everything and put the binaries in bin/
	$(GO) build ./...
	@mkdir -p $(BIN)
	$(GO) build -o $(BIN)/ $(addprefix ./cmd/,$(CMDS))
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "-s -w" -o $(BIN)/berth-pause ./cmd/berth-pause

.PHONY: run
run: deps build ## Run the whole stack on this machine (Ctrl-C stops it; state stays in .run/)
	$(BIN)/berth-stack run --run-dir $(RUN_DIR) --bin-dir $(BIN)

.PHONY: test
test: deps build ## go vet, then all tests with real PostgreSQL, Keystone, Docker and OVS (skips become failures)
	$(GO) vet ./...
	$(BIN)/berth-stack exec --infra-only --bin-dir $(BIN) -- \
		env BERTH_REQUIRE_REAL=1 $(GO) test $(GOFLAGS_TEST) -timeout $(TEST_TIMEOUT) ./...

.PHONY: test-unit
test-unit: ## Plain go test ./... (tests needing real services skip and say why)
	$(GO) test ./...

.PHONY: test-e2e
test-e2e: deps build ## Only the end-to-end test (brings its own stack)
	BERTH_REQUIRE_REAL=1 $(GO) test -count=1 -v -timeout 15m ./tests/e2e/

# Every `go test -fuzz` target, as package:Func. `make test` runs only their
# seed corpora (plain go test); soak fuzzes each for SOAK_FUZZTIME.
FUZZ_TARGETS := internal/httpx:FuzzDecodeJSON \
        imagesvc/dockerarchive:FuzzRead imagesvc/dockerarchive:FuzzReadSpooled \
        imagesvc/api:FuzzImageBodies imagesvc/api:FuzzImageUpload \
        region/compute:FuzzServerCreate region/compute:FuzzServerAction region/compute:FuzzComputeBodies \
        region/network:FuzzNetworkBodies client/cli:FuzzParseSetFile
SOAK_FUZZTIME ?= 2m
SOAK_ROUNDS   ?= 5
SOAK_REQUESTS ?= 100000
# R2 at full size: dockerd restarts under this many sets (make test: 10 × 2).
SOAK_SETS     ?= 100
SOAK_DOCKERD_RESTARTS ?= 6

.PHONY: soak
soak: deps build ## Fuzz every decoder for SOAK_FUZZTIME, then the fault suite with 100k requests and SOAK_ROUNDS churn rounds, then SOAK_DOCKERD_RESTARTS dockerd restarts under SOAK_SETS sets
	@set -e; for t in $(FUZZ_TARGETS); do pkg=$${t%%:*}; fn=$${t##*:}; \
		echo "== fuzz $$pkg $$fn for $(SOAK_FUZZTIME)"; \
		BERTH_REQUIRE_REAL=1 $(GO) test -run '^$$' -fuzz "^$$fn\$$" -fuzztime $(SOAK_FUZZTIME) -fuzzminimizetime 30s ./$$pkg; \
	done
	BERTH_REQUIRE_REAL=1 BERTH_FAULTS_FUZZ_REQUESTS=$(SOAK_REQUESTS) BERTH_FAULTS_FUZZ_SECONDS=1200 \
		BERTH_FAULTS_ROUNDS=$(SOAK_ROUNDS) BERTH_FAULTS_CHURN_SERVERS=50 \
		$(GO) test -count=1 -v -timeout 2h ./tests/faults/
	BERTH_REQUIRE_REAL=1 BERTH_SOAK_SETS=$(SOAK_SETS) BERTH_SOAK_RESTARTS=$(SOAK_DOCKERD_RESTARTS) \
		$(GO) test -count=1 -v -timeout 1h -run '^TestDockerRestartAtScale$$' ./hostagent/reconcile/

.PHONY: bench
bench: deps build ## Benchmarks against the raw tools on a throw-away stack (≤ 20 min); updates docs/performance.md
	$(GO) build -o $(BIN)/berth-bench ./bench/cmd/berth-bench
	$(BIN)/berth-bench -bin-dir $(BIN) -json bench/results/latest.json -md docs/performance.md

.PHONY: bench-quick
bench-quick: deps build ## A one-minute run of every benchmark scenario (proves the bench works; numbers mean little)
	$(GO) build -o $(BIN)/berth-bench ./bench/cmd/berth-bench
	$(BIN)/berth-bench -quick -bin-dir $(BIN) -json bench/results/quick.json

.PHONY: clean
clean: ## Remove bin/ and the run directory (stop `make run` first)
	rm -rf $(BIN) $(RUN_DIR)
