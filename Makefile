# Opsuite developer targets. Tools are pinned in tools/go.mod and built once
# per version into a cache outside the repo by scripts/install-tools.sh.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
GO ?= go
MODULES := . ./gen ./tools
TOOLS_BIN = $(shell scripts/install-tools.sh)
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
GO_TEST_FLAGS ?= -count=1 -timeout 20m
export OPSUITE_REQUIRE_DOCKER ?=

.PHONY: image compose-up compose-down all tools generate check-generate build test test-short lint fmt bench up clean ci

all: build

tools: ## build the pinned generators and linters (cached)
	@scripts/install-tools.sh

generate: ## regenerate gen/ from proto/
	@scripts/googleapis.sh >/dev/null
	@find gen -name '*.pb.go' -o -name '*.pb.gw.go' -o -name '*.swagger.json' | xargs -r rm -f
	PATH="$(TOOLS_BIN):$$PATH" buf generate
	@cd gen && GOWORK=off GOFLAGS=-mod=mod $(GO) mod tidy

check-generate: generate ## fail when gen/ is not what proto/ generates
	@if [ -n "$$(git status --porcelain -- gen proto)" ]; then \
	  echo "gen/ is stale: run 'make generate' and commit the result"; git status --porcelain -- gen proto; git diff --stat -- gen; exit 1; fi

build: ## build bin/opsuite
	$(GO) build -trimpath -ldflags "-X main.version=$(VERSION)" -o bin/opsuite ./cmd/opsuite

fmt:
	gofmt -w $$(git ls-files '*.go' | grep -v '^gen/')

lint: ## vet, gofmt, staticcheck, buf lint and buf breaking against main
	@scripts/googleapis.sh >/dev/null
	@unformatted=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$unformatted" ]; then echo "gofmt needed:"; echo "$$unformatted"; exit 1; fi
	$(GO) vet ./... ./gen/... 
	PATH="$(TOOLS_BIN):$$PATH" staticcheck ./... ./gen/...
	PATH="$(TOOLS_BIN):$$PATH" buf lint
	PATH="$(TOOLS_BIN):$$PATH" scripts/buf-breaking.sh

test: ## run every test (integration included: real NATS, servers on loopback)
	@scripts/install-deps.sh
	@scripts/install-chromium.sh >/dev/null
	@scripts/install-tools.sh >/dev/null
	OPSUITE_REQUIRE_TOOLS=1 PATH="$(TOOLS_BIN):$$PATH" $(GO) test $(GO_TEST_FLAGS) ./... ./gen/...

kube-harness: ## build the Kubernetes test harness once (cached in ~/.cache/opsuite/kube)
	scripts/kube-harness/build.sh >/dev/null

test-kube: kube-harness ## start the harness, run the Kubernetes driver and deployer-on-Kubernetes tests against it, stop it
	@set -e; kubeconfig=$$(scripts/kube-harness/start.sh); trap 'scripts/kube-harness/stop.sh' EXIT; \
	OPSUITE_KUBECONFIG=$$kubeconfig OPSUITE_REQUIRE_KUBE=1 $(GO) test -count=1 -timeout 10m ./services/deployer/internal/driver/kubernetes/...; \
	OPSUITE_KUBECONFIG=$$kubeconfig OPSUITE_REQUIRE_KUBE=1 $(GO) test -count=1 -timeout 10m -run 'OnKubernetes' ./services/deployer/ ./integration/

test-short: ## unit tests only
	$(GO) test -short -count=1 ./...

bench: ## run the benchmarks and print their table (see docs/benchmarks.md)
	scripts/bench.sh

up: build ## run the whole suite on the embedded defaults
	bin/opsuite up --demo

image: ## build the opsuite:dev image from a static host build (no registry needed)
	CGO_ENABLED=0 GOOS=linux GOARCH=amd64 $(GO) build -trimpath -ldflags "-s -w -X main.version=$(VERSION)" -o bin/opsuite-linux-amd64 ./cmd/opsuite
	docker build -t opsuite:dev .

compose-up: image ## run docker-compose.yaml (NATS, five services, gateway) on the local engine
	scripts/nats-image.sh
	DOCKER_GID=$$(stat -c %g /var/run/docker.sock) docker-compose up -d --no-build
	@echo "REST on http://127.0.0.1:8080/v1/ (token: \$$OPSUITE_ADMIN_TOKEN), gRPC on 127.0.0.1:7070"

test-compose: image ## bring docker-compose.yaml up on the real engine, deploy through the gateway, tear it down
	scripts/nats-image.sh
	OPSUITE_COMPOSE_TEST=1 $(GO) test -count=1 -run TestCompose -v ./integration/

compose-down:
	docker-compose down

ci: check-generate lint test ## what .ci/run does

clean:
	rm -rf bin .cache
