#!/usr/bin/env bash
# make test: deps, then every Go test in strict mode (missing prerequisites fail).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
make build
PODROLE_STRICT=1 go test -count=1 ./...
