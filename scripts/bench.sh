#!/usr/bin/env bash
# make bench: every figure of the performance section, each beside its
# reference measured in the same run. Prints markdown tables with the target
# and a met/MISSED verdict next to each figure. Bench figures never fail the
# run; a broken measurement does.
#   PODROLE_BENCH_DURATION  time per load point (default 5s)
#   PODROLE_BENCH_CLUSTER=0 skip the pod start-up section (needs the local cluster)
#   PODROLE_BENCH_SIDECAR_ENV  one VAR=value for the sidecar under test (e.g. GOGC=100)
# One section by hand, after make build: sections 1-4 with
#   go build -o bin/podrole-bench ./bench/cmd/podrole-bench && bin/podrole-bench --only=footprint
# (imds, first, sts, footprint, health); section 5 (5b: TestWebhookStalledFigure) with
#   PODROLE_BENCH=1 taskset -c 1 go test -count=1 -run '^TestWebhookFigures$' -v ./bench/
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/toolchain.sh
source scripts/toolchain.sh
export PODROLE_CACHE=${PODROLE_CACHE:-$HOME/.cache/podrole}
export PODROLE_WORK=${PODROLE_WORK:-/var/tmp/podrole-cluster}
dur=${PODROLE_BENCH_DURATION:-5s}
out=${PODROLE_BENCH_OUT:-bin/bench.md}

scripts/deps.sh
scripts/build-tools.sh >/dev/null
make -s build
CGO_ENABLED=0 go build -o bin/podrole-bench ./bench/cmd/podrole-bench
mkdir -p "$(dirname "$out")"

echo "== sections 1-4: IMDS serving, first credentials, STS economy, footprint"
bin/podrole-bench --duration="$dur" | tee "$out"

echo "== section 5: webhook /mutate"
PODROLE_BENCH=1 PODROLE_BENCH_DURATION=$dur PODROLE_BENCH_OUT=$PWD/bin/bench-webhook.md \
  taskset -c 1 go test -count=1 -timeout 15m -run '^TestWebhookFigures$' -v ./bench/ | grep -v '^=== RUN\|^--- PASS\|^PASS\|^ok '
cat bin/bench-webhook.md >> "$out"

echo "== section 5b: webhook /mutate and RSS with 120 stalled uploads held open, beside without"
PODROLE_BENCH=1 PODROLE_BENCH_DURATION=$dur PODROLE_BENCH_OUT=$PWD/bin/bench-webhook-stalled.md \
  taskset -c 1 go test -count=1 -timeout 10m -run '^TestWebhookStalledFigure$' -v ./bench/ | grep -v '^=== RUN\|^--- PASS\|^PASS\|^ok '
cat bin/bench-webhook-stalled.md >> "$out"

if [[ ${PODROLE_BENCH_CLUSTER:-1} != 0 ]]; then
  echo "== section 6: pod start-up on the local cluster (median of 10, create -> Ready)"
  if ! KUBECONFIG=$PODROLE_WORK/kubeconfig timeout 10 kubectl get --raw /readyz >/dev/null 2>&1; then
    scripts/build-k8s.sh
    e2e/cluster/up.sh
    trap 'e2e/cluster/down.sh' EXIT
  fi
  e2e/cluster/images.sh
  {
    echo
    echo "## Image sizes (target: sidecar image under 30 MiB, iptables included)"
    echo
    echo "| image tarball (gzip layers) | size |"
    echo "|---|---|"
    for f in "$PODROLE_WORK"/images/*.tar; do
      printf '| %s | %.1f MiB |\n' "$(basename "$f")" "$(echo "$(stat -c %s "$f") / 1048576" | bc -l)"
    done
    s=$(stat -c %s "$PODROLE_WORK/images/sidecar.tar")
    if ((s < 30 * 1048576)); then echo; echo "sidecar image under 30 MiB: met"; else echo; echo "sidecar image under 30 MiB: MISSED"; fi
  } | tee -a "$out"
  PODROLE_STRICT=1 go test -tags e2e -count=1 -timeout 20m -run '^$' -bench PodStartup -benchtime 10x ./e2e/ | tee bin/bench-pods.txt
  plain=$(awk '/PodStartup\/plain/ {for (i=1;i<=NF;i++) if ($(i+1)=="ms-median") print $i}' bin/bench-pods.txt)
  inj=$(awk '/PodStartup\/injected/ {for (i=1;i<=NF;i++) if ($(i+1)=="ms-median") print $i}' bin/bench-pods.txt)
  {
    echo
    echo "## 6. Pod start-up, create -> Ready, median of 10 (target: under 1.5 s added by injection)"
    echo
    echo "| pods | median |"
    echo "|---|---|"
    echo "| not injected | ${plain} ms |"
    echo "| injected (init + agent fetching credentials from the STS double) | ${inj} ms |"
    added=$(( ${inj%.*} - ${plain%.*} ))
    if ((added < 1500)); then v=met; else v="MISSED (${added} ms)"; fi
    echo
    echo "added by injection: ${added} ms: $v"
  } | tee -a "$out"
fi
echo
echo "figures written to $out"
