#!/usr/bin/env bash
# sidecar-rootfs.sh DEST [BINARY] — assemble the podrole-sidecar image's root
# filesystem in DEST from this Debian machine: the static podrole-sidecar
# binary (BINARY, else $PODROLE_SIDECAR_BIN, else bin/podrole-sidecar), Debian's
# iptables (nft and legacy backends, for `init`), the shared libraries ldd
# names, every xtables extension, /etc/protocols and a passwd/group with the
# agent's user. Dockerfile.sidecar runs this same script in debian:bookworm-slim,
# so `docker build` and the local image build ship the same files.
# Needs: bash, coreutils, find, ldd (libc-bin), and the iptables package.
set -euo pipefail

die() { echo "sidecar-rootfs: $*" >&2; exit 1; }

(($# >= 1 && $# <= 2)) || die "usage: $0 DEST [PODROLE_SIDECAR_BINARY]"
dest=$1
bin=${2:-${PODROLE_SIDECAR_BIN:-bin/podrole-sidecar}}
[[ -x $bin ]] || die "$bin is not an executable: build it first (make build) or pass its path"
if ldd "$bin" >/dev/null 2>&1; then
  die "$bin is dynamically linked: build it with CGO_ENABLED=0 (make build does)"
fi
for f in /usr/sbin/xtables-nft-multi /usr/sbin/xtables-legacy-multi /etc/protocols; do
  [[ -e $f ]] || die "$f is missing: apt-get install iptables netbase"
done
xtlib=/usr/lib/x86_64-linux-gnu/xtables
[[ -d $xtlib ]] || die "$xtlib is missing: apt-get install iptables (x86_64 only)"

# The agent's UID comes from the binary itself (the "Defaults: agent UID" line
# of its usage, contract.DefaultSidecarUID), so image and binary cannot disagree.
uid=$("$bin" help 2>&1 | sed -n 's/^Defaults: agent UID \([0-9][0-9]*\),.*/\1/p')
[[ $uid =~ ^[0-9]+$ ]] || die "could not read the agent UID from the 'Defaults:' line of '$bin help'"

# Start from a clean tree so a rerun never keeps stale files.
rm -rf "$dest"
mkdir -p "$dest"
dest=$(cd "$dest" && pwd)

# Merged /usr, like the Debian the libraries come from: /lib64/ld-linux-x86-64.so.2
# (the loader path baked into every binary) must resolve in the image too.
mkdir -p "$dest"/usr/{bin,sbin,lib,lib64} "$dest"/etc "$dest"/run "$dest"/tmp "$dest"/proc "$dest"/sys "$dest"/dev
for d in bin sbin lib lib64; do
  if [[ -L /$d ]]; then ln -s "$(readlink "/$d")" "$dest/$d"; else mkdir -p "$dest/$d"; fi
done
chmod 1777 "$dest/tmp"

copy() { # copy a file (symlinks resolved) to the same path under $dest
  mkdir -p "$dest$(dirname "$1")"
  cp -L --preserve=mode "$1" "$dest$1"
}

install -m 0755 "$bin" "$dest/podrole-sidecar"

copy /usr/sbin/xtables-nft-multi
copy /usr/sbin/xtables-legacy-multi
for name in iptables ip6tables; do
  for suffix in "" -save -restore; do
    ln -s xtables-nft-multi "$dest/usr/sbin/$name$suffix"            # nft is Debian's default
    ln -s xtables-nft-multi "$dest/usr/sbin/$name-nft$suffix"
    ln -s xtables-legacy-multi "$dest/usr/sbin/$name-legacy$suffix"
  done
done

# Every extension, not only those our rules use: iptables loads the extension
# of any rule it lists, including rules other init containers added.
mkdir -p "$dest$xtlib"
cp -L --preserve=mode "$xtlib"/*.so "$dest$xtlib/"

# Shared libraries of the binaries and extensions, as ldd resolves them
# (absolute paths only; linux-vdso has none).
ldd /usr/sbin/xtables-nft-multi /usr/sbin/xtables-legacy-multi "$xtlib"/*.so 2>/dev/null |
  grep -o '/[^ ]*' | grep -v ':$' | sort -u | while read -r lib; do copy "$lib"; done

copy /etc/protocols
cat >"$dest/etc/passwd" <<PASSWD
root:x:0:0:root:/:/sbin/nologin
podrole-agent:x:$uid:$uid:podrole agent:/nonexistent:/sbin/nologin
nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin
PASSWD
cat >"$dest/etc/group" <<GROUP
root:x:0:
podrole-agent:x:$uid:
nogroup:x:65534:
GROUP
printf 'passwd: files\ngroup: files\nprotocols: files\nhosts: files dns\n' >"$dest/etc/nsswitch.conf"

echo "sidecar-rootfs: $dest (agent uid $uid): $(du -sh "$dest" | cut -f1) on disk, $(tar -C "$dest" -czf - . | wc -c) bytes as tar.gz"
