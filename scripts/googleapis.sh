#!/usr/bin/env bash
# Links the google/api and google/rpc protos that proto/ imports into
# .cache/googleapis (ignored by git). They come from a pinned Go module in the
# module cache, so generation is offline after the first download and nothing
# third-party is committed. The proxy does not serve github.com/googleapis/googleapis,
# so the copy pinned here is the one grpc-gateway v1 ships in third_party/.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
mod="github.com/grpc-ecosystem/grpc-gateway@v1.16.0"
dir="$(cd "$root/tools" && GOWORK=off GOFLAGS=-mod=mod go mod download -json "$mod" | sed -n 's/.*"Dir": "\(.*\)".*/\1/p')"
[[ -d "$dir/third_party/googleapis/google" ]] || { echo "googleapis: $mod has no third_party/googleapis" >&2; exit 1; }
mkdir -p "$root/.cache/googleapis/google"
for sub in api rpc; do
  rm -rf "$root/.cache/googleapis/google/$sub"
  mkdir -p "$root/.cache/googleapis/google/$sub"
  cp "$dir/third_party/googleapis/google/$sub/"*.proto "$root/.cache/googleapis/google/$sub/"
  chmod u+w "$root/.cache/googleapis/google/$sub/"*.proto
done
echo "$root/.cache/googleapis"
