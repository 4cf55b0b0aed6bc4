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

.PHONY: all build test unit integration bench lint demo clean chaos

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
	TCPDISPATCH_BIN=$(CURDIR)/$(BIN)/race $(GO) test -race -count=1 -timeout 15m $(TESTFLAGS) ./integration/

bench: build ## benchmarks: pickers, get-tcp-ip vs bare net/http, put-to-serve latency
	$(GO) test -run '^$$' -bench . -benchmem -benchtime $(BENCHTIME) ./balancer/ ./store/ ./api/
	TCPDISPATCH_BIN=$(CURDIR)/$(BIN) $(GO) test -run '^$$' -bench . -benchtime 1x ./integration/

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
