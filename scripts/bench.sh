#!/usr/bin/env bash
# coffer against `tar | age` (2 recipients) and `tar | openssl enc -aes-256-cbc` on data the
# script makes itself: one incompressible file (2 GiB by default) and a tree of 50,000 small
# files (about 1.4 GB). All tools run in the same rounds, interleaved, and the script prints
# the median wall time, peak memory, throughput and the ratio to `tar | age` of each case.
#
#   ./scripts/bench.sh                 # 5 rounds
#   ROUNDS=3 BIG_GIB=10 ./scripts/bench.sh file   # only the single-file cases, 10 GiB file
#   BENCH_DIR=/mnt/fast ./scripts/bench.sh tree
set -euo pipefail

# --- data generators (also sourced by scripts/chain_bench.sh, which measures the same data) --
bench_make_big() {  # bench_make_big FILE BYTES: incompressible, remade only if the size differs
  local big=$1 bytes=$2
  if [ ! -f "$big" ] || [ "$(stat -c %s "$big")" != "$bytes" ]; then
    echo "# making $big (incompressible)"
    head -c "$bytes" /dev/urandom > "$big"
  fi
}
bench_make_tree() {  # bench_make_tree FILES: ./tree, remade only if tree.done names another count
  local files=$1
  if [ ! -f tree.done ] || [ "$(cat tree.done)" != "$files" ]; then
    echo "# making tree/ ($files files)"
    rm -rf tree
    python3 - "$files" <<'PY'
import os, random, sys
n = int(sys.argv[1])
rng = random.Random(42)
for i in range(n):
    d = f"tree/d{i // 500:03d}/s{(i // 50) % 10}"
    os.makedirs(d, exist_ok=True)
    size = rng.randint(1, 56 * 1024)   # mean ~28 KiB: 50,000 files ~ 1.4 GB
    with open(f"{d}/f{i:06d}.dat", "wb") as f:
        f.write(rng.randbytes(size))
PY
    echo "$files" > tree.done
  fi
}
# Sourced for the generators only: stop before measuring anything.
[[ "${BASH_SOURCE[0]}" != "$0" ]] && return 0

cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-5}
BIG_GIB=${BIG_GIB:-2}
TREE_FILES=${TREE_FILES:-50000}
DIR=${BENCH_DIR:-$PWD/target/bench-data}
WHAT=${1:-all}

need=()
command -v age >/dev/null 2>&1 || need+=(age)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
command -v python3 >/dev/null 2>&1 || need+=(python3)
[ -x /usr/bin/time ] || need+=(time)
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq && apt-get install -y -qq "${need[@]}"
fi
cargo build --release --quiet
coffer="$PWD/target/release/coffer"
mkdir -p "$DIR"
cd "$DIR"

echo "# machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(free -g | awk '/Mem:/{print $2}') GiB"
echo "# coffer $("$coffer" --version | cut -d' ' -f2), $(age --version 2>&1 | head -1 | sed 's/^/age /'), $(openssl version | cut -d' ' -f1-2)"

# --- data ----------------------------------------------------------------------------
big="big-${BIG_GIB}g.bin"
bench_make_big "$big" $((BIG_GIB << 30))
bench_make_tree "$TREE_FILES"
tree_bytes=$(du -sb tree | cut -f1)
big_bytes=$(stat -c %s "$big")

# --- keys ----------------------------------------------------------------------------
[ -f ops.key ] || "$coffer" keygen -o ops.key >/dev/null 2>&1
[ -f escrow.key ] || "$coffer" keygen -o escrow.key >/dev/null 2>&1
[ -f age1.txt ] || age-keygen -o age1.txt 2>/dev/null
[ -f age2.txt ] || age-keygen -o age2.txt 2>/dev/null
r1=$(grep -o 'age1[0-9a-z]*' age1.txt | head -1)
r2=$(grep -o 'age1[0-9a-z]*' age2.txt | head -1)

# --- measuring -----------------------------------------------------------------------
results="$DIR/results"
rm -rf "$results"; mkdir -p "$results"
cases=()
run() {  # run NAME BYTES SETUP COMMAND: time COMMAND (after SETUP, untimed) once
  local name=$1 bytes=$2 setup=$3 cmd=$4
  [[ " ${cases[*]} " == *" $name "* ]] || cases+=("$name")
  echo "$bytes" > "$results/$name.bytes"
  bash -c "$setup"
  # Every tool starts with its input in the page cache and no dirty pages pending, so the
  # comparison is of the tools, not of who ran after whom.
  sync
  /usr/bin/time -f '%e %M' -o "$results/$name.last" bash -c "$cmd" \
    || { echo "FAILED: $name"; cat "$results/$name.last"; exit 1; }
  tail -1 "$results/$name.last" >> "$results/$name.txt"
}

