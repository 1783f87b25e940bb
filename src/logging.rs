//! Log set-up: `tracing` to stderr, human-readable or JSON, filtered by `SILO_LOG`.

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Installs the global subscriber. `SILO_LOG` takes `tracing` filter directives (default `info`).
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_env("SILO_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}
