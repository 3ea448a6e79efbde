#!/usr/bin/env bash
# File-count scale (issue 15): a tree of N small files (0-200 bytes, 1,000 per folder),
# backed up, listed (text and --json), restored whole and one file selectively. Prints the
# median wall time and peak memory (ROUNDS runs), the archive's size and its index bytes per
# entry. With OLD=/path/to/an/older/coffer both binaries run in the same rounds, alternating.
#   ./scripts/files.sh                        # 1,000,000 files
#   N=10000000 BENCH_DIR=/mnt/big ./scripts/files.sh
# COFFER_BIN=/path: measure that binary (a copy, so a build during the run cannot swap it).
# The selective restore's bytes read (header, index chunks, blocks) are printed against the
# archive's size from its --json summary.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-1000000}
ROUNDS=${ROUNDS:-3}
DIR=${BENCH_DIR:-$PWD/target/bench-data}/files
if [ -n "${COFFER_BIN:-}" ]; then
  new="$COFFER_BIN"
else
  cargo build --release --quiet
  new="$PWD/target/release/coffer"
fi
mkdir -p "$DIR" && cd "$DIR"
[ -f ops.key ] || "$new" keygen -o ops.key --bits 2048 >/dev/null 2>&1
if [ ! -f tree.done ] || [ "$(cat tree.done)" != "$N" ]; then
  echo "# making $N files"
  rm -rf tree
  python3 - "$N" <<'PY'
import os, random, sys
n = int(sys.argv[1]); rng = random.Random(7)
for i in range(n):
    d = f"tree/d{i // 1000:05d}"
    if i % 1000 == 0:
        os.makedirs(d, exist_ok=True)
    with open(f"{d}/file-{i:08d}.txt", "wb") as f:
        f.write(rng.randbytes(rng.randint(0, 200)))
PY
  echo "$N" > tree.done
fi
one="tree/d$(printf '%05d' $((N / 2000)))/file-$(printf '%08d' $((N / 2)))".txt

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
# index_len from the trailer (v1: last 36 bytes, v2: last 44; both at offset 8).
index_len() {
  python3 - "$1" <<'PY'
import struct, sys
b = open(sys.argv[1], "rb").read()
t = b[-44:] if b[-12:-4] == b"\x89CFEND2\n" else b[-36:]
print(struct.unpack("<Q", t[8:16])[0])
PY
}
run() {  # run LABEL CMD... -> "seconds peakKiB"
  /usr/bin/time -f '%e %M' -o t.txt "$@" > /dev/null
  cat t.txt
}
bins=("$new")
[ -n "${OLD:-}" ] && bins=("$OLD" "$new")
declare -A res
for r in $(seq 1 "$ROUNDS"); do
  for b in "${bins[@]}"; do
    tag=$([ "$b" = "$new" ] && echo new || echo old)
    rm -rf "a-$tag.coffer" out
    sync
    res[$tag,backup]+="$(run "$b" backup tree -o "a-$tag.coffer" -r ops.key.pub -q)"$'\n'
    res[$tag,list]+="$(run "$b" list "a-$tag.coffer" -i ops.key)"$'\n'
    res[$tag,json]+="$(run "$b" list "a-$tag.coffer" -i ops.key --json)"$'\n'
    res[$tag,restore]+="$(run "$b" restore "a-$tag.coffer" -i ops.key --to out -q)"$'\n'
    rm -rf out
    res[$tag,one]+="$(run "$b" restore "a-$tag.coffer" -i ops.key --to out -q "$one")"$'\n'
    rm -rf out
  done
done
echo "# $N files, $(du -sb tree | cut -f1) bytes; medians of $ROUNDS rounds; $(nproc) cores"
printf '%-5s %-9s %9s %10s\n' bin step seconds "peak MiB"
for b in "${bins[@]}"; do
  tag=$([ "$b" = "$new" ] && echo new || echo old)
  for step in backup list json restore one; do
    s=$(printf '%s' "${res[$tag,$step]}" | awk 'NF{print $1}' | median)
    m=$(printf '%s' "${res[$tag,$step]}" | awk 'NF{print $2}' | median)
    printf '%-5s %-9s %9s %10.1f\n' "$tag" "$step" "$s" "$(awk -v m="$m" 'BEGIN{print m/1024}')"
  done
  size=$(stat -c %s "a-$tag.coffer")
  il=$(index_len "a-$tag.coffer")
  printf '%-5s archive %d bytes, index %d bytes = %.1f bytes per entry\n' "$tag" "$size" "$il" \
    "$(awk -v i="$il" -v n="$N" 'BEGIN{print i / (n + n / 1000 + 1)}')"
done
# What one file's selective restore reads, by its own count (v2 reports index bytes).
rm -rf out
"$new" restore a-new.coffer -i ops.key --to out -q --json "$one" > one.json
rm -rf out
python3 - one.json "$(stat -c %s a-new.coffer)" <<'PY'
import json, sys
j = json.load(open(sys.argv[1])); size = int(sys.argv[2])
idx, data = j.get("index_bytes_read", 0), j.get("archive_bytes_read", 0)
print(f"new   one file: index {idx} + data {data} bytes read = {100 * (idx + data) / size:.4f} % of the archive")
PY
