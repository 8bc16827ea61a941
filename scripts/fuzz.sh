#!/usr/bin/env bash
# make fuzz: runs every Go fuzz target in the module for FUZZTIME each
# (default 30s) and reports new crashers. go test keeps a crasher as
# testdata/fuzz/<Target>/<id> in the package, where it then runs as a
# regression case in every `go test`.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
# shellcheck source=scripts/toolchain.sh
source scripts/toolchain.sh
t=${FUZZTIME:-30s}
crashers=0
while IFS=: read -r file target; do
  pkg=./$(dirname "$file")
  echo "== $target ($pkg) for $t"
  if ! go test -run '^$' -fuzz "^${target}\$" -fuzztime "$t" -parallel 2 "$pkg" 2>&1 | tail -n 3; then
    crashers=$((crashers + 1))
    echo "!! $target found a crasher: see $pkg/testdata/fuzz/$target/"
  fi
done < <(grep -rHo --include='*_test.go' '^func Fuzz[A-Za-z0-9_]*' . | sed 's/:func /:/' | sort -u)
echo
if ((crashers)); then
  echo "fuzz: $crashers target(s) found new crashers"
  exit 1
fi
echo "fuzz: no new crashers"
