#!/usr/bin/env bash
# Assembles Trow's container image without a container engine or a base image: an OCI image
# layout written with umoci, optionally pushed with skopeo. The image holds one `trow` binary
# (every service runs from it, so one image serves every workload), the shared libraries it
# links and their loader, Mozilla's CA certificates as Debian ships them (never the build host's
# own additions; the Kubernetes client's platform verifier reads this file, while proxying
# upstream registries uses the roots built into trow plus a registry's `ca_file`),
# /etc/passwd and /etc/group naming user trow 333333:333333 (the original Trow's uid), an
# nsswitch.conf, an empty /tmp and /var/lib/trow owned by trow. deploy/Containerfile builds the
# same image with an engine: it runs this script with --rootfs and copies the result onto scratch.
#
# Usage:
#   scripts/build-image.sh [--bin PATH] [--out DIR] [--tag TAG] [--strip] [--source URL]
#                          [--push docker://HOST/REPO:TAG [-- SKOPEO_COPY_FLAGS...]]
#   scripts/build-image.sh --rootfs DIR [--bin PATH] [--strip]
#
#   --bin PATH     the trow binary (default: target/release/trow, under $CARGO_TARGET_DIR if
#                  set; built with `cargo build --release --bin trow` when missing)
#   --out DIR      the OCI layout to write (default: target/image); an existing layout keeps its
#                  other tags, TAG is replaced
#   --tag TAG      the tag (default: the workspace version in Cargo.toml)
#   --strip        strip the binary's symbols (1.5 MiB less, but backtraces lose function names)
#   --source URL   the org.opencontainers.image.source label (an https:// URL; default: the git
#                  remote `origin` when it is one, with any user:password@ removed)
#   --push REF     then `skopeo copy oci:DIR:TAG REF`; arguments after `--` go to skopeo copy,
#                  e.g. -- --dest-tls-verify=false --dest-authfile auth.json (not --dest-creds:
#                  a password on the command line shows in ps and the shell's history)
#   --rootfs DIR   only lay out the root filesystem in DIR (must not exist) and stop
#
# Needs root (the files are owned by 0 and 333333 in the layer), ldd, Debian's ca-certificates,
# and umoci (and skopeo to push). The binary must be for this machine's architecture (ldd
# resolves its libraries here). Reproducible: file times, the config's and the history's dates are SOURCE_DATE_EPOCH
# (default: the last commit's time), so the same binary gives the same digest.
# Prints the image's manifest digest, its compressed size and its unpacked size.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
target=${CARGO_TARGET_DIR:-$root/target}

die() {
  printf 'build-image.sh: %s\n' "$*" >&2
  exit 1
}
log() { printf '==> %s\n' "$*" >&2; }

bin=
out=$target/image
tag=
strip=0
push=
rootfs_only=
source=
skopeo_flags=()
while (($#)); do
  case $1 in
  --bin) bin=${2:?--bin needs a path}; shift 2 ;;
  --out) out=${2:?--out needs a directory}; shift 2 ;;
  --tag) tag=${2:?--tag needs a tag}; shift 2 ;;
  --strip) strip=1; shift ;;
  --source) source=${2:?--source needs a URL}; shift 2 ;;
  --push) push=${2:?--push needs a reference, e.g. docker://host/trow:0.1.0}; shift 2 ;;
  --rootfs) rootfs_only=${2:?--rootfs needs a directory}; shift 2 ;;
  --) shift; skopeo_flags=("$@"); break ;;
  -h | --help) sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"; exit 0 ;;
  *) die "unknown argument: $1 (see --help)" ;;
  esac
done

[[ $(id -u) -eq 0 ]] || die "run as root: the layer's files belong to root and to uid 333333"

# --- the binary ------------------------------------------------------------------------------
if [[ -z $bin ]]; then
  bin=$target/release/trow
  if [[ ! -x $bin ]]; then
    log "cargo build --release --bin trow"
    (cd "$root" && cargo build --release --bin trow)
  fi
fi
[[ -x $bin ]] || die "$bin is not an executable"

