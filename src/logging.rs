//! Log set-up: `tracing` to stderr, human-readable or JSON, filtered by `SILO_LOG`.

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// The filter without `SILO_LOG`. s3s opens two INFO spans per signed request (its signature
/// check), whose fields cost an allocation and formatting on every request; its warnings and
/// errors still show.
pub const DEFAULT_FILTER: &str = "info,s3s=warn";

/// Installs the global subscriber. `SILO_LOG` takes `tracing` filter directives (default
/// [`DEFAULT_FILTER`]).
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_env("SILO_LOG").unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}
