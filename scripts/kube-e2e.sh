#!/usr/bin/env bash
# Trow's admission webhooks behind a real Kubernetes API server, on loopback: kube-apiserver (built
# from the Go module k8s.io/kubernetes) on Debian's etcd, both webhooks registered against Trow
# over HTTPS, then Pods and a Deployment created through the API server with curl.
#
# scripts/test.sh runs it when a built kube-apiserver is cached (the first run here builds it:
# most of an hour on 2 cores). Usage:
#   scripts/kube-e2e.sh                               # builds trow --release if TROW_BIN is unset
#   TROW_BIN=target/release/trow scripts/kube-e2e.sh
#   KEEP=1 scripts/kube-e2e.sh                        # keep the temp dir (logs, certs, answers)
#
# Environment:
#   TROW_BIN         path to a trow binary (skips `cargo build --release --bin trow`)
#   KUBE_APISERVER   path to a kube-apiserver binary (skips the build and its cache)
#   TROW_KUBE_CACHE  where built kube-apiserver binaries are kept, one per version
#                    (default ${XDG_CACHE_HOME:-$HOME/.cache}/trow-tests/kube)
#   ETCD_BIN         etcd binary (default: etcd on PATH; else Debian's etcd-server is installed)
#   KEEP             1: keep the temp dir instead of deleting it
#   START_TIMEOUT    seconds to wait for each server to become ready (default 60)
#   KUBE_BUILD_ONLY  1: only build (and cache) kube-apiserver, then exit
#
# kube-apiserver: scripts/kube-e2e/ is a Go module of its own that requires k8s.io/kubernetes (the
# version there is the one built) and replaces each k8s.io/* staging module, which
# k8s.io/kubernetes requires at v0.0.0 from ./staging, with its published release (v1.X.Y <=>
# v0.X.Y). The binary is built with `go build -trimpath` from that module into
# $TROW_KUBE_CACHE/<version>/kube-apiserver, through a scratch file renamed into place, so a rerun
# (or an interrupted build) never reuses a half-written binary. The installed Go is used
# (GOTOOLCHAIN=local); if a future release needs a newer Go, set GOTOOLCHAIN=go1.X.Y below.
#
# What runs (everything on 127.0.0.1, free ports, one temp dir; every process is stopped by PID
# at the end):
#   - openssl: a CA; the API server's serving cert (IP:127.0.0.1); Trow's serving cert
#     (IP:127.0.0.1, DNS:trow.example.com) signed by the CA; a service-account signing key;
#   - etcd with its own data dir;
#   - trow (one process) with --tls, --hostname trow.example.com:<port>, the policy below and
#     pre-warm off (there is no network to warm from);
#   - kube-apiserver: RBAC, a static token for a user in system:masters, default admission plugins
#     (MutatingAdmissionWebhook and ValidatingAdmissionWebhook among them). No kubelet, scheduler
#     or controller manager: Pods are stored and stay Pending, which is all that is needed.
# Checks (each prints what it sent and what came back; any failed check makes the exit status 1):
#   1. Pod web (nginx:1.27) is created and stored with image
#      trow.example.com:<port>/f/docker.io/library/nginx:1.27 (mutating webhook);
#   2. Pod bad (quay.io/evil/miner:1, init container docker.io/library/busybox:1.36) is refused
#      with 403, the message naming both images and their reasons; nothing is stored;
#   3. Deployment with a denied image is refused with 403 (validating webhook on apps/v1);
#   4. a dryRun=All Pod create answers with the rewritten image and stores nothing;
#   5. an UPDATE of Pod web to a denied image is refused with 403 (validating webhook on UPDATE);
#   6. a second trow with `authorization.kubernetes` (TokenReview and SubjectAccessReview through
#      KUBECONFIG): a service account's token (TokenRequest) is its password; rules name its
#      group; a ClusterRole's `pull` on repositories.trow.dev/team/rbac lets it read that one
#      repository; refusals are 403, a forged token 401; the token never reaches the log.
#   7. `trow webhook-certs` (the chart's hook Job) as a ServiceAccount granted only what the chart
#      grants: it creates the kubernetes.io/tls Secret (a CA and a certificate for the Service's
#      DNS names, checked with openssl) and sets the caBundle of every webhook calling the
#      Service in a Validating and a Mutating configuration to that CA, leaving another vendor's
#      webhook in the same configuration (its caBundle unchanged, named in the output); a second
#      run keeps the Secret; a third, after the Secret lost its ca.crt, replaces it and patches
#      the new CA in; a `trow gateway --tls` serving the Secret's files on 127.0.0.105 is trusted
#      through the Service's name with the CA (and not with another); a fourth run, after the
#      Secret's tls.crt was swapped for one another CA signed, renews and publishes new + old CA (the gateway's old certificate
#      stays trusted), and a fifth drops the old CA; an unknown configuration is exit status 2,
#      "not found"; a Secret someone else made (no ca.crt) is not replaced: exit status 2.
#   8. the helm chart (deploy/helm/trow), rendered by helm (defaults; split and single with both
#      webhooks; existing Secrets, node set-up, ingress), is accepted whole by `kubectl apply --server-side --dry-run=server`
#      (check_chart; helm and kubectl from scripts/k8s-tools.sh); then helm's install order with
#      the chart's certificate hooks, stored for real: hook RBAC, the pre-install Job's args as
#      its ServiceAccount (the Secret before any pod, so --wait works), the release, the
#      post-install Job's args (caBundle), the hooks deleted, a pre-upgrade run keeping the
#      certificate, and a re-apply keeping caBundle (check_chart_install_order); 8c, in between:
#      with the chart's validating webhook stored and nothing behind its Service, metadata-only
#      pod updates and a Deployment scale pass while image changes are refused (matchConditions).

set -euo pipefail

KEEP=${KEEP:-0}
START_TIMEOUT=${START_TIMEOUT:-60}
export RUST_LOG=${RUST_LOG:-info}

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$SCRIPT_DIR/.." && pwd)
MOD_DIR=$SCRIPT_DIR/kube-e2e

T0=$(date +%s)
log() { printf '==> %s\n' "$*"; }
info() { printf '    %s\n' "$*"; }
die() {
  printf 'kube-e2e: ERROR: %s\n' "$*" >&2
  exit 1
}

for cmd in curl openssl jq python3; do
  command -v "$cmd" >/dev/null || die "$cmd missing"
done

# --- kube-apiserver ----------------------------------------------------------------------------
KUBE_VERSION=$(awk '$1 == "k8s.io/kubernetes" && $2 ~ /^v/ {print $2; exit}' "$MOD_DIR/go.mod")
[[ -n $KUBE_VERSION ]] || die "no k8s.io/kubernetes requirement in $MOD_DIR/go.mod"

