#!/usr/bin/env bash
# Stops what start.sh started (by the pids it recorded) and removes its folder.
set -euo pipefail
dir="${OPSUITE_KUBE_HARNESS_DIR:-/tmp/opsuite-kube-harness}"
[[ -d "$dir/pids" ]] || exit 0
# Reverse start order: clients of the API server first, etcd last.
for name in kwok kube-scheduler kube-controller-manager kube-apiserver etcd; do
	f="$dir/pids/$name.pid"
	[[ -f "$f" ]] || continue
	pid="$(cat "$f")"
	if kill -0 "$pid" 2>/dev/null; then
		kill -TERM "$pid" 2>/dev/null || true
		for _ in $(seq 50); do
			kill -0 "$pid" 2>/dev/null || break
			sleep 0.1
		done
		kill -KILL "$pid" 2>/dev/null || true
	fi
	rm -f "$f"
done
if [[ "${OPSUITE_KUBE_KEEP_DIR:-0}" != 1 ]]; then
	rm -rf "$dir"
fi
