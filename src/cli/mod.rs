//! The `coffer` binary's modules (part of the bin crate, not the library). Nothing here
//! touches a cipher: every command calls the library and reports what it returned.
//!
//! - `args`: the top-level parser and the list of commands; each command's flags are in its
//!   own `cmd_*.rs`.
//! - `keys`: passphrases, and private/public keys loaded from files.
//! - `report`: exit codes, the one error printer, JSON, tables, timestamps.
//! - `signals`: the stop flag set by SIGTERM/SIGINT.
//! - `ui`: progress bars, escaping untrusted text, the one way to stdout (`outln!`).
//! - `jobs`: what the job commands share (the plain commands do not use it); `copies`: how
//!   they show backup copies (`copy_to`).

pub mod args;
pub mod keys;
pub mod report;
pub mod signals;
pub mod ui;

pub mod copies;
pub mod jobs;

pub mod cmd_backup;
pub mod cmd_copy;
pub mod cmd_daemon;
pub mod cmd_history;
pub mod cmd_info;
pub mod cmd_job;
pub mod cmd_keygen;
pub mod cmd_list;
pub mod cmd_metrics;
pub mod cmd_prune;
pub mod cmd_rekey;
pub mod cmd_restore;
pub mod cmd_status;
pub mod cmd_verify;