build_apiserver() {
  local cache=${TROW_KUBE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/trow-tests/kube}
  local dest=$cache/$KUBE_VERSION/kube-apiserver
  if [[ ! -x $dest ]]; then
    local go
    go=$(command -v go || true)
    if [[ -z $go && -x /usr/local/go/bin/go ]]; then go=/usr/local/go/bin/go; fi
    [[ -n $go ]] || die "'go' not found on PATH nor at /usr/local/go/bin/go: it builds kube-apiserver"
    mkdir -p "$cache/$KUBE_VERSION"
    local minor=${KUBE_VERSION#v1.}
    minor=${minor%%.*}
    # What the release build stamps (hack/lib/version.sh), so /version and --version tell the
    # truth instead of v0.0.0-master.
    local pkg=k8s.io/component-base/version
    local ldflags="-s -w -X $pkg.gitVersion=$KUBE_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
    ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
    local tmp
    tmp=$(mktemp "$cache/$KUBE_VERSION/.kube-apiserver.XXXXXX")
    log "building kube-apiserver $KUBE_VERSION from k8s.io/kubernetes (several minutes; cached in $cache)"
    local b0
    b0=$(date +%s)
    if ! (cd "$MOD_DIR" && GOTOOLCHAIN=local GOFLAGS="${GOFLAGS:-} -mod=readonly -buildvcs=false" \
      "$go" build -trimpath -ldflags "$ldflags" -o "$tmp" k8s.io/kubernetes/cmd/kube-apiserver); then
      rm -f "$tmp"
      die "go build of k8s.io/kubernetes/cmd/kube-apiserver@$KUBE_VERSION failed"
    fi
    chmod 755 "$tmp"
    mv -f "$tmp" "$dest"
    info "built in $(($(date +%s) - b0)) s"
  fi
  KUBE_APISERVER=$dest
}

if [[ -z ${KUBE_APISERVER:-} ]]; then build_apiserver; fi
[[ -x $KUBE_APISERVER ]] || die "$KUBE_APISERVER is not executable"
log "kube-apiserver: $KUBE_APISERVER ($("$KUBE_APISERVER" --version))"
# KUBE_BUILD_ONLY=1: build and cache kube-apiserver, nothing else (scripts/test.sh uses it).
if [[ ${KUBE_BUILD_ONLY:-0} == 1 ]]; then exit 0; fi

# --- etcd and trow -----------------------------------------------------------------------------
if [[ -z ${ETCD_BIN:-} ]]; then
  if ! command -v etcd >/dev/null; then
    log "etcd missing; installing Debian's etcd-server"
    SUDO=
    [[ $(id -u) == 0 ]] || SUDO=sudo
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y etcd-server ||
      { $SUDO apt-get update && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y etcd-server; } ||
      die "could not install etcd-server"
  fi
  ETCD_BIN=$(command -v etcd)
fi
log "etcd: $ETCD_BIN ($("$ETCD_BIN" --version | head -1))"

if [[ -z ${TROW_BIN:-} ]]; then
  log "building trow (release)"
  (cd "$REPO_ROOT" && cargo build --release --bin trow)
  TROW_BIN=$REPO_ROOT/target/release/trow
fi
[[ -x $TROW_BIN ]] || die "$TROW_BIN is not executable"
log "trow: $TROW_BIN ($("$TROW_BIN" --version))"

# --- temp dir, processes, clean-up -------------------------------------------------------------
W=$(mktemp -d /tmp/trow-kube-e2e.XXXXXX)
PIDS=()
FAILED=0
cleanup() {
  local rc=$?
  local i
  # The API server first (it calls Trow and etcd), then Trow, then etcd: newest first.
  for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
    kill "${PIDS[i]}" 2>/dev/null || true
    wait "${PIDS[i]}" 2>/dev/null || true
  done
  if ((rc != 0)); then
    for f in etcd trow kube-apiserver; do
      [[ -s $W/$f.log ]] || continue
      printf -- '--- last lines of %s.log ---\n' "$f" >&2
      tail -n 15 "$W/$f.log" >&2
    done
  fi
  if [[ $KEEP == 1 ]]; then log "kept $W"; else rm -rf "$W"; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
ETCD_PORT=$(free_port)
ETCD_PEER_PORT=$(free_port)
TROW_PORT=$(free_port)
KUBE_PORT=$(free_port)
TROW_HOST=trow.example.com:$TROW_PORT
KUBE=https://127.0.0.1:$KUBE_PORT

# wait_for WHAT PID CMD...: runs CMD every 0.2 s until it succeeds; fails when PID exits or after
# START_TIMEOUT s.
wait_for() {
  local what=$1 pid=$2
  shift 2
  local deadline=$(($(date +%s) + START_TIMEOUT))
  until "$@" >/dev/null 2>&1; do
    kill -0 "$pid" 2>/dev/null || die "$what exited during start-up"
    (($(date +%s) < deadline)) || die "$what not ready after ${START_TIMEOUT} s"
    sleep 0.2
  done
}

# --- certificates ------------------------------------------------------------------------------
log "certificates (openssl, in $W/pki)"
P=$W/pki
mkdir -p "$P"
# serving_cert NAME SAN: a key and a serving certificate for SAN, signed by the CA.
serving_cert() {
  local name=$1 san=$2
  openssl req -newkey rsa:2048 -nodes -keyout "$P/$name.key" -subj "/CN=$name" -out "$P/$name.csr" 2>/dev/null
  printf 'subjectAltName=%s\nbasicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n' \
    "$san" >"$P/$name.ext"
  openssl x509 -req -in "$P/$name.csr" -CA "$P/ca.crt" -CAkey "$P/ca.key" -CAcreateserial -days 2 \
    -sha256 -extfile "$P/$name.ext" -out "$P/$name.crt" 2>/dev/null
  info "$name.crt: $(openssl x509 -in "$P/$name.crt" -noout -ext subjectAltName | tail -1 | sed 's/^ *//')"
}
openssl req -x509 -newkey rsa:2048 -nodes -keyout "$P/ca.key" -subj "/CN=trow-kube-e2e CA" -days 2 \
  -sha256 -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign \
  -out "$P/ca.crt" 2>/dev/null
info "ca.crt: $(openssl x509 -in "$P/ca.crt" -noout -subject)"
serving_cert apiserver "IP:127.0.0.1,DNS:localhost"
serving_cert trow "IP:127.0.0.1,DNS:trow.example.com"
openssl genrsa -out "$P/sa.key" 2048 2>/dev/null
openssl rsa -in "$P/sa.key" -pubout -out "$P/sa.pub" 2>/dev/null
info "sa.key/sa.pub: service-account signing key"
TOKEN=$(openssl rand -hex 24)
printf '%s,e2e-admin,e2e-admin-uid,"system:masters"\n' "$TOKEN" >"$P/tokens.csv"
CA_B64=$(base64 -w0 <"$P/ca.crt")

# --- etcd --------------------------------------------------------------------------------------
log "etcd on 127.0.0.1:$ETCD_PORT"
"$ETCD_BIN" --name e2e --data-dir "$W/etcd" \
  --listen-client-urls "http://127.0.0.1:$ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
  --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
  --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
  --initial-cluster "e2e=http://127.0.0.1:$ETCD_PEER_PORT" >"$W/etcd.log" 2>&1 &
PIDS+=($!)
wait_for etcd "${PIDS[-1]}" sh -c "curl -sf --noproxy '*' http://127.0.0.1:$ETCD_PORT/health | grep -q true"
info "healthy"

# --- trow --------------------------------------------------------------------------------------
log "trow on https://127.0.0.1:$TROW_PORT (--hostname $TROW_HOST)"
cat >"$W/trow.yaml" <<'EOF'
registry_proxies:
  registries:
    - host: registry-1.docker.io
image_validation:
  default: Deny
  allow: [trow.example.com/, docker.io/library/, registry.k8s.io/]
  deny: [docker.io/library/busybox]
image_mutation:
  prewarm: false     # no network here; pre-warm is tested elsewhere
EOF
sed 's/^/    | /' "$W/trow.yaml"
"$TROW_BIN" --bind "127.0.0.1:$TROW_PORT" --data-dir "$W/trow-data" --hostname "$TROW_HOST" \
  --tls "$P/trow.crt,$P/trow.key" --config-file "$W/trow.yaml" >"$W/trow.log" 2>&1 &
PIDS+=($!)
wait_for trow "${PIDS[-1]}" curl -sf --noproxy '*' --cacert "$P/ca.crt" "https://127.0.0.1:$TROW_PORT/v2/"
info "GET /v2/ answers 200 over TLS (verified against the CA)"

# --- kube-apiserver ----------------------------------------------------------------------------
log "kube-apiserver on $KUBE"
# --endpoint-reconciler-type none: the default reconciler refuses a loopback advertise address
# ("may not be in the loopback range"); nothing here needs the `kubernetes` Service's endpoints.
"$KUBE_APISERVER" \
  --etcd-servers "http://127.0.0.1:$ETCD_PORT" \
  --bind-address 127.0.0.1 --advertise-address 127.0.0.1 --secure-port "$KUBE_PORT" \
  --tls-cert-file "$P/apiserver.crt" --tls-private-key-file "$P/apiserver.key" \
  --client-ca-file "$P/ca.crt" --token-auth-file "$P/tokens.csv" \
  --authorization-mode RBAC \
  --service-cluster-ip-range 10.96.0.0/16 \
  --service-account-key-file "$P/sa.pub" --service-account-signing-key-file "$P/sa.key" \
  --service-account-issuer https://kubernetes.default.svc \
  --cert-dir "$W/apiserver-certs" \
  --endpoint-reconciler-type none \
  >"$W/kube-apiserver.log" 2>&1 &
PIDS+=($!)
# kapi METHOD PATH [BODY] [CONTENT-TYPE]: the API server's answer in $W/answer.json, its HTTP
# status on stdout.
kapi() {
  local method=$1 path=$2 body=${3:-} ctype=${4:-application/json}
  local args=(-s --noproxy '*' --cacert "$P/ca.crt" -H "Authorization: Bearer $TOKEN"
    -o "$W/answer.json" -w '%{http_code}' -X "$method")
  [[ -n $body ]] && args+=(-H "Content-Type: $ctype" --data-binary "$body")
  curl "${args[@]}" "$KUBE$path"
}
wait_for kube-apiserver "${PIDS[-1]}" sh -c "[ \"\$(curl -s --noproxy '*' --cacert '$P/ca.crt' \
  -H 'Authorization: Bearer $TOKEN' '$KUBE/readyz')\" = ok ]"
info "/readyz: ok; /version: $(kapi GET /version >/dev/null && jq -r .gitVersion "$W/answer.json")"

# --- webhooks ----------------------------------------------------------------------------------
log "registering the webhooks (clientConfig.url https://127.0.0.1:$TROW_PORT/..., caBundle = the CA)"
MUTATING=$(jq -n --arg url "https://127.0.0.1:$TROW_PORT/mutate-image" --arg ca "$CA_B64" '{
  apiVersion: "admissionregistration.k8s.io/v1", kind: "MutatingWebhookConfiguration",
  metadata: {name: "trow-mutate"},
  webhooks: [{
    name: "mutate.trow.example.com",
    clientConfig: {url: $url, caBundle: $ca},
    rules: [{apiGroups: [""], apiVersions: ["v1"], operations: ["CREATE"], resources: ["pods"]}],
    failurePolicy: "Fail", sideEffects: "NoneOnDryRun", reinvocationPolicy: "IfNeeded",
    admissionReviewVersions: ["v1"], timeoutSeconds: 10,
    namespaceSelector: {matchExpressions: [{key: "kubernetes.io/metadata.name", operator: "NotIn", values: ["trow"]}]}
  }]}')
VALIDATING=$(jq -n --arg url "https://127.0.0.1:$TROW_PORT/validate-image" --arg ca "$CA_B64" '{
  apiVersion: "admissionregistration.k8s.io/v1", kind: "ValidatingWebhookConfiguration",
  metadata: {name: "trow-validate"},
  webhooks: [{
    name: "validate.trow.example.com",
    clientConfig: {url: $url, caBundle: $ca},
    rules: [
      {apiGroups: [""], apiVersions: ["v1"], operations: ["CREATE", "UPDATE"], resources: ["pods", "pods/ephemeralcontainers"]},
      {apiGroups: ["apps"], apiVersions: ["v1"], operations: ["CREATE", "UPDATE"], resources: ["deployments", "statefulsets", "daemonsets"]},
      {apiGroups: ["batch"], apiVersions: ["v1"], operations: ["CREATE", "UPDATE"], resources: ["jobs", "cronjobs"]}
    ],
    failurePolicy: "Fail", sideEffects: "None",
    admissionReviewVersions: ["v1"], timeoutSeconds: 10,
    namespaceSelector: {matchExpressions: [{key: "kubernetes.io/metadata.name", operator: "NotIn", values: ["trow"]}]}
  }]}')
code=$(kapi POST /apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations "$MUTATING")
[[ $code == 201 ]] || die "MutatingWebhookConfiguration: HTTP $code: $(cat "$W/answer.json")"
info "MutatingWebhookConfiguration trow-mutate: 201 (pods CREATE -> /mutate-image, failurePolicy Fail)"
code=$(kapi POST /apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations "$VALIDATING")
[[ $code == 201 ]] || die "ValidatingWebhookConfiguration: HTTP $code: $(cat "$W/answer.json")"
info "ValidatingWebhookConfiguration trow-validate: 201 (pods, apps and batch workloads CREATE/UPDATE -> /validate-image, failurePolicy Fail)"

log "namespace demo and its default ServiceAccount (no controller manager creates it here)"
code=$(kapi POST /api/v1/namespaces '{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"demo"}}')
[[ $code == 201 ]] || die "namespace demo: HTTP $code: $(cat "$W/answer.json")"
code=$(kapi POST /api/v1/namespaces/demo/serviceaccounts \
  '{"apiVersion":"v1","kind":"ServiceAccount","metadata":{"name":"default"}}')
[[ $code == 201 ]] || die "serviceaccount demo/default: HTTP $code: $(cat "$W/answer.json")"
info "201, 201"

# pod NAME IMAGE: a Pod with one container "NAME" running IMAGE.
pod() {
  jq -cn --arg name "$1" --arg image "$2" \
    '{apiVersion: "v1", kind: "Pod", metadata: {name: $name}, spec: {containers: [{name: $name, image: $image}]}}'
}
WANT=$TROW_HOST/f/docker.io/library/nginx:1.27

# The API server reads new webhook configurations within a second or two: dry-run creates (which
# store nothing) until the image comes back rewritten, so no check below races the registration.
log "waiting for the webhooks to take effect (dryRun=All Pod creates until mutated)"
deadline=$(($(date +%s) + START_TIMEOUT))
tries=0
while :; do
  tries=$((tries + 1))
  code=$(kapi POST '/api/v1/namespaces/demo/pods?dryRun=All' "$(pod probe nginx:1.27)")
  [[ $code == 201 && $(jq -r '.spec.containers[0].image' "$W/answer.json") == "$WANT" ]] && break
  (($(date +%s) < deadline)) || die "webhooks not in effect after ${START_TIMEOUT} s: HTTP $code: $(cat "$W/answer.json")"
  sleep 0.5
done
info "in effect after $tries dry-run create(s)"

# --- checks ------------------------------------------------------------------------------------
pass() { printf '    PASS: %s\n' "$*"; }
fail() {
  printf '    FAIL: %s\n' "$*"
  FAILED=$((FAILED + 1))
}
# expect_refused WHAT CODE NEEDLE...: CODE is 403, the answer is a Status of reason Forbidden, and
# its message contains every NEEDLE.
expect_refused() {
  local what=$1 code=$2
  shift 2
  local msg
  msg=$(jq -r '.message // empty' "$W/answer.json")
  info "answer: HTTP $code, reason $(jq -r '.reason // "-"' "$W/answer.json")"
  info "message: $msg"
  if [[ $code != 403 ]]; then
    fail "$what: HTTP $code, want 403"
    return
  fi
  local n missing=()
  for n in "$@"; do [[ $msg == *"$n"* ]] || missing+=("$n"); done
  if ((${#missing[@]})); then
    fail "$what: the message lacks: ${missing[*]}"
  else
    local names
    names=$(printf '[%s] ' "$@")
    pass "$what refused (403), the message names: ${names% }"
  fi
}
# expect_absent WHAT PATH: GET PATH is 404.
expect_absent() {
  local code
  code=$(kapi GET "$2")
  if [[ $code == 404 ]]; then pass "$1 not stored (GET: 404)"; else fail "$1: GET answered $code, want 404"; fi
}

log "1. Pod web with nginx:1.27: created, image rewritten to Trow's cache"
code=$(kapi POST /api/v1/namespaces/demo/pods "$(pod web nginx:1.27)")
info "POST /api/v1/namespaces/demo/pods (image nginx:1.27): HTTP $code"
if [[ $code == 201 ]]; then
  code=$(kapi GET /api/v1/namespaces/demo/pods/web)
  got=$(jq -r '.spec.containers[0].image' "$W/answer.json")
  info "GET pods/web: HTTP $code, spec.containers[0].image = $got, phase $(jq -r .status.phase "$W/answer.json")"
  if [[ $code == 200 && $got == "$WANT" ]]; then pass "stored image is $WANT"; else fail "stored image is $got, want $WANT"; fi
else
  fail "Pod web: HTTP $code: $(cat "$W/answer.json")"
fi

log "2. Pod bad (quay.io/evil/miner:1, init docker.io/library/busybox:1.36): refused, both reasons listed"
BAD=$(jq -cn '{apiVersion: "v1", kind: "Pod", metadata: {name: "bad"}, spec: {
  initContainers: [{name: "setup", image: "docker.io/library/busybox:1.36"}],
  containers: [{name: "miner", image: "quay.io/evil/miner:1"}]}}')
code=$(kapi POST /api/v1/namespaces/demo/pods "$BAD")
expect_refused "Pod bad" "$code" \
  'quay.io/evil/miner:1' 'neither explicitly allowed nor denied' \
  'docker.io/library/busybox:1.36' 'denied by prefix "docker.io/library/busybox"'
expect_absent "Pod bad" /api/v1/namespaces/demo/pods/bad

log "3. Deployment with a denied image (docker.io/library/busybox:1.36): refused"
DEPLOY=$(jq -cn '{apiVersion: "apps/v1", kind: "Deployment", metadata: {name: "tools"}, spec: {
  replicas: 1, selector: {matchLabels: {app: "tools"}},
  template: {metadata: {labels: {app: "tools"}}, spec: {containers: [
    {name: "web", image: "nginx:1.27"}, {name: "shell", image: "docker.io/library/busybox:1.36"}]}}}}')
code=$(kapi POST /apis/apps/v1/namespaces/demo/deployments "$DEPLOY")
expect_refused "Deployment tools" "$code" 'docker.io/library/busybox:1.36' 'denied by prefix'
expect_absent "Deployment tools" /apis/apps/v1/namespaces/demo/deployments/tools

log "4. dryRun=All Pod create: allowed, rewritten image in the answer, nothing stored"
code=$(kapi POST '/api/v1/namespaces/demo/pods?dryRun=All' "$(pod dry nginx:1.27)")
got=$(jq -r '.spec.containers[0].image // empty' "$W/answer.json")
info "POST ...pods?dryRun=All (image nginx:1.27): HTTP $code, spec.containers[0].image = $got"
if [[ $code == 201 && $got == "$WANT" ]]; then pass "answered 201 with $WANT"; else fail "HTTP $code, image $got; want 201 and $WANT"; fi
expect_absent "Pod dry" /api/v1/namespaces/demo/pods/dry

log "5. UPDATE of Pod web to a denied image: refused"
code=$(kapi PATCH /api/v1/namespaces/demo/pods/web \
  '{"spec":{"containers":[{"name":"web","image":"docker.io/library/busybox:1.36"}]}}' \
  application/strategic-merge-patch+json)
expect_refused "PATCH pods/web" "$code" 'docker.io/library/busybox:1.36' 'denied by prefix'
code=$(kapi GET /api/v1/namespaces/demo/pods/web)
got=$(jq -r '.spec.containers[0].image' "$W/answer.json")
if [[ $got == "$WANT" ]]; then pass "Pod web still runs $got"; else fail "Pod web's image is now $got"; fi

log "6. Kubernetes identities: a service-account token as the password (TokenReview), RBAC (SubjectAccessReview)"
code=$(kapi POST /api/v1/namespaces '{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"builds"}}')
[[ $code == 201 ]] || die "namespace builds: HTTP $code: $(cat "$W/answer.json")"
code=$(kapi POST /api/v1/namespaces/builds/serviceaccounts \
  '{"apiVersion":"v1","kind":"ServiceAccount","metadata":{"name":"ci"}}')
[[ $code == 201 ]] || die "serviceaccount builds/ci: HTTP $code: $(cat "$W/answer.json")"
code=$(kapi POST /api/v1/namespaces/builds/serviceaccounts/ci/token \
  '{"apiVersion":"authentication.k8s.io/v1","kind":"TokenRequest","spec":{"expirationSeconds":600}}')
[[ $code == 201 ]] || die "TokenRequest builds/ci: HTTP $code: $(cat "$W/answer.json")"
SA_TOKEN=$(jq -r .status.token "$W/answer.json")
info "TokenRequest for builds/ci: 201 (a ${#SA_TOKEN}-byte JWT)"
code=$(kapi POST /apis/rbac.authorization.k8s.io/v1/clusterroles "$(jq -cn '{apiVersion: "rbac.authorization.k8s.io/v1",
  kind: "ClusterRole", metadata: {name: "trow-pull-team-rbac"},
  rules: [{apiGroups: ["trow.dev"], resources: ["repositories"], verbs: ["pull"], resourceNames: ["team/rbac"]}]}')")
[[ $code == 201 ]] || die "ClusterRole: HTTP $code: $(cat "$W/answer.json")"
code=$(kapi POST /apis/rbac.authorization.k8s.io/v1/clusterrolebindings "$(jq -cn '{apiVersion: "rbac.authorization.k8s.io/v1",
  kind: "ClusterRoleBinding", metadata: {name: "trow-pull-team-rbac"},
  roleRef: {apiGroup: "rbac.authorization.k8s.io", kind: "ClusterRole", name: "trow-pull-team-rbac"},
  subjects: [{kind: "ServiceAccount", name: "ci", namespace: "builds"}]}')")
[[ $code == 201 ]] || die "ClusterRoleBinding: HTTP $code: $(cat "$W/answer.json")"
info "ClusterRole trow-pull-team-rbac (verb pull on repositories.trow.dev team/rbac), bound to builds/ci"

TROW2_PORT=$(free_port)
ADMIN_PW=$(openssl rand -hex 12)
jq -n --arg server "$KUBE" --arg ca "$P/ca.crt" --arg token "$TOKEN" '{apiVersion: "v1", kind: "Config",
  clusters: [{name: "e2e", cluster: {server: $server, "certificate-authority": $ca}}],
  users: [{name: "admin", user: {token: $token}}],
  contexts: [{name: "e2e", context: {cluster: "e2e", user: "admin"}}], "current-context": "e2e"}' >"$W/kubeconfig"
cat >"$W/trow-auth.yaml" <<'EOF'
authorization:
  rules:
    - subjects: [user:admin]
      repositories: ["*"]
      actions: ["*"]
    - subjects: ["group:system:serviceaccounts:builds"]
      repositories: [builds/]
      actions: [pull, push]
  kubernetes:
    token_review: true
    rbac: {}
EOF
sed 's/^/    | /' "$W/trow-auth.yaml"
KUBECONFIG=$W/kubeconfig "$TROW_BIN" --bind "127.0.0.1:$TROW2_PORT" --data-dir "$W/trow2-data" \
  --user admin --password "$ADMIN_PW" --config-file "$W/trow-auth.yaml" --token-lifetime 1h \
  >"$W/trow-auth.log" 2>&1 &
PIDS+=($!)
T2=http://127.0.0.1:$TROW2_PORT
wait_for trow-auth "${PIDS[-1]}" curl -sf --noproxy '*' "$T2/healthz"
info "a second trow on $T2: users from TokenReview, RBAC by SubjectAccessReview (KUBECONFIG as e2e-admin)"
# t2 METHOD PATH CREDENTIALS: Trow's answer in $W/t2.json, its status on stdout.
t2() {
  curl -s --noproxy '*' -o "$W/t2.json" -w '%{http_code}' -X "$1" -u "$3" "$T2$2"
}
expect_t2() {
  local what=$1 want=$2 code=$3 oci
  oci=$(jq -r '.errors[0].code // empty' "$W/t2.json" 2>/dev/null || true)
  if [[ $code == "$want" ]]; then pass "$what: HTTP $code ${oci}"; else fail "$what: HTTP $code ${oci}, want $want: $(head -c 300 "$W/t2.json")"; fi
}
expect_t2 "service-account token as password, push to builds/ (rules by its group)" 202 \
  "$(t2 POST /v2/builds/app/blobs/uploads/ "ci:$SA_TOKEN")"
code=$(t2 GET '/v2/token?service=trow&scope=repository:builds/app:pull,push' "ci:$SA_TOKEN")
granted=$(jq -r '.token | split(".")[1] | @base64d | fromjson | [.sub, (.access[0].actions | join(",")), (.groups | index("system:serviceaccounts:builds") != null)] | map(tostring) | join(" ")' "$W/t2.json" 2>/dev/null || true)
if [[ $code == 200 && $granted == "system:serviceaccount:builds:ci pull,push true" ]]; then
  pass "token endpoint: HTTP 200, token for $granted"
else
  fail "token endpoint: HTTP $code, token says '$granted'"
fi
lifetime=$(jq -r .expires_in "$W/t2.json")
if ((lifetime > 0 && lifetime <= 600)); then
  pass "Trow's token for it ends with the service-account token (expires_in $lifetime s, not --token-lifetime 1h)"
else
  fail "Trow's token for the service account lives $lifetime s, past its 600 s token"
fi
BEARER=$(jq -r .token "$W/t2.json")
code=$(curl -s --noproxy '*' -o "$W/t2.json" -w '%{http_code}' -X POST -H "Authorization: Bearer $BEARER" "$T2/v2/builds/app/blobs/uploads/")
expect_t2 "push with Trow's token for the service account" 202 "$code"
expect_t2 "service account pushes outside builds/" 403 "$(t2 POST /v2/other/app/blobs/uploads/ "ci:$SA_TOKEN")"
expect_t2 "RBAC grants pull on team/rbac (the read reaches the store: unknown repository)" 404 \
  "$(t2 GET /v2/team/rbac/tags/list "ci:$SA_TOKEN")"
expect_t2 "RBAC grants no pull on team/other" 403 "$(t2 GET /v2/team/other/tags/list "ci:$SA_TOKEN")"
expect_t2 "RBAC grants no push on team/rbac" 403 "$(t2 POST /v2/team/rbac/blobs/uploads/ "ci:$SA_TOKEN")"
expect_t2 "a forged token as password" 401 "$(t2 GET /v2/builds/app/tags/list "ci:${SA_TOKEN%?????}xxxxx")"
expect_t2 "Trow's own user still logs in" 202 "$(t2 POST /v2/team/rbac/blobs/uploads/ "admin:$ADMIN_PW")"
if grep -qF "${SA_TOKEN##*.}" "$W/trow-auth.log"; then fail "the service-account token is in trow's log"; else pass "the service-account token is not in trow's log"; fi

log "7. trow webhook-certs: the webhooks' TLS Secret and caBundle, with the chart's RBAC only"
WC_NS=trow-wc
WC_SVC=trow-webhooks
WC_SECRET=trow-webhook-tls
WC_VAL=trow-wc-validate
WC_MUT=trow-wc-mutate
WC=$W/webhook-certs
mkdir -p "$WC"
code=$(kapi POST /api/v1/namespaces "$(jq -cn --arg ns "$WC_NS" '{apiVersion: "v1", kind: "Namespace", metadata: {name: $ns}}')")
[[ $code == 201 ]] || die "namespace $WC_NS: HTTP $code: $(cat "$W/answer.json")"
# Configurations as the chart renders them before the hook runs: clientConfig.service, no
# caBundle. Their objectSelector matches nothing, so they never take part in the checks above.
wc_hook() {
  jq -cn --arg name "$1" --arg ns "$WC_NS" --arg svc "$WC_SVC" --arg path "$2" '{name: $name,
    clientConfig: {service: {namespace: $ns, name: $svc, path: $path, port: 443}},
    rules: [{apiGroups: [""], apiVersions: ["v1"], operations: ["CREATE"], resources: ["configmaps"]}],
    objectSelector: {matchLabels: {"trow-kube-e2e": "never"}},
    failurePolicy: "Ignore", sideEffects: "None", admissionReviewVersions: ["v1"], timeoutSeconds: 5}'
}
# Another vendor's webhook in the same configuration (a URL and a CA of its own): it must keep
# its caBundle.
WC_FOREIGN=policy.other-vendor.example.com
WC_FOREIGN_CA=$(base64 -w0 "$P/ca.crt")
wc_foreign_hook=$(jq -cn --arg name "$WC_FOREIGN" --arg ca "$WC_FOREIGN_CA" '{name: $name,
  clientConfig: {url: "https://policy.other-vendor.example.com/validate", caBundle: $ca},
  rules: [{apiGroups: [""], apiVersions: ["v1"], operations: ["CREATE"], resources: ["configmaps"]}],
  objectSelector: {matchLabels: {"trow-kube-e2e": "never"}},
  failurePolicy: "Ignore", sideEffects: "None", admissionReviewVersions: ["v1"], timeoutSeconds: 5}')
code=$(kapi POST /apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations "$(jq -cn \
  --arg name "$WC_VAL" --argjson a "$(wc_hook validate.trow.dev /validate-image)" \
  --argjson b "$(wc_hook validate-too.trow.dev /validate-image)" --argjson c "$wc_foreign_hook" \
  '{apiVersion: "admissionregistration.k8s.io/v1", kind: "ValidatingWebhookConfiguration", metadata: {name: $name}, webhooks: [$a, $c, $b]}')")
[[ $code == 201 ]] || die "ValidatingWebhookConfiguration $WC_VAL: HTTP $code: $(cat "$W/answer.json")"
code=$(kapi POST /apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations "$(jq -cn \
  --arg name "$WC_MUT" --argjson a "$(wc_hook mutate.trow.dev /mutate-image)" \
  '{apiVersion: "admissionregistration.k8s.io/v1", kind: "MutatingWebhookConfiguration", metadata: {name: $name}, webhooks: [$a]}')")
[[ $code == 201 ]] || die "MutatingWebhookConfiguration $WC_MUT: HTTP $code: $(cat "$W/answer.json")"
info "namespace $WC_NS; $WC_VAL (2 webhooks) and $WC_MUT (1) pointing at service $WC_NS/$WC_SVC, no caBundle; $WC_VAL also holds $WC_FOREIGN (a URL, its own caBundle)"
# Exactly the chart's grants: create Secrets in the namespace (create cannot be limited by name),
# get/update the one Secret, get/patch the two configurations by name.
WC_ROLE=$(jq -cn --arg ns "$WC_NS" --arg secret "$WC_SECRET" '{apiVersion: "rbac.authorization.k8s.io/v1",
  kind: "Role", metadata: {name: "trow-webhook-certs", namespace: $ns}, rules: [
    {apiGroups: [""], resources: ["secrets"], verbs: ["create"]},
    {apiGroups: [""], resources: ["secrets"], resourceNames: [$secret], verbs: ["get", "update"]}]}')
WC_CLUSTERROLE=$(jq -cn --arg val "$WC_VAL" --arg mut "$WC_MUT" '{apiVersion: "rbac.authorization.k8s.io/v1",
  kind: "ClusterRole", metadata: {name: "trow-webhook-certs"}, rules: [
    {apiGroups: ["admissionregistration.k8s.io"], resources: ["validatingwebhookconfigurations"],
     resourceNames: [$val], verbs: ["get", "patch"]},
    {apiGroups: ["admissionregistration.k8s.io"], resources: ["mutatingwebhookconfigurations"],
     resourceNames: [$mut], verbs: ["get", "patch"]}]}')
for obj in \
  "/api/v1/namespaces/$WC_NS/serviceaccounts|$(jq -cn '{apiVersion: "v1", kind: "ServiceAccount", metadata: {name: "trow-webhook-certs"}}')" \
  "/apis/rbac.authorization.k8s.io/v1/namespaces/$WC_NS/roles|$WC_ROLE" \
  "/apis/rbac.authorization.k8s.io/v1/namespaces/$WC_NS/rolebindings|$(jq -cn --arg ns "$WC_NS" '{apiVersion: "rbac.authorization.k8s.io/v1",
    kind: "RoleBinding", metadata: {name: "trow-webhook-certs"},
    roleRef: {apiGroup: "rbac.authorization.k8s.io", kind: "Role", name: "trow-webhook-certs"},
    subjects: [{kind: "ServiceAccount", name: "trow-webhook-certs", namespace: $ns}]}')" \
  "/apis/rbac.authorization.k8s.io/v1/clusterroles|$WC_CLUSTERROLE" \
  "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings|$(jq -cn --arg ns "$WC_NS" '{apiVersion: "rbac.authorization.k8s.io/v1",
    kind: "ClusterRoleBinding", metadata: {name: "trow-webhook-certs"},
    roleRef: {apiGroup: "rbac.authorization.k8s.io", kind: "ClusterRole", name: "trow-webhook-certs"},
    subjects: [{kind: "ServiceAccount", name: "trow-webhook-certs", namespace: $ns}]}')"; do
  code=$(kapi POST "${obj%%|*}" "${obj#*|}")
  [[ $code == 201 ]] || die "POST ${obj%%|*}: HTTP $code: $(cat "$W/answer.json")"
