//! The CLI's `silo tenant placement NAME`: shows a tenant's placement policy, or with flags
//! changes it (`PUT /v1/tenants/{name}/placement` with only the fields the flags name).

use reqwest::Method;
use serde_json::{Map, Value};

use crate::cli::PlacementArgs;
use crate::client::{ClientArgs, block_on};
use crate::tenants::print_rows;

const COLUMNS: [&str; 8] = [
    "tenant",
    "mode",
    "replication_factor",
    "effective_replication_factor",
    "allowed_zones",
    "on_shortage",
    "domain",
    "zones",
];

/// `silo tenant placement NAME [--owned|--shared] [--replicas N|--default-replicas]
/// [--zones a,b|--all-zones] [--on-shortage refuse|degraded]`.
pub fn placement(args: &PlacementArgs, client: &ClientArgs) -> anyhow::Result<()> {
    let path = format!("/v1/tenants/{}/placement", args.name);
    let change = change(args);
    let shown: Value = if change.is_empty() {
        block_on(client.call(Method::GET, &path, None))?
    } else {
        block_on(client.call(Method::PUT, &path, Some(Value::Object(change))))?
    };
    print_rows(client, &shown, &[vec![shown.clone()]], &COLUMNS);
    Ok(())
}

/// The fields the flags change; `null` for a return to the default.
fn change(args: &PlacementArgs) -> Map<String, Value> {
    let mut change = Map::new();
    let mode = match (args.owned, args.shared) {
        (true, _) => Some("owned"),
        (_, true) => Some("shared"),
        _ => None,
    };
    if let Some(mode) = mode {
        change.insert("mode".into(), mode.into());
    }
    if let Some(replicas) = args.replicas {
        change.insert("replication_factor".into(), replicas.into());
    } else if args.default_replicas {
        change.insert("replication_factor".into(), Value::Null);
    }
    if let Some(zones) = &args.zones {
        change.insert("allowed_zones".into(), zones.clone().into());
    } else if args.all_zones {
        change.insert("allowed_zones".into(), Value::Null);
    }
    if let Some(on_shortage) = &args.on_shortage {
        change.insert("on_shortage".into(), on_shortage.as_str().into());
    }
    change
}
