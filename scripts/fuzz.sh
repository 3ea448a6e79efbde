#!/usr/bin/env bash
# Build coffer's cargo-fuzz targets (fuzz/) and run each for a bounded time.
#
#   ./scripts/fuzz.sh                          # header, index, open_and_list: 60 s each
#   FUZZ_SECONDS=600 ./scripts/fuzz.sh index   # one target, longer
#
# Works on the stable toolchain: cargo-fuzz passes nightly-only flags (-Zsanitizer=address,
# sanitizer coverage), which stable rustc accepts with RUSTC_BOOTSTRAP=1, as cargo-fuzz users
# on stable do. Seeds come from fuzz/corpus/<target>/ (read only); what the run finds goes
# to a scratch folder, so the committed corpus stays small. A crash, panic, timeout or an
# allocation over the limit fails the script and leaves the input in fuzz/artifacts/<target>/;
# replay it with `cargo fuzz run -O <target> <file>` (in fuzz/, with RUSTC_BOOTSTRAP=1),
# then add it to fuzz/corpus/<target>/ as a regression seed once fixed.
#
# Environment:
#   FUZZ_SECONDS      seconds per target (default 60)
#   FUZZ_TARGET_DIR   cargo target folder of the fuzz build (default fuzz/target); CI keeps it
#                     outside the clone so that later runs on the same machine rebuild little
#   FUZZ_MALLOC_MB    largest single allocation allowed (default 256): a length field that
#                     claims more than the input holds must be refused before allocating
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_EACH=${FUZZ_SECONDS:-60}
MALLOC_MB=${FUZZ_MALLOC_MB:-256}
TARGET_DIR=${FUZZ_TARGET_DIR:-$PWD/fuzz/target}
CARGO_FUZZ_VERSION=0.13.2
if [ $# -gt 0 ]; then targets=("$@"); else targets=(header index open_and_list); fi

if ! cargo fuzz --version 2>/dev/null | grep -q "$CARGO_FUZZ_VERSION"; then
  echo "installing cargo-fuzz $CARGO_FUZZ_VERSION"
  cargo install cargo-fuzz --version "$CARGO_FUZZ_VERSION" --locked --quiet
fi
if ! rustc --version | grep -q nightly; then
  export RUSTC_BOOTSTRAP=1
fi

cd fuzz
start=$(date +%s)
for t in "${targets[@]}"; do
  cargo fuzz build -O --target-dir "$TARGET_DIR" "$t"
done
echo "fuzz build: $(($(date +%s) - start)) s"

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
status=0
for t in "${targets[@]}"; do
  mkdir -p "$scratch/$t" "artifacts/$t"
  echo "== fuzz $t for ${SECONDS_EACH}s (seeds: fuzz/corpus/$t)"
  if ! cargo fuzz run -O --target-dir "$TARGET_DIR" "$t" "$scratch/$t" "corpus/$t" -- \
      -max_total_time="$SECONDS_EACH" -timeout=10 -rss_limit_mb=1024 \
      -malloc_limit_mb="$MALLOC_MB" -max_len=65536 -print_final_stats=1 \
      -artifact_prefix="artifacts/$t/" >"$scratch/$t.log" 2>&1; then
    status=1
    tail -n 60 "$scratch/$t.log"
    echo "FUZZ FAILURE in $t; input saved under fuzz/artifacts/$t/:"
    ls -1 "artifacts/$t/"
  else
    grep -E "^(stat::number_of_executed_units|stat::peak_rss_mb)|^Done " "$scratch/$t.log" || true
    echo "corpus grew to $(find "$scratch/$t" -type f | wc -l) new inputs (discarded)"
  fi
done
exit $status
