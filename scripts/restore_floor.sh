#!/usr/bin/env bash
# Tree restore against the file system's own floor, side by side in one run: coffer's restore
# of the 50,000-file tree, `age -d | tar x` of the same tree, and examples/create_floor
# (the same files created with restore's system calls, from memory, with no decryption and no
# authentication) on one thread and on two. Each run writes into a folder never used before;
# the folders are deleted only at the end, so no run pays for inodes freed just before it
# (ext4 skips recently deleted inodes, which made runs after an `rm -rf` slower).
#   BENCH_DIR=/work/bench/data ./scripts/restore_floor.sh   # after scripts/bench.sh made the data
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-3}
DIR=${BENCH_DIR:-$PWD/target/bench-data}
cargo build --release --quiet --example create_floor
coffer="$PWD/target/release/coffer"
floor="$PWD/target/release/examples/create_floor"
cd "$DIR"
for f in tree t.coffer t.age ops.key age1.txt; do
  [ -e "$f" ] || { echo "missing $DIR/$f: run scripts/bench.sh first" >&2; exit 2; }
done
bytes=$(du -sb tree | cut -f1)
scratch="$DIR/floor-runs"
rm -rf "$scratch"; mkdir -p "$scratch"; sync
declare -A times
time_it() {  # time_it LABEL COMMAND...
  local label=$1; shift
  local s e
  s=$(date +%s.%N); "$@" >/dev/null; e=$(date +%s.%N)
  times[$label]+="$(awk -v s="$s" -v e="$e" 'BEGIN {printf "%.2f", e - s}') "
  sync
}
for r in $(seq 1 "$ROUNDS"); do
  cat t.coffer t.age > /dev/null; tar cf - tree | cat > /dev/null
  time_it create-floor-2-threads "$floor" tree "$scratch/floor2-$r" 2
  time_it coffer-restore "$coffer" restore t.coffer -i ops.key --to "$scratch/coffer-$r" -q
  time_it create-floor-1-thread "$floor" tree "$scratch/floor1-$r" 1
  mkdir "$scratch/tar-$r"
  time_it age-tar sh -c "age -d -i age1.txt t.age | tar xf - -C '$scratch/tar-$r'"
done
printf '%-24s %9s %7s  %s\n' case "median s" GB/s "runs (s)"
for label in create-floor-2-threads create-floor-1-thread coffer-restore age-tar; do
  m=$(printf '%s\n' ${times[$label]} | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
  printf '%-24s %9.2f %7.2f  %s\n' "$label" "$m" "$(awk -v b="$bytes" -v s="$m" 'BEGIN {print b / s / 1e9}')" "${times[$label]}"
done
rm -rf "$scratch"
