#!/usr/bin/env bash
# Fuzzes the parsers of hostile input (docs/RELIABILITY.md, "Fuzzing") with cargo-fuzz/libFuzzer:
#   scripts/fuzz.sh [--build-only | --no-build] [SECONDS_PER_TARGET] [TARGET...]
#   1. installs cargo-fuzz $CARGO_FUZZ_VERSION (pinned below) from crates.io if it is missing;
#   2. builds every target in fuzz/ once (release, debug assertions on so an overflow panics,
#      coverage instrumentation, no sanitizer: the code is safe Rust) into fuzz/target;
#   3. runs each TARGET (default: all of fuzz/fuzz_targets/) for SECONDS_PER_TARGET (default 300,
#      the longer run; scripts/test.sh runs 15), starting from the hand-written seeds in
#      fuzz/seeds/<target>/ and the corpus grown by earlier runs in fuzz/corpus/<target>/
#      (not in git), and prints one line per target: executions (libFuzzer's
#      stat::number_of_executed_units) and the outcome.
# Exits non-zero if any target crashed (a panic, a failed assertion, a timeout of one input, an
# out-of-memory) or could not run. `--build-only` stops after step 2, `--no-build` skips steps 1
# and 2 and runs the binaries already built (no cargo, no network: scripts/test.sh runs the fuzz
# step that way, inside its loopback-only network namespace).
#
# Toolchain: `cargo +nightly` when a nightly toolchain is installed (what cargo-fuzz expects);
# otherwise the default (stable) toolchain, said loudly: without a sanitizer (`-s none`)
# cargo-fuzz 0.13.2 passes no `-Z` flag, so stable builds the same instrumented binaries
# (checked with stable 1.95; a sanitizer would need nightly).
#
# A crash leaves its input in fuzz/artifacts/<target>/crash-<sha1> (or timeout-, oom-, slow-unit-)
# and the panic in the printed log. To turn it into a regression test:
#   1. reproduce it: fuzz/target/<host triple>/release/<target> fuzz/artifacts/<target>/crash-...
#      (or `cargo +nightly fuzz run -O -a -s none <target> <file>`); `cargo fuzz fmt <target>
#      <file>` prints the input as the target sees it;
#   2. fix the parser, and add a unit test beside it with that input written inline, named after
#      what went wrong (see gateway/src/routes/uploads.rs for the style);
#   3. copy the input into fuzz/seeds/<target>/ so every later run starts from it;
#   4. note it in docs/RELIABILITY.md's Fuzzing table.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

CARGO_FUZZ_VERSION=0.13.2

log() { printf '==> fuzz: %s\n' "$*" >&2; }

build=1
run=1
case ${1:-} in
  --build-only) run=0; shift ;;
  --no-build) build=0; shift ;;
esac
seconds=${1:-300}
shift || true
if ! [[ $seconds =~ ^[0-9]+$ ]]; then
  echo "usage: $0 [--build-only | --no-build] [SECONDS_PER_TARGET] [TARGET...]" >&2
  exit 2
fi
if (($#)); then
  targets=("$@")
else
  targets=()
  for f in fuzz/fuzz_targets/*.rs; do targets+=("$(basename "$f" .rs)"); done
fi
for t in "${targets[@]}"; do
  [[ -f fuzz/fuzz_targets/$t.rs ]] || { log "no such target: $t (see fuzz/fuzz_targets/)"; exit 2; }
done

if ! command -v cargo >/dev/null 2>&1 && [[ -f "$HOME/.cargo/env" ]]; then
  # shellcheck disable=SC1091
  source "$HOME/.cargo/env"
fi
if ((build)); then
  if cargo +nightly --version >/dev/null 2>&1; then
    cargo=(cargo +nightly)
  else
    log "WARNING: no nightly toolchain (rustup toolchain install nightly): building the fuzz"
    log "WARNING: targets with $(cargo --version) instead (no sanitizer, so no -Z flag needed)"
    cargo=(cargo)
  fi
  if [[ $(cargo fuzz --version 2>/dev/null) != "cargo-fuzz $CARGO_FUZZ_VERSION" ]]; then
    log "installing cargo-fuzz $CARGO_FUZZ_VERSION"
    cargo install cargo-fuzz --version "$CARGO_FUZZ_VERSION" --locked
  fi
  log "building ${#targets[@]} targets ($("${cargo[@]}" --version))"
  build_start=$(date +%s)
  # All targets at once (they share every dependency): -O release, -a debug assertions
  # (overflow checks), -s none coverage instrumentation only. Versions: fuzz/Cargo.lock.
  (cd fuzz && "${cargo[@]}" fuzz build -O -a -s none)
  log "built in $(($(date +%s) - build_start))s"
fi
((run)) || exit 0
if ((seconds == 0)); then
  log "0 seconds per target: nothing to run" # (libFuzzer would read 0 as no limit)
  exit 0
fi

failed=0
results=()
for t in "${targets[@]}"; do
  # cargo-fuzz builds into fuzz/target/<host triple>/release (found without rustc: as root in
  # scripts/test.sh's namespace, rustup's PATH may be gone).
  bin=$(compgen -G "fuzz/target/*/release/$t" | head -n1 || true)
  if [[ -z $bin || ! -x $bin ]]; then
    log "$t: not built (fuzz/target/*/release/$t); run $0 --build-only first"
    results+=("$t: NOT BUILT")
    failed=1
    continue
  fi
  mkdir -p "fuzz/corpus/$t" "fuzz/artifacts/$t"
  out=$(mktemp)
  status=0
  # -timeout: one input taking 10 s is a hang; the outer timeout guards the whole run.
  timeout --kill-after=10 $((seconds + 120)) "$bin" -max_total_time="$seconds" \
    -print_final_stats=1 -timeout=10 -rss_limit_mb=2048 \
    -artifact_prefix="fuzz/artifacts/$t/" "fuzz/corpus/$t" "fuzz/seeds/$t" >"$out" 2>&1 ||
    status=$?
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$out" | tail -n1)
  if ((status == 0)); then
    results+=("$t: ${execs:-?} executions in ${seconds}s: ok")
  else
    artifact=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$out" | tail -n1)
    results+=("$t: ${execs:-?} executions: FAILED (exit $status)${artifact:+, input in $artifact}")
    failed=1
    log "$t failed; the end of its log:"
    grep -v '^#[0-9]' "$out" | tail -n 40 >&2
  fi
  log "${results[-1]}"
  rm -f "$out"
done

printf '%s\n' "fuzzing, ${seconds}s per target:" "${results[@]/#/  }"
exit "$failed"
