//! The CLI's database commands: `silo db ...` and `silo server ...`.

use reqwest::Method;
use serde_json::{Value, json};

use crate::cli::{DbCommand, ServerCommand, Switch};
use crate::client::{ClientArgs, block_on};
use crate::tenants::print_rows;

const CREDENTIAL_COLUMNS: [&str; 7] = ["name", "server", "host", "port", "database", "user", "password"];
const INFO_COLUMNS: [&str; 8] =
    ["name", "server", "zone", "plan", "state", "size_bytes", "storage_quota_bytes", "connections"];

/// `silo db create|list|show|resize|protect|rotate|delete`.
pub fn db(command: DbCommand, client: &ClientArgs) -> anyhow::Result<()> {
    match command {
        DbCommand::Create { tenant, name, plan, zone, deletion_protection, idempotency_key } => {
            let body = json!({ "name": name, "plan": plan, "zone": zone, "deletion_protection": deletion_protection });
            let headers: Vec<(&str, &str)> =
                idempotency_key.as_deref().map(|key| ("Idempotency-Key", key)).into_iter().collect();
            let path = format!("/v1/tenants/{tenant}/databases");
            let created: Value =
                block_on(client.call_with_headers(Method::POST, &path, Some(body), &headers))?;
            print_credentials(client, &created);
        }
        DbCommand::List { tenant } => {
            let list: Value =
                block_on(client.call(Method::GET, &format!("/v1/tenants/{tenant}/databases"), None))?;
            let rows = list.as_array().cloned().unwrap_or_default();
            print_rows(client, &list, &[rows], &INFO_COLUMNS);
        }
        DbCommand::Show { tenant, name } => {
            let info: Value =
                block_on(client.call(Method::GET, &format!("/v1/tenants/{tenant}/databases/{name}"), None))?;
            print_rows(client, &info, &[vec![info.clone()]], &INFO_COLUMNS);
            if !client.json {
                let events = info["events"].as_array().cloned().unwrap_or_default();
                if !events.is_empty() {
                    println!();
                    print_rows(client, &info, &[events], &["at", "event", "detail"]);
                }
            }
        }
        DbCommand::Resize { tenant, name, plan } => {
            let path = format!("/v1/tenants/{tenant}/databases/{name}");
            let info: Value = block_on(client.call(Method::PATCH, &path, Some(json!({ "plan": plan }))))?;
            print_rows(client, &info, &[vec![info.clone()]], &INFO_COLUMNS);
        }
        DbCommand::Protect { tenant, name, state } => {
            let path = format!("/v1/tenants/{tenant}/databases/{name}");
            let body = json!({ "deletion_protection": state == Switch::On });
            let info: Value = block_on(client.call(Method::PATCH, &path, Some(body)))?;
            print_rows(client, &info, &[vec![info.clone()]], &["name", "deletion_protection"]);
        }
        DbCommand::Rotate { tenant, name, grace_secs } => {
            let path = format!("/v1/tenants/{tenant}/databases/{name}/rotate-credentials");
            let rotated: Value =
                block_on(client.call(Method::POST, &path, Some(json!({ "grace_secs": grace_secs }))))?;
            print_credentials(client, &rotated);
        }
        DbCommand::Delete { tenant, name, skip_final_backup } => {
            let query = if skip_final_backup { "?skip_final_backup=true" } else { "" };
            let path = format!("/v1/tenants/{tenant}/databases/{name}{query}");
            let _: Value = block_on(client.call(Method::DELETE, &path, None))?;
            if !client.json {
                println!("deleted database {name} of {tenant}");
            }
        }
    }
    Ok(())
}

pub(crate) fn print_credentials(client: &ClientArgs, credentials: &Value) {
    print_rows(client, credentials, &[vec![credentials.clone()]], &CREDENTIAL_COLUMNS);
    if !client.json {
        println!("\nurl: {}", credentials["url"].as_str().unwrap_or_default());
        println!("The password is shown this one time: keep it now.");
    }
}

/// `silo server list|register|create-dedicated|remove`.
pub fn server(command: ServerCommand, client: &ClientArgs) -> anyhow::Result<()> {
    let columns = ["name", "kind", "host", "port", "zone", "owner", "databases", "reserved_bytes"];
    match command {
        ServerCommand::List => {
            let list: Value = block_on(client.call(Method::GET, "/v1/servers", None))?;
            let rows = list.as_array().cloned().unwrap_or_default();
            print_rows(client, &list, &[rows], &columns);
        }
        ServerCommand::Register { name, server_url, zone, owner } => {
            let body = json!({ "name": name, "url": server_url.expose(), "zone": zone, "owner": owner });
            let server: Value = block_on(client.call(Method::POST, "/v1/servers", Some(body)))?;
            print_rows(client, &server, &[vec![server.clone()]], &columns);
        }
        ServerCommand::CreateDedicated { tenant, plan, name } => {
            let body = json!({ "dedicated_for": tenant, "plan": plan, "name": name });
            let server: Value = block_on(client.call(Method::POST, "/v1/servers", Some(body)))?;
            print_rows(client, &server, &[vec![server.clone()]], &columns);
        }
        ServerCommand::Remove { name } => {
            let _: Value = block_on(client.call(Method::DELETE, &format!("/v1/servers/{name}"), None))?;
            if !client.json {
                println!("removed server {name}");
            }
        }
    }
    Ok(())
}
