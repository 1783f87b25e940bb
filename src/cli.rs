//! The command line: subcommands and their flags.

use clap::{Args, Parser, Subcommand};

use crate::client::ClientArgs;
use crate::config::ServeArgs;
use crate::secret::Secret;

/// Silo: deduplicated media storage with an S3 API, and dedicated Postgres databases per client.
#[derive(Debug, Parser)]
#[command(name = "silo", version, about)]
pub struct Cli {
    /// How the service commands reach a running Silo (global: before or after a subcommand).
    #[command(flatten)]
    pub client: ClientArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server: the management API and the data plane on one listener.
    Serve(Box<ServeArgs>),
    /// Run one GC pass on a running Silo now.
    Gc,
    /// Verify the stored chunks of a running Silo; exits 1 when any is damaged.
    Scrub(ScrubArgs),
    /// Manage tenants.
    #[command(subcommand)]
    Tenant(TenantCommand),
    /// Manage a tenant's S3 access keys.
    #[command(subcommand)]
    Key(KeyCommand),
    /// Manage tenants' dedicated Postgres databases.
    #[command(subcommand)]
    Db(DbCommand),
    /// Manage the Postgres servers that hold tenants' databases.
    #[command(subcommand)]
    Server(ServerCommand),
    /// Back up, list, prune, restore, verify and download database backups.
    #[command(subcommand)]
    Backup(BackupCommand),
    /// Rebuild a lost catalog from a catalog backup (offline; Silo stopped).
    #[command(subcommand)]
    Catalog(CatalogCommand),
    /// Show the configuration `silo serve` resolves.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Show a tenant's storage usage.
    Usage { tenant: String },
    /// Show the storage nodes registered in the catalog.
    #[command(subcommand)]
    Node(NodeCommand),
}

#[derive(Debug, Subcommand)]
pub enum NodeCommand {
    /// List the nodes: zone, owner, state, heartbeat, and the packs and bytes each holds.
    List,
    /// Drain a node: it takes no new packs, and repair copies its packs to other nodes.
    Drain { name: String },
    /// Remove a node (refused while it holds the last healthy copy of a pack: drain it first).
    Remove { name: String },
}

#[derive(Debug, Subcommand)]
pub enum TenantCommand {
    /// Create a tenant.
    Create {
        name: String,
        /// The storage quota in bytes (none by default).
        #[arg(long)]
        quota_bytes: Option<u64>,
    },
    /// List the tenants.
    List,
    /// Show one tenant.
    Show { name: String },
    /// Delete a tenant; refused while it stores anything, unless --force.
    Delete {
        name: String,
        /// Delete everything the tenant stores too.
        #[arg(long)]
        force: bool,
        /// Delete its databases without final backups (otherwise they are taken, and kept
        /// with the tenant's name until they expire).
        #[arg(long)]
        skip_final_backup: bool,
    },
    /// Show where a tenant's packs go; with a flag, change that (the rest keeps its value).
    Placement(PlacementArgs),
}

/// `silo tenant placement NAME [flags]`.
#[derive(Debug, Args)]
pub struct PlacementArgs {
    pub name: String,
    /// Keep its packs only on its own nodes (`silo serve --owner NAME`).
    #[arg(long, conflicts_with = "shared")]
    pub owned: bool,
    /// Keep its packs on the shared nodes.
    #[arg(long)]
    pub shared: bool,
    /// Copies of each pack, each in a distinct zone (1 to 8).
    #[arg(long, conflicts_with = "default_replicas")]
    pub replicas: Option<u8>,
    /// Back to the default copies: 2 where its nodes span two zones or more, else 1.
    #[arg(long)]
    pub default_replicas: bool,
    /// The only zones its packs may live in, comma-separated.
    #[arg(long, value_delimiter = ',', conflicts_with = "all_zones")]
    pub zones: Option<Vec<String>>,
    /// Allow every zone again.
    #[arg(long)]
    pub all_zones: bool,
    /// When too few zones can take a new pack: refuse the write (503, the client retries) or
    /// take it with fewer copies and repair it first.
    #[arg(long, value_parser = ["refuse", "degraded"])]
    pub on_shortage: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// Create an access key; its secret is shown this one time.
    Create { tenant: String },
    /// List a tenant's access keys (without secrets).
    List { tenant: String },
    /// Revoke an access key at once.
    Revoke { tenant: String, access_key_id: String },
}

#[derive(Debug, Args)]
pub struct ScrubArgs {
    /// The share of chunks to verify, from 0 to 1.
    #[arg(long, default_value_t = 1.0)]
    pub sample: f64,
}

