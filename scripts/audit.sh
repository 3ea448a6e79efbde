#!/usr/bin/env bash
# RustSec advisory check of coffer's Cargo.lock and fuzz/Cargo.lock with cargo-audit.
# The reasoned allow-list lives in .cargo/audit.toml.
#
#   ./scripts/audit.sh
#
# The advisory database is a git repository on GitHub. Where it cannot be fetched (a
# machine whose network reaches the package registries only) the script uses a copy fetched
# earlier (~/.cargo/advisory-db, or COFFER_ADVISORY_DB), marked stale; with no copy at all it
# prints SKIPPED and the reason, and exits 0 — unless COFFER_AUDIT_REQUIRED=1, which makes a
# missing database an error. A vulnerability, or unsound code, not on the allow-list always
# fails.
#
# cargo-audit is installed (pinned, --locked) only when missing and only when there is a
# database to check against: compiling it takes about 4.5 minutes on 2 cores, so CI keeps it
# in ~/.cargo/bin across runs on the same machine.
set -euo pipefail
cd "$(dirname "$0")/.."
VERSION=0.22.2
DB=${COFFER_ADVISORY_DB:-$HOME/.cargo/advisory-db}
URL=https://github.com/RustSec/advisory-db.git

have_copy() { [ -d "$DB/.git" ] || [ -d "$DB/crates" ]; }
if ! have_copy; then
  # No copy yet: find out whether the database can be fetched before spending minutes on
  # compiling cargo-audit.
  if ! why=$(timeout 30 git ls-remote --exit-code "$URL" HEAD 2>&1 >/dev/null); then
    why=$(echo "$why" | tr '\n' ' ')
    if [ "${COFFER_AUDIT_REQUIRED:-0}" = 1 ]; then
      echo "error: the RustSec advisory database cannot be fetched ($URL): $why"
      exit 1
    fi
    echo "SKIPPED advisory check: the RustSec advisory database ($URL) cannot be fetched" \
      "from this machine and no earlier copy exists at $DB: ${why:-timed out}"
    exit 0
  fi
fi

if ! cargo audit --version 2>/dev/null | grep -q " $VERSION\$"; then
  start=$(date +%s)
  cargo install cargo-audit --version "$VERSION" --locked --quiet
  echo "installed cargo-audit $VERSION in $(($(date +%s) - start)) s"
fi

lockfiles=(Cargo.lock)
[ -f fuzz/Cargo.lock ] && lockfiles+=(fuzz/Cargo.lock)

log=$(mktemp)
trap 'rm -f "$log"' EXIT
fetch_failed() { grep -q "couldn't fetch advisory database" "$log"; }

status=0
for lock in "${lockfiles[@]}"; do
  echo "-- $lock"
  if cargo audit --db "$DB" --file "$lock" >"$log" 2>&1; then
    cat "$log"
    continue
  fi
  if ! fetch_failed; then
    cat "$log"
    status=1
    continue
  fi
  reason=$(grep -m1 -A3 "couldn't fetch" "$log" | tr '\n' ' ')
  if have_copy; then
    echo "note: cannot update the advisory database ($reason); using the copy in $DB (stale)"
    cargo audit --db "$DB" --file "$lock" --no-fetch --stale || status=1
  else
    cat "$log"
    echo "error: the advisory database could not be fetched: $reason"
    status=1
  fi
done
exit $status