done
info "Role: $(jq -c .rules <<<"$WC_ROLE")"
info "ClusterRole: $(jq -c .rules <<<"$WC_CLUSTERROLE")"
code=$(kapi POST "/api/v1/namespaces/$WC_NS/serviceaccounts/trow-webhook-certs/token" \
  '{"apiVersion":"authentication.k8s.io/v1","kind":"TokenRequest","spec":{"expirationSeconds":600}}')
[[ $code == 201 ]] || die "TokenRequest $WC_NS/trow-webhook-certs: HTTP $code: $(cat "$W/answer.json")"
jq -n --arg server "$KUBE" --arg ca "$P/ca.crt" --arg token "$(jq -r .status.token "$W/answer.json")" '{apiVersion: "v1",
  kind: "Config", clusters: [{name: "e2e", cluster: {server: $server, "certificate-authority": $ca}}],
  users: [{name: "hook", user: {token: $token}}],
  contexts: [{name: "e2e", context: {cluster: "e2e", user: "hook"}}], "current-context": "e2e"}' >"$WC/kubeconfig"
WC_ARGS=(webhook-certs --namespace "$WC_NS" --secret "$WC_SECRET" --service "$WC_SVC"
  --validating-webhook "$WC_VAL" --mutating-webhook "$WC_MUT")
