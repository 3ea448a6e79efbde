//! coffer's integration tests, one module per user-visible behaviour, named for it.
//!
//! One test binary rather than one per file: each binary links the whole library and its
//! dependency graph, so twenty-odd of them cost minutes of linking in every CI run.
//! `cargo test --release --test it -- round_trip::` runs one behaviour's tests.

mod common;
mod job_common;

mod bitflip_sweep;
mod cli;
mod completions_and_man;
mod crash_safety;
mod disk_full;
mod foreign_keys;
mod format_vectors;
mod hostile_index;
mod info;
mod job_config;
mod job_daemon;
mod job_retention;
mod job_run;
mod json_output;
mod list;
mod progress_terminal;
mod reencrypt;
mod rekey;
mod round_trip;
mod s3_storage;
mod safe_writes;
mod selective_restore;
mod tamper;
mod verify;
mod wrong_key;
