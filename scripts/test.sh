#!/usr/bin/env bash
# The whole test suite, on a fresh Debian 12 machine, as root:
#   1. installs the real clients and the reference registry the tests drive, if any is missing;
#   2. builds the workspace once (dev profile), including the `trow` binary the tests start;
#   3. runs every test with cargo-nextest (or `cargo test` if nextest is not installed).
# Exits non-zero if anything fails.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

log() { printf '==> %s\n' "$*" >&2; }
start=$(date +%s)

# --- 1. system packages -------------------------------------------------------------------
packages=(skopeo podman containerd docker-registry umoci jq curl)
missing=()
for cmd in skopeo podman containerd ctr docker-registry umoci jq curl; do
  command -v "$cmd" >/dev/null 2>&1 || missing+=("$cmd")
done
if ((${#missing[@]})); then
  log "missing commands: ${missing[*]}; installing ${packages[*]}"
  sudo=()
  if [[ $(id -u) -ne 0 ]]; then sudo=(sudo); fi
  export DEBIAN_FRONTEND=noninteractive
  "${sudo[@]}" apt-get update
  "${sudo[@]}" apt-get install -y "${packages[@]}"
fi

# --- 2. build --------------------------------------------------------------------------------
if ! command -v cargo >/dev/null 2>&1 && [[ -f "$HOME/.cargo/env" ]]; then
  # shellcheck disable=SC1091
  source "$HOME/.cargo/env"
fi
log "cargo build --workspace --all-targets"
cargo build --workspace --all-targets

# --- 3. test ---------------------------------------------------------------------------------
status=0
if cargo nextest --version >/dev/null 2>&1; then
  log "cargo nextest run --workspace"
  cargo nextest run --workspace --no-fail-fast || status=$?
else
  log "cargo-nextest not installed; cargo test --workspace"
  cargo test --workspace --no-fail-fast || status=$?
fi

log "test suite finished in $(($(date +%s) - start))s with status $status"
exit "$status"
