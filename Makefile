# tcpdispatch — see README.md.
GO        ?= go
BIN       := bin
PKGS      := ./...
UNIT_PKGS := $(shell $(GO) list ./... 2>/dev/null | grep -v /integration)
TESTFLAGS ?=
BENCHTIME ?= 1s

.PHONY: all build test unit integration bench lint demo clean chaos

all: build

build: ## build bin/dispatcher and bin/tcpserver
	$(GO) build -o $(BIN)/dispatcher ./cmd/dispatcher
	$(GO) build -o $(BIN)/tcpserver ./cmd/tcpserver

test: build unit integration ## unit tests (-race) then multi-process integration tests

unit:
	$(GO) test -race -count=1 $(TESTFLAGS) $(UNIT_PKGS)

integration: build
	TCPDISPATCH_BIN=$(CURDIR)/$(BIN) $(GO) test -race -count=1 -timeout 15m $(TESTFLAGS) ./integration/

bench: build ## benchmarks: pickers, get-tcp-ip vs bare net/http, put-to-serve latency
	$(GO) test -run '^$$' -bench . -benchmem -benchtime $(BENCHTIME) ./balancer/ ./api/
	TCPDISPATCH_BIN=$(CURDIR)/$(BIN) $(GO) test -run '^$$' -bench . -benchtime 1x ./integration/

lint:
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || (gofmt -l $$(git ls-files '*.go'); echo 'gofmt: files above need formatting'; exit 1)
	$(GO) vet $(PKGS)

demo: build ## three replicas (embedded 3-member etcd) + five tcp-servers; Ctrl-C stops all
	./scripts/demo.sh

clean:
	rm -rf $(BIN) demo-data
