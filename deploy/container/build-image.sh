#!/usr/bin/env bash
# Builds the xdpgate OCI image from an already built binary, without a
# registry and without a base image: `buildah from scratch`, then the binary,
# the shared libraries `ldd` says it loads (at the same paths, with the
# dynamic loader), the CA bundle, and the directories the daemon uses.
# The result is committed to local container storage (where podman sees it).
#
#   deploy/container/build-image.sh BINARY TAG [TAG...]
#
# `cargo xtask image` runs it with target/release/xdpgate and
# localhost/xdpgate:<version> + :latest; tests/deploy_image.rs with the
# test binary and a throwaway tag. Needs buildah (apt-get install buildah)
# and, as it writes to /var/lib/containers, root.
set -euo pipefail

die() {
	echo "build-image.sh: $*" >&2
	exit 1
}

[ $# -ge 2 ] || die "usage: $0 BINARY TAG [TAG...]"
binary=$1
shift
[ -x "$binary" ] || die "$binary is not an executable file"
command -v buildah >/dev/null || die "buildah is not installed (apt-get install buildah podman runc)"
command -v ldd >/dev/null || die "ldd is not installed (apt-get install libc-bin)"

ca_bundle=/etc/ssl/certs/ca-certificates.crt
[ -f "$ca_bundle" ] || die "$ca_bundle does not exist (apt-get install ca-certificates)"

# `xdpgate 0.1.0` -> 0.1.0; also proves the binary runs on this host.
version=$("$binary" --version | awk 'NR == 1 { print $NF }')
[ -n "$version" ] || die "$binary --version printed no version"
revision=$(git -C "$(dirname "$0")" rev-parse HEAD 2>/dev/null || echo unknown)
created=$(date -u +%Y-%m-%dT%H:%M:%SZ)

rootfs=$(mktemp -d "${TMPDIR:-/tmp}/xdpgate-rootfs.XXXXXX")
container=
cleanup() {
	[ -z "$container" ] || buildah rm "$container" >/dev/null 2>&1 || true
	rm -rf "$rootfs"
}
trap cleanup EXIT

# The file system is staged in a directory and copied in one layer.
install -D -m 0755 "$binary" "$rootfs/usr/local/bin/xdpgate"
# ldd prints `name => /path (addr)` for libraries and `/path (addr)` for the
# loader; linux-vdso has no file. Copy each at the path the binary asks for
# (PT_INTERP for the loader), dereferencing symlinks such as
# /lib64/ld-linux-x86-64.so.2.
libraries=$(ldd "$binary" | awk '
	$2 == "=>" && $3 ~ /^\// { print $3; next }
	$1 ~ /^\// { print $1 }
')
if [ -z "$libraries" ]; then
	# A static binary needs none; ldd says "not a dynamic executable".
	echo "build-image.sh: $binary loads no shared libraries"
fi
for library in $libraries; do
	mkdir -p "$rootfs$(dirname "$library")"
	cp -L "$library" "$rootfs$library"
done
install -D -m 0644 "$ca_bundle" "$rootfs/etc/ssl/certs/ca-certificates.crt"
# glibc resolves names without these, but with the same order it would use
# and without a "who is uid 0" miss in anything that asks.
printf 'hosts: files dns\n' >"$rootfs/etc/nsswitch.conf"
printf 'root:x:0:0:root:/root:/sbin/nologin\n' >"$rootfs/etc/passwd"
printf 'root:x:0:\n' >"$rootfs/etc/group"
# /etc/xdpgate: the config is mounted here (empty in the image).
# /var/lib/xdpgate: the state directory (last-known-good lists, status.json).
install -d -m 0755 "$rootfs/etc/xdpgate"
install -d -m 0750 "$rootfs/var/lib/xdpgate"
install -d -m 1777 "$rootfs/tmp"

container=$(buildah from --quiet scratch)
buildah copy --quiet "$container" "$rootfs" / >/dev/null
buildah config \
	--entrypoint '["/usr/local/bin/xdpgate"]' \
	--cmd '["run", "--config", "/etc/xdpgate/config.yaml"]' \
	--workingdir / \
	--user 0:0 \
	--stop-signal SIGTERM \
	--created-by "deploy/container/build-image.sh: binary, its libraries, CA bundle, directories" \
	--env SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt \
	--label org.opencontainers.image.title=xdpgate \
	--label "org.opencontainers.image.description=XDP firewall and TLS ingress proxy" \
	--label "org.opencontainers.image.version=$version" \
	--label "org.opencontainers.image.revision=$revision" \
	--label "org.opencontainers.image.created=$created" \
	--label "org.opencontainers.image.licenses=MIT OR Apache-2.0" \
	"$container"

first=$1
shift
buildah commit --quiet --format oci --rm "$container" "$first" >/dev/null
container=
for tag in "$@"; do
	buildah tag "$first" "$tag"
done
echo "build-image.sh: built $first${*:+ (also tagged $*)} from $binary, version $version"