#[derive(Debug, Subcommand)]
pub enum DbCommand {
    /// Create a database; its password is shown this one time.
    Create {
        tenant: String,
        name: String,
        /// The plan (the config file defines them; small, medium and large by default).
        #[arg(long, default_value = "small")]
        plan: String,
        /// Place it in this zone.
        #[arg(long)]
        zone: Option<String>,
        /// Refuse deletes until it is turned off.
        #[arg(long)]
        deletion_protection: bool,
        /// Makes a retry return the first result instead of failing or creating twice.
        #[arg(long)]
        idempotency_key: Option<String>,
    },
    /// List a tenant's databases.
    List { tenant: String },
    /// Show one database, with its recent state changes.
    Show { tenant: String, name: String },
    /// Move a database to another plan; the new limits apply at once.
    Resize {
        tenant: String,
        name: String,
        #[arg(long)]
        plan: String,
    },
    /// Turn deletion protection on or off.
    Protect {
        tenant: String,
        name: String,
        #[arg(value_enum)]
        state: Switch,
    },
    /// Set a new password; sessions opened with the old one end after the grace.
    Rotate {
        tenant: String,
        name: String,
        /// Seconds the old sessions may go on.
        #[arg(long, default_value_t = 0)]
        grace_secs: u64,
    },
    /// Delete a database and its role.
    Delete {
        tenant: String,
        name: String,
        /// Delete without the final backup.
        #[arg(long)]
        skip_final_backup: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum ServerCommand {
    /// List the servers.
    List,
    /// Register a server that ops run (a role with CREATEDB and CREATEROLE).
    Register {
        name: String,
        /// Its libpq URL; read from SILO_SERVER_URL so it stays out of the process list (not
        /// `--url`, which is where Silo is).
        #[arg(long, env = "SILO_SERVER_URL", hide_env_values = true)]
        server_url: Secret,
        #[arg(long)]
        zone: String,
        /// The tenant that owns it (the hosting company's when absent).
        #[arg(long)]
        owner: Option<String>,
    },
    /// Start a dedicated instance for a tenant.
    CreateDedicated {
        tenant: String,
        #[arg(long, default_value = "small")]
        plan: String,
        #[arg(long)]
        name: Option<String>,
    },
    /// Forget a server that holds no database (a dedicated one is stopped and deleted).
    Remove { name: String },
}

#[derive(Debug, Subcommand)]
pub enum BackupCommand {
    /// Run the backups that are due (for cron: safe to run every hour); exits 1 if any failed.
    Run {
        /// Every database.
        #[arg(long, conflicts_with_all = ["tenant", "db"], required_unless_present_any = ["tenant", "db"])]
        all: bool,
        /// Every database of one tenant.
        #[arg(long, conflicts_with = "db")]
        tenant: Option<String>,
        /// One database, as TENANT/NAME (backed up even when not due).
        #[arg(long)]
        db: Option<String>,
        /// Back up even what is not due.
        #[arg(long)]
        force: bool,
        /// Verify each new backup by restoring it into a scratch database.
        #[arg(long)]
        verify: bool,
        /// How many backups run at once.
        #[arg(long, default_value_t = 2)]
        concurrency: usize,
    },
    /// List backups, newest first.
    List {
        #[arg(long)]
        tenant: Option<String>,
        /// One database, as TENANT/NAME.
        #[arg(long)]
        db: Option<String>,
    },
    /// Back up Silo's own catalog now (and write its offline manifest).
    Catalog,
    /// Delete the backups that the retention policies no longer keep.
    Prune,
    /// Restore a backup into a new database (--into) or over its database (--in-place --yes).
    Restore {
        id: i64,
        #[arg(long, conflicts_with = "in_place", required_unless_present = "in_place")]
        into: Option<String>,
        /// Replace the source database; a safety backup is taken first.
        #[arg(long, requires = "yes")]
        in_place: bool,
        /// Confirm an in-place restore.
        #[arg(long)]
        yes: bool,
    },
    /// Restore a backup into a scratch database and compare every table's row count.
    Verify { id: i64 },
    /// Stream a backup out as a file that plain pg_restore reads.
    Download {
        id: i64,
        #[arg(short, long)]
        output: std::path::PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Print the configuration that `silo serve` with these flags, variables and file would run
    /// with, as TOML, secrets masked.
    Show(Box<ServeArgs>),
}

#[derive(Debug, Subcommand)]
pub enum CatalogCommand {
    /// Restore a catalog backup into a new, empty database.
    Restore(crate::catalog_restore::CatalogRestoreArgs),
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::Cli;

    #[test]
    fn no_two_flags_of_a_command_clash_with_the_global_client_flags() {
        Cli::command().debug_assert();
    }
}

/// On or off, as `silo db protect` takes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Switch {
    On,
    Off,
}
