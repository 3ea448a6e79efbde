#!/usr/bin/env bash
# Build coffer's libFuzzer targets (fuzz/) and run each for a bounded time.
#
#   ./scripts/fuzz.sh                          # header, index, open_and_list: 60 s each
#   FUZZ_SECONDS=600 ./scripts/fuzz.sh index   # one target, longer
#
# The targets are built by cargo itself with the flags cargo-fuzz 0.13 would pass
# (sanitizer coverage, trace-compares, stack depth, AddressSanitizer, `--cfg fuzzing`), so no
# cargo-fuzz install is needed: on a fresh CI machine that install alone took minutes. One
# deliberate difference from `cargo fuzz build -O`: cargo's default codegen units instead of
# one per crate (cargo-fuzz forces 1, which makes the build minutes slower for a run of
# seconds). `-Zsanitizer` is nightly-only; stable rustc accepts it with RUSTC_BOOTSTRAP=1,
# which is how cargo-fuzz users on stable build too.
# Seeds come from fuzz/corpus/<target>/ (read only); what the run finds goes to a scratch
# folder, so the committed corpus stays small. A crash, panic, timeout or an allocation over
# the limit fails the script and leaves the input in fuzz/artifacts/<target>/; replay it by
# running the printed binary with that file as its only argument, then add it to
# fuzz/corpus/<target>/ as a regression seed once fixed.
#
# Environment:
#   FUZZ_SECONDS      seconds per target (default 60)
#   FUZZ_TARGET_DIR   cargo target folder of the fuzz build (default fuzz/target); CI keeps it
#                     outside the clone so that later runs on the same machine rebuild little
#   FUZZ_MALLOC_MB    largest single allocation allowed (default 256): a length field that
#                     claims more than the input holds must be refused before allocating
#   FUZZ_CARGO_FLAGS  extra flags for the cargo build (e.g. --timings)
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_EACH=${FUZZ_SECONDS:-60}
MALLOC_MB=${FUZZ_MALLOC_MB:-256}
TARGET_DIR=${FUZZ_TARGET_DIR:-$PWD/fuzz/target}
if [ $# -gt 0 ]; then targets=("$@"); else targets=(header index open_and_list); fi

# An explicit --target keeps RUSTFLAGS away from build scripts and proc macros, which must
# not be instrumented.
triple=$(rustc -vV | sed -n 's/^host: //p')
flags=(
  -Cpasses=sancov-module
  -Cllvm-args=-sanitizer-coverage-level=4
  -Cllvm-args=-sanitizer-coverage-inline-8bit-counters
  -Cllvm-args=-sanitizer-coverage-pc-table
  -Cllvm-args=-sanitizer-coverage-trace-compares
  -Cllvm-args=-sanitizer-coverage-stack-depth
  -Cllvm-args=-simplifycfg-branch-fold-threshold=0
  -Zsanitizer=address
  --cfg fuzzing
)
rustc --version | grep -q nightly || export RUSTC_BOOTSTRAP=1
# The cc crate instruments C code with ASan too when rustc does (CARGO_CFG_SANITIZE). The C in
# this build (zstd, libFuzzer itself) is not reachable from a fuzzed input: zstd runs only on
# blocks whose HMAC tag verified. Instrumented, zstd alone took over 400 s to compile here
# (about 90 s plain).
export CFLAGS="${CFLAGS:+$CFLAGS }-fno-sanitize=address"
export CXXFLAGS="${CXXFLAGS:+$CXXFLAGS }-fno-sanitize=address"
export ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_odr_violation=0"

start=$(date +%s)
bin_args=()
for t in "${targets[@]}"; do bin_args+=(--bin "$t"); done
RUSTFLAGS="${flags[*]}" cargo build --quiet ${FUZZ_CARGO_FLAGS:-} --manifest-path fuzz/Cargo.toml --release \
  --target "$triple" --target-dir "$TARGET_DIR" "${bin_args[@]}"
echo "fuzz build: $(($(date +%s) - start)) s"

cd fuzz
# In memory when /dev/shm exists: open_and_list writes every input there as a file.
scratch=$(mktemp -d -p /dev/shm 2>/dev/null || mktemp -d)
trap 'rm -rf "$scratch"' EXIT
status=0
for t in "${targets[@]}"; do
  bin="$TARGET_DIR/$triple/release/$t"
  mkdir -p "$scratch/$t" "artifacts/$t"
  echo "== fuzz $t for ${SECONDS_EACH}s (seeds: fuzz/corpus/$t)"
  if ! COFFER_FUZZ_SCRATCH="$scratch" "$bin" "$scratch/$t" "corpus/$t" \
      -max_total_time="$SECONDS_EACH" -timeout=10 -rss_limit_mb=1024 \
      -malloc_limit_mb="$MALLOC_MB" -max_len=65536 -print_final_stats=1 \
      -artifact_prefix="artifacts/$t/" >"$scratch/$t.log" 2>&1; then
    status=1
    tail -n 60 "$scratch/$t.log"
    echo "FUZZ FAILURE in $t; input saved under fuzz/artifacts/$t/ (replay: $bin <file>):"
    ls -1 "artifacts/$t/"
  else
    grep -E "^(stat::number_of_executed_units|stat::peak_rss_mb)|^Done " "$scratch/$t.log" || true
    echo "corpus grew to $(find "$scratch/$t" -type f | wc -l) new inputs (discarded)"
  fi
done
exit $status
