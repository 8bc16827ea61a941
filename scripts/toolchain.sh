# shellcheck shell=bash
# Sourced by every script that runs `go` for podrole's own module. The product is built with the
# Go release go.mod's `toolchain` line names: a security release newer than many machines' own Go
# (govulncheck finds net/http and crypto/tls vulnerabilities in older ones). The go command
# fetches it once from the Go module proxy (about 76 MB). A GOTOOLCHAIN already set by the caller
# wins, e.g. GOTOOLCHAIN=local to build with the machine's own Go.
if [[ -z ${GOTOOLCHAIN:-} ]]; then
  GOTOOLCHAIN=$(awk '$1 == "toolchain" { print $2 }' "$(dirname "${BASH_SOURCE[0]}")/../go.mod")
  export GOTOOLCHAIN
fi
