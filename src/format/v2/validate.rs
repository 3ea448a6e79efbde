//! Reader rules for format v2 (docs/FORMAT.md v2.10): header, trailer, meta frame prefix, directory, block-table chunks and entries, each checked before use.
