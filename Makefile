# podrole — every entry point a user or CI needs. See README.md.
SHELL := /bin/bash
export GOFLAGS := -buildvcs=false
# Built tools and Kubernetes binaries are kept here between runs.
export PODROLE_CACHE ?= $(HOME)/.cache/podrole
# The local cluster's state (PKI, logs, kubeconfig).
export PODROLE_WORK ?= /var/tmp/podrole-cluster
export KUBE_VERSION ?= v1.37.2

GO_BUILD := CGO_ENABLED=0 go build -trimpath -ldflags "-s -w"

.PHONY: all build tools deps kube unit test e2e demo cluster-up cluster-down images bench fuzz clean

all: build

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

## unit: every Go test that needs no cluster (root-only and real-client tests included)
unit: build
	PODROLE_STRICT=1 go test -count=1 ./...

## test: everything CI runs — deps, unit, integration and the e2e suite on a real cluster
test:
	scripts/test.sh

clean:
	rm -rf bin
