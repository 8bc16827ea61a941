#!/usr/bin/env bash
# make cluster-up: a real single-node Kubernetes cluster on this machine —
# containerd + CNI bridge, etcd, kube-apiserver, controller-manager,
# scheduler, kubelet — plus the AWS stand-ins (node IMDS mock and STS double)
# on the pod network's gateway. Idempotent: a previous run, even half dead, is
# torn down first. State lives in $PODROLE_WORK; the kubeconfig path is
# printed at the end. Facts and pitfalls: docs/local-cluster.md.
#
# Networking, kept minimal (no kube-proxy, no DNS):
#  - pods → apiserver: the apiserver listens on all addresses and the node IP is
#    the gateway 10.244.0.1; one harness NAT rule sends 10.96.0.1:443 (what
#    in-cluster clients use) to it. The cert has both addresses as SANs.
#  - apiserver → webhook Service: --enable-aggregator-routing=true makes the
#    apiserver resolve a Service to an endpoint IP itself; in v1.37 the same
#    resolver is handed to the admission webhooks (cmd/kube-apiserver/app/
#    server.go, buildServiceResolver), so pod IPs on cni0 are dialled directly.
#  - metadata guard: pod traffic to 169.254.169.254 / fd00:ec2::254 is rejected
#    at the host's FORWARD hook, and pod traffic may not leave through any
#    other interface; installed before the kubelet starts, removed by down.sh.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
T0=$SECONDS

[[ $(id -u) == 0 ]] || die "cluster-up needs root (containerd, netns, nftables)"

log "== deps and Kubernetes binaries"
"$ROOT/scripts/deps.sh"
"$ROOT/scripts/build-k8s.sh"
KUBECTL=$(kubectl_bin)
for b in kube-apiserver kube-controller-manager kube-scheduler kubelet; do
  [[ -x $KBIN/$b ]] || die "$KBIN/$b missing: run make kube"
done
ETCD=${ETCD:-$(command -v etcd || true)}
[[ -x $ETCD ]] || die "etcd not found: scripts/deps.sh installs etcd-server"

log "== cleaning any previous run"
"$ROOT/e2e/cluster/down.sh" >"$WORK.down.log" 2>&1 || { cat "$WORK.down.log" >&2; die "could not clean the previous run"; }
mkdir -p "$WORK" "$LOGS" "$RUN" "$IMAGES" "$PKI"
mv "$WORK.down.log" "$LOGS/down-before-up.log"

# ---------------------------------------------------------------- PKI
gen_pki() {
  log "== PKI (openssl) in $PKI"
  local d=$PKI
  cd "$d"
  openssl genrsa -out ca.key 2048 2>/dev/null
  openssl req -x509 -new -key ca.key -days 3650 -subj "/CN=podrole-e2e-ca" -out ca.crt 2>/dev/null
  sign() { # name subject [san]
    openssl genrsa -out "$1.key" 2048 2>/dev/null
    openssl req -new -key "$1.key" -subj "$2" -out "$1.csr" 2>/dev/null
    local ext
    ext=$(mktemp)
    printf 'basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=%s\n' "$4" >"$ext"
    [[ -n $3 ]] && printf 'subjectAltName=%s\n' "$3" >>"$ext"
    openssl x509 -req -in "$1.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -days 3650 -extfile "$ext" -out "$1.crt" 2>/dev/null
    rm -f "$ext" "$1.csr"
  }
  sign apiserver "/CN=kube-apiserver" \
    "DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local,DNS:localhost,IP:127.0.0.1,IP:$APISERVER_SERVICE_IP,IP:$GATEWAY" serverAuth
  sign admin "/O=system:masters/CN=podrole-e2e-admin" "" clientAuth
  sign kubelet "/O=system:nodes/CN=system:node:$NODE_NAME" "" clientAuth
  sign kubelet-serving "/CN=$NODE_NAME" "DNS:$NODE_NAME,IP:$GATEWAY,IP:127.0.0.1" serverAuth
  openssl genrsa -out sa.key 2048 2>/dev/null
  openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
  for who in admin kubelet; do
    cat >"$who.kubeconfig" <<KC
apiVersion: v1
kind: Config
clusters:
- name: podrole-e2e
  cluster: {server: "https://127.0.0.1:$APISERVER_PORT", certificate-authority: "$d/ca.crt"}
users:
- name: $who
  user: {client-certificate: "$d/$who.crt", client-key: "$d/$who.key"}
contexts:
- name: podrole-e2e
  context: {cluster: podrole-e2e, user: $who}
current-context: podrole-e2e
KC
  done
  cd - >/dev/null
}
[[ -s $PKI/admin.kubeconfig && -s $PKI/sa.key ]] || gen_pki
cp "$PKI/admin.kubeconfig" "$KUBECONFIG_PATH"
export KUBECONFIG=$KUBECONFIG_PATH