info "KUBECONFIG=<the ServiceAccount's token> trow ${WC_ARGS[*]}"
# wc_run N: runs the command as the ServiceAccount, output in $WC/run-N.log; its exit status.
wc_run() {
  local rc=0
  KUBECONFIG=$WC/kubeconfig "$TROW_BIN" "${WC_ARGS[@]}" >"$WC/run-$1.log" 2>&1 || rc=$?
  sed 's/^/    | /' "$WC/run-$1.log"
  return "$rc"
}
# wc_secret N: the Secret's files in $WC/N/ (tls.crt, tls.key, ca.crt), its resourceVersion in
# $WC/N/rv.
wc_secret() {
  mkdir -p "$WC/$1"
  local code
  code=$(kapi GET "/api/v1/namespaces/$WC_NS/secrets/$WC_SECRET")
  [[ $code == 200 ]] || { fail "GET Secret $WC_NS/$WC_SECRET: HTTP $code"; return 1; }
  jq -r .type "$W/answer.json" >"$WC/$1/type"
  jq -r .metadata.resourceVersion "$W/answer.json" >"$WC/$1/rv"
  local k
  for k in tls.crt tls.key ca.crt; do jq -r --arg k "$k" '.data[$k] // ""' "$W/answer.json" | base64 -d >"$WC/$1/$k"; done
}
if wc_run 1; then pass "first run: exit 0 as the ServiceAccount"; else fail "first run: exit $?"; fi
if grep -q 'PRIVATE KEY' "$WC/run-1.log"; then fail "the output holds a private key"; else pass "no key in the output"; fi
if wc_secret 1; then
  if [[ $(cat "$WC/1/type") == kubernetes.io/tls ]]; then pass "Secret type kubernetes.io/tls"; else fail "Secret type $(cat "$WC/1/type")"; fi
  sans=$(openssl x509 -in "$WC/1/tls.crt" -noout -ext subjectAltName 2>/dev/null | tail -1 | sed 's/^ *//')
  info "tls.crt: $sans; issuer $(openssl x509 -in "$WC/1/tls.crt" -noout -issuer | sed 's/^issuer=//')"
  info "tls.crt: $(openssl x509 -in "$WC/1/tls.crt" -noout -enddate), key $(openssl x509 -in "$WC/1/tls.crt" -noout -text | grep -m1 -o 'ASN1 OID: [a-z0-9]*')"
  want_sans="DNS:$WC_SVC, DNS:$WC_SVC.$WC_NS, DNS:$WC_SVC.$WC_NS.svc, DNS:$WC_SVC.$WC_NS.svc.cluster.local"
  if [[ $sans == "$want_sans" ]]; then pass "SANs: $sans"; else fail "SANs: $sans, want $want_sans"; fi
  if [[ $(openssl x509 -in "$WC/1/tls.crt" -noout -issuer | sed 's/^issuer=//') == "$(openssl x509 -in "$WC/1/ca.crt" -noout -subject | sed 's/^subject=//')" ]] &&
    openssl verify -CAfile "$WC/1/ca.crt" -purpose sslserver "$WC/1/tls.crt" >/dev/null 2>&1; then
    pass "tls.crt is issued by ca.crt (openssl verify -purpose sslserver: OK)"
  else
    fail "tls.crt does not verify against ca.crt: $(openssl verify -CAfile "$WC/1/ca.crt" "$WC/1/tls.crt" 2>&1)"
  fi
  if [[ $(openssl x509 -in "$WC/1/tls.crt" -noout -pubkey) == "$(openssl pkey -in "$WC/1/tls.key" -pubout)" ]]; then
    pass "tls.key is tls.crt's key"
  else
    fail "tls.key does not match tls.crt"
  fi
  # wc_bundles KIND NAME N [FILE]: the caBundle of every webhook calling the Service equals
  # FILE (default $WC/N/ca.crt); another vendor's webhook still has its own.
  wc_bundles() {
    local code n ok=0 i=0 want=${4:-$WC/$3/ca.crt}
    code=$(kapi GET "/apis/admissionregistration.k8s.io/v1/$1/$2")
    [[ $code == 200 ]] || { fail "GET $1/$2: HTTP $code"; return; }
    n=$(jq '[.webhooks[] | select(.clientConfig.service)] | length' "$W/answer.json")
    while ((i < n)); do
      jq -r --argjson i "$i" '[.webhooks[] | select(.clientConfig.service)][$i].clientConfig.caBundle // ""' "$W/answer.json" | base64 -d >"$WC/bundle" 2>/dev/null || true
      cmp -s "$WC/bundle" "$want" && ok=$((ok + 1))
      i=$((i + 1))
    done
    if ((n > 0 && ok == n)); then pass "$2: caBundle = ${want#"$WC/"} on all $n of Trow's webhook(s)"; else fail "$2: caBundle = ${want#"$WC/"} on $ok of $n webhook(s)"; fi
    if [[ $1 == validatingwebhookconfigurations ]]; then
      local foreign
      foreign=$(jq -r --arg n "$WC_FOREIGN" '.webhooks[] | select(.name == $n) | .clientConfig.caBundle' "$W/answer.json")
      if [[ $foreign == "$WC_FOREIGN_CA" ]]; then pass "$WC_FOREIGN: its own caBundle, unchanged"; else fail "$WC_FOREIGN: caBundle changed"; fi
    fi
  }
  wc_bundles validatingwebhookconfigurations "$WC_VAL" 1
  wc_bundles mutatingwebhookconfigurations "$WC_MUT" 1
  if grep -q "left alone.*$WC_FOREIGN" "$WC/run-1.log"; then pass "the output names $WC_FOREIGN as left alone"; else fail "the output does not name $WC_FOREIGN"; fi

  if wc_run 2; then pass "second run: exit 0"; else fail "second run: exit $?"; fi
  wc_secret 2 || true
  if cmp -s "$WC/1/tls.crt" "$WC/2/tls.crt" && cmp -s "$WC/1/ca.crt" "$WC/2/ca.crt" && [[ $(cat "$WC/1/rv") == "$(cat "$WC/2/rv")" ]]; then
    pass "second run kept the Secret (same certificate, resourceVersion $(cat "$WC/2/rv"))"
  else
    fail "second run replaced the Secret"
  fi
  if grep -q 'kept' "$WC/run-2.log" && grep -q 'already set' "$WC/run-2.log"; then
    pass "second run says: kept, caBundle already set"
  else
    fail "second run's output: $(tr '\n' ' ' <"$WC/run-2.log")"
  fi

  # A Secret that lost its CA is replaced (the Role's update), and the new CA patched in.
  code=$(kapi PATCH "/api/v1/namespaces/$WC_NS/secrets/$WC_SECRET" '{"data":{"ca.crt":null}}' \
    application/merge-patch+json)
  [[ $code == 200 ]] || die "PATCH Secret $WC_NS/$WC_SECRET: HTTP $code: $(cat "$W/answer.json")"
  info "ca.crt removed from the Secret (as e2e-admin)"
  if wc_run 3; then pass "third run: exit 0"; else fail "third run: exit $?"; fi
  wc_secret 3 || true
  if grep -q 'replaced (it has no ca.crt)' "$WC/run-3.log" && ! cmp -s "$WC/1/tls.crt" "$WC/3/tls.crt" &&
    openssl verify -CAfile "$WC/3/ca.crt" "$WC/3/tls.crt" >/dev/null 2>&1; then
    pass "third run replaced the Secret: a new CA and certificate"
  else
    fail "third run did not replace the Secret with a new CA and certificate"
  fi
  wc_bundles validatingwebhookconfigurations "$WC_VAL" 3
  wc_bundles mutatingwebhookconfigurations "$WC_MUT" 3

  # The webhooks' gateway as the chart runs it (trow gateway --tls), on an address of its own;
  # curl reaches it by the name the API server uses and trusts only the Secret's CA.
  WC_IP=127.0.0.105
  "$TROW_BIN" gateway --bind "$WC_IP:0" --storage http://127.0.0.1:1 \
    --tls "$WC/3/tls.crt,$WC/3/tls.key" >"$W/trow-webhooks.log" 2>&1 &
  PIDS+=($!)
  wait_for trow-webhooks "${PIDS[-1]}" grep -q "on https://$WC_IP:" "$W/trow-webhooks.log"
  WC_PORT=$(grep -o "https://$WC_IP:[0-9]*" "$W/trow-webhooks.log" | head -1 | sed 's/.*://')
  WC_HOST=$WC_SVC.$WC_NS.svc
  got=$(curl -s --noproxy '*' --cacert "$WC/3/ca.crt" --resolve "$WC_HOST:$WC_PORT:$WC_IP" \
    -o /dev/null -w '%{http_code}' "https://$WC_HOST:$WC_PORT/healthz" || true)
  if [[ $got == 200 ]]; then
    pass "trow gateway --tls <the Secret's files>: https://$WC_HOST:$WC_PORT/healthz answers 200 (--cacert ca.crt)"
  else
    fail "https://$WC_HOST:$WC_PORT/healthz with --cacert ca.crt: $got"
  fi
  rc=0
  curl -s --noproxy '*' --cacert "$P/ca.crt" --resolve "$WC_HOST:$WC_PORT:$WC_IP" -o /dev/null \
    "https://$WC_HOST:$WC_PORT/healthz" || rc=$?
  if ((rc == 60)); then pass "another CA is refused (curl exit 60)"; else fail "with another CA: curl exit $rc, want 60"; fi

  # A renewal while the CA is still good (tls.crt replaced by the first run's, which another CA
  # signed): the caBundle trusts new + old CA, so the gateway, still serving the old certificate
  # until the kubelet would sync the Secret, stays trusted; the next run keeps the bundle and
  # drops the old CA.
  code=$(kapi PATCH "/api/v1/namespaces/$WC_NS/secrets/$WC_SECRET" \
    "$(jq -cn --arg c "$(base64 -w0 "$WC/1/tls.crt")" '{data: {"tls.crt": $c}}')" application/merge-patch+json)
  [[ $code == 200 ]] || die "PATCH Secret $WC_NS/$WC_SECRET: HTTP $code: $(cat "$W/answer.json")"
  info "tls.crt replaced by the first run's (as e2e-admin)"
  if wc_run 4; then pass "fourth run: exit 0"; else fail "fourth run: exit $?"; fi
  wc_secret 4 || true
  cat "$WC/4/ca.crt" "$WC/3/ca.crt" >"$WC/4/both.crt"
  if grep -q 'old CA too' "$WC/run-4.log" && ! cmp -s "$WC/3/ca.crt" "$WC/4/ca.crt" &&
    [[ $(grep -c 'BEGIN CERTIFICATE' "$WC/4/ca.crt") == 1 ]]; then
    pass "fourth run renewed: ca.crt is the new CA alone"
  else
    fail "fourth run: $(tr '\n' ' ' <"$WC/run-4.log")"
  fi
  wc_bundles validatingwebhookconfigurations "$WC_VAL" 4 "$WC/4/both.crt"
  wc_bundles mutatingwebhookconfigurations "$WC_MUT" 4 "$WC/4/both.crt"
  got=$(curl -s --noproxy '*' --cacert "$WC/4/both.crt" --resolve "$WC_HOST:$WC_PORT:$WC_IP" \
    -o /dev/null -w '%{http_code}' "https://$WC_HOST:$WC_PORT/healthz" || true)
  if [[ $got == 200 ]]; then pass "the old certificate is trusted by the published caBundle (200)"; else fail "old certificate with the new caBundle: $got"; fi
  if wc_run 5; then pass "fifth run: exit 0"; else fail "fifth run: exit $?"; fi
  wc_bundles validatingwebhookconfigurations "$WC_VAL" 4
  wc_bundles mutatingwebhookconfigurations "$WC_MUT" 4
