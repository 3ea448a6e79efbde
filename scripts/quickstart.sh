#!/usr/bin/env bash
# A real keygen -> backup -> restore round trip on a sample folder, with two recipients,
# restored with each key and compared byte for byte. Needs only the Rust toolchain.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet
coffer="$PWD/target/release/coffer"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cd "$work"

mkdir -p sample/docs/empty-folder sample/src
printf 'hello, coffer\n' > sample/docs/readme.txt
: > sample/docs/empty.txt
head -c 3000000 /dev/urandom > sample/src/data.bin
for i in $(seq 1 200); do echo "line $i of a compressible file" >> sample/src/notes.txt; done
ln -s ../docs/readme.txt sample/src/link-to-readme
chmod 0640 sample/docs/readme.txt

echo "== keygen (ops key and an offline escrow key)"
"$coffer" keygen -o ops.key
"$coffer" keygen -o escrow.key --bits 4096
echo "== backup (the backup host needs only the .pub files)"
"$coffer" backup sample -o nightly.coffer -r ops.key.pub -r escrow.key.pub
for key in ops.key escrow.key; do
  echo "== restore with $key"
  "$coffer" restore nightly.coffer -i "$key" --to "restored-$key"
  diff -r --no-dereference sample "restored-$key/sample"
  [ "$(stat -c %a "restored-$key/sample/docs/readme.txt")" = 640 ]
  [ "$(readlink "restored-$key/sample/src/link-to-readme")" = ../docs/readme.txt ]
done
echo "quickstart: OK (archive $(stat -c %s nightly.coffer) bytes; restored copies identical)"