# ---------------------------------------------------------------- network
log "== bridge $BRIDGE $GATEWAY/24 $GATEWAY6/64 and the harness's nftables table $NFT_TABLE"
# Created here, not by the CNI plugin: plugin 1.1.1 would give it an all-zero
# MAC on this kernel (pitfall 7), and the gateway must exist before anything
# listens on it.
ip link add "$BRIDGE" type bridge
ip link set "$BRIDGE" up
ip addr add "$GATEWAY/24" dev "$BRIDGE"
ip -6 addr add "$GATEWAY6/64" dev "$BRIDGE" nodad
# The CNI bridge plugin turns forwarding on for its gateways; down.sh restores these.
cat /proc/sys/net/ipv4/ip_forward >"$RUN/ip_forward.orig"
cat /proc/sys/net/ipv6/conf/all/forwarding >"$RUN/ip6_forward.orig"
nft -f - <<NFT
table inet $NFT_TABLE {
  chain forward {
    type filter hook forward priority filter - 10; policy accept;
    iifname "$BRIDGE" ip daddr 169.254.169.254 meta l4proto tcp counter reject with tcp reset
    iifname "$BRIDGE" ip daddr 169.254.169.254 counter reject with icmpx type admin-prohibited
    iifname "$BRIDGE" ip6 daddr fd00:ec2::254 meta l4proto tcp counter reject with tcp reset
    iifname "$BRIDGE" ip6 daddr fd00:ec2::254 counter reject with icmpx type admin-prohibited
    iifname "$BRIDGE" oifname != "$BRIDGE" counter reject with icmpx type admin-prohibited
  }
  chain prerouting {
    type nat hook prerouting priority dstnat; policy accept;
    iifname "$BRIDGE" ip daddr $APISERVER_SERVICE_IP tcp dport 443 dnat ip to $GATEWAY:$APISERVER_PORT
  }
}
NFT

# /run/netns a mount point before containerd mounts pod namespaces in it:
# `ip netns add`, run by anything on this machine while pods run (the
# sidecar's netns tests do), bind-mounts /run/netns onto itself when it is not
# one yet, which hides the namespaces mounted underneath; their pods can then
# never be torn down ("remove netns: unlinkat ...: device or resource busy").
# When it already is one, ip only marks it shared. down.sh unmounts it.
mkdir -p /run/netns
mountpoint -q /run/netns || mount --bind /run/netns /run/netns
mount --make-shared /run/netns

# ---------------------------------------------------------------- containerd
log "== containerd"
mkdir -p "$WORK/containerd" "$WORK/cni/net.d" "$WORK/cni/ipam"
cat >"$WORK/containerd/config.toml" <<TOML
version = 2
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "localhost/pause:dev"
  # The VM's root lacks CAP_SYS_RESOURCE: without this runc fails every
  # sandbox writing oom_score_adj -998 (pitfall 5).
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "$CNI_BIN"
    conf_dir = "$WORK/cni/net.d"
