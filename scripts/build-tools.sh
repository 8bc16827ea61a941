#!/usr/bin/env bash
# Builds third-party test tools into $PODROLE_CACHE/bin (default ~/.cache/podrole/bin) from the
# Go module proxy. Each tool is built in a throwaway helper module under $PODROLE_CACHE, so its
# dependencies never touch podrole's go.mod. Skips tools already built at the pinned version.
set -euo pipefail
# Tools are built with the toolchain podrole builds with: the linters must understand its
# standard library, and a toolchain change rebuilds every tool (the Go version is in the stamp).
# shellcheck source=scripts/toolchain.sh
source "$(dirname "$0")/toolchain.sh"
gover=$(go env GOVERSION)
cache="${PODROLE_CACHE:-$HOME/.cache/podrole}"
bin="$cache/bin"
mkdir -p "$bin"

# build NAME MODULE VERSION PACKAGE [LDFLAGS]: go build PACKAGE from MODULE@VERSION into $bin/NAME.
build() {
  local name="$1" module="$2" version="$3" pkg="$4" ldflags="${5:-}"
  local stamp="$bin/.$name.version"
  if [[ -x "$bin/$name" && -f "$stamp" && "$(cat "$stamp")" == "$module@$version $gover" ]]; then
    return 0
  fi
  local helper="$cache/tools-src/$name"
  rm -rf "$helper"
  mkdir -p "$helper"
  echo "build-tools: building $name from $module@$version"
  (
    cd "$helper"
    export GOFLAGS=-mod=mod GOWORK=off
    timeout 300 go mod init "podrole.local/tools/$name" >/dev/null 2>&1
    timeout 300 go get "$module@$version" >get.log 2>&1 || { cat get.log >&2; exit 1; }
    CGO_ENABLED=0 GOFLAGS="$GOFLAGS -buildvcs=false" timeout 900 go build -trimpath -ldflags "$ldflags" -o "$bin/$name.tmp" "$pkg"
  )
  mv "$bin/$name.tmp" "$bin/$name"
  echo "$module@$version $gover" >"$stamp"
}

# The node IMDS stand-in of the conformance suite's security probes.
build ec2-metadata-mock github.com/aws/amazon-ec2-metadata-mock v1.13.0 github.com/aws/amazon-ec2-metadata-mock/cmd/ec2-metadata-mock
# The helm CLI: make test lints charts/podrole with it, and the e2e suite installs podrole with it.
# Its version string is set as helm's own release build sets it (else `helm version` says v3.22-dev... or similar).
build helm helm.sh/helm/v3 v3.22.0 helm.sh/helm/v3/cmd/helm "-X helm.sh/helm/v3/internal/version.version=v3.22.0"
# Developer checks of make test (scripts/lint.sh): golangci-lint, and govulncheck with the Go
# vulnerability database built here from golang.org/x/vulndb's OSV files (that module is served
# by the Go module proxy; vuln.go.dev is not reachable from these machines).
build golangci-lint github.com/golangci/golangci-lint/v2 v2.15.0 github.com/golangci/golangci-lint/v2/cmd/golangci-lint
build govulncheck golang.org/x/vuln v1.9.0 golang.org/x/vuln/cmd/govulncheck
vulndb_version=v0.0.0-20261105234957-e22db6528018
build indexdb golang.org/x/vulndb "$vulndb_version" golang.org/x/vulndb/cmd/indexdb
db="$cache/vulndb"
if [[ ! -f "$db/index/db.json" || "$(cat "$db/.version" 2>/dev/null)" != "$vulndb_version" ]]; then
  echo "build-tools: building the vulnerability database from golang.org/x/vulndb@$vulndb_version"
  osv=$(cd "$cache/tools-src/indexdb" && GOFLAGS=-mod=mod GOWORK=off go list -m -f '{{.Dir}}' golang.org/x/vulndb)/data/osv
  rm -rf "$db.tmp"
  timeout 600 "$bin/indexdb" -vulns "$osv" -out "$db.tmp"
  echo "$vulndb_version" >"$db.tmp/.version"
  rm -rf "$db"
  mv "$db.tmp" "$db"
fi
