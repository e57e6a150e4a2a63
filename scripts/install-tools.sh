#!/usr/bin/env bash
# Installs the pinned generators and linters from tools/go.mod into a cache
# folder outside the repo, keyed by the hash of tools/go.mod and go.sum, and
# prints that folder. A second run with the same pins does nothing.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
key="$(cat "$root/tools/go.mod" "$root/tools/go.sum" | sha256sum | cut -c1-16)"
dir="${OPSUITE_TOOLS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/opsuite/tools}/$key"
if [[ ! -f "$dir/.complete" ]]; then
  mkdir -p "$dir"
  tools=$(awk '/^tool \(/{f=1;next} f&&/^\)/{f=0} f{print $1} /^tool [^(]/{print $2}' "$root/tools/go.mod")
  for t in $tools; do
    echo "install-tools: building $t" >&2
  done
  (cd "$root/tools" && GOWORK=off GOBIN="$dir" go install $tools)
  touch "$dir/.complete"
fi
echo "$dir"
