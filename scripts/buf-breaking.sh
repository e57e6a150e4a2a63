#!/usr/bin/env bash
# Runs `buf breaking` for proto/ against the protos of a git ref (default
# main). The ref's protos are built into an image together with the same
# pinned google/api protos, so no network is needed.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
ref="${1:-${BUF_BREAKING_AGAINST:-main}}"
cd "$root"
if ! git rev-parse --verify --quiet "$ref^{commit}" >/dev/null; then
  echo "buf-breaking: no git ref $ref; nothing to compare against" >&2
  exit 0
fi
if ! git ls-tree -d --name-only "$ref" proto | grep -q proto; then
  echo "buf-breaking: $ref has no proto/ yet; nothing to compare against" >&2
  exit 0
fi
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
git archive "$ref" proto buf.yaml | tar -x -C "$tmp"
mkdir -p "$tmp/.cache"
cp -r "$root/.cache/googleapis" "$tmp/.cache/googleapis"
(cd "$tmp" && buf build -o "$tmp/against.binpb")
buf build -o "$tmp/current.binpb"
buf breaking "$tmp/current.binpb" --against "$tmp/against.binpb" --config buf.yaml
