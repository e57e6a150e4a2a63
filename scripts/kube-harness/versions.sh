# shellcheck shell=bash
# Versions of the Kubernetes test harness. Sourced by build.sh, start.sh and stop.sh.
# Changing one of them (or the Go toolchain) yields a new cache key, so a fresh build.
KUBE_VERSION="${KUBE_VERSION:-v1.37.2}"
ETCD_VERSION="${ETCD_VERSION:-v3.6.16}"
KWOK_VERSION="${KWOK_VERSION:-v0.8.0}"

# kube_harness_cache_dir prints the versioned cache folder (outside the repo).
kube_harness_cache_dir() {
	local root="${OPSUITE_KUBE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/opsuite/kube}"
	local key
	key="$(printf 'kube=%s etcd=%s kwok=%s go=%s harness=2\n' \
		"$KUBE_VERSION" "$ETCD_VERSION" "$KWOK_VERSION" "$(go env GOVERSION)" | sha256sum | cut -c1-12)"
	printf '%s/%s-%s\n' "$root" "$KUBE_VERSION" "$key"
}
