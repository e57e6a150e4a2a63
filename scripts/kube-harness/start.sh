#!/usr/bin/env bash
# Starts the Kubernetes test harness: etcd, kube-apiserver (token auth, RBAC),
# kube-controller-manager, kube-scheduler and kwok with one fake node, all on
# free loopback ports with a temporary data folder. Builds the binaries first
# when the cache lacks them (scripts/kube-harness/build.sh).
#
# Writes $OPSUITE_KUBE_HARNESS_DIR (default /tmp/opsuite-kube-harness):
#   kubeconfig   admin kubeconfig (token auth, CA-verified TLS)
#   env          shell lines to source: OPSUITE_KUBECONFIG=..., KUBECONFIG=...,
#                and OPSUITE_GATEWAY_API_CRDS=... (the Gateway API's standard CRDs,
#                for the driver's HTTPRoute tests) when the Go module proxy or
#                cache has sigs.k8s.io/gateway-api
#   logs/*.log   each component's output; pids/*.pid their process ids
# and prints the kubeconfig path on stdout. stop.sh stops everything again.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
dir="${OPSUITE_KUBE_HARNESS_DIR:-/tmp/opsuite-kube-harness}"
log() { printf '[kube-harness start] %s\n' "$*" >&2; }

if [[ -f "$dir/env" ]]; then
	"$here/stop.sh" >/dev/null 2>&1 || true
fi
bin="$("$here/build.sh")"
cache="$(dirname "$bin")"
start=$SECONDS

rm -rf "$dir"
mkdir -p "$dir/pki" "$dir/logs" "$dir/pids" "$dir/etcd" "$dir/kwok"

for cmd in openssl curl; do
	command -v "$cmd" >/dev/null || { log "needs $cmd (apt-get install $cmd)"; exit 1; }
done

# port_free: nothing listens on 127.0.0.1:$1.
port_free() {
	if command -v ss >/dev/null; then
		[[ -z "$(ss -Htln "sport = :$1" 2>/dev/null)" ]]
	else
		! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
	fi
}

used_ports=" "
free_port() {
	local p
	for _ in $(seq 200); do
		p=$((20000 + RANDOM % 40000))
		[[ "$used_ports" == *" $p "* ]] && continue
		if port_free "$p"; then
			used_ports+="$p "
			printf '%s\n' "$p"
			return 0
		fi
	done
	log "no free loopback port found"
	return 1
}

# --- certificates and credentials ----------------------------------------------
pki="$dir/pki"
openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=opsuite-harness-ca" \
	-keyout "$pki/ca.key" -out "$pki/ca.crt" 2>/dev/null
openssl req -newkey rsa:2048 -nodes -subj "/CN=kube-apiserver" \
	-keyout "$pki/apiserver.key" -out "$pki/apiserver.csr" 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes.default.svc\nextendedKeyUsage=serverAuth\n' >"$pki/apiserver.ext"
openssl x509 -req -in "$pki/apiserver.csr" -CA "$pki/ca.crt" -CAkey "$pki/ca.key" -CAcreateserial \
	-days 2 -extfile "$pki/apiserver.ext" -out "$pki/apiserver.crt" 2>/dev/null
