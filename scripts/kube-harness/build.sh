#!/usr/bin/env bash
# Builds the Kubernetes test harness once per machine: kube-apiserver,
# kube-controller-manager, kube-scheduler, etcd and kwok, from the Go module
# proxy, into a cache folder outside the repo keyed by version.
# A cached run only checks the stamp file and returns in well under a second.
#
# Usage: scripts/kube-harness/build.sh        (prints the bin folder on stdout)
# Env:   OPSUITE_KUBE_CACHE   cache root (default ~/.cache/opsuite/kube)
#        KUBE_BUILD_PARALLEL  go build -p value (default: the number of CPUs; peak memory grows with it, about 3 GB at 1)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=versions.sh
source "$here/versions.sh"

cache="$(kube_harness_cache_dir)"
bin="$cache/bin"
stamp="$cache/.complete"
if [[ -f "$stamp" ]]; then
	printf '%s\n' "$bin"
	exit 0
fi

log() { printf '[kube-harness build] %s\n' "$*" >&2; }

mkdir -p "$bin" "$cache/src" "$cache/stages"
export GOFLAGS="-p=${KUBE_BUILD_PARALLEL:-$(nproc)} -mod=mod -buildvcs=false"
export CGO_ENABLED=0
export GOWORK=off
# Keep the linker's and compiler's memory use bounded on a shared 2-core machine.
export GOMAXPROCS="${GOMAXPROCS:-2}"

timed() {
	local name="$1"
	shift
	local start=$SECONDS
	if [[ -x /usr/bin/time ]]; then
		/usr/bin/time -f "[kube-harness build] $name: %es elapsed, %MKB peak RSS" "$@"
	else
		"$@"
	fi
	log "$name done in $((SECONDS - start))s"
}

# module_gomod prints the path of a module's go.mod in the module cache.
module_gomod() {
	go mod download -json "$1" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",$/\1/p'
}
module_dir() {
	go mod download -json "$1" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p'
}

# --- Kubernetes control plane -------------------------------------------------
build_kube() {
	local src="$cache/src/kubernetes"
	local staging_version="v0.${KUBE_VERSION#v1.}"
	mkdir -p "$src"
	local gomod
	gomod="$(module_gomod "k8s.io/kubernetes@$KUBE_VERSION")"
	{
		printf 'module opsuite.local/kubeharness\n\ngo 1.26\n\n'
		printf 'require k8s.io/kubernetes %s\n\n' "$KUBE_VERSION"
		printf 'replace (\n'
		# Every staging module k8s.io/kubernetes requires at v0.0.0 is replaced by a
		# relative path in its own go.mod; map each to its published tag instead.
		awk '$1 ~ /^k8s\.io\// && $2 == "=>" && $3 ~ /^\.\/staging\// { print $1 }' "$gomod" |
			while read -r m; do printf '\t%s => %s %s\n' "$m" "$m" "$staging_version"; done
		printf ')\n'
	} >"$src/go.mod"
	log "k8s.io/kubernetes $KUBE_VERSION: $(grep -c '=>' "$src/go.mod") staging replaces at $staging_version"
	local pkgs=(k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager k8s.io/kubernetes/cmd/kube-scheduler)
	(cd "$src" && go get "${pkgs[@]/%/@$KUBE_VERSION}" >&2)
	local minor="${KUBE_VERSION#v1.}"
	minor="${minor%%.*}"
	local vpkg=k8s.io/component-base/version
	local ldflags="-s -w -X $vpkg.gitVersion=$KUBE_VERSION -X $vpkg.gitMajor=1 -X $vpkg.gitMinor=$minor"
	ldflags+=" -X $vpkg.gitTreeState=clean -X $vpkg.buildDate=1970-01-01T00:00:00Z"
	for p in kube-scheduler kube-controller-manager kube-apiserver; do
		timed "$p" bash -c "cd '$src' && go build -trimpath -ldflags '$ldflags' -o '$bin/$p.tmp' k8s.io/kubernetes/cmd/$p"
		mv "$bin/$p.tmp" "$bin/$p"
	done
}

# --- etcd ---------------------------------------------------------------------
build_etcd() {
	local src="$cache/src/etcd"
	mkdir -p "$src"
	local gomod
	gomod="$(module_gomod "go.etcd.io/etcd/server/v3@$ETCD_VERSION")"
	{
		printf 'module opsuite.local/etcdharness\n\ngo 1.26\n\n'
		printf 'require go.etcd.io/etcd/server/v3 %s\n\n' "$ETCD_VERSION"
		printf 'replace (\n'
		# Its go.mod replaces sibling modules by relative paths (../api, ...): use the same tag.
		awk '$2 == "=>" && $3 ~ /^\.\.\// { print $1 }' "$gomod" |
			while read -r m; do printf '\t%s => %s %s\n' "$m" "$m" "$ETCD_VERSION"; done
		printf ')\n'
	} >"$src/go.mod"
	(cd "$src" && go get "go.etcd.io/etcd/server/v3@$ETCD_VERSION" >&2)
	local ldflags="-s -w"
	timed etcd bash -c "cd '$src' && go build -trimpath -ldflags '$ldflags' -o '$bin/etcd.tmp' go.etcd.io/etcd/server/v3"
	mv "$bin/etcd.tmp" "$bin/etcd"
}

# --- kwok -----------------------------------------------------------------------
build_kwok() {
	timed kwok env GOBIN="$bin" go install "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION"
	local dir
	dir="$(module_dir "sigs.k8s.io/kwok@$KWOK_VERSION")"
	cp "$dir/kustomize/stage/node/fast/node-initialize.yaml" \
		"$dir/kustomize/stage/node/heartbeat/node-heartbeat.yaml" \
		"$dir/kustomize/stage/pod/fast/pod-ready.yaml" \
		"$dir/kustomize/stage/pod/fast/pod-complete.yaml" \
		"$dir/kustomize/stage/pod/fast/pod-delete.yaml" \
		"$cache/stages/"
	chmod u+w "$cache/stages/"*.yaml
}

start=$SECONDS
log "building into $cache"
[[ -x "$bin/etcd" ]] || build_etcd
[[ -x "$bin/kwok" && -f "$cache/stages/pod-ready.yaml" ]] || build_kwok
[[ -x "$bin/kube-apiserver" && -x "$bin/kube-controller-manager" && -x "$bin/kube-scheduler" ]] || build_kube
for b in etcd kwok kube-apiserver kube-controller-manager kube-scheduler; do
	[[ -x "$bin/$b" ]] || { log "missing $bin/$b"; exit 1; }
done
"$bin/kube-apiserver" --version >&2
touch "$stamp"
log "harness built in $((SECONDS - start))s"
printf '%s\n' "$bin"
