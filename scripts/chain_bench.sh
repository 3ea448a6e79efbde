#!/usr/bin/env bash
# Incremental chains (issue 16) against their targets, in one run, on bench.sh's data (a tree of
# 50,000 files, about 1.4 GB, and one incompressible 2 GiB file, made by the same generators):
#   - nothing changed: incremental vs full coffer backup, vs restic's and borg's second run,
#     and the incremental archive's size against its index;
#   - 1% of the files rewritten: incremental vs full time, stored vs changed bytes, restic, borg;
#   - 4 MiB rewritten in the middle of the big file: bytes the incremental writes;
#   - restore of the newest point of a 7-archive chain vs restore of a full of the same tree;
#   - chain state bytes per file, peak memory of full and incremental backups;
#   - first run with --incremental (a full that records the state) vs a plain full.
# Medians of N rounds; prints a markdown table (target, measured, ratio, verdict) and the
# commands it ran, ready for docs/PERFORMANCE.md. restic and borg (Debian packages) are
# installed with apt-get when missing. Rounds run with warm caches; COLD=1 drops the page
# cache before each timed run instead (needs root).
#
#   ./scripts/chain_bench.sh                      # N=3, 50,000 files, 2 GiB file
#   QUICK=1 ./scripts/chain_bench.sh              # smoke run: 5,000 files, 256 MiB, N=1
#   N=5 BIG_SIZE=1G BENCH_DIR=/mnt/fast ./scripts/chain_bench.sh
#   TREE_FILES=20000 CHANGE_FILES=200 COLD=1 ./scripts/chain_bench.sh
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/bench.sh
source scripts/bench.sh  # bench_make_big, bench_make_tree (sourcing measures nothing)
if [ "${QUICK:-0}" = 1 ]; then
  N=${N:-1}; TREE_FILES=${TREE_FILES:-5000}; BIG_SIZE=${BIG_SIZE:-256M}
fi
N=${N:-3}
TREE_FILES=${TREE_FILES:-50000}
BIG_SIZE=${BIG_SIZE:-2G}
CHANGE_FILES=${CHANGE_FILES:-$((TREE_FILES / 100))}  # "1% of the files"
CHAIN_LEN=7                                          # a full and 6 incrementals
DIR=${BENCH_DIR:-/tmp/coffer-chain-bench}
COLD=${COLD:-0}
big_bytes=$(numfmt --from=iec "$BIG_SIZE")

