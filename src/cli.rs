//! The command line: subcommands and their flags.

use clap::{Parser, Subcommand};

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
    Serve(ServeArgs),
}
