#!/usr/bin/env bash
# Builds kube-apiserver, kubelet, kube-controller-manager and kube-scheduler
# (and kubectl when the machine has none) at $KUBE_VERSION from the Go module
# proxy into $PODROLE_CACHE/bin. k8s.io/kubernetes cannot be `go install`ed
# (its go.mod replaces the staging modules with ./staging paths), so a helper
# module requires it and replaces each staging module by its published v0.x
# twin. A stamp file records what was built; a second run is a no-op.
# See docs/local-cluster.md §2 for the measurements behind this.
set -euo pipefail
# Kubernetes is test infrastructure, not the product: it is built with the machine's own Go
# setting (its go.mod decides what it needs), not podrole's toolchain, so a change of podrole's
# toolchain never rebuilds it.
unset GOTOOLCHAIN

KUBE_VERSION=${KUBE_VERSION:-v1.37.2}
CACHE=${PODROLE_CACHE:-$HOME/.cache/podrole}
BIN=$CACHE/bin
KBUILD=$CACHE/kbuild
STAMP=$BIN/.kube-version

comps=(kube-apiserver kubelet kube-controller-manager kube-scheduler)
# Fresh machines may lack kubectl; the harness and the tests drive the cluster
# with it (BUILD_KUBECTL=1 builds it anyway). No kube-proxy: the harness needs
# none (see e2e/cluster/up.sh).
if [[ ${BUILD_KUBECTL:-0} == 1 ]] || ! command -v kubectl >/dev/null 2>&1 || [[ $(command -v kubectl) == "$BIN/kubectl" ]]; then
  comps+=(kubectl)
fi

want="$KUBE_VERSION ${comps[*]}"
uptodate=1
for c in "${comps[@]}"; do [[ -x $BIN/$c ]] || uptodate=0; done
if ((uptodate)) && [[ -f $STAMP ]] && [[ $(<"$STAMP") == "$want" ]]; then
  echo "build-k8s: $KUBE_VERSION already built in $BIN (${comps[*]})"
  exit 0
fi

command -v go >/dev/null || { echo "build-k8s: go is not on PATH: install Go 1.26" >&2; exit 1; }
minor=${KUBE_VERSION#v1.}; minor=${minor%%.*}
staging=v0.${KUBE_VERSION#v1.}
mkdir -p "$BIN" "$KBUILD"
cd "$KBUILD"
start=$SECONDS
echo "build-k8s: building ${comps[*]} $KUBE_VERSION into $BIN (cold: ~6 min on 2 cores)"

# The module's own go.mod lists the staging replaces we have to mirror.
timeout 600 go mod download "k8s.io/kubernetes@$KUBE_VERSION"
KMOD=$(go env GOMODCACHE)/cache/download/k8s.io/kubernetes/@v/$KUBE_VERSION.mod
[[ -s $KMOD ]] || { echo "build-k8s: $KMOD missing after download" >&2; exit 1; }
newmod=$(
  printf 'module local/kbuild\n\ngo 1.26.0\n\nrequire k8s.io/kubernetes %s\n\nreplace (\n' "$KUBE_VERSION"
  sed -n '/^replace (/,/^)/p' "$KMOD" |
    awk -v v="$staging" '$2=="=>" && $3 ~ /^\.\/staging/ {print "\t" $1 " => " $1 " " v}'
  echo ')'
)
imports=$(for c in "${comps[@]}"; do
  printf '\t_ "k8s.io/kubernetes/cmd/%s"\n' "$c"; done)
newtools=$(printf '//go:build tools\n\npackage tools\n\nimport (\n%s\n)\n' "$imports")
# Rewrite (and re-tidy) only when the version or the tool list changed: tidy
# on an unchanged module is a no-op, but it rewrites go.sum when the head changes.
if [[ ! -f go.mod ]] || ! grep -q "^require k8s.io/kubernetes $KUBE_VERSION\$" go.mod || [[ "$(cat tools.go 2>/dev/null)" != "$newtools" ]]; then
  printf '%s\n' "$newmod" >go.mod
  printf '%s\n' "$newtools" >tools.go
  rm -f go.sum
fi
timeout 900 go mod tidy

LD="-s -w"
for kv in "gitVersion=$KUBE_VERSION" gitMajor=1 "gitMinor=$minor" gitTreeState=clean buildDate=2000-01-01T00:00:00Z; do
  LD="$LD -X k8s.io/component-base/version.$kv -X k8s.io/client-go/pkg/version.$kv"
done
rm -f "$STAMP"
for c in "${comps[@]}"; do
  t=$SECONDS
  # One binary at a time: the linker of kube-apiserver alone wants ~2 GB.
  CGO_ENABLED=0 timeout 1200 go build -ldflags "$LD" -o "$BIN/$c.tmp" "k8s.io/kubernetes/cmd/$c"
  mv "$BIN/$c.tmp" "$BIN/$c"
  echo "build-k8s: $c done in $((SECONDS - t)) s"
done
echo "$want" >"$STAMP"
echo "build-k8s: all done in $((SECONDS - start)) s"