need=()
command -v python3 >/dev/null 2>&1 || need+=(python3)
[ -x /usr/bin/time ] || need+=(time)
command -v restic >/dev/null 2>&1 || need+=(restic)
command -v borg >/dev/null 2>&1 || need+=(borgbackup)
if [ ${#need[@]} -gt 0 ]; then
  echo "# installing with apt-get: ${need[*]}"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
if [ "$COLD" = 1 ] && [ ! -w /proc/sys/vm/drop_caches ]; then
  echo "COLD=1 needs root (writes /proc/sys/vm/drop_caches)" >&2; exit 2
fi
# COFFER_BIN: measure this binary (a copy, so a build during the run cannot swap it).
if [ -n "${COFFER_BIN:-}" ]; then
  coffer="$COFFER_BIN"
else
  cargo build --release --quiet
  coffer="$PWD/target/release/coffer"
fi
mkdir -p "$DIR" && cd "$DIR"

echo "# machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(free -g | awk '/Mem:/{print $2}') GiB"
echo "# coffer $("$coffer" --version | cut -d' ' -f2), $(restic version | cut -d' ' -f1-2), $(borg --version)"
echo "# N=$N TREE_FILES=$TREE_FILES CHANGE_FILES=$CHANGE_FILES BIG_SIZE=$BIG_SIZE COLD=$COLD BENCH_DIR=$DIR"

# --- data ----------------------------------------------------------------------------
# The rounds rewrite files of tree/ and the middle of big.bin in place, same sizes: a later
# run starts from other bytes but the same shape, which is all the measurements depend on.
bench_make_tree "$TREE_FILES"
bench_make_big big.bin "$big_bytes"
tree_bytes=$(du -sb tree | cut -f1)
[ -f ops.key ] || "$coffer" keygen -o ops.key >/dev/null 2>&1

# Each change takes the next seed of a sequence kept in this folder: a later run of the script
# must not write bytes an earlier one wrote (the chain, restic and borg would find them again
# and store nothing), and a fresh BENCH_DIR replays the same changes.
next_seed() {
  local s
  s=$(( $(cat seed.seq 2>/dev/null || echo 0) + 1 ))
  echo "$s" > seed.seq
  echo "$s"
}
change_tree() {  # change_tree: rewrite CHANGE_FILES files (same size, same inode); prints bytes
  python3 - tree "$(next_seed)" "$CHANGE_FILES" <<'PY'
import os, random, sys
root, seed, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
files = sorted(os.path.join(d, f) for d, _, fs in os.walk(root) for f in fs)
rng = random.Random(seed)
total = 0
for p in rng.sample(files, count):
    size = os.path.getsize(p)
    with open(p, "r+b") as f:
        f.write(rng.randbytes(size))
    total += size
print(total)
PY
}
change_big() {  # change_big: 4 MiB of new bytes around the middle, not window-aligned
  python3 - big.bin "$(next_seed)" <<'PY'
import os, random, sys
path, seed = sys.argv[1], int(sys.argv[2])
# Starting 4097 bytes past a 1 MiB boundary, 4 MiB touch five 1 MiB windows: the worst case.
off = os.path.getsize(path) // 2 - (2 << 20) + 4097
with open(path, "r+b") as f:
    f.seek(off)
    f.write(random.Random(seed).randbytes(4 << 20))
PY
}
jget() {  # jget FILE KEY[.KEY...]: one field of a --json summary
  python3 -c 'import json,sys; v=json.load(open(sys.argv[1]))
for k in sys.argv[2].split("."): v=v[k]
print(v)' "$1" "$2"
}
index_len() {  # index_len ARCHIVE: index_len from the v2 trailer (last 44 bytes, offset 8)
  python3 - "$1" <<'PY'
import struct, sys
with open(sys.argv[1], "rb") as f:
    f.seek(-44, 2)
    t = f.read()
assert t[-12:-4] == b"\x89CFEND2\n", "not a v2 archive"
print(struct.unpack("<Q", t[8:16])[0])
PY
}
state_bytes() {  # state_bytes DIR: chains.sqlite plus its write-ahead log, if any
  local s=0 f
  for f in "$1/chains.sqlite" "$1/chains.sqlite-wal"; do
    [ -f "$f" ] && s=$((s + $(stat -c %s "$f")))
  done
  echo "$s"
}

# --- measuring -----------------------------------------------------------------------
res="$DIR/results"
rm -rf "$res"; mkdir -p "$res"
fact() { echo "$1 $2" >> "$res/facts"; }  # fact KEY VALUE (repeated keys: one per round)
declare -A logged
timed() {  # timed LABEL WARM CMD...: time CMD (stdout to $res/LABEL.out); returns CMD's status
  local label=$1 warm=$2; shift 2
  [ -n "${logged[$label]:-}" ] || { logged[$label]=1; printf '%-18s %s\n' "$label" "${*//$coffer/coffer}" >> "$res/commands"; }
  # Every run starts with no dirty pages pending and its input either in the page cache (the
  # default: the tools are compared, not the disk) or, with COLD=1, nothing cached at all.
  sync
  if [ "$COLD" = 1 ]; then echo 3 > /proc/sys/vm/drop_caches; else bash -c "$warm"; fi
  local rc=0
  /usr/bin/time -f '%e %M %U %S' -o "$res/time.last" "$@" > "$res/$label.out" 2> "$res/$label.err" || rc=$?
  [ "$rc" = 0 ] && tail -1 "$res/time.last" >> "$res/$label"
  return "$rc"
}
must() {  # must LABEL WARM CMD...: timed, and stop the benchmark if CMD fails
  timed "$@" || { echo "FAILED: $1"; cat "$res/$1.err"; exit 2; }
}
# Through a pipe: GNU tar writing to /dev/null itself skips reading the files.
warm_tree="tar cf - tree | cat > /dev/null"
backup_tree=("$coffer" backup tree -r ops.key.pub)
incr_tree=("${backup_tree[@]}" --to chain --job-name tree --incremental --state-dir state --json)
export RESTIC_PASSWORD=bench RESTIC_REPOSITORY="$DIR/restic-repo" RESTIC_CACHE_DIR="$DIR/restic-cache"
export BORG_PASSPHRASE=bench BORG_REPO="$DIR/borg-repo" BORG_BASE_DIR="$DIR/borg-base"
rm -rf restic-repo restic-cache borg-repo borg-base chain state big-chain big-state
restic init -q >/dev/null
borg init -e repokey > "$res/borg-init.log" 2>&1 || { cat "$res/borg-init.log"; exit 2; }
# Their first runs (once): the rounds measure their second runs, as for coffer.
must restic-first "$warm_tree" restic backup -q tree
must borg-first "$warm_tree" borg create ::first tree
mkdir big-chain
must big-first "cat big.bin > /dev/null" "$coffer" backup big.bin -r ops.key.pub --to big-chain \
  --job-name big --incremental --state-dir big-state --json

plain() { rm -f plain.coffer; must full-plain "$warm_tree" "${backup_tree[@]}" -o plain.coffer -q; }
first() {  # the first run of a job with --incremental: a full that also records the chain state
  rm -rf chain state; mkdir chain
  must full-incremental "$warm_tree" "${incr_tree[@]}"
  fact state_full "$(state_bytes state)"
}
for round in $(seq 1 "$N"); do
  echo "# round $round/$N"
  # Nothing changed. Alternating which full goes first keeps a drifting machine from
  # favouring one of them.
  if [ $((round % 2)) = 1 ]; then plain; first; else first; plain; fi
  [ "$(jget "$res/full-incremental.out" chain.kind)" = full ] || { echo "first run not a full"; exit 2; }
  must incr-unchanged "$warm_tree" "${incr_tree[@]}"
  a=$(jget "$res/incr-unchanged.out" archive)
  [ "$(jget "$res/incr-unchanged.out" chain.kind)" = incremental ] || { echo "not an incremental: $(cat "$res/incr-unchanged.out")"; exit 2; }
  fact incr_unchanged_size "$(stat -c %s "$a")"
  fact incr_unchanged_index "$(index_len "$a")"
  fact incr_unchanged_read "$(jget "$res/incr-unchanged.out" bytes_read)"
  must restic-unchanged "$warm_tree" restic backup -q tree
  must borg-unchanged "$warm_tree" borg create "::r$round-unchanged" tree

  # 1% of the files rewritten.
  fact changed_bytes "$(change_tree)"
  must incr-1pct "$warm_tree" "${incr_tree[@]}"
  a=$(jget "$res/incr-1pct.out" archive)
  fact incr_1pct_size "$(stat -c %s "$a")"
  fact incr_1pct_written "$(jget "$res/incr-1pct.out" bytes_written)"
  fact incr_1pct_read "$(jget "$res/incr-1pct.out" bytes_read)"
  before=$(du -sb restic-repo | cut -f1)
  must restic-1pct "$warm_tree" restic backup -q tree
  fact restic_1pct_stored $(($(du -sb restic-repo | cut -f1) - before))
  before=$(du -sb borg-repo | cut -f1)
  must borg-1pct "$warm_tree" borg create "::r$round-1pct" tree
  fact borg_1pct_stored $(($(du -sb borg-repo | cut -f1) - before))

  # 4 MiB rewritten in the middle of the big file.
  change_big
  must big-incr "cat big.bin > /dev/null" "$coffer" backup big.bin -r ops.key.pub --to big-chain \
    --job-name big --incremental --state-dir big-state --json
  fact big_incr_written "$(jget "$res/big-incr.out" bytes_written)"
  fact big_incr_read "$(jget "$res/big-incr.out" bytes_read)"
  fact big_incr_size "$(stat -c %s "$(jget "$res/big-incr.out" archive)")"
done

# --- restore of a chain's newest point --------------------------------------------------
echo "# building a $CHAIN_LEN-archive chain (a full, then $((CHAIN_LEN - 1)) incrementals of ${CHANGE_FILES} changed files each)"
rm -rf chain state; mkdir chain
"${incr_tree[@]}" > "$res/chain-1.json"
for k in $(seq 2 "$CHAIN_LEN"); do
  change_tree > /dev/null
  "${incr_tree[@]}" > "$res/chain-$k.json"
  [ "$(jget "$res/chain-$k.json" chain.kind)" = incremental ] \
    || { echo "chain run $k is not an incremental: $(cat "$res/chain-$k.json")"; exit 2; }
done
newest=$(jget "$res/chain-$CHAIN_LEN.json" archive)
fact chain_parents "$(python3 -c 'import json,sys; print(len(json.load(open(sys.argv[1]))["chain"]["parents"]))' "$res/chain-$CHAIN_LEN.json")"
fact state_chain "$(state_bytes state)"
rm -f final.coffer
"${backup_tree[@]}" -o final.coffer -q   # a full of the same tree as the chain's newest point
restore_status=ok
for round in $(seq 1 "$N"); do
  echo "# restore round $round/$N"
  rm -rf out-full
  must restore-full "cat final.coffer > /dev/null" "$coffer" restore final.coffer -i ops.key --to out-full -q
  if [ "$restore_status" = ok ]; then
    rm -rf out-chain
    if ! timed restore-chain "cat chain/*.coffer > /dev/null" "$coffer" restore "$newest" -i ops.key --to out-chain -q; then
      if grep -q "which this build cannot restore" "$res/restore-chain.err"; then
        restore_status="not measured: this build's restore refuses incrementals (\"...which this build cannot restore\")"
        echo "# $(head -1 "$res/restore-chain.err")"
      else
        restore_status="FAILED: $(head -3 "$res/restore-chain.err" | tr '\n' ' ')"
      fi
      echo "# restore of the chain: $restore_status"
    elif [ "$round" = 1 ] && ! diff -r tree out-chain/tree > "$res/restore-chain.diff" 2>&1; then
      restore_status="WRONG: the restored tree differs from the source ($(wc -l < "$res/restore-chain.diff") lines in $res/restore-chain.diff)"
      echo "# restore of the chain: $restore_status"
    fi
  fi
done
rm -rf out-full out-chain
echo "$restore_status" > "$res/restore_status"

# --- report --------------------------------------------------------------------------
python3 - "$res" "$TREE_FILES" "$tree_bytes" "$big_bytes" "$CHANGE_FILES" "$N" "$CHAIN_LEN" <<'PY'
import os, statistics, sys
res, files, tree_bytes, big_bytes, changed_files, n, chain_len = sys.argv[1], *map(int, sys.argv[2:])
def runs(label):
    p = os.path.join(res, label)
    return [tuple(map(float, l.split())) for l in open(p) if l.strip()] if os.path.exists(p) else []
def secs(label):
    r = runs(label)
    return statistics.median(x[0] for x in r) if r else None
def cpu(label):  # user + system seconds: less disturbed than wall time by a busy machine
    r = runs(label)
    return statistics.median(x[2] + x[3] for x in r) if r else None
def rss(label):  # MiB
    r = runs(label)
    return statistics.median(x[1] for x in r) / 1024 if r else None
facts = {}
for l in open(os.path.join(res, "facts")):
    k, v = l.split()
    facts.setdefault(k, []).append(int(v))
def fact(k):
    return statistics.median(facts[k])
cache = "cold" if os.environ.get("COLD") == "1" else "warm"
restore_status = open(os.path.join(res, "restore_status")).read().strip()

MiB = 1 << 20
def b(x):
    return f"{x / MiB:.1f} MiB" if x >= MiB else f"{x / 1024:.1f} KiB" if x >= 1024 else f"{x:.0f} B"
rows = []
def row(target, measured, ratio, ok):  # ok: True/False against the target, None: no target
    verdict = "n/a" if ratio is None else "info" if ok is None else "PASS" if ok else "FAIL"
    rows.append((target, measured, "-" if ratio is None else f"{ratio:.3f}", verdict))

full, full_inc, inc0, inc1 = secs("full-plain"), secs("full-incremental"), secs("incr-unchanged"), secs("incr-1pct")
r0, b0, r1, b1 = secs("restic-unchanged"), secs("borg-unchanged"), secs("restic-1pct"), secs("borg-1pct")
row("nothing changed: incremental / full time ≤ 0.15", f"{inc0:.2f} s / {full:.2f} s (CPU {cpu('incr-unchanged'):.2f} / {cpu('full-plain'):.2f} s)", inc0 / full, inc0 / full <= 0.15)
size0, idx0 = fact("incr_unchanged_size"), fact("incr_unchanged_index")
# "The index plus O(1)": what is not index (header, recipients, trailer) must not grow with
# the data; 64 KiB is far above any header and far below one stored 1 MiB window.
row("nothing changed: archive = index + O(1) (rest ≤ 64 KiB)",
    f"{b(size0)} = index {b(idx0)} + {b(size0 - idx0)}", size0 / idx0, size0 - idx0 <= 65536)
row("nothing changed: coffer incremental / restic 2nd run", f"{inc0:.2f} s / {r0:.2f} s", inc0 / r0, None)
row("nothing changed: coffer incremental / borg 2nd run", f"{inc0:.2f} s / {b0:.2f} s", inc0 / b0, None)
row(f"1% changed ({changed_files} files): incremental / full time ≤ 0.25", f"{inc1:.2f} s / {full:.2f} s (CPU {cpu('incr-1pct'):.2f} / {cpu('full-plain'):.2f} s)", inc1 / full, inc1 / full <= 0.25)
chg, st1 = fact("changed_bytes"), fact("incr_1pct_size")
row("1% changed: stored / changed bytes ≤ 1.5", f"{b(st1)} / {b(chg)}", st1 / chg, st1 / chg <= 1.5)
row("1% changed: coffer incremental / restic 2nd run", f"{inc1:.2f} s / {r1:.2f} s", inc1 / r1, None)
row("1% changed: coffer incremental / borg 2nd run", f"{inc1:.2f} s / {b1:.2f} s", inc1 / b1, None)
row("1% changed: restic stored / changed bytes", f"{b(fact('restic_1pct_stored'))} / {b(chg)}", fact("restic_1pct_stored") / chg, None)
row("1% changed: borg stored / changed bytes", f"{b(fact('borg_1pct_stored'))} / {b(chg)}", fact("borg_1pct_stored") / chg, None)
bw = fact("big_incr_written")
row(f"4 MiB rewritten in a {b(big_bytes)} file: bytes written ≤ 8 MiB",
    f"{b(bw)} (archive {b(fact('big_incr_size'))})", bw / (8 * MiB), bw <= 8 * MiB)
bi, bf = secs("big-incr"), secs("big-first")
row("4 MiB rewritten in the big file: incremental / full time", f"{bi:.2f} s / {bf:.2f} s (read {b(fact('big_incr_read'))})", bi / bf, None)
rf, rc = secs("restore-full"), secs("restore-chain")
if rc is not None and restore_status == "ok":
    row(f"restore newest of a {chain_len}-archive chain / restore of a full ≤ 1.2", f"{rc:.2f} s / {rf:.2f} s", rc / rf, rc / rf <= 1.2)
else:
    row(f"restore newest of a {chain_len}-archive chain / restore of a full ≤ 1.2", f"{restore_status} (full: {rf:.2f} s)", None, None)
sc = fact("state_chain")
row(f"chain state per file ≤ 200 B (after {chain_len} runs)", f"{b(sc)} / {files} files = {sc / files:.1f} B", sc / files / 200, sc / files <= 200)
for label, what in (("full-incremental", "full (--incremental)"), ("incr-unchanged", "incremental, nothing changed"),
                    ("incr-1pct", "incremental, 1% changed"), ("big-incr", "incremental, 4 MiB in the big file")):
    m = rss(label)
    row(f"peak memory, {what} ≤ 64 MiB", f"{m:.1f} MiB", m / 64, m <= 64)
row("full with --incremental / plain full ≤ 1.05", f"{full_inc:.2f} s / {full:.2f} s", full_inc / full, full_inc / full <= 1.05)
ci, cp = cpu("full-incremental"), cpu("full-plain")
row("full with --incremental / plain full, CPU time (user+sys)", f"{ci:.2f} s / {cp:.2f} s", ci / cp, None)

print(f"\n### Incremental chains: {files} files ({b(tree_bytes)}), a {b(big_bytes)} file; medians of {n} rounds, {cache} cache\n")
print("| target | measured | ratio | verdict |")
print("|---|---|---|---|")
for r in rows:
    print("| " + " | ".join(r) + " |")
print("\nratio: the bounded ratio itself where the target is a ratio; archive / index for the"
      " incremental's size; measured / limit for absolute targets (bytes, B per file, MiB).")
print(f"\n| run | median s | median cpu s | peak MiB | runs (s) |")
print("|---|---|---|---|---|")
labels = [l.split()[0] for l in open(os.path.join(res, "commands"))]
for l in labels:
    r = runs(l)
    if r:
        print(f"| {l} | {secs(l):.2f} | {cpu(l):.2f} | {rss(l):.1f} | {' '.join(f'{x[0]:.2f}' for x in r)} |")
print(f"\nbytes read: incremental nothing changed {b(fact('incr_unchanged_read'))}, 1% changed {b(fact('incr_1pct_read'))}; "
      f"chain state after the first run {b(fact('state_full'))}; newest chain archive has {fact('chain_parents')} parents")
PY
echo
echo "Commands (in $DIR; RESTIC_REPOSITORY, RESTIC_PASSWORD, BORG_REPO, BORG_PASSPHRASE set):"
echo '```'
cat "$res/commands"
echo '```'
