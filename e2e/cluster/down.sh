#!/usr/bin/env bash
# make cluster-down: stops everything cluster-up started and leaves no
# process, mount, network namespace, link or nftables table behind. Safe to
# run any number of times, also after a half-dead run. WIPE=1 also deletes
# the state (etcd data, PKI, images, /var/lib/kubelet, containerd's store).
set -uo pipefail
source "$(dirname "$0")/lib.sh"
failed=0

log "== stopping the AWS stand-ins"
"$ROOT/e2e/cluster/standins.sh" stop || failed=1

# Order matters: the apiserver hangs on SIGTERM once etcd is gone (pitfall 11).
for name in kubelet kube-scheduler kube-controller-manager kube-apiserver etcd; do
  if pid_alive "$name" >/dev/null; then log "== stopping $name"; fi
  stop "$name" 20
done

# Pod containers and their shims, through containerd while it still runs.
if pid_alive containerd >/dev/null; then
  log "== removing pod containers"
  ns=k8s.io
  for c in $(timeout 30 ctr -n "$ns" containers list -q 2>/dev/null); do
    timeout 15 ctr -n "$ns" tasks kill -a -s SIGKILL "$c" >/dev/null 2>&1 || true
  done
  for c in $(timeout 30 ctr -n "$ns" containers list -q 2>/dev/null); do
    timeout 15 ctr -n "$ns" tasks delete -f "$c" >/dev/null 2>&1 || true
    timeout 15 ctr -n "$ns" containers delete "$c" >/dev/null 2>&1 || true
  done
  log "== stopping containerd"
fi
stop containerd 20

# Shims of this harness's containerd that outlived it (it was killed, or a
# task refused to die): identified one by one by their exact command line.
for p in /proc/[0-9]*; do
  cmd=$(tr '\0' ' ' 2>/dev/null <"$p/cmdline") || continue
  if [[ $cmd == *containerd-shim-runc-v2*"-namespace k8s.io"*"-address $CONTAINERD_SOCK"* ]]; then
    pid=${p#/proc/}
    log "killing leftover shim $pid"
    kill -KILL "$pid" 2>/dev/null || true
  fi
done

# Pod processes die asynchronously after their shim; a netns stays busy while
# any of them (or a mount namespace copied from the host meanwhile) lives.
pod_procs() {
  local p n=0
  for p in /proc/[0-9]*; do grep -qs kubepods "$p/cgroup" && n=$((n + 1)); done
  echo "$n"
}
deadline=$((SECONDS + 20))
while (($(pod_procs) > 0)) && ((SECONDS < deadline)); do sleep 0.5; done
(($(pod_procs) == 0)) || { echo "pod processes still running after 20s" >&2; failed=1; }

# Network namespaces of pods (CNI names them cni-<uuid>).
# Only cni-* ones: other network namespaces on this machine are not ours.
# Retried: one still being torn down by a dying shim can be busy for a moment.
for ns in $(ip netns list 2>/dev/null | awk '$1 ~ /^cni-/ {print $1}'); do
  for try in $(seq 1 40); do
    err=$(ip netns delete "$ns" 2>&1) && break
    if ((try == 40)); then
      # EBUSY: the file is still a mount point in another process's mount
      # namespace (one created while the pod ran); name the holders.
      holders=$(grep -ls "netns/$ns" /proc/[0-9]*/mountinfo 2>/dev/null | cut -d/ -f3 |
        while read -r pid; do printf '%s(%s) ' "$pid" "$(cat /proc/"$pid"/comm 2>/dev/null)"; done)
      echo "could not delete netns $ns: $err; held by mount namespaces of: ${holders:-unknown}" >&2
      failed=1
    fi
    sleep 0.5
  done
done

# Mounts left by the kubelet (it bind-mounts its root onto itself) and by
# containerd, deepest first (pitfall 12).
umount_under() {
  local m
  for m in $(awk -v p="$1" '$2 == p || index($2, p "/") == 1 {print $2}' /proc/self/mounts | sort -r); do
    umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || { echo "could not unmount $m" >&2; failed=1; }
  done
}
for d in "$KUBELET_DIR" /run/containerd /var/lib/containerd /run/netns; do umount_under "$d"; done

# Veth ends of pods die with their netns; the bridge is the harness's own.
if ip link show "$BRIDGE" >/dev/null 2>&1; then
  log "== deleting link $BRIDGE"
  ip link delete "$BRIDGE" || failed=1
fi
for v in $(ip -o link show type veth 2>/dev/null | awk -F': ' '{print $2}' | cut -d@ -f1); do
  if ip -o link show "$v" | grep -q "master $BRIDGE"; then ip link delete "$v" || failed=1; fi
done
if nft list table inet "$NFT_TABLE" >/dev/null 2>&1; then
  log "== deleting nftables table inet $NFT_TABLE"
  nft delete table inet "$NFT_TABLE" || failed=1
fi
# The CNI bridge plugin turns on forwarding for its gateway; give the host
# back the value it had before cluster-up.
if [[ -f $RUN/ip_forward.orig ]]; then
  cat "$RUN/ip_forward.orig" >/proc/sys/net/ipv4/ip_forward || failed=1
  rm -f "$RUN/ip_forward.orig"
fi
if [[ -f $RUN/ip6_forward.orig ]]; then
  cat "$RUN/ip6_forward.orig" >/proc/sys/net/ipv6/conf/all/forwarding || failed=1
  rm -f "$RUN/ip6_forward.orig"
fi
rm -rf "$WORK/cni/ipam"

if [[ ${WIPE:-0} == 1 ]]; then
  log "== WIPE=1: deleting $WORK, $KUBELET_DIR, containerd's store"
  rm -rf "$WORK" "$KUBELET_DIR" /var/lib/containerd /run/containerd || failed=1
fi

# Verify, so a leak is reported instead of found by the next run.
left=()
for name in kubelet kube-scheduler kube-controller-manager kube-apiserver etcd containerd imds-mock sts-double; do
  pid_alive "$name" >/dev/null && left+=("process $name")
done
ip link show "$BRIDGE" >/dev/null 2>&1 && left+=("link $BRIDGE")
ip netns list 2>/dev/null | grep -q '^cni-' && left+=("netns cni-*")
awk -v k="$KUBELET_DIR" '$2 == k || index($2, k "/") == 1 || $2 ~ /^\/run\/containerd\// {print}' /proc/self/mounts | grep -q . && left+=("mounts under $KUBELET_DIR or /run/containerd")
nft list table inet "$NFT_TABLE" >/dev/null 2>&1 && left+=("nftables table $NFT_TABLE")
if ((${#left[@]})); then
  echo "cluster-down: left behind: ${left[*]}" >&2
  exit 1
fi
((failed == 0)) || exit 1
log "== cluster down (nothing left behind)"
