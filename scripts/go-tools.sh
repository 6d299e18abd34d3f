#!/usr/bin/env bash
# Installs the pinned Go tools the tests drive, from the Go module proxy, into a cache dir, each by
# `go install MODULE@VERSION`: the OCI distribution-spec conformance suite, oras, crane, grpcurl,
# and CNCF distribution 3 (`registry`, the peer scripts/bench.sh measures Trow against).
# (The conformance module is a `main` package since its rewrite; `go test -c` of it still builds
# but runs a deprecated shim, so it is built as the program it is.)
# Each binary lives under a path that names its version, so changing a pin below rebuilds that tool
# and nothing else; a tool already there at its pinned version is not rebuilt.
#
# Usage:
#   scripts/go-tools.sh          prints the bin dir (put it on PATH)
#   scripts/go-tools.sh --env    prints `export` lines: eval "$(scripts/go-tools.sh --env)"
#
# The cache dir is $TROW_GO_TOOLS_DIR, else ${XDG_CACHE_HOME:-$HOME/.cache}/trow-tests/go.
# Exits non-zero with a clear message if `go` is missing or any build fails: never skips silently.
set -euo pipefail

# --- pins ------------------------------------------------------------------------------------
# The conformance module has no tags: this pseudo-version is the newest the proxy serves.
CONFORMANCE_MOD=github.com/opencontainers/distribution-spec/conformance
CONFORMANCE_VER=v0.0.0-20260831232431-97274622c111
TOOLS=(
  "conformance $CONFORMANCE_MOD $CONFORMANCE_VER"
  "oras oras.land/oras/cmd/oras v1.3.6"
  "crane github.com/google/go-containerregistry/cmd/crane v0.22.1"
  "grpcurl github.com/fullstorydev/grpcurl/cmd/grpcurl v1.9.4"
  "registry github.com/distribution/distribution/v3/cmd/registry v3.1.1"
)

log() { printf '==> go-tools: %s\n' "$*" >&2; }
die() {
  printf 'go-tools: ERROR: %s\n' "$*" >&2
  exit 1
}

mode="dir"
case "${1:-}" in
  "") ;;
  --env) mode="env" ;;
  *) die "unknown argument '$1' (usage: $0 [--env])" ;;
esac

go=$(command -v go || true)
if [[ -z $go && -x /usr/local/go/bin/go ]]; then go=/usr/local/go/bin/go; fi
[[ -n $go ]] || die "'go' not found on PATH nor at /usr/local/go/bin/go: install Go (>= 1.24) to build the conformance suite, oras, crane, grpcurl and distribution 3"
# Never download another Go toolchain: use the one installed, or fail.
export GOTOOLCHAIN=local
# The builds read no VCS metadata; CI clones have none to stamp anyway.
export GOFLAGS="${GOFLAGS:-} -buildvcs=false"

cache=${TROW_GO_TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/trow-tests/go}
bin=$cache/bin
mkdir -p "$bin" "$cache/tools"

# Each build goes to a scratch dir renamed into place, so a failed or interrupted build never
# leaves a binary that looks installed.

# install_tool NAME PACKAGE VERSION: `go install PACKAGE@VERSION` into tools/NAME@VERSION/.
install_tool() {
  local name=$1 pkg=$2 ver=$3
  local dest=$cache/tools/$name@$ver
  if [[ ! -x $dest/$name ]]; then
    log "building $pkg@$ver"
    local tmp
    tmp=$(mktemp -d "$cache/tools/.build-$name.XXXXXX")
    if ! GOBIN=$tmp "$go" install "$pkg@$ver" >&2; then
      rm -rf "$tmp"
      die "go install $pkg@$ver failed"
    fi
    chmod 755 "$tmp"
    # Another run may have installed it meanwhile: then keep that one.
    if ! mv -T "$tmp" "$dest" 2>/dev/null; then
      rm -rf "$tmp"
      [[ -x $dest/$name ]] || die "could not install $name into $dest"
    fi
  fi
  ln -sfn "../tools/$name@$ver/$name" "$bin/$name"
}

for t in "${TOOLS[@]}"; do
  # shellcheck disable=SC2086
  install_tool $t
done

# A last check that each binary runs at all.
for name in oras crane grpcurl registry; do
  "$bin/$name" version >/dev/null 2>&1 || "$bin/$name" -version >/dev/null 2>&1 ||
    die "$bin/$name is installed but does not run"
done

case $mode in
  dir) printf '%s\n' "$bin" ;;
  env)
    # shellcheck disable=SC2016 # $PATH is for the eval, not for here
    printf 'export PATH=%q:"$PATH"\n' "$bin"
    printf 'export TROW_CONFORMANCE_BIN=%q\n' "$cache/tools/conformance@$CONFORMANCE_VER/conformance"
    ;;
esac