fi
rc=0
KUBECONFIG=$W/kubeconfig "$TROW_BIN" webhook-certs --namespace "$WC_NS" --secret "$WC_SECRET" --service "$WC_SVC" \
  --validating-webhook no-such-config >"$WC/missing.log" 2>&1 || rc=$?
info "$(cat "$WC/missing.log")"
if ((rc == 2)) && grep -q 'not found' "$WC/missing.log"; then
  pass "an unknown configuration: exit 2, not found"
else
  fail "an unknown configuration: exit $rc: $(cat "$WC/missing.log")"
fi
# A configuration none of whose webhooks calls the Service (a wrong flag): exit 2, nothing patched.
rc=0
KUBECONFIG=$W/kubeconfig "$TROW_BIN" webhook-certs --namespace "$WC_NS" --secret "$WC_SECRET" --service other-svc \
  --validating-webhook "$WC_VAL" >"$WC/not-ours.log" 2>&1 || rc=$?
info "$(cat "$WC/not-ours.log")"
if ((rc == 2)) && grep -q "is not Trow's" "$WC/not-ours.log"; then
  pass "a configuration with none of Trow's webhooks: exit 2, not Trow's"
else
  fail "a configuration with none of Trow's webhooks: exit $rc"
fi
# Someone else's Secret (kubectl create secret tls: no ca.crt, no annotation) is not replaced.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$WC/own.key" \
  -out "$WC/own.crt" -subj "/CN=$WC_SVC.$WC_NS.svc" -days 30 2>/dev/null
