#!/usr/bin/env bash
# Installs what the tests and the local cluster need. Idempotent and quiet when done before.
set -euo pipefail
pkgs=(containerd runc containernetworking-plugins etcd-server iptables nftables iproute2 util-linux netbase curl bc awscli python3-botocore openssl shellcheck)
missing=()
for p in "${pkgs[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if ((${#missing[@]})); then
  echo "deps: installing ${missing[*]}"
  timeout 300 apt-get update -qq
  DEBIAN_FRONTEND=noninteractive timeout 600 apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# The real AWS clients of the conformance suite (botocore, npm modules for the JS SDK v3).
"$(dirname "$0")/deps-clients.sh"
