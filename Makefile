# tokenfleet — build, test, lint, bench, demo.
# Every target that needs system components runs scripts/ensure-deps.sh first: it installs
# what is missing (as root, with apt-get) or stops with the exact command to run.

GO        ?= go
BIN       := bin
PKGS      := ./...
export CGO_ENABLED := 1

GOLANGCI_VERSION := v2.15.0
GOLANGCI := $(shell $(GO) env GOPATH)/bin/golangci-lint

.PHONY: all build windows test test-run test-deps test-browser vet lint bench bench-fleet rollout-fleet deps demo clean

all: build

deps:
	@bash scripts/ensure-deps.sh

# What the tests need besides: Chromium and axe-core for the console's browser tests.
test-deps:
	@bash scripts/ensure-deps.sh --browser

build: deps
	$(GO) build -o $(BIN)/ ./agent/cmd/... ./coordinator/cmd/...

# The agent for Windows: cgo through the mingw cross-compiler for PKCS#11; no libusb there,
# token detection is PKCS#11 slot polling. make test builds it too, so CI checks it.
windows: deps
	CGO_ENABLED=1 GOOS=windows GOARCH=amd64 CC=x86_64-w64-mingw32-gcc \
		$(GO) build -o $(BIN)/tokenfleet-agent.exe ./agent/cmd/tokenfleet-agent

vet:
	$(GO) vet $(PKGS)

# The whole suite against the real components (SoftHSM2, OpenSC, RabbitMQ, PostgreSQL), with
# the race detector. Integration tests fail, never skip, when a component is absent.
# -parallel above the core count: parallel tests mostly wait for the broker or the database.
# The total time is printed at the end, pass or fail.
TEST_PARALLEL ?= 6
test:
	@start=$$(date +%s); \
	$(MAKE) --no-print-directory test-run; status=$$?; \
	echo "make test: $$(( $$(date +%s) - start )) s in all"; exit $$status

test-run: test-deps vet windows
	$(GO) test -race -count=1 -timeout 30m -parallel $(TEST_PARALLEL) $(PKGS)

# The console's browser tests alone (part of make test): real Chromium, axe-core; the
# screenshots go to e2e/testdata/screenshots/<test>/ (TOKENFLEET_SCREENSHOTS moves them).
test-browser: test-deps
	$(GO) test -race -count=1 -timeout 10m -run '^(TestBrowser|TestConsole)' -v ./e2e/

# go.mod says exactly what the code imports: nothing unused, direct dependencies not marked
# indirect. internal/layering holds the import rules between the parts of the tree. The API
# description is linted with Redocly CLI (redocly.yaml; pinned, installed into .tools/).
lint: vet
	$(GO) mod tidy -diff
	@TOKENFLEET_SKIP_SERVICES=1 bash scripts/ensure-deps.sh --lint
	REDOCLY_TELEMETRY=off REDOCLY_SUPPRESS_UPDATE_NOTICE=true $$(bash scripts/ensure-redocly.sh) lint
	$(GO) test -count=1 ./internal/layering
	promtool check rules examples/prometheus/tokenfleet-alerts.yaml
	cd examples/prometheus && promtool test rules tokenfleet-alerts.test.yaml
	$(GO) test -count=1 -run '^(TestMetricsPromtool|TestMetrics)$$' ./coordinator/service ./agent/executor
	@test -x $(GOLANGCI) || $(GO) install github.com/golangci/golangci-lint/v2/cmd/golangci-lint@$(GOLANGCI_VERSION)
	$(GOLANGCI) run $(PKGS)
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); echo "gofmt: files above need formatting"; exit 1; }

# Benchmarks print their figures as ratios against a reference measured in the same run.
# BenchmarkSignOverhead measures microseconds per signature: it needs more iterations than
# the slow token paths to rise above the noise. BenchmarkDispatch approves 1,000 jobs
# before each iteration (about 30 s): three iterations say enough. BenchmarkRolloutDispatch
# runs one 1,000-target rollout per store, approval to the last job dispatched.
bench: deps
	$(GO) test -run '^$$' -bench . -skip '^(BenchmarkDispatch|BenchmarkFleetPresence|BenchmarkFleetJobs|BenchmarkSelfEnrol|BenchmarkPutAgents|BenchmarkRolloutDispatch)$$' -benchtime 20x -count 1 $(PKGS)
	$(GO) test -run '^$$' -bench '^BenchmarkDispatch$$' -benchtime 3x -count 1 ./coordinator/dispatch/
	$(GO) test -run '^$$' -bench '^(BenchmarkSelfEnrol|BenchmarkPutAgents)$$' -benchtime 2x -count 1 ./coordinator/httpapi/ ./coordinator/brokeradmin/
	$(GO) test -run '^$$' -bench 'SignOverhead' -benchtime 3000x -count 1 ./drivers/pkcs11/
	$(GO) test -run '^$$' -bench '^BenchmarkFleet(Presence|Jobs)$$' -benchtime 1x -count 1 -timeout 30m ./fleetsim/
	$(GO) test -run '^$$' -bench '^BenchmarkRolloutDispatch$$' -benchtime 1x -count 1 -timeout 30m ./fleetsim/

# The presence run at production scale: 10,000 simulated agents heartbeating every 15 s on
# one coordinator, on SQLite then PostgreSQL, a two-minute steady window each (about 15 min
# in all). Each figure is printed beside its goal. Then a 10,000-target rollout on each
# store, approval to the last job dispatched, beside a confirmed publisher (about 5 min).
bench-fleet: deps
	TOKENFLEET_FLEET_AGENTS=10000 $(GO) test -run '^$$' -bench '^BenchmarkFleetPresence$$' -benchtime 1x -count 1 -timeout 90m ./fleetsim/
	TOKENFLEET_ROLLOUT_TARGETS=10000 $(GO) test -run '^$$' -bench '^BenchmarkRolloutDispatch$$' -benchtime 1x -count 1 -timeout 60m ./fleetsim/

# Rollouts over 5,000 simulated agents (e2e/rollout_fleet_test.go; make test runs it at
# TOKENFLEET_ROLLOUT_AGENTS, default 300, with the race detector): the brake,
# coordinators killed mid-wave, an abort, over two coordinators on PostgreSQL. Without the
# race detector, as make soak: it slows the coordinators (children of the test binary)
# several times over.
rollout-fleet: deps
	TOKENFLEET_ROLLOUT_AGENTS=5000 $(GO) test -count=1 -run '^TestRolloutFleet$$' -timeout 2h -v ./e2e/

# The long fault campaign (e2e/campaign_test.go): 10,000 jobs and 500 faults on SQLite,
# two coordinators on PostgreSQL, then the broker's node restarted (stop_app/start_app),
# which every run on the machine shares: never part of make test. It prints its seed and
# summary; TOKENFLEET_SOAK_SEED=N make soak replays a run, TOKENFLEET_SOAK_JOBS, _FAULTS,
# _AGENTS and _VARIANTS (sqlite,postgres,broker-restart) change it.
.PHONY: soak
soak: deps
	TOKENFLEET_SOAK=long $(GO) test -count=1 -run '^TestFaultCampaign$$' -timeout 3h -v ./e2e/

# A token issued end to end: coordinator on SQLite, agent, RabbitMQ, SoftHSM2 as the token.
demo: build
	@bash scripts/demo.sh

clean:
	rm -rf $(BIN)
