#!/usr/bin/env bash
# make demo: from a fresh Debian 12 machine (as root) — build everything,
# start a local single-node cluster, install podrole like a user would, and
# show, narrated, what it does for pods: one pod gets its role through the
# ordinary instance-metadata path; two pods get two different roles; a pod
# that asks for none gets nothing. The cluster stays up afterwards to play
# with; `make cluster-down` removes it.
set -euo pipefail
cd "$(dirname "$0")/.."
source e2e/cluster/lib.sh
export KUBECONFIG=$KUBECONFIG_PATH

say() { printf '\n\033[1m### %s\033[0m\n' "$*"; }
show() { printf '\033[2m$ %s\033[0m\n' "$*"; "$@"; }

say "1/6 Building: Debian packages, Kubernetes $KUBE_VERSION from the Go module proxy (~6 min the first time, cached in $PODROLE_CACHE), podrole"
scripts/deps.sh
scripts/build-k8s.sh
[[ -x scripts/build-tools.sh ]] && scripts/build-tools.sh
make -s build

say "2/6 Starting a real cluster: containerd, etcd, kube-apiserver, controller-manager, scheduler, kubelet — plus stand-ins for AWS (a node IMDS and STS) on $GATEWAY"
e2e/cluster/up.sh
KUBECTL=$(kubectl_bin)
k() { "$KUBECTL" "$@"; }

say "3/6 Building the images without a registry (mkimage + ctr import)"
e2e/cluster/images.sh

OVERLAY=${PODROLE_E2E_OVERLAY:-e2e/manifests}
say "4/6 Installing podrole like a user: kubectl apply -k $OVERLAY (the self-signed overlay, local images)"
show k apply -k "$OVERLAY"
for d in $(k -n podrole-system get deployments -o name); do
  show k -n podrole-system rollout status "$d" --timeout=120s
done
# Wait until the apiserver's calls to the webhook inject (server-side dry run).
probe_ns=podrole-demo-probe
k create namespace "$probe_ns" --dry-run=client -o yaml | k apply -f - >/dev/null
k label namespace "$probe_ns" podrole.io/inject=enabled --overwrite >/dev/null
for _ in $(seq 1 60); do
  k -n "$probe_ns" get serviceaccount default >/dev/null 2>&1 &&
    k -n "$probe_ns" run probe --image=localhost/podrole-e2e-app:dev --restart=Never \
      --annotations=iam.amazonaws.com/role=e2e-app --dry-run=server -o yaml 2>/dev/null | grep -q podrole-agent && break
  sleep 1
done
k delete namespace "$probe_ns" --wait=false >/dev/null

pod() { # pod NAME NS [ROLE]
  local ann=""
  [[ -n ${3:-} ]] && ann="  annotations: {iam.amazonaws.com/role: $3}"
  cat <<YAML
apiVersion: v1
kind: Pod
metadata:
  name: $1
  namespace: $2
$ann
spec:
  dnsPolicy: Default
  terminationGracePeriodSeconds: 2
  containers:
  - name: app
    image: localhost/podrole-e2e-app:dev
    imagePullPolicy: Never
    command: ["/app", "run"]      # an unmodified AWS SDK app: default credential chain
    env:
    - {name: AWS_REGION, value: us-east-1}
    - {name: AWS_ENDPOINT_URL_STS, value: "$STS_ENDPOINT"}   # STS is the local double
YAML
}
whoami_in() { # whoami_in NS POD: what the app in the pod gets from the SDK
  k -n "$1" exec "$2" -c app -- /app creds 2>/dev/null | tail -1 |
    sed -E 's/.*"access_key_id":"([^"]*)".*"role":"([^"]*)".*"caller_arn":"([^"]*)".*/AccessKeyId \1, IMDS role "\2", sts:GetCallerIdentity: \3/; s/.*"ok":false.*(dial tcp [^"\\]*).*/NO credentials: \1/'
}

say "5/6 Scenario 1: one annotated pod in a namespace labelled podrole.io/inject=enabled"
ns1=demo-one ns2=demo-two
k delete namespace "$ns1" "$ns2" --ignore-not-found --wait=true --timeout=90s >/dev/null
k create namespace "$ns1" --dry-run=client -o yaml | k apply -f - >/dev/null
show k label namespace "$ns1" podrole.io/inject=enabled --overwrite
echo "What is applied (nothing podrole-specific but one annotation):"
pod app "$ns1" e2e-app | sed 's/^/    /'
pod app "$ns1" e2e-app | k apply -f -
show k -n "$ns1" wait --for=condition=Ready pod/app --timeout=90s
echo "kubectl describe pod app (excerpt): the webhook added an init step and the agent, before the app:"
k -n "$ns1" describe pod app | sed '/^Conditions:/,$d' |
  grep -E '^(Init Containers:|Containers:|  [a-z0-9-]+:$|    Image:|    Args:|      (serve|init|--)|    Restart Policy:)' | sed 's/^/    /'
echo "Annotations the webhook recorded:"
for a in podrole.io/status podrole.io/role-arn; do
  printf '    %s: %s\n' "$a" "$(k -n "$ns1" get pod app -o jsonpath="{.metadata.annotations['${a//./\\.}']}")"
done
echo "What the app gets through 169.254.169.254 (AWS SDK default chain, IMDSv2):"
echo "    $(whoami_in "$ns1" app)"

say "6/6 Scenario 2: two pods, two roles — and a pod that asks for none"
k create namespace "$ns2" --dry-run=client -o yaml | k apply -f - >/dev/null
k label namespace "$ns2" podrole.io/inject=enabled --overwrite >/dev/null
{ pod pod-a "$ns2" e2e-role-a; echo ---; pod pod-b "$ns2" e2e-role-b; echo ---; pod no-role "$ns2"; } | k apply -f -
show k -n "$ns2" wait --for=condition=Ready pod/pod-a pod/pod-b pod/no-role --timeout=90s
for p in pod-a pod-b no-role; do
  inits=$(k -n "$ns2" get pod "$p" -o jsonpath='{.spec.initContainers[*].name}')
  initargs=$(k -n "$ns2" get pod "$p" -o jsonpath='{.spec.initContainers[0].args}')
  printf '    %-8s init containers [%s], podrole-init args %s\n             -> %s\n' "$p" "$inits" "$initargs" "$(whoami_in "$ns2" "$p")"
done
echo "    pod-a asking its agent for role b by name:"
echo "             -> HTTP $(k -n "$ns2" exec pod-a -c app -- /app imds /latest/meta-data/iam/security-credentials/e2e-role-b 2>/dev/null | tail -1 | sed -E 's/.*"status":([0-9]+).*/\1/')"

say "Done. The cluster is still running:"
echo "    export KUBECONFIG=$KUBECONFIG_PATH; kubectl get pods -A"
echo "    the full suite: make e2e"
echo "Tear everything down with:  make cluster-down   (WIPE=1 make cluster-down also deletes $WORK)"
