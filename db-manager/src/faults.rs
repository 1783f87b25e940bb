//! Crash points for fault-injection tests: `SILO_CRASH_AT=<point>` makes the process abort
//! there, as a power cut or `kill -9` would, so tests can check what the next start repairs.
//! Without the variable a crash point does nothing.

use std::sync::OnceLock;

/// Aborts the process if `SILO_CRASH_AT` names `point`.
pub fn crash_point(point: &str) {
    static TARGET: OnceLock<Option<String>> = OnceLock::new();
    let target = TARGET.get_or_init(|| std::env::var("SILO_CRASH_AT").ok());
    if target.as_deref() == Some(point) {
        tracing::error!(point, "SILO_CRASH_AT: aborting here for a fault-injection test");
        std::process::abort();
    }
}
