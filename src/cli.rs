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
    /// Manage tenants.
    #[command(subcommand)]
    Tenant(TenantCommand),
    /// Manage a tenant's S3 access keys.
    #[command(subcommand)]
    Key(KeyCommand),
    /// Show a tenant's storage usage.
    Usage {
        tenant: String,
        #[command(flatten)]
        client: ClientArgs,
    },
}

#[derive(Debug, Subcommand)]
pub enum TenantCommand {
    /// Create a tenant.
    Create {
        name: String,
        /// The storage quota in bytes (none by default).
        #[arg(long)]
        quota_bytes: Option<u64>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// List the tenants.
    List {
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Show one tenant.
    Show {
        name: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Delete a tenant; refused while it stores anything, unless --force.
    Delete {
        name: String,
        /// Delete everything the tenant stores too.
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
}

#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// Create an access key; its secret is shown this one time.
    Create {
        tenant: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// List a tenant's access keys (without secrets).
    List {
        tenant: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Revoke an access key at once.
    Revoke {
        tenant: String,
        access_key_id: String,
        #[command(flatten)]
        client: ClientArgs,
    },
}

#[derive(Debug, Args)]
pub struct ScrubArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// The share of chunks to verify, from 0 to 1.
    #[arg(long, default_value_t = 1.0)]
    pub sample: f64,
}
