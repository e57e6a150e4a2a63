#!/usr/bin/env bash
# Installs the system packages the tests use, from Debian's archive, when
# they are missing. Safe to run again: it installs nothing that is there.
set -euo pipefail
need=()
command -v curl >/dev/null || need+=(curl)
command -v git >/dev/null || need+=(git)
command -v make >/dev/null || need+=(make)
command -v openssl >/dev/null || need+=(openssl) # the Kubernetes harness's certificates
if ((${#need[@]})); then
  if [[ $(id -u) -ne 0 ]]; then
    echo "install-deps: missing ${need[*]}; run as root or install them" >&2
    exit 1
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}"
fi