# The image's architecture (Go's names, as the OCI config wants them) from `uname -m` or an ELF
# e_machine.
case $(uname -m) in
x86_64) arch=amd64 ;;
aarch64) arch=arm64 ;;
armv7l | armv6l) arch=arm ;;
i?86) arch=386 ;;
riscv64) arch=riscv64 ;;
*) arch=$(uname -m) ;;
esac
# A binary for another architecture: ldd cannot resolve it ("not a dynamic executable"), so the
# image would lack its loader and libraries and be labelled with this host's architecture.
[[ $(head -c4 "$bin" | od -An -tx1 | tr -d ' \n') == 7f454c46 ]] || die "$bin is not an ELF binary"
case $(od -An -tx1 -j18 -N2 "$bin" | tr -d ' \n') in
3e00) bin_arch=amd64 ;;
b700) bin_arch=arm64 ;;
2800) bin_arch=arm ;;
0300) bin_arch=386 ;;
f300) bin_arch=riscv64 ;;
*) bin_arch="unknown (e_machine $(od -An -tx1 -j18 -N2 "$bin" | tr -d ' \n'))" ;;
esac
[[ $bin_arch == "$arch" ]] ||
  die "$bin is built for $bin_arch, this machine is $arch: build the image on a $bin_arch machine"

