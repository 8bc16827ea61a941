#!/usr/bin/env bash
# make images: the cluster's images, built without a registry or Docker —
# one-layer linux/amd64 tarballs made by e2e/tools/mkimage and imported into
# containerd's k8s.io namespace (pods use imagePullPolicy: Never):
#   localhost/podrole-webhook:dev  static webhook + /etc/passwd with a nonroot user (as Dockerfile.webhook)
#   localhost/podrole-sidecar:dev  the directory scripts/sidecar-rootfs.sh assembles (as Dockerfile.sidecar)
#   localhost/podrole-e2e-app:dev  e2e/cmd/app, the workload the e2e suite runs, and
#                                  e2e/cmd/hostile, the workload that tries every other route
#   localhost/podrole-e2e-app:other       the same programs and one more file (kubectl set image)
#   localhost/podrole-e2e-app:agent-uid   the same files with USER 47181:47181, the agent's
#                                  default UID, which admission cannot see in a pod spec
#   localhost/pause:dev            the sandbox image (also made by cluster-up)
# Tarballs stay in $PODROLE_WORK/images; cluster-up re-imports them.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
B=$WORK/build
mkdir -p "$B" "$IMAGES"
cd "$ROOT"
gob() { CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" "$@"; }

# entrypoint DOCKERFILE DEFAULT: the exec-form ENTRYPOINT of a Dockerfile, so
# the image made here starts the same program the Dockerfile's would.
entrypoint() {
  local e=""
  [[ -f $1 ]] && e=$(sed -n 's/^ENTRYPOINT *\[\(.*\)\].*/\1/p' "$1" | tail -1 | tr -d '"' | tr ',' ' ')
  echo "${e:-$2}"
}
dockerfile_user() { [[ ! -f $1 ]] || sed -n 's/^USER *\([^ ]*\).*/\1/p' "$1" | tail -1; }
# dockerfile_env DOCKERFILE: -env flags for its `ENV K=V` lines.
dockerfile_env() { [[ ! -f $1 ]] || sed -n 's/^ENV *\([A-Za-z_][A-Za-z0-9_]*=[^ ]*\) *$/-env \1/p' "$1"; }

log "== building binaries (make build, e2e tools)"
make -s build
gob -o "$B/mkimage" ./e2e/tools/mkimage
gob -o "$B/pause" ./e2e/cmd/pause
gob -o "$B/app" ./e2e/cmd/app
gob -o "$B/hostile" ./e2e/cmd/hostile
MK=$B/mkimage

log "== localhost/pause:dev"
"$MK" -o "$IMAGES/pause.tar" -t localhost/pause:dev -entrypoint /pause -f "$B/pause:/pause"

log "== localhost/podrole-e2e-app:{dev,other,agent-uid}"
app_files=(-entrypoint /app -f "$B/app:/app" -f "$B/hostile:/hostile")
"$MK" -o "$IMAGES/app.tar" -t localhost/podrole-e2e-app:dev "${app_files[@]}"
# :other differs by one file, so it is another image (another ID), not an alias.
echo other >"$B/app-tag-other"
"$MK" -o "$IMAGES/app-other.tar" -t localhost/podrole-e2e-app:other "${app_files[@]}" -f "$B/app-tag-other:/etc/podrole-e2e-tag"
"$MK" -o "$IMAGES/app-agent-uid.tar" -t localhost/podrole-e2e-app:agent-uid -user 47181:47181 "${app_files[@]}"

log "== localhost/podrole-webhook:dev"
wep=$(entrypoint Dockerfile.webhook /podrole-webhook)
wuser=$(dockerfile_user Dockerfile.webhook); wuser=${wuser:-65532:65532}
printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' >"$B/passwd"
printf 'root:x:0:\nnonroot:x:65532:\n' >"$B/group"
# shellcheck disable=SC2046  # dockerfile_env prints "-env NAME=VALUE": split on purpose
"$MK" -o "$IMAGES/webhook.tar" -t localhost/podrole-webhook:dev -entrypoint "$wep" -user "$wuser" $(dockerfile_env Dockerfile.webhook) \
  -f "bin/podrole-webhook:${wep%% *}" -f "$B/passwd:/etc/passwd" -f "$B/group:/etc/group"

log "== localhost/podrole-sidecar:dev"
[[ -x scripts/sidecar-rootfs.sh ]] || die "scripts/sidecar-rootfs.sh is missing: it assembles the sidecar image's files"
rm -rf "$B/sidecar-rootfs"
scripts/sidecar-rootfs.sh "$B/sidecar-rootfs" >"$LOGS/sidecar-rootfs.log" 2>&1 ||
  { cat "$LOGS/sidecar-rootfs.log" >&2; die "scripts/sidecar-rootfs.sh failed"; }
sep=$(entrypoint Dockerfile.sidecar /podrole-sidecar)
suser=$(dockerfile_user Dockerfile.sidecar)
# shellcheck disable=SC2046  # dockerfile_env prints "-env NAME=VALUE": split on purpose
"$MK" -o "$IMAGES/sidecar.tar" -t localhost/podrole-sidecar:dev -entrypoint "$sep" ${suser:+-user "$suser"} $(dockerfile_env Dockerfile.sidecar) \
  -dir "$B/sidecar-rootfs:/"

if ctr --address "$CONTAINERD_SOCK" version >/dev/null 2>&1; then
  log "== importing into containerd (k8s.io)"
  for t in pause app app-other app-agent-uid webhook sidecar; do
    timeout 120 ctr -n k8s.io images import --all-platforms "$IMAGES/$t.tar" >/dev/null
  done
  ctr -n k8s.io images list -q | grep '^localhost/' | sed 's/^/  /'
else
  log "containerd is not running: cluster-up imports $IMAGES/*.tar when it starts"
fi
