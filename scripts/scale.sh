#!/usr/bin/env bash
# How coffer's cost grows with data size and file count: median wall time and peak memory
# of backup and restore at three file sizes and three tree sizes (ROUNDS runs each).
#   ./scripts/scale.sh            # 256 MiB, 1 GiB, 4 GiB files; 5k, 20k, 50k-file trees
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-3}
DIR=${BENCH_DIR:-$PWD/target/bench-data}/scale
cargo build --release --quiet
coffer="$PWD/target/release/coffer"
mkdir -p "$DIR" && cd "$DIR"
[ -f ops.key ] || "$coffer" keygen -o ops.key --bits 2048 >/dev/null 2>&1
[ -f escrow.key ] || "$coffer" keygen -o escrow.key --bits 2048 >/dev/null 2>&1

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
measure() {  # measure LABEL BYTES SOURCE
  local label=$1 bytes=$2 src=$3 b=() r=() bm=() rm_=()
  for _ in $(seq 1 "$ROUNDS"); do
    # Through a pipe: GNU tar writing to /dev/null itself skips reading the files.
    rm -rf a.coffer out; tar cf - "$src" | cat > /dev/null; sync
    /usr/bin/time -f '%e %M' -o t.txt "$coffer" backup "$src" -o a.coffer -r ops.key.pub -r escrow.key.pub -q
    read -r s m < t.txt; b+=("$s"); bm+=("$m")
    sync
    /usr/bin/time -f '%e %M' -o t.txt "$coffer" restore a.coffer -i ops.key --to out -q
    read -r s m < t.txt; r+=("$s"); rm_+=("$m")
  done
  local bs rs
  bs=$(printf '%s\n' "${b[@]}" | median); rs=$(printf '%s\n' "${r[@]}" | median)
  printf '%-22s %10d %9.2f %7.2f %9.1f %9.2f %7.2f %9.1f\n' "$label" "$bytes" "$bs" \
    "$(awk -v b="$bytes" -v s="$bs" 'BEGIN {print b / s / 1e9}')" "$(printf '%s\n' "${bm[@]}" | median | awk '{print $1/1024}')" \
    "$rs" "$(awk -v b="$bytes" -v s="$rs" 'BEGIN {print b / s / 1e9}')" "$(printf '%s\n' "${rm_[@]}" | median | awk '{print $1/1024}')"
  rm -rf a.coffer out
}
printf '%-22s %10s %9s %7s %9s %9s %7s %9s\n' case bytes "backup s" GB/s "peak MiB" "restore s" GB/s "peak MiB"
for mib in 256 1024 4096; do
  [ -f "file-$mib.bin" ] || head -c $((mib << 20)) /dev/urandom > "file-$mib.bin"
  measure "file ${mib} MiB" $((mib << 20)) "file-$mib.bin"
  rm -f "file-$mib.bin"
done
for n in 5000 20000 50000; do
  rm -rf tree
  python3 - "$n" <<'PY'
import os, random, sys
n = int(sys.argv[1]); rng = random.Random(42)
for i in range(n):
    d = f"tree/d{i // 500:03d}"
    os.makedirs(d, exist_ok=True)
    with open(f"{d}/f{i:06d}.dat", "wb") as f:
        f.write(rng.randbytes(rng.randint(1, 56 * 1024)))
PY
  measure "tree ${n} files" "$(du -sb tree | cut -f1)" tree
done
rm -rf tree