TOML
# No ipMasq: the host nat table stays untouched and pod traffic stays here.
# No ipam routes: isDefaultGateway already adds the default (pitfall 6).
cat >"$WORK/cni/net.d/10-podrole.conflist" <<JSON
{
  "cniVersion": "0.4.0",
  "name": "podrole",
  "plugins": [
    {"type": "bridge", "bridge": "$BRIDGE", "isGateway": true, "isDefaultGateway": true,
     "ipMasq": false, "hairpinMode": true,
     "ipam": {"type": "host-local", "dataDir": "$WORK/cni/ipam",
              "ranges": [[{"subnet": "$POD_CIDR", "gateway": "$GATEWAY"}],
                         [{"subnet": "$POD_CIDR6", "gateway": "$GATEWAY6"}]]}},
    {"type": "loopback"}
  ]
}
JSON
start containerd "$(command -v containerd)" --config "$WORK/containerd/config.toml"
wait_for 30 "containerd socket (log: $LOGS/containerd.log)" ctr --address "$CONTAINERD_SOCK" version || exit 1

log "== sandbox image localhost/pause:dev"
mkdir -p "$WORK/build"
(cd "$ROOT" && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$WORK/build/pause" ./e2e/cmd/pause &&
  CGO_ENABLED=0 go build -trimpath -o "$WORK/build/mkimage" ./e2e/tools/mkimage)