code=$(kapi POST "/api/v1/namespaces/$WC_NS/secrets" "$(jq -cn --arg c "$(base64 -w0 "$WC/own.crt")" \
  --arg k "$(base64 -w0 "$WC/own.key")" '{apiVersion: "v1", kind: "Secret", type: "kubernetes.io/tls",
  metadata: {name: "own-tls"}, data: {"tls.crt": $c, "tls.key": $k}}')")
[[ $code == 201 ]] || die "Secret own-tls: HTTP $code: $(cat "$W/answer.json")"
kapi GET "/api/v1/namespaces/$WC_NS/secrets/own-tls" >/dev/null
own_rv=$(jq -r .metadata.resourceVersion "$W/answer.json")
rc=0
KUBECONFIG=$W/kubeconfig "$TROW_BIN" webhook-certs --namespace "$WC_NS" --secret own-tls --service "$WC_SVC" \
  >"$WC/own.log" 2>&1 || rc=$?
info "$(cat "$WC/own.log")"
kapi GET "/api/v1/namespaces/$WC_NS/secrets/own-tls" >/dev/null
if ((rc == 2)) && grep -q 'not made by trow webhook-certs' "$WC/own.log" &&
  [[ $(jq -r .metadata.resourceVersion "$W/answer.json") == "$own_rv" ]]; then
  pass "someone else's Secret: exit 2, not replaced (resourceVersion $own_rv)"
