//! `silo node list|drain|remove`: the storage nodes of the catalog, as a table or `--json`.

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
        NodeCommand::Drain { name } => retire(client, &name, "drain")?,
        NodeCommand::Remove { name } => retire(client, &name, "remove")?,
    }
    Ok(())
}

/// `POST /v1/nodes/{node}/{action}`, and what the node holds now.
fn retire(client: &ClientArgs, name: &str, action: &str) -> anyhow::Result<()> {
    let path = format!("/v1/nodes/{name}/{action}");
    let node: Value = block_on(client.call(Method::POST, &path, None))?;
    print_rows(client, &node, &[vec![node.clone()]], &["name", "state", "packs", "last_copies"]);
    Ok(())
}
