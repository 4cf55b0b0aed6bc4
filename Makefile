# tcpdispatch — see README.md.
GO        ?= go
BIN       := bin
PKGS      := ./...
UNIT_PKGS := $(shell $(GO) list ./... 2>/dev/null | grep -v /integration)
TESTFLAGS ?=
BENCHTIME ?= 1s
# --version of every binary; see internal/version.
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo devel)
LDFLAGS   := -X github.com/tcpdispatch/tcpdispatch/internal/version.version=$(VERSION)

ROUNDS    ?= 100
SEED      ?= $(shell date +%s)
REBALANCE ?= off

.PHONY: all build test unit integration bench lint demo clean chaos scale

all: build

build: ## build bin/dispatcher, bin/tcpserver, bin/tcpclient, bin/dispatchctl and bin/healthcheck
	$(GO) build -ldflags '$(LDFLAGS)' -o $(BIN)/dispatcher ./cmd/dispatcher
	$(GO) build -ldflags '$(LDFLAGS)' -o $(BIN)/tcpserver ./cmd/tcpserver
	$(GO) build -ldflags '$(LDFLAGS)' -o $(BIN)/tcpclient ./cmd/tcpclient
	$(GO) build -ldflags '$(LDFLAGS)' -o $(BIN)/dispatchctl ./cmd/dispatchctl
	$(GO) build -ldflags '$(LDFLAGS)' -o $(BIN)/healthcheck ./cmd/healthcheck

test: build unit integration ## unit tests (-race) then multi-process integration tests

unit:
	$(GO) test -race -count=1 $(TESTFLAGS) $(UNIT_PKGS)

# The integration tests run race-enabled binaries and fail on any race
# report in a process log.
integration:
	$(GO) build -race -o $(BIN)/race/dispatcher ./cmd/dispatcher
	$(GO) build -race -o $(BIN)/race/tcpserver ./cmd/tcpserver
	TCPDISPATCH_BIN=$(CURDIR)/$(BIN)/race $(GO) test -race -count=1 -timeout 40m $(TESTFLAGS) ./integration/

# One table (internal/benchtable): get-tcp-ip vs bare net/http vs nginx
# `return 200` (pinned with taskset, loaded by wrk -t1 -c64), pick ns/op,
# failover, detection, propagation, reconnect storm. nginx and wrk are
# installed when missing; without nginx its column says why, without wrk
# the built-in load generator is used. See docs/BENCHMARKS.md.
bench: build ## benchmarks: one table, each figure beside its baseline from the same run
	@command -v nginx >/dev/null 2>&1 || test -x /usr/sbin/nginx || \
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx-light; } >/dev/null 2>&1 || \
		echo 'bench: nginx could not be installed; its column is skipped'
	@command -v wrk >/dev/null 2>&1 || \
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk; } >/dev/null 2>&1 || \
		echo 'bench: wrk could not be installed; the built-in load generator is used'
	$(GO) run ./internal/benchtable -bin $(BIN)

# The 10,000-server scenario of issue 11 (about 6 minutes, stops by itself):
# three replicas, 7,000 live and 3,000 blackholed tcp-servers on loopback.
scale: build ## 10,000-server scenario: round time, detection, puts/s, CPU, RSS
	SCALE_RUN=1 TCPDISPATCH_BIN=$(CURDIR)/$(BIN) $(GO) test -count=1 -timeout 15m -run 'TestScale$$' -v ./integration/

lint:
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || (gofmt -l $$(git ls-files '*.go'); echo 'gofmt: files above need formatting'; exit 1)
	$(GO) vet $(PKGS)
	$(GO) tool staticcheck $(PKGS)

demo: build ## three replicas (embedded 3-member etcd) + five tcp-servers; Ctrl-C stops all
	./scripts/demo.sh

chaos: ## long fault loop: make chaos ROUNDS=N SEED=S [REBALANCE=on] (summary table at the end)
	$(GO) build -race -o $(BIN)/race/dispatcher ./cmd/dispatcher
	$(GO) build -race -o $(BIN)/race/tcpserver ./cmd/tcpserver
	CHAOS_ROUNDS=$(ROUNDS) CHAOS_SEED=$(SEED) CHAOS_REBALANCE=$(REBALANCE) TCPDISPATCH_BIN=$(CURDIR)/$(BIN)/race \
		$(GO) test -race -count=1 -timeout 0 -run 'TestChaosLoop$$' -v ./integration/

clean:
	rm -rf $(BIN) demo-data