# The source label goes into a pushed image: an https URL only, never with credentials (CI clones
# with https://token@host/...).
if [[ -z $source ]]; then
  source=$(git -C "$root" config --get remote.origin.url 2>/dev/null || true)
  source=$(sed -E 's#^(https://)[^/@]*@#\1#' <<<"$source")
  [[ $source == https://* ]] || source=
fi
if [[ -n $source ]]; then
  [[ $source =~ ^https://[^/@[:space:]]+(/[^@[:space:]]*)?$ ]] ||
    die "--source $source: want an https:// URL without user or password"
fi

if [[ -z $tag ]]; then
  tag=$(awk '/^\[workspace.package\]/ { p = 1; next } /^\[/ { p = 0 }
    p && $1 == "version" { gsub(/"/, "", $3); print $3; exit }' "$root/Cargo.toml")
  [[ -n $tag ]] || die "no version in $root/Cargo.toml [workspace.package]; pass --tag"
fi

if [[ -z ${SOURCE_DATE_EPOCH:-} ]]; then
  SOURCE_DATE_EPOCH=$(git -C "$root" log -1 --format=%ct 2>/dev/null || echo 0)
fi
created=$(date -u -d "@$SOURCE_DATE_EPOCH" +%Y-%m-%dT%H:%M:%SZ)

# --- the root filesystem ---------------------------------------------------------------------
# Lays the image's files out in $1, owned and dated as they will be in the layer.
stage() {
  local rootfs=$1 ldd_out line lib libs=()
  install -D -m 0755 "$bin" "$rootfs/usr/local/bin/trow"
  if ((strip)); then
    strip "$rootfs/usr/local/bin/trow"
  fi

  # Every library ldd resolves, at the path it resolved (the loader at the exact path the binary
  # names as its interpreter), as regular files. glibc 2.34 and later resolve names (files, dns)
  # without loading NSS modules, so the libraries the binary links are all it needs.
  if ldd_out=$(ldd "$bin" 2>&1); then
    while read -r line; do
      case $line in
      *"not found"*) die "$bin: a library is missing: $line" ;;
      *"=> /"*) lib=${line#*=> }; libs+=("${lib%% (*}") ;;
      /*) libs+=("${line%% (*}") ;;
      esac
    done <<<"$ldd_out"
  elif [[ $ldd_out != *"not a dynamic executable"* && $ldd_out != *"statically linked"* ]]; then
    die "ldd $bin failed: $ldd_out"
  fi
  for lib in "${libs[@]}"; do
    install -D -m 0755 "$(readlink -f "$lib")" "$rootfs$lib"
  done

  # Mozilla's set, in name order, as update-ca-certificates would concatenate it without local
  # additions: /etc/ssl/certs on the build host also holds its own CAs (a TLS-intercepting egress
  # proxy's, say), which the image must not trust, and which would make its digest host-bound.
  local ca=/etc/ssl/certs/ca-certificates.crt mozilla=/usr/share/ca-certificates/mozilla crts=()
  shopt -s nullglob
  crts=("$mozilla"/*.crt)
  shopt -u nullglob
  ((${#crts[@]})) || die "$mozilla holds no certificates (apt-get install ca-certificates)"
  mkdir -p "$rootfs${ca%/*}"
  printf '%s\0' "${crts[@]}" | LC_ALL=C sort -z | xargs -0 cat >"$rootfs$ca"
  chmod 0644 "$rootfs$ca"

  printf '%s\n' 'root:x:0:0:root:/root:/usr/sbin/nologin' \
    'trow:x:333333:333333:trow:/var/lib/trow:/usr/sbin/nologin' >"$rootfs/etc/passwd"
  printf '%s\n' 'root:x:0:' 'trow:x:333333:' >"$rootfs/etc/group"
  printf '%s\n' 'passwd: files' 'group: files' 'hosts: files dns' >"$rootfs/etc/nsswitch.conf"
  chmod 0644 "$rootfs/etc/passwd" "$rootfs/etc/group" "$rootfs/etc/nsswitch.conf"
  install -d -m 1777 "$rootfs/tmp"
  install -d -m 0755 "$rootfs/var/lib/trow"

  find "$rootfs" -type d ! -path "$rootfs/tmp" -exec chmod 0755 {} +
  chown -R 0:0 "$rootfs"
  chown 333333:333333 "$rootfs/var/lib/trow"
  find "$rootfs" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
  unpacked=$(du -sb "$rootfs" | cut -f1)
}

if [[ -n $rootfs_only ]]; then
  [[ ! -e $rootfs_only ]] || die "$rootfs_only exists"
  mkdir -p "$rootfs_only"
  stage "$rootfs_only"
  log "root filesystem in $rootfs_only ($unpacked bytes)"
  exit 0
fi

# --- the image -------------------------------------------------------------------------------
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
command -v umoci >/dev/null || die "umoci missing (apt-get install umoci)"
mkdir -p "$(dirname "$out")"
if [[ ! -e $out/oci-layout ]]; then
  [[ ! -e $out || -z $(ls -A "$out") ]] || die "$out exists and is not an OCI layout"
  umoci init --layout "$out"
fi
umoci rm --image "$out:$tag" 2>/dev/null || true
umoci new --image "$out:$tag"
# One layer: the empty image unpacked, the files laid out in its bundle, repacked.
umoci unpack --image "$out:$tag" "$work/bundle"
stage "$work/bundle/rootfs"
umoci repack --image "$out:$tag" --history.created "$created" \
  --history.created_by "scripts/build-image.sh" --history.comment "trow, its libraries, /etc" \
  "$work/bundle"

revision=$(git -C "$root" rev-parse HEAD 2>/dev/null || true)
labels=(
  --config.label "org.opencontainers.image.title=trow"
  --config.label "org.opencontainers.image.description=Image management and caching for Kubernetes"
  --config.label "org.opencontainers.image.licenses=Apache-2.0"
  --config.label "org.opencontainers.image.version=$tag"
)
# Always both, as deploy/Containerfile's LABEL does (revision "unknown", source empty when not
# known), so both ways give the same label set.
labels+=(--config.label "org.opencontainers.image.revision=${revision:-unknown}")
labels+=(--config.label "org.opencontainers.image.source=$source")
umoci config --image "$out:$tag" --no-history --created "$created" \
  --os linux --architecture "$arch" \
  --config.user 333333:333333 \
  --config.entrypoint /usr/local/bin/trow \
  --config.env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
  --config.env TROW_DATA_DIR=/var/lib/trow \
  --config.exposedports 8000/tcp \
  --config.workingdir / \
  "${labels[@]}"
umoci gc --layout "$out"

# --- what was made ---------------------------------------------------------------------------
index=$(<"$out/index.json")
digest=$(jq -r --arg t "$tag" \
  '.manifests[] | select(.annotations["org.opencontainers.image.ref.name"] == $t) | .digest' \
  <<<"$index")
manifest=$out/blobs/sha256/${digest#sha256:}
compressed=$(jq '[.layers[].size] | add' "$manifest")
log "image $out:$tag"
echo "digest: $digest"
echo "compressed: $compressed bytes ($((compressed / 1024)) KiB, layers)"
echo "unpacked: $unpacked bytes ($((unpacked / 1024)) KiB, root filesystem)"

if [[ -n $push ]]; then
  command -v skopeo >/dev/null || die "skopeo missing (apt-get install skopeo)"
  log "skopeo copy oci:$out:$tag $push"
  skopeo copy --digestfile "$work/pushed" "${skopeo_flags[@]}" "oci:$out:$tag" "$push"
  echo "pushed: $push@$(<"$work/pushed")"
fi
