//! The command line: subcommands and their flags.

use clap::{Args, Parser, Subcommand};

use crate::client::ClientArgs;
use crate::config::ServeArgs;

/// Silo: deduplicated media storage with an S3 API, and dedicated Postgres databases per client.
#[derive(Debug, Parser)]
#[command(name = "silo", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server: the management API and the data plane on one listener.
    Serve(Box<ServeArgs>),
    /// Run one GC pass on a running Silo now.
    Gc(ClientArgs),
    /// Verify the stored chunks of a running Silo; exits 1 when any is damaged.
    Scrub(ScrubArgs),
}

#[derive(Debug, Args)]
pub struct ScrubArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// The share of chunks to verify, from 0 to 1.
    #[arg(long, default_value_t = 1.0)]
    pub sample: f64,
}
