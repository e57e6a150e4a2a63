#!/usr/bin/env bash
# Makes sure the engine has the NATS image docker-compose.yaml names. No
# registry is reachable here, so when the official image is absent this
# builds nats-server from its Go module (the version go.mod pins) as a static
# binary in a FROM scratch image, laid out like the official one
# (/nats-server), and tags it under the official name. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
tag=${NATS_IMAGE:-nats:2.15}
if docker image inspect "$tag" >/dev/null 2>&1; then
  exit 0
fi
if docker pull -q "$tag" >/dev/null 2>&1; then
  exit 0
fi
version=$(go list -m -f '{{.Version}}' github.com/nats-io/nats-server/v2)
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
echo "nats-image: building nats-server $version as $tag" >&2
CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$dir/nats-server" "github.com/nats-io/nats-server/v2@$version" 2>/dev/null ||
  CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$dir/nats-server" github.com/nats-io/nats-server/v2
cat >"$dir/Dockerfile" <<'DOCKERFILE'
FROM scratch
COPY nats-server /nats-server
EXPOSE 4222 8222 6222
ENTRYPOINT ["/nats-server"]
CMD ["--config", "nats-server.conf"]
DOCKERFILE
docker build -q -t "$tag" --label org.opencontainers.image.source=github.com/nats-io/nats-server --label "org.opencontainers.image.version=$version" "$dir" >/dev/null
echo "nats-image: $tag built" >&2