file_cases() {
  local warm_big="cat $big > /dev/null"
  run file-backup-coffer-none "$big_bytes" "rm -f f.coffer; $warm_big" \
    "$coffer backup $big -o f.coffer -r ops.key.pub -r escrow.key.pub --compression none -q"
  run file-backup-coffer-zstd "$big_bytes" "rm -f f.coffer; $warm_big" \
    "$coffer backup $big -o f.coffer -r ops.key.pub -r escrow.key.pub -q"
  run file-backup-tar-age "$big_bytes" "rm -f f.age; $warm_big" \
    "tar cf - $big | age -r $r1 -r $r2 > f.age"
  run file-backup-tar-openssl "$big_bytes" "rm -f f.enc; $warm_big" \
    "tar cf - $big | openssl enc -aes-256-cbc -pbkdf2 -pass pass:bench > f.enc"
  run file-restore-coffer "$big_bytes" "rm -rf out; cat f.coffer > /dev/null" \
    "$coffer restore f.coffer -i ops.key --to out -q"
  run file-restore-age-tar "$big_bytes" "rm -rf out && mkdir out; cat f.age > /dev/null" \
    "age -d -i age1.txt f.age | tar xf - -C out"
  run file-restore-openssl-tar "$big_bytes" "rm -rf out && mkdir out; cat f.enc > /dev/null" \
    "openssl enc -d -aes-256-cbc -pbkdf2 -pass pass:bench < f.enc | tar xf - -C out"
}

tree_cases() {
  # Through a pipe: GNU tar writing to /dev/null itself skips reading the files.
  local warm_tree="tar cf - tree | cat > /dev/null"
  run tree-backup-coffer "$tree_bytes" "rm -f t.coffer; $warm_tree" \
    "$coffer backup tree -o t.coffer -r ops.key.pub -r escrow.key.pub -q"
  run tree-backup-tar-age "$tree_bytes" "rm -f t.age; $warm_tree" \
    "tar cf - tree | age -r $r1 -r $r2 > t.age"
  run tree-backup-tar-openssl "$tree_bytes" "rm -f t.enc; $warm_tree" \
    "tar cf - tree | openssl enc -aes-256-cbc -pbkdf2 -pass pass:bench > t.enc"
  run tree-restore-coffer "$tree_bytes" "rm -rf out; cat t.coffer > /dev/null" \
    "$coffer restore t.coffer -i ops.key --to out -q"
  run tree-restore-age-tar "$tree_bytes" "rm -rf out && mkdir out; cat t.age > /dev/null" \
    "age -d -i age1.txt t.age | tar xf - -C out"
  run tree-restore-openssl-tar "$tree_bytes" "rm -rf out && mkdir out; cat t.enc > /dev/null" \
    "openssl enc -d -aes-256-cbc -pbkdf2 -pass pass:bench < t.enc | tar xf - -C out"
}

for round in $(seq 1 "$ROUNDS"); do
  echo "# round $round/$ROUNDS"
  case "$WHAT" in
    file) file_cases ;;
    tree) tree_cases ;;
    *) file_cases; tree_cases ;;
  esac
done
rm -rf out

# --- report --------------------------------------------------------------------------
python3 - "$results" "${cases[@]}" <<'PY'
import statistics, sys, os
results, cases = sys.argv[1], sys.argv[2:]
rows = {}
for c in cases:
    runs = [tuple(map(float, l.split())) for l in open(os.path.join(results, c + ".txt")) if l.strip()]
    secs = statistics.median(r[0] for r in runs)
    rss = statistics.median(r[1] for r in runs) / 1024
    nbytes = int(open(os.path.join(results, c + ".bytes")).read())
    rows[c] = (secs, rss, nbytes / secs / 1e9, len(runs), sorted(r[0] for r in runs))
def base(c):
    for kind in ("backup", "restore"):
        if f"-{kind}-" in c:
            prefix = c.split(f"-{kind}-")[0]
            return f"{prefix}-{kind}-tar-age" if kind == "backup" else f"{prefix}-restore-age-tar"
print(f"{'case':32} {'median s':>9} {'GB/s':>7} {'peak MiB':>9} {'vs tar|age':>11}  runs (s)")
for c, (secs, rss, gbs, n, runs) in rows.items():
    b = base(c)
    ratio = f"{secs / rows[b][0]:.2f}x" if b in rows else "-"
    print(f"{c:32} {secs:9.2f} {gbs:7.2f} {rss:9.1f} {ratio:>11}  {' '.join(f'{r:.2f}' for r in runs)}")
if "file-backup-coffer-none" in rows and "file-backup-coffer-zstd" in rows:
    none, zstd = rows["file-backup-coffer-none"][0], rows["file-backup-coffer-zstd"][0]
    print(f"\ndefault compression on incompressible data costs {100 * (zstd / none - 1):+.1f}% wall time")
PY
