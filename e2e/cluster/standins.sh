#!/usr/bin/env bash
# The AWS stand-ins of the local cluster, on the pod network's gateway:
#  - amazon-ec2-metadata-mock as the node's IMDS (node role podrole-e2e-node
#    with instance-profile credentials, user-data with a marker), and
#  - the project's STS double, which accepts exactly those node credentials,
#    trusts the node role for every e2e role, and verifies web-identity tokens
#    against the apiserver's /openid/v1/jwks.
# The fixed test identities below are fake and exist only in these files.
# Usage: standins.sh start|stop
set -euo pipefail
source "$(dirname "$0")/lib.sh"
DIR=$WORK/standins

ACCOUNT=111122223333
NODE_ROLE=podrole-e2e-node
NODE_AKID=ASIAPODROLEE2ENODE01
USERDATA_MARKER=PODROLE-E2E-USERDATA-MARKER
ISSUER=https://kubernetes.default.svc.cluster.local

find_mock() {
  local c
  for c in "$PODROLE_CACHE/bin/amazon-ec2-metadata-mock" "$PODROLE_CACHE/bin/ec2-metadata-mock"; do
    [[ -x $c ]] && { echo "$c"; return 0; }
  done
  return 1
}

case ${1:-} in
start)
  log "== AWS stand-ins on $GATEWAY"
  mkdir -p "$DIR"
  mock=$(find_mock) || {
    [[ -x $ROOT/scripts/build-tools.sh ]] || die "amazon-ec2-metadata-mock is not in $PODROLE_CACHE/bin and scripts/build-tools.sh is missing"
    "$ROOT/scripts/build-tools.sh"
    mock=$(find_mock) || die "scripts/build-tools.sh did not leave amazon-ec2-metadata-mock in $PODROLE_CACHE/bin"
  }
  [[ -d $ROOT/stsdouble/cmd/sts-double ]] || die "stsdouble/cmd/sts-double is missing: the STS double is needed for the e2e suite"
  (cd "$ROOT" && CGO_ENABLED=0 go build -trimpath -o "$DIR/sts-double" ./stsdouble/cmd/sts-double)

  # Random per cluster so nothing real can ever match; only these files know them.
  node_secret=$(head -c 30 /dev/urandom | base64 | tr -d '/+=' | head -c 40)
  node_token=$(head -c 48 /dev/urandom | base64 | tr -d '\n')
  umask 077
  userdata=$(printf '#!/bin/sh\n# %s: node bootstrap secrets live here\n' "$USERDATA_MARKER" | base64 -w0)
  cat >"$DIR/imds-mock.json" <<JSON
{
  "metadata": {
    "paths": {
      "iam-security-credentials": "/latest/meta-data/iam/security-credentials/$NODE_ROLE"
    },
    "values": {
      "iam-security-credentials-role": "$NODE_ROLE",
      "iam-info": {"Code": "Success", "LastUpdated": "2026-01-01T00:00:00Z",
        "InstanceProfileArn": "arn:aws:iam::$ACCOUNT:instance-profile/$NODE_ROLE", "InstanceProfileId": "AIPAPODROLEE2ENODE01"},
      "iam-security-credentials": {"Code": "Success", "LastUpdated": "2026-01-01T00:00:00Z", "Type": "AWS-HMAC",
        "AccessKeyId": "$NODE_AKID", "SecretAccessKey": "$node_secret", "Token": "$node_token",
        "Expiration": "2099-01-01T00:00:00Z"},
      "placement-region": "us-east-1",
      "placement-availability-zone": "us-east-1a"
    }
  },
  "userdata": {"values": {"userdata": "$userdata"}}
}
JSON
  roles=""
  for r in e2e-role-a e2e-role-b e2e-app e2e-job e2e-other; do
    # tag_session: the trust also allows sts:TagSession (scenario 14, --session-tags).
    roles+="{\"arn\": \"arn:aws:iam::$ACCOUNT:role/$r\", \"tag_session\": true, \"trusted_principals\": [\"arn:aws:iam::$ACCOUNT:role/$NODE_ROLE\"],
      \"web_identity\": [{\"issuer\": \"$ISSUER\", \"subject\": \"system:serviceaccount:*\"}]},"
  done
  cat >"$DIR/sts-double.json" <<JSON
{
  "account": "$ACCOUNT",
  "keys": [{"access_key_id": "$NODE_AKID", "secret_access_key": "$node_secret", "session_token": "$node_token",
            "arn": "arn:aws:sts::$ACCOUNT:assumed-role/$NODE_ROLE/i-0123456789abcdef0"}],
  "roles": [${roles%,},
    {"arn": "arn:aws:iam::$ACCOUNT:role/$NODE_ROLE", "trusted_principals": ["arn:aws:iam::$ACCOUNT:root"]}],
  "oidc_providers": [{"issuer": "$ISSUER", "jwks_url": "https://127.0.0.1:$APISERVER_PORT/openid/v1/jwks",
                      "ca_file": "$PKI/ca.crt"}]
}
JSON
  umask 022
  # The double fetches the JWKS anonymously, like AWS does from a public issuer.
  "$(kubectl_bin)" --kubeconfig "$KUBECONFIG_PATH" apply -f - >/dev/null <<YAML
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: podrole-e2e-oidc-discovery}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: system:service-account-issuer-discovery}
subjects: [{apiGroup: rbac.authorization.k8s.io, kind: Group, name: system:unauthenticated}]
YAML
  start imds-mock "$mock" --hostname "$GATEWAY" --port "$IMDS_MOCK_PORT" --config-file "$DIR/imds-mock.json"
  start sts-double "$DIR/sts-double" --listen "$GATEWAY:$STS_DOUBLE_PORT" --config "$DIR/sts-double.json"
  wait_for 20 "node IMDS mock on $NODE_METADATA_ENDPOINT (log: $LOGS/imds-mock.log)" \
    curl -fsS --max-time 2 "$NODE_METADATA_ENDPOINT/latest/meta-data/placement/region" || exit 1
  wait_for 20 "STS double on $STS_ENDPOINT (log: $LOGS/sts-double.log)" \
    curl -fsS --max-time 2 "$STS_ENDPOINT/_double/calls" || exit 1
  cat >"$DIR/env" <<ENV
NODE_METADATA_ENDPOINT=$NODE_METADATA_ENDPOINT
STS_ENDPOINT=$STS_ENDPOINT
ACCOUNT=$ACCOUNT
NODE_ROLE=$NODE_ROLE
NODE_ACCESS_KEY_ID=$NODE_AKID
USERDATA_MARKER=$USERDATA_MARKER
ENV
  log "node IMDS mock: $NODE_METADATA_ENDPOINT   STS double: $STS_ENDPOINT"
  ;;
stop)
  stop sts-double 10
  stop imds-mock 10
  ;;
*)
  echo "usage: $0 start|stop" >&2
  exit 2
  ;;
esac
