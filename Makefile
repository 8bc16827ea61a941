# podrole — every entry point a user or CI needs. See README.md.
SHELL := /bin/bash
export GOFLAGS := -buildvcs=false
# The Go release go.mod's toolchain line names (a security release; see scripts/toolchain.sh).
export GOTOOLCHAIN ?= $(shell awk '$$1 == "toolchain" { print $$2 }' go.mod)
# Built tools and Kubernetes binaries are kept here between runs.
export PODROLE_CACHE ?= $(HOME)/.cache/podrole
# The local cluster's state (PKI, logs, kubeconfig).
export PODROLE_WORK ?= /var/tmp/podrole-cluster
export KUBE_VERSION ?= v1.37.2

GO_BUILD := CGO_ENABLED=0 go build -trimpath -ldflags "-s -w"

.PHONY: all help lint build tools deps kube unit test e2e demo cluster-up cluster-down images bench fuzz clean

all: build

## help: list the targets with what they do
help:
	@awk '/^## [a-z-]+:/ { sub(/^## /, ""); i = index($$0, ":"); printf "  %-13s %s\n", substr($$0, 1, i - 1), substr($$0, i + 2) }' $(MAKEFILE_LIST)

## build: bin/podrole-webhook and bin/podrole-sidecar (static)
build:
	$(GO_BUILD) -o bin/podrole-webhook ./webhook
	$(GO_BUILD) -o bin/podrole-sidecar ./sidecar

## deps: apt packages and npm modules the tests and the cluster need (idempotent)
deps:
	scripts/deps.sh

## kube: etcd-less Kubernetes binaries v1.37.x built from the Go module proxy (cached)
kube:
	scripts/build-k8s.sh

## cluster-up: a real single-node cluster (containerd, etcd, apiserver, controller-manager, scheduler, kubelet) + AWS stand-ins; prints the kubeconfig
cluster-up:
	e2e/cluster/up.sh

## cluster-down: stop it all, leave no process/mount/netns/link/rule (WIPE=1 also deletes the state)
cluster-down:
	e2e/cluster/down.sh

## images: localhost/podrole-{webhook,sidecar}:dev, the e2e app and pause, built with mkimage and imported into containerd
images:
	e2e/cluster/images.sh

## e2e: the end-to-end suite against the running cluster (make cluster-up images first)
e2e:
	PODROLE_STRICT=1 go test -tags e2e -count=1 -timeout 20m -v ./e2e

## demo: from a fresh machine: build, cluster up, install, narrated run of scenarios 1 and 2
demo:
	e2e/demo.sh

## unit: every Go test that needs no cluster (root-only and real-client tests included)
unit: build
	PODROLE_STRICT=1 go test -count=1 ./...

## test: everything CI runs — deps, unit, integration and the e2e suite on a real cluster
test:
	scripts/test.sh

## clean: remove bin/
clean:
	rm -rf bin

## bench: every performance figure beside its reference, with targets (see README "Performance")
bench:
	scripts/bench.sh

## fuzz: every fuzz target for FUZZTIME (default 30s); reports new crashers
fuzz:
	scripts/fuzz.sh

## lint: golangci-lint (.golangci.yml) and govulncheck against the offline vulnerability database
lint:
	scripts/lint.sh

## tools: third-party test tools (amazon-ec2-metadata-mock, helm, golangci-lint, govulncheck and its database) into $(PODROLE_CACHE)
tools:
	scripts/build-tools.sh
