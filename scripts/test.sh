#!/usr/bin/env bash
# make test: everything CI runs, on a fresh machine or a warm one.
#   1. build-k8s in the background (the long pole: ~6 min cold, seconds warm)
#   2. deps, tools, make build, go vet (compiles every test), a go mod tidy -diff
#      check, a lint of the shell scripts (shellcheck), of the Helm chart (helm
#      lint) and of the Go code (golangci-lint, govulncheck), while it compiles
#   3. wait for the Kubernetes build, every unit test in strict mode, cluster up
#      (torn down on exit), images, and the e2e suite on the real cluster
# Every step runs even if an earlier test step failed (except where it needs
# the earlier result); the script exits non-zero if anything failed.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
# shellcheck source=scripts/toolchain.sh
source scripts/toolchain.sh
export PODROLE_CACHE=${PODROLE_CACHE:-$HOME/.cache/podrole}
export PODROLE_WORK=${PODROLE_WORK:-/var/tmp/podrole-cluster}
export PODROLE_STRICT=1
T0=$SECONDS
failed=()
section() { printf '\n======== %s  (t+%ds)\n' "$*" "$((SECONDS - T0))"; }
step() { # step NAME CMD...: runs CMD, records a failure under NAME
  local name=$1 t=$SECONDS; shift
  if "$@"; then
    printf -- '-------- %s: ok (%ds)\n' "$name" "$((SECONDS - t))"
  else
    printf -- '-------- %s: FAILED (%ds)\n' "$name" "$((SECONDS - t))"
    failed+=("$name")
    return 1
  fi
}
finish() {
  section "summary"
  echo "wall time: $((SECONDS - T0)) s"
  if ((${#failed[@]})); then
    echo "FAILED: ${failed[*]}"
    exit 1
  fi
  echo "all steps passed"
}

section "build-k8s (background): Kubernetes $(grep -o 'KUBE_VERSION ?= .*' Makefile | cut -d' ' -f3) into $PODROLE_CACHE/bin"
mkdir -p "$PODROLE_CACHE"
KLOG=$PODROLE_CACHE/build-k8s.log
# Bounded: a cold build takes ~6-8 min on 2 cores; 40 min means something is wrong.
timeout 2400 scripts/build-k8s.sh >"$KLOG" 2>&1 &
kpid=$!
echo "log: $KLOG (pid $kpid)"

section "deps (apt)"
step deps scripts/deps.sh || { wait "$kpid"; finish; }
section "tools (scripts/build-tools.sh)"
step tools scripts/build-tools.sh

section "build"
step build make -s build || { wait "$kpid"; finish; }

# Compile every test binary while Kubernetes builds; run them only after it
# is done: some need kube-apiserver and kubectl, and timing-sensitive tests
# (IMDS answers within 500 ms) must not share the CPUs with a compiler.
section "compile tests (go vet ./...)"
step vet go vet ./...
section "go.mod and go.sum tidy (go mod tidy -diff)"
step tidy go mod tidy -diff
section "shellcheck (every tracked shell script, warnings and errors)"
step shellcheck bash -c 'git ls-files -z "*.sh" .ci/run | xargs -0 shellcheck -x -S warning'
section "helm lint (charts/podrole: self-signed, cert-manager, the e2e suite's values)"
step helm-lint bash -c 'h=$PODROLE_CACHE/bin/helm; "$h" lint --strict charts/podrole &&
  "$h" lint --strict charts/podrole --set certManager.enabled=true && "$h" lint --strict charts/podrole -f e2e/values.yaml'
section "lint: golangci-lint (.golangci.yml) and govulncheck (offline database)"
step lint scripts/lint.sh

section "waiting for build-k8s"
if wait "$kpid"; then
  tail -n 3 "$KLOG"
else
  tail -n 40 "$KLOG"
  failed+=(build-k8s)
  finish
fi

section "unit tests: PODROLE_STRICT=1 go test -count=1 ./..."
step unit go test -count=1 ./...

section "cluster up"
trap 'section "cluster down"; WIPE=1 e2e/cluster/down.sh; finish' EXIT
# A test run starts from a wiped cluster: a cluster left by `make demo` (or a
# killed run) would otherwise come back with its old pods and containerd state.
WIPE=1 e2e/cluster/down.sh >/dev/null 2>&1 || true
step cluster-up e2e/cluster/up.sh || exit 1

section "images"
step images e2e/cluster/images.sh || exit 1

section "e2e: go test -tags e2e -count=1 -timeout 20m ./e2e"
step e2e go test -tags e2e -count=1 -timeout 20m -v ./e2e
