//! `silo node list`: the storage nodes of the catalog, as a table or `--json`.

use reqwest::Method;
use serde_json::Value;

use crate::cli::NodeCommand;
use crate::client::{ClientArgs, block_on};
use crate::tenants::print_rows;

/// Runs a `silo node` command.
pub fn node(command: NodeCommand, client: &ClientArgs) -> anyhow::Result<()> {
    let columns = [
        "name",
        "zone",
        "owner",
        "state",
        "live",
        "heartbeat_at",
        "internal_url",
        "capacity_bytes",
        "packs",
        "stored_bytes",
    ];
    match command {
        NodeCommand::List => {
            let list: Value = block_on(client.call(Method::GET, "/v1/nodes", None))?;
            let rows = list.as_array().cloned().unwrap_or_default();
            print_rows(client, &list, &[rows], &columns);
        }
    }
    Ok(())
}
