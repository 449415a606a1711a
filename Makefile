# nib — build, test and benchmark entry points. `make help` lists the targets.
#
# Every target works on a fresh checkout: tools that are missing (staticcheck)
# are installed through the Go module proxy; the proxy benchmark installs its
# Debian packages itself.

GO          ?= go
CMDS        := lbd penctl setup
BIN         := bin
ARM_BIN     := $(BIN)/linux_arm64

# The ONE test command: README and .ci/run both use `make test`.
TESTTIMEOUT ?= 15m
TESTFLAGS   ?=
FUZZTIME    ?= 20s
FUZZPKGS    ?= ./...
BENCHFLAGS  ?=
# Flags for the proxy benchmark, e.g. make bench-proxy ARGS='-only pen,haproxy -duration 5s'
ARGS        ?=

STATICCHECK_VERSION := v0.8.2
GOBIN_DIR   := $(shell $(GO) env GOBIN)
ifeq ($(GOBIN_DIR),)
GOBIN_DIR   := $(shell $(GO) env GOPATH)/bin
endif
STATICCHECK := $(GOBIN_DIR)/staticcheck

.DEFAULT_GOAL := build
.PHONY: help build run test lint staticcheck fuzz bench bench-proxy bench-dsr image vm update clean

help: ## list the targets
	@echo 'nib make targets:'
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed -e 's/:.*## /\t/' | awk -F'\t' '{printf "  %-12s %s\n", $$1, $$2}'
	@echo 'variables: FUZZTIME=$(FUZZTIME) FUZZPKGS=$(FUZZPKGS) TESTTIMEOUT=$(TESTTIMEOUT) TESTFLAGS= BENCHFLAGS= ARGS= (bench-proxy flags)'

build: ## go build ./... for the host and linux/arm64; lbd, penctl, setup into bin/ and bin/linux_arm64/
	$(GO) build ./...
	GOOS=linux GOARCH=arm64 $(GO) build ./...
	@mkdir -p $(BIN) $(ARM_BIN)
	$(GO) build -o $(BIN)/ $(addprefix ./,$(CMDS))
	GOOS=linux GOARCH=arm64 $(GO) build -o $(ARM_BIN)/ $(addprefix ./,$(CMDS))

run: ## run lbd with its embedded default config on 127.0.0.1:8080 (Ctrl-C stops it)
	$(GO) run ./lbd

test: ## all tests of both modules, race detector on (root tests run when root; the appliance boots in QEMU)
	$(GO) test -race -count=1 -timeout $(TESTTIMEOUT) $(TESTFLAGS) ./...
	cd gokrazy && $(GO) test -race -count=1 -timeout $(TESTTIMEOUT) $(TESTFLAGS) ./...

lint: staticcheck ## gofmt, go vet, staticcheck
	@echo 'gofmt -l'
	@out=$$(find . -name '*.go' -not -path './.git/*' -not -path './$(BIN)/*' -print0 | xargs -0 -r gofmt -l); \
	if [ -n "$$out" ]; then echo 'gofmt: these files need formatting:'; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(STATICCHECK) ./...
	cd gokrazy && $(GO) vet ./... && $(STATICCHECK) ./...

staticcheck: ## install staticcheck (pinned version) into GOBIN if missing
	@if ! "$(STATICCHECK)" -version 2>/dev/null | grep -q '($(STATICCHECK_VERSION:v%=%))'; then \
		echo '$(GO) install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)'; \
		GOBIN='$(GOBIN_DIR)' $(GO) install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION); \
	fi

fuzz: ## run every fuzz target in the tree for FUZZTIME each (default 20s)
	@set -e; list=$$(mktemp); trap 'rm -f "$$list"' EXIT; \
	if ! $(GO) test -list '^Fuzz' $(FUZZPKGS) >"$$list" 2>&1; then cat "$$list"; echo 'fuzz: go test -list failed'; exit 1; fi; \
	targets=$$(awk '/^Fuzz[A-Za-z0-9_]*$$/ { names = names " " $$1; next } \
		/^ok[ \t]/ { if (names != "") print $$2 names; names = "" }' "$$list"); \
	if [ -z "$$targets" ]; then echo 'fuzz: no fuzz targets found'; exit 0; fi; \
	echo "$$targets" | while read -r pkg names; do \
		for f in $$names; do \
			echo "==> $(GO) test -run '^\$$' -fuzz '^$$f\$$' -fuzztime $(FUZZTIME) $$pkg"; \
			$(GO) test -run '^$$' -fuzz "^$$f\$$" -fuzztime $(FUZZTIME) "$$pkg"; \
		done; \
	done

bench: ## Go micro-benchmarks of the internal packages
	$(GO) test -run='^$$' -bench=. $(BENCHFLAGS) ./internal/...

bench-proxy: ## lbd vs pen vs haproxy: CPU per request and RSS per idle connection (ARGS='-only pen,haproxy -duration 5s')
	$(GO) run ./internal/bench/proxy $(ARGS)

bench-dsr: ## root: lbd vs pen in DSR mode in namespaces: iperf3, 64-byte frames, tarpit (ARGS='-only lbd -t 5s')
	$(GO) run ./internal/bench/dsr $(ARGS)

# The appliance (gokrazy/): images are built by nib's own builder from
# gokrazy/nib/config.json, the gok instance config.
DEV  ?=
HOST ?=
VM   ?=

image: ## build nib.img for the Raspberry Pi 4/5; DEV=/dev/sdX also writes it to a card
	cd gokrazy && $(GO) run ./build image -o ../nib.img $(if $(DEV),-dev '$(DEV)')

vm: ## build nib-vm.img and boot it in QEMU: 127.0.0.1:8080 -> port 80, 127.0.0.1:8088 -> web UI (Ctrl-C stops)
	cd gokrazy && $(GO) run ./build vm -o ../nib-vm.img

update: ## build and update a running appliance over the air: HOST=ADDR[:PORT] (VM=1 for the one make vm runs)
	cd gokrazy && $(GO) run ./build update -host '$(HOST)' $(if $(VM),-vm -o ../nib-vm-update.img,-o ../nib.img)

clean: ## remove built binaries and images
	rm -rf $(BIN) nib.img nib-vm.img nib-vm-update.img