else
  fail "someone else's Secret: exit $rc, resourceVersion $own_rv -> $(jq -r .metadata.resourceVersion "$W/answer.json")"
fi
# --- the helm chart, applied with server-side dry run ------------------------------------------
# check_chart: renders deploy/helm/trow (the defaults; split with both webhooks; single with both
# webhooks, users and registry credentials; split with TLS from existing Secrets, the node set-up
# and an ingress; split with IPv6 listeners, extra volumes and existing token Secrets) with helm,
# hooks included (the webhook certificate's pre- and post-install Jobs and their RBAC), and applies each rendering to this API
# server with `kubectl apply --server-side --dry-run=server` (strict field validation, defaulting,
# admission, nothing stored) in namespace trow, which the webhooks registered above exempt. Every
# object must be accepted. cert-manager's CRDs are not installed here, so the value sets use the
# chart's hook Job for the webhooks' TLS. helm and kubectl come from scripts/k8s-tools.sh (on PATH,
# or from its cache).
check_chart() {
  log "8. the helm chart: kubectl apply --server-side --dry-run=server of its renderings"
  if ! command -v helm >/dev/null || ! command -v kubectl >/dev/null; then
    local k8s_env
    if k8s_env=$("$SCRIPT_DIR/k8s-tools.sh" --env 2>"$W/k8s-tools.log"); then
      eval "$k8s_env"
    else
      fail "helm and kubectl missing and scripts/k8s-tools.sh failed: $(tail -n 3 "$W/k8s-tools.log")"
      return
    fi
  fi
  info "helm $(helm version --short), kubectl $(kubectl version --client 2>/dev/null | head -1)"
  local kc=$W/chart-kubeconfig
  jq -n --arg server "$KUBE" --arg ca "$P/ca.crt" --arg token "$TOKEN" '{apiVersion: "v1", kind: "Config",
    clusters: [{name: "e2e", cluster: {server: $server, "certificate-authority": $ca}}],
    users: [{name: "admin", user: {token: $token}}],
    contexts: [{name: "e2e", context: {cluster: "e2e", user: "admin", namespace: "trow"}}],
    "current-context": "e2e"}' >"$kc"
  local code
  code=$(kapi POST /api/v1/namespaces '{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"trow"}}')
  if [[ $code != 201 ]]; then
    fail "namespace trow: HTTP $code: $(cat "$W/answer.json")"
    return
  fi
  local hooks=(--set trow.validationWebhook.enabled=true --set trow.validationWebhook.config.default=Allow
    --set trow.mutationWebhook.enabled=true)
  local name args out rendered applied kinds
  for name in default split-webhooks single-webhooks-auth split-secrets-nodes split-ipv6-gitops; do
    case $name in
      default) args=() ;;
      split-webhooks) args=("${hooks[@]}") ;;
      single-webhooks-auth)
        args=(--set mode=single "${hooks[@]}" --set trow.user=admin --set trow.password=pw
          --set 'trow.proxyRegistries.config.registries[0].host=registry-1.docker.io'
          --set 'trow.proxyRegistries.config.registries[0].username=robot'
          --set 'trow.proxyRegistries.config.registries[0].password=secret')
        ;;
      split-secrets-nodes)
        # TLS from existing Secrets (webhooks and mutual TLS), the node set-up and an ingress.
        args=("${hooks[@]}" --set webhooks.tls.existingSecretRef=webhook-tls
          --set "webhooks.tls.caBundle=$CA_B64" --set grpcTls.enabled=true
          --set grpcTls.existingSecret=grpc-tls --set nodeSetup.enabled=true
          --set 'nodeSetup.registries={docker.io,quay.io}' --set ingress.enabled=true)
        ;;
      split-ipv6-gitops)
        # [::] listeners, an extra volume for ca_file, the token and token key from existing
        # Secrets, the node set-up with --ca-file (tests/tests/chart/ipv6-gitops.yaml).
        args=(--values "$REPO_ROOT/tests/tests/chart/ipv6-gitops.yaml")
        ;;
    esac
    out=$W/chart-$name.yaml
    if ! HOME=$W helm template trow "$REPO_ROOT/deploy/helm/trow" --namespace trow "${args[@]}" >"$out" 2>"$W/chart-$name.err"; then
      fail "helm template ($name): $(cat "$W/chart-$name.err")"
      continue
    fi
    rendered=$(grep -c '^kind: ' "$out")
    kinds=$(grep '^kind: ' "$out" | sort | uniq -c | awk '{printf "%s%s %s", sep, $1, $3; sep=", "}')
    if ! kubectl --kubeconfig "$kc" apply --server-side --dry-run=server --field-manager trow-chart-check \
      -f "$out" >"$W/chart-$name.out" 2>&1; then
      fail "chart ($name): the API server refused: $(grep -v 'serverside-applied' "$W/chart-$name.out" | head -n 5)"
      continue
    fi
    applied=$(grep -c 'serverside-applied (server dry run)' "$W/chart-$name.out" || true)
    info "$name: $rendered objects rendered ($kinds)"
    sed 's/^/    | /' "$W/chart-$name.out"
    if [[ $applied == "$rendered" ]]; then
      pass "chart ($name): all $applied objects accepted by kube-apiserver $KUBE_VERSION (server-side dry run)"
    else
      fail "chart ($name): $applied of $rendered objects accepted"
    fi
    if [[ $name == split-webhooks ]]; then
      local hook missing=()
      for hook in job.batch/trow-webhook-certs-pre job.batch/trow-webhook-certs serviceaccount/trow-webhook-certs \
        role.rbac.authorization.k8s.io/trow-webhook-certs clusterrole.rbac.authorization.k8s.io/trow-webhook-certs-trow; do
        grep -q "^$hook serverside-applied" "$W/chart-$name.out" || missing+=("$hook")
      done
      if ((${#missing[@]} == 0)); then
        pass "chart ($name): the hooks (pre- and post-install certificate Jobs, their RBAC) are among them"
      else
        fail "chart ($name): hooks not applied: ${missing[*]}"
      fi
    fi
  done
}
check_chart

# check_chart_install_order: helm install's sequence with the chart's own certificate hooks, for
# real (stored, not dry run) as release "seq" in namespace trow: the hook RBAC, then the
# pre-install Job's `trow webhook-certs` args run as the hook's ServiceAccount (the Secret must
# exist before any pod, or `helm install --wait` never ends), then the release's objects, then
# the post-install Job's args (caBundle), then the hook objects deleted (hook-succeeded) and the
# pre-upgrade phase run again (an upgrade or a reinstall keeps the certificate). No kubelet runs
# here: the Jobs' commands are run by this script with exactly the rendered args.
check_chart_install_order() {
  log "8b. the chart's certificate hooks in helm's install order, with their own RBAC"
  command -v helm >/dev/null && command -v kubectl >/dev/null || { fail "helm/kubectl missing"; return; }
  local kc=$W/chart-kubeconfig d=$W/chart-seq
  mkdir -p "$d"
  local render=(helm template seq "$REPO_ROOT/deploy/helm/trow" --namespace trow
    --set trow.validationWebhook.enabled=true --set trow.validationWebhook.config.default=Allow
    --set trow.mutationWebhook.enabled=true)
  HOME=$W "${render[@]}" --show-only templates/webhook-certs-job.yaml >"$d/hooks.yaml" 2>"$d/err" &&
    HOME=$W "${render[@]}" --no-hooks >"$d/release.yaml" 2>>"$d/err" ||
    { fail "helm template (seq): $(cat "$d/err")"; return; }
  # kubectl prints one JSON document per object: slurped into a List.
  kubectl --kubeconfig "$kc" create --dry-run=client -o json -f "$d/hooks.yaml" | jq -s '{items: .}' >"$d/hooks.json" ||
    { fail "hooks.yaml does not parse"; return; }
  jq '{apiVersion: "v1", kind: "List", items: [.items[] | select(.kind != "Job")]}' "$d/hooks.json" >"$d/rbac.json"
  local job_args
  job_args() { jq -r --arg hook "$1" '.items[] | select(.kind == "Job" and
    .metadata.annotations["helm.sh/hook"] == $hook) | .spec.template.spec.containers[0].args[]' "$d/hooks.json"; }
  local pre post
  mapfile -t pre < <(job_args pre-install,pre-upgrade)
  mapfile -t post < <(job_args post-install,post-upgrade)
  info "pre-install Job: trow ${pre[*]}"
  info "post-install Job: trow ${post[*]}"
  # hook_phase N ARGS...: the RBAC (weight -10), then the Job's command as its ServiceAccount.
  hook_phase() {
    local n=$1 code
    shift
    kubectl --kubeconfig "$kc" apply --server-side --field-manager helm -f "$d/rbac.json" >"$d/rbac-$n.out" 2>&1 ||
      { fail "phase $n: the hook RBAC: $(cat "$d/rbac-$n.out")"; return 1; }
    code=$(kapi POST /api/v1/namespaces/trow/serviceaccounts/seq-trow-webhook-certs/token \
      '{"apiVersion":"authentication.k8s.io/v1","kind":"TokenRequest","spec":{"expirationSeconds":600}}')
    [[ $code == 201 ]] || { fail "phase $n: TokenRequest: HTTP $code"; return 1; }
    jq -n --arg server "$KUBE" --arg ca "$P/ca.crt" --arg token "$(jq -r .status.token "$W/answer.json")" '{
      apiVersion: "v1", kind: "Config", clusters: [{name: "e2e", cluster: {server: $server, "certificate-authority": $ca}}],
      users: [{name: "hook", user: {token: $token}}],
      contexts: [{name: "e2e", context: {cluster: "e2e", user: "hook"}}], "current-context": "e2e"}' >"$d/hook-kubeconfig"
    KUBECONFIG=$d/hook-kubeconfig "$TROW_BIN" "$@" >"$d/job-$n.log" 2>&1 ||
      { fail "phase $n: trow $* as the hook's account: $(tail -n 3 "$d/job-$n.log")"; return 1; }
    sed 's/^/    | /' "$d/job-$n.log"
  }
  # hooks_succeeded N: helm deletes the hook objects once the phase succeeded.
  hooks_succeeded() {
    kubectl --kubeconfig "$kc" delete -f "$d/rbac.json" >"$d/delete-$1.out" 2>&1 ||
      { fail "phase $1: deleting the hook RBAC: $(cat "$d/delete-$1.out")"; return 1; }
  }
  local ca1 ca2 bundle ok=1
  hook_phase pre-install "${pre[@]}" || return
  if [[ $(kapi GET /api/v1/namespaces/trow/secrets/seq-trow-webhook-tls) == 200 ]]; then
    ca1=$(jq -r '.data["ca.crt"]' "$W/answer.json")
    pass "pre-install: Secret seq-trow-webhook-tls exists before any pod, made with the hook's RBAC only"
  else
    fail "pre-install: no Secret seq-trow-webhook-tls"; ok=0
  fi
  hooks_succeeded pre-install || return
  # A Deployment to scale once the chart's webhook is registered with nothing behind it (8c).
  local code
  code=$(kapi POST /apis/apps/v1/namespaces/demo/deployments "$(jq -cn '{apiVersion: "apps/v1", kind: "Deployment",
    metadata: {name: "scaled"}, spec: {replicas: 1, selector: {matchLabels: {app: "scaled"}},
    template: {metadata: {labels: {app: "scaled"}}, spec: {containers: [{name: "web", image: "docker.io/library/nginx:1.27"}]}}}}')")
  [[ $code == 201 ]] || { fail "Deployment demo/scaled: HTTP $code: $(cat "$W/answer.json")"; return; }
  kubectl --kubeconfig "$kc" apply --server-side --field-manager helm -f "$d/release.yaml" >"$d/release.out" 2>&1 ||
    { fail "the release's objects: $(grep -v serverside-applied "$d/release.out" | head -n 5)"; return; }
  info "release objects stored: $(grep -c serverside-applied "$d/release.out")"
  hook_phase post-install "${post[@]}" || return
  for kind in validatingwebhookconfigurations/seq-trow-validate mutatingwebhookconfigurations/seq-trow-mutate; do
    kapi GET "/apis/admissionregistration.k8s.io/v1/$kind" >/dev/null
    bundle=$(jq -r '.webhooks[0].clientConfig.caBundle' "$W/answer.json")
    if [[ -n $ca1 && $bundle == "$ca1" ]]; then
      pass "post-install: $kind caBundle = the Secret's ca.crt"
    else
      fail "post-install: $kind caBundle is not the Secret's CA"; ok=0
    fi
  done
  hooks_succeeded post-install || return
  check_webhook_down
  if kubectl --kubeconfig "$kc" get -n trow serviceaccount/seq-trow-webhook-certs \
    clusterrole/seq-trow-webhook-certs-trow >/dev/null 2>&1; then
    fail "hook RBAC left behind after a successful install"; ok=0
  fi
  hook_phase pre-upgrade "${pre[@]}" || return
  kapi GET /api/v1/namespaces/trow/secrets/seq-trow-webhook-tls >/dev/null
  ca2=$(jq -r '.data["ca.crt"]' "$W/answer.json")
  if [[ $ca2 == "$ca1" ]] && grep -q 'left as it is (--create-only)' "$d/job-pre-upgrade.log"; then
    pass "pre-upgrade (or a reinstall): the hook runs again and leaves the Secret as it is"
  else
    fail "pre-upgrade: the CA changed"; ok=0
  fi
  hooks_succeeded pre-upgrade
  # The upgrade applies the release again (helm 4: server-side apply) before its post-upgrade
  # hook: the caBundle, owned by the hook's field manager, must survive that window.
  kubectl --kubeconfig "$kc" apply --server-side --field-manager helm -f "$d/release.yaml" >"$d/upgrade.out" 2>&1 ||
    { fail "the upgrade's apply: $(grep -v serverside-applied "$d/upgrade.out" | head -n 5)"; return; }
  kapi GET /apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations/seq-trow-validate >/dev/null
  if [[ $(jq -r '.webhooks[0].clientConfig.caBundle' "$W/answer.json") == "$ca1" ]]; then
    pass "upgrade: re-applying the release keeps the caBundle until the post-upgrade hook"
  else
    fail "upgrade: re-applying the release dropped the caBundle (webhooks fail until the post-upgrade hook)"; ok=0
  fi
  # Leave nothing registered that could judge later requests.
  kubectl --kubeconfig "$kc" delete -f "$d/release.yaml" --wait=false >/dev/null 2>&1 || true
  kapi DELETE /apis/apps/v1/namespaces/demo/deployments/scaled >/dev/null
  kapi DELETE /api/v1/namespaces/trow/secrets/seq-trow-webhook-tls >/dev/null
  ((ok)) && info "install order: Secret before the pods, caBundle after them, no hook RBAC left"
}
# check_webhook_down (8c, inside 8b): the chart's validating webhook is now stored for real
# (failurePolicy Fail, caBundle set) and nothing serves its Service (no pods run here): to the API
# server, Trow is down. Its matchConditions must keep metadata-only updates (labels, a finalizer
# added and removed) and scaling away from it, while a change of what runs is still sent, and so
# refused. The image changes name images the first webhook (the live Trow above) allows.
check_webhook_down() {
  log "8c. the chart's validating webhook with Trow down: metadata and scale updates pass, image changes are refused"
  local code msg deadline=$(($(date +%s) + START_TIMEOUT)) tries=0
  local want='failed calling webhook "validate.trow.dev"'
  # The API server picks up the new configuration within a second or two: until refused.
  while :; do
    tries=$((tries + 1))
    code=$(kapi PATCH /api/v1/namespaces/demo/pods/web \
      '{"spec":{"containers":[{"name":"web","image":"docker.io/library/nginx:1.28"}]}}' \
      application/strategic-merge-patch+json)
    msg=$(jq -r '.message // empty' "$W/answer.json")
    [[ $code != 200 && $msg == *"$want"* ]] && break
    if [[ $code == 200 ]]; then
      fail "pod image change passed while the chart's webhook cannot answer (try $tries)"
      return
    fi
    (($(date +%s) < deadline)) || { fail "pod image change: HTTP $code: $msg"; return; }
    sleep 0.5
  done
  info "pod image change: HTTP $code: $msg"
  pass "a pod's image change is sent to the chart's webhook and refused while it cannot answer (Fail)"
  local what body ctype
  for what in label finalizer-added finalizer-removed; do
    case $what in
      label) body='{"metadata":{"labels":{"touched":"yes"}}}' ;;
      finalizer-added) body='{"metadata":{"finalizers":["example.com/hold"]}}' ;;
      finalizer-removed) body='{"metadata":{"finalizers":null}}' ;;
    esac
    code=$(kapi PATCH /api/v1/namespaces/demo/pods/web "$body" application/merge-patch+json)
    if [[ $code == 200 ]]; then
      pass "pod metadata update ($what): 200, never sent to the webhook"
    else
      fail "pod metadata update ($what): HTTP $code: $(jq -r '.message // empty' "$W/answer.json")"
    fi
  done
  code=$(kapi PATCH /apis/apps/v1/namespaces/demo/deployments/scaled '{"spec":{"replicas":3}}' application/merge-patch+json)
  if [[ $code == 200 && $(jq -r .spec.replicas "$W/answer.json") == 3 ]]; then
    pass "Deployment scaled to 3 (spec.replicas): 200, never sent to the webhook"
  else
    fail "Deployment scale: HTTP $code: $(jq -r '.message // empty' "$W/answer.json")"
  fi
  code=$(kapi PATCH /apis/apps/v1/namespaces/demo/deployments/scaled \
    '{"spec":{"template":{"spec":{"containers":[{"name":"web","image":"docker.io/library/nginx:1.28"}]}}}}' \
    application/strategic-merge-patch+json)
  msg=$(jq -r '.message // empty' "$W/answer.json")
  if [[ $code != 200 && $msg == *"$want"* ]]; then
    pass "Deployment pod template change: sent and refused (HTTP $code)"
  else
    fail "Deployment pod template change: HTTP $code: $msg"
  fi
}
check_chart_install_order

# --- what Trow saw -----------------------------------------------------------------------------
log "trow's log: $(grep -c . "$W/trow.log") lines, $(grep -ciE '\b(error|panic)' "$W/trow.log" || true) with error/panic"
grep -iE '\b(warn|error|panic)' "$W/trow.log" | head -n 10 | sed 's/^/    | /' || true

echo
if ((FAILED)); then
  log "FAILED: $FAILED check(s) failed ($(($(date +%s) - T0)) s)"
  exit 1
fi
log "all checks passed ($(($(date +%s) - T0)) s)"
