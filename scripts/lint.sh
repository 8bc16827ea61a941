#!/usr/bin/env bash
# make lint: golangci-lint (configuration in .golangci.yml) and govulncheck, both built by
# scripts/build-tools.sh. govulncheck reads the vulnerability database build-tools.sh made from
# golang.org/x/vulndb, so it needs no network; that database is as new as the vulndb version
# pinned there, and the output names its date.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
# shellcheck source=scripts/toolchain.sh
source scripts/toolchain.sh
cache=${PODROLE_CACHE:-$HOME/.cache/podrole}
for tool in golangci-lint govulncheck; do
  if [[ ! -x $cache/bin/$tool ]]; then
    echo "lint: $cache/bin/$tool is missing: run scripts/build-tools.sh (make tools)" >&2
    exit 1
  fi
done
if [[ ! -f $cache/vulndb/index/db.json ]]; then
  echo "lint: no vulnerability database in $cache/vulndb: run scripts/build-tools.sh (make tools)" >&2
  exit 1
fi
rc=0
echo "golangci-lint $("$cache/bin/golangci-lint" version --short 2>/dev/null) (.golangci.yml)"
timeout 1200 "$cache/bin/golangci-lint" run ./... || rc=1
echo "govulncheck (database: golang.org/x/vulndb@$(cat "$cache/vulndb/.version"))"
timeout 900 "$cache/bin/govulncheck" -db "file://$cache/vulndb" -tags e2e,bench ./... || rc=1
exit "$rc"
