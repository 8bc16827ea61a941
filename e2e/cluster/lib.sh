# shellcheck shell=bash disable=SC2034  # sourced: the variables are used by the scripts that source it
# Shared settings and helpers of the local cluster scripts (sourced, not run).
# Everything the harness owns is named here once.

: "${PODROLE_CACHE:=$HOME/.cache/podrole}"
: "${PODROLE_WORK:=/var/tmp/podrole-cluster}"
: "${KUBE_VERSION:=v1.37.2}"
export PODROLE_CACHE PODROLE_WORK KUBE_VERSION

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
# Build with the Go release go.mod names, as make does.
# shellcheck source=scripts/toolchain.sh
source "$ROOT/scripts/toolchain.sh"
WORK=$PODROLE_WORK
KBIN=${PODROLE_KUBE_BIN:-$PODROLE_CACHE/bin}
PKI=$WORK/pki
LOGS=$WORK/logs
RUN=$WORK/run
IMAGES=$WORK/images
KUBECONFIG_PATH=$WORK/kubeconfig

NODE_NAME=podrole-node
# The harness creates cni0 with the pod network's gateway address and uses it
# as the node IP: the cluster then depends on no host interface, and pods
# reach the apiserver, the STS double and the node IMDS stand-in at one
# address that exists only while the cluster is up.
BRIDGE=cni0
GATEWAY=10.244.0.1
POD_CIDR=10.244.0.0/24
# Pods are dual-stack so that the IPv6 metadata endpoint (fd00:ec2::254) and
# podrole's IPv6 redirect are exercised for real; ULA, never routed off-host.
GATEWAY6=fd10:244::1
POD_CIDR6=fd10:244::/64
SERVICE_CIDR=10.96.0.0/16
APISERVER_SERVICE_IP=10.96.0.1
APISERVER_PORT=6443
# Stand-ins for AWS, on the gateway (never on 169.254.169.254).
IMDS_MOCK_PORT=1338 # also in e2e/manifests/kustomization.yaml
STS_DOUBLE_PORT=18080 # also in e2e/manifests/kustomization.yaml
NODE_METADATA_ENDPOINT=http://$GATEWAY:$IMDS_MOCK_PORT
STS_ENDPOINT=http://$GATEWAY:$STS_DOUBLE_PORT
# The harness's own nftables table: the metadata guard and the apiserver
# service NAT. One table, so cluster-down removes all of it in one command.
NFT_TABLE=podrole_harness
CONTAINERD_SOCK=/run/containerd/containerd.sock
KUBELET_DIR=/var/lib/kubelet
CNI_BIN=/usr/lib/cni

log() { printf '[%s] %s\n' "$(date -u +%H:%M:%S)" "$*"; }
die() { printf '[%s] ERROR: %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; exit 1; }

# wait_for SECONDS WHAT CMD...: polls CMD every 0.2 s until it succeeds or
# SECONDS pass; on timeout says what did not come up and where to look.
wait_for() {
  local secs=$1 what=$2; shift 2
  local deadline=$((SECONDS + secs))
  until "$@" >/dev/null 2>&1; do
    if ((SECONDS >= deadline)); then
      echo "timed out after ${secs}s waiting for $what" >&2
      return 1
    fi
    sleep 0.2
  done
}

# pid_alive NAME: the PID recorded for NAME if that process still runs the
# binary we started (a recycled PID is not ours).
pid_alive() {
  local f=$RUN/$1.pid pid exe
  [[ -f $f ]] || return 1
  pid=$(<"$f")
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  exe=$(readlink "/proc/$pid/exe" 2>/dev/null) || return 1
  [[ $exe == "$(<"$RUN/$1.exe")" ]] || return 1
  echo "$pid"
}

# start NAME BIN ARGS...: runs a daemon in the background with its log in
# $LOGS/NAME.log and its PID recorded for stop.
start() {
  local name=$1 bin=$2; shift 2
  mkdir -p "$LOGS" "$RUN"
  nohup "$bin" "$@" >"$LOGS/$name.log" 2>&1 </dev/null &
  echo $! >"$RUN/$name.pid"
  readlink -f "$bin" >"$RUN/$name.exe"
}

# stop NAME [GRACE]: SIGTERM by recorded PID, SIGKILL after GRACE seconds
# (default 20), and wait until the process is gone.
stop() {
  local name=$1 grace=${2:-20} pid
  if pid=$(pid_alive "$name"); then
    kill -TERM "$pid" 2>/dev/null || true
    local deadline=$((SECONDS + grace))
    while [[ -e /proc/$pid ]] && ((SECONDS < deadline)); do sleep 0.2; done
    if [[ -e /proc/$pid ]]; then
      log "$name (pid $pid) ignored SIGTERM for ${grace}s: SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
      deadline=$((SECONDS + 10))
      while [[ -e /proc/$pid ]] && ((SECONDS < deadline)); do sleep 0.2; done
    fi
  fi
  rm -f "$RUN/$name.pid" "$RUN/$name.exe"
}

kubectl_bin() {
  if command -v kubectl >/dev/null 2>&1; then command -v kubectl; else echo "$KBIN/kubectl"; fi
}