openssl genrsa -out "$pki/sa.key" 2048 2>/dev/null
openssl rsa -in "$pki/sa.key" -pubout -out "$pki/sa.pub" 2>/dev/null
token="$(openssl rand -hex 24)"
printf '%s,opsuite-harness-admin,opsuite-harness-admin,"system:masters"\n' "$token" >"$pki/tokens.csv"
chmod 600 "$pki"/*.key "$pki/tokens.csv"

etcd_client="$(free_port)"
etcd_peer="$(free_port)"
api_port="$(free_port)"
kwok_port="$(free_port)"
server="https://127.0.0.1:$api_port"

kubeconfig="$dir/kubeconfig"
cat >"$kubeconfig" <<KCFG
apiVersion: v1
kind: Config
clusters:
- name: opsuite-harness
  cluster:
    server: $server
    certificate-authority: $pki/ca.crt
users:
- name: opsuite-harness-admin
  user:
    token: $token
contexts:
- name: opsuite-harness
  context:
    cluster: opsuite-harness
    user: opsuite-harness-admin
current-context: opsuite-harness
KCFG
chmod 600 "$kubeconfig"

run() {
	local name="$1"
	shift
	"$@" >"$dir/logs/$name.log" 2>&1 &
	echo $! >"$dir/pids/$name.pid"
}

fail() {
	log "$1; last lines of $2:"
	tail -n 30 "$dir/logs/$2.log" >&2 || true
	"$here/stop.sh" >/dev/null 2>&1 || true
	exit 1
}

wait_for() { # name timeout_s command...
	local name="$1" timeout="$2"
	shift 2
	local deadline=$((SECONDS + timeout))
	until "$@" >/dev/null 2>&1; do
		if ! kill -0 "$(cat "$dir/pids/$name.pid")" 2>/dev/null; then
			fail "$name exited" "$name"
		fi
		if ((SECONDS >= deadline)); then
			fail "$name not ready after ${timeout}s" "$name"
		fi
		sleep 0.2
	done
}

api() { # method path [body-file]
	local args=(-sf --cacert "$pki/ca.crt" -H "Authorization: Bearer $token" -X "$1" "$server$2")
	[[ $# -ge 3 ]] && args+=(-H 'Content-Type: application/json' --data-binary "@$3")
	curl "${args[@]}"
}

# --- etcd ------------------------------------------------------------------------
run etcd "$bin/etcd" --name harness --data-dir "$dir/etcd" \
	--listen-client-urls "http://127.0.0.1:$etcd_client" --advertise-client-urls "http://127.0.0.1:$etcd_client" \
	--listen-peer-urls "http://127.0.0.1:$etcd_peer" --initial-advertise-peer-urls "http://127.0.0.1:$etcd_peer" \
	--initial-cluster "harness=http://127.0.0.1:$etcd_peer" --unsafe-no-fsync --log-level warn \
	--quota-backend-bytes $((512 * 1024 * 1024))
wait_for etcd 30 curl -sf "http://127.0.0.1:$etcd_client/health"

# --- kube-apiserver --------------------------------------------------------------
run kube-apiserver "$bin/kube-apiserver" \
	--etcd-servers "http://127.0.0.1:$etcd_client" \
	--bind-address 127.0.0.1 --advertise-address 127.0.0.1 --secure-port "$api_port" \
	--tls-cert-file "$pki/apiserver.crt" --tls-private-key-file "$pki/apiserver.key" \
	--client-ca-file "$pki/ca.crt" --token-auth-file "$pki/tokens.csv" \
	--authorization-mode RBAC \
	--service-account-key-file "$pki/sa.pub" --service-account-signing-key-file "$pki/sa.key" \
	--service-account-issuer https://kubernetes.default.svc \
	--service-cluster-ip-range 10.96.0.0/16 \
	--endpoint-reconciler-type none \
	--enable-priority-and-fairness=false \
	--profiling=false
wait_for kube-apiserver 60 api GET /readyz

# --- controllers, scheduler, kwok -------------------------------------------------
run kube-controller-manager "$bin/kube-controller-manager" \
	--kubeconfig "$kubeconfig" --leader-elect=false --secure-port 0 \
	--use-service-account-credentials=false \
	--service-account-private-key-file "$pki/sa.key" --root-ca-file "$pki/ca.crt" \
	--controllers '*,-nodeipam,-persistentvolume-binder,-attachdetach,-persistentvolume-expander,-ttl,-bootstrapsigner,-tokencleaner' \
	--concurrent-deployment-syncs 10 --concurrent-replicaset-syncs 10
run kube-scheduler "$bin/kube-scheduler" --kubeconfig "$kubeconfig" --leader-elect=false --secure-port 0

stage_args=()
for s in node-initialize node-heartbeat pod-ready pod-complete pod-delete; do
	stage_args+=(--config "$cache/stages/$s.yaml")
done
run kwok "$bin/kwok" --kubeconfig "$kubeconfig" \
	--manage-all-nodes=false --manage-nodes-with-annotation-selector kwok.x-k8s.io/node=fake \
	--node-ip 127.0.0.1 --node-port "$kwok_port" --server-address "127.0.0.1:$kwok_port" \
	"${stage_args[@]}"

api POST /api/v1/nodes "$here/fake-node.json" >/dev/null || fail "cannot create the fake node" kube-apiserver
node_ready() {
	api GET /api/v1/nodes/kwok-node-0 | tr -d ' \n' | grep -q '"type":"Ready","status":"True"'
}
wait_for kwok 60 node_ready
wait_for kube-controller-manager 60 api GET /api/v1/namespaces/default/serviceaccounts/default

# --- Gateway API CRDs (optional) ---------------------------------------------------
# The folder of the standard CRDs of a Gateway API release, from the Go module
# cache: `go mod download` of an explicit module@version outside any module
# touches no go.mod and is a no-op once cached. The tests install the CRDs
# themselves; without them the HTTPRoute tests skip.
gateway_api_version="${GATEWAY_API_VERSION:-v1.6.3}"
gateway_crds=""
if gw_json="$(cd "$dir" && GOWORK=off GOFLAGS='' go mod download -json "sigs.k8s.io/gateway-api@$gateway_api_version" 2>/dev/null)"; then
	gw_dir="$(printf '%s\n' "$gw_json" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",\{0,1\}$/\1/p')"
	if [[ -n "$gw_dir" && -f "$gw_dir/config/crd/standard/gateway.networking.k8s.io_httproutes.yaml" ]]; then
		gateway_crds="$gw_dir/config/crd/standard"
	fi
fi
if [[ -z "$gateway_crds" ]]; then
	log "Gateway API $gateway_api_version CRDs unavailable (go mod download sigs.k8s.io/gateway-api failed): HTTPRoute tests will skip"
fi

cat >"$dir/env" <<ENV
OPSUITE_KUBECONFIG=$kubeconfig
KUBECONFIG=$kubeconfig
OPSUITE_KUBE_HARNESS_DIR=$dir
ENV
if [[ -n "$gateway_crds" ]]; then
	printf 'OPSUITE_GATEWAY_API_CRDS=%s\n' "$gateway_crds" >>"$dir/env"
fi
log "ready in $((SECONDS - start))s: $server ($("$bin/kube-apiserver" --version))"
printf '%s\n' "$kubeconfig"
