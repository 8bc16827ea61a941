#!/usr/bin/env bash
# Installs the real AWS clients the sidecar conformance suite drives. Idempotent and quiet when
# done before:
#   - /usr/bin/aws (AWS CLI v2, Debian `awscli`) and python3-botocore for /usr/bin/python3;
#   - @aws-sdk/credential-providers (pinned by package-lock.json) in sidecar/conformance/js.
# The pyenv python3/aws that may come first on PATH are not what the suite tests.
set -euo pipefail
cd "$(dirname "$0")/.."
pkgs=(awscli python3-botocore)
missing=()
for p in "${pkgs[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
# Node may come from another apt source that bundles npm; only install Debian's when absent.
command -v node >/dev/null && command -v npm >/dev/null || missing+=(nodejs npm)
if ((${#missing[@]})); then
  echo "deps-clients: installing ${missing[*]}"
  timeout 300 apt-get update -qq
  DEBIAN_FRONTEND=noninteractive timeout 600 apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
js=sidecar/conformance/js
if [[ ! -d "$js/node_modules/@aws-sdk/credential-providers" ]]; then
  echo "deps-clients: npm ci in $js"
  (cd "$js" && timeout 600 npm ci --no-audit --no-fund --loglevel=error)
fi
