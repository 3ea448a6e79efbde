//! coffer's integration tests, one module per user-visible behaviour, named for it.
//!
//! One test binary rather than one per file: each binary links the whole library and its
//! dependency graph, so twenty-odd of them cost minutes of linking in every CI run.
//! `cargo test --release --test it -- round_trip::` runs one behaviour's tests.

mod common;
mod job_common;

mod bitflip_sweep;
mod broken_pipe;
mod chain_backup;
mod chain_backup_kill;
mod chain_rekey;
mod chain_restore;
mod chain_verify;
mod changing_files;
mod cli;
mod completions_and_man;
mod content_hashes;
mod copy;
mod crash_safety;
mod crc_mismatch;
mod disk_full;
mod foreign_keys;
mod format_vectors;
mod format_vectors_v2;
mod frozen_vectors;
mod hostile_index;
mod hostile_target;
mod hostile_v2;
mod info;
mod job_chain_config;
mod job_chain_retention;
mod job_chain_run;
mod job_config;
mod job_copy;
mod job_daemon;
mod job_metrics;
mod job_notify;
mod job_object_lock;
mod job_retention;
mod job_run;
mod job_signers;
mod job_status;
mod job_verify_keyed;
mod job_verify_schedule;
mod json_output;
mod keygen_signing;
mod list;
mod list_json_stream;
mod object_lock;
mod object_lock_bucket;
mod progress_terminal;
mod reencrypt;
mod rekey;
mod round_trip;
mod s3_hostile_server;
mod s3_storage;
mod safe_writes;
mod selective_restore;
mod signatures;
mod special_bits;
mod tamper;
mod terminal_escapes;
mod v2_fidelity;
mod verify;
mod wrong_key;