"$WORK/build/mkimage" -o "$IMAGES/pause.tar" -t localhost/pause:dev -entrypoint /pause -f "$WORK/build/pause:/pause"
timeout 120 ctr -n k8s.io images import --all-platforms "$IMAGES/pause.tar" >/dev/null
# Re-import every image built before (make images), so a restarted cluster
# needs no rebuild.
for t in "$IMAGES"/*.tar; do
  [[ $t == "$IMAGES/pause.tar" ]] && continue
  timeout 120 ctr -n k8s.io images import --all-platforms "$t" >/dev/null
done

# ---------------------------------------------------------------- etcd
log "== etcd ($("$ETCD" --version | head -1))"
start etcd "$ETCD" --name podrole --data-dir "$WORK/etcd" \
  --listen-client-urls http://127.0.0.1:2379 --advertise-client-urls http://127.0.0.1:2379 \
  --listen-peer-urls http://127.0.0.1:2380 --initial-advertise-peer-urls http://127.0.0.1:2380 \
  --initial-cluster podrole=http://127.0.0.1:2380
wait_for 30 "etcd health (log: $LOGS/etcd.log)" curl -fsS --max-time 2 http://127.0.0.1:2379/health || exit 1

# ---------------------------------------------------------------- control plane
log "== kube-apiserver"
start kube-apiserver "$KBIN/kube-apiserver" \
  --etcd-servers=http://127.0.0.1:2379 \
  --bind-address=0.0.0.0 --advertise-address="$GATEWAY" --secure-port="$APISERVER_PORT" \
  --tls-cert-file="$PKI/apiserver.crt" --tls-private-key-file="$PKI/apiserver.key" \
  --client-ca-file="$PKI/ca.crt" \
  --service-account-issuer=https://kubernetes.default.svc.cluster.local \
  --service-account-key-file="$PKI/sa.pub" --service-account-signing-key-file="$PKI/sa.key" \
  --service-cluster-ip-range="$SERVICE_CIDR" \
  --authorization-mode=Node,RBAC --enable-admission-plugins=NodeRestriction \
  --enable-aggregator-routing=true --kubelet-preferred-address-types=InternalIP \
  --kubelet-client-certificate="$PKI/admin.crt" --kubelet-client-key="$PKI/admin.key" \
  --allow-privileged=true --cert-dir="$WORK/apiserver-certs" --v=1
wait_for 60 "kube-apiserver /readyz (log: $LOGS/kube-apiserver.log)" "$KUBECTL" get --raw /readyz || exit 1

log "== kube-controller-manager, kube-scheduler"
start kube-controller-manager "$KBIN/kube-controller-manager" --kubeconfig="$PKI/admin.kubeconfig" \
  --authentication-kubeconfig="$PKI/admin.kubeconfig" --authorization-kubeconfig="$PKI/admin.kubeconfig" \
  --bind-address=127.0.0.1 --leader-elect=false \
  --service-account-private-key-file="$PKI/sa.key" --root-ca-file="$PKI/ca.crt" \
  --cluster-signing-cert-file="$PKI/ca.crt" --cluster-signing-key-file="$PKI/ca.key" \
  --service-cluster-ip-range="$SERVICE_CIDR" --allocate-node-cidrs=false --v=1
start kube-scheduler "$KBIN/kube-scheduler" --kubeconfig="$PKI/admin.kubeconfig" \
  --authentication-kubeconfig="$PKI/admin.kubeconfig" --authorization-kubeconfig="$PKI/admin.kubeconfig" \
  --bind-address=127.0.0.1 --leader-elect=false --v=1

# ---------------------------------------------------------------- kubelet
log "== kubelet"
cat >"$WORK/kubelet-config.yaml" <<YAML
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
cgroupDriver: cgroupfs
failCgroupV1: false
failSwapOn: false
containerRuntimeEndpoint: unix://$CONTAINERD_SOCK
address: $GATEWAY
tlsCertFile: $PKI/kubelet-serving.crt
tlsPrivateKeyFile: $PKI/kubelet-serving.key
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: false}
  x509: {clientCAFile: $PKI/ca.crt}
authorization: {mode: AlwaysAllow}
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
clusterDomain: cluster.local
resolvConf: /etc/resolv.conf
evictionHard: {memory.available: "100Mi", nodefs.available: "1%", imagefs.available: "1%"}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
serializeImagePulls: false
YAML
mkdir -p "$KUBELET_DIR"
start kubelet "$KBIN/kubelet" --config="$WORK/kubelet-config.yaml" --kubeconfig="$PKI/kubelet.kubeconfig" \
  --hostname-override="$NODE_NAME" --node-ip="$GATEWAY" --root-dir="$KUBELET_DIR" --v=2
wait_for 60 "node $NODE_NAME registered (log: $LOGS/kubelet.log)" "$KUBECTL" get node "$NODE_NAME" || exit 1
timeout 130 "$KUBECTL" wait --for=condition=Ready "node/$NODE_NAME" --timeout=120s >/dev/null ||
  die "node $NODE_NAME not Ready after 120s: see $LOGS/kubelet.log"
# The scheduler needs the not-ready taint gone (node-lifecycle controller)
# and pods need their namespace's default ServiceAccount (SA controller).
wait_for 60 "the not-ready taint to be removed (log: $LOGS/kube-controller-manager.log)" \
  bash -c "[[ -z \$('$KUBECTL' get node $NODE_NAME -o jsonpath='{.spec.taints}') ]]" || exit 1
wait_for 60 "ServiceAccount default/default (log: $LOGS/kube-controller-manager.log)" \
  "$KUBECTL" -n default get serviceaccount default || exit 1

# ---------------------------------------------------------------- AWS stand-ins
if [[ ${PODROLE_STANDINS:-1} == 1 ]]; then
  "$ROOT/e2e/cluster/standins.sh" start
else
  log "== AWS stand-ins skipped (PODROLE_STANDINS=0)"
fi

log "== cluster up in $((SECONDS - T0)) s"
echo "KUBECONFIG=$KUBECONFIG_PATH"
echo "  export KUBECONFIG=$KUBECONFIG_PATH; kubectl get nodes"
echo "  node IMDS stand-in: $NODE_METADATA_ENDPOINT   STS double: $STS_ENDPOINT"
echo "  tear down: make cluster-down (WIPE=1 also deletes $WORK)"
