//! Stopping cleanly on SIGTERM and SIGINT: the flag that `backup`, `rekey --reencrypt`,
//! `job run` and the daemon pass to the library, which checks it between blocks.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use coffer::job::JobError;

use super::report::EXIT_FAILED;

/// A flag set by SIGTERM or SIGINT; a second signal ends the process at once (exit 2).
pub fn stop_flag() -> Result<Arc<AtomicBool>, JobError> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let flag = Arc::new(AtomicBool::new(false));
    for sig in [SIGTERM, SIGINT] {
        let io = |e| JobError::Io {
            path: PathBuf::from("signal handler"),
            source: e,
        };
        // Registered first, so it sees the flag as it was before this signal set it.
        signal_hook::flag::register_conditional_shutdown(
            sig,
            EXIT_FAILED as i32,
            Arc::clone(&flag),
        )
        .map_err(io)?;
        signal_hook::flag::register(sig, Arc::clone(&flag)).map_err(io)?;
    }
    Ok(flag)
}
