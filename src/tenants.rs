//! The CLI's tenant commands: `silo tenant ...`, `silo key ...` and `silo usage`.

use reqwest::Method;
use serde_json::{Value, json};

use crate::cli::{KeyCommand, TenantCommand};
use crate::client::{ClientArgs, block_on};

/// `silo tenant create|list|show|delete|placement`.
pub fn tenant(command: TenantCommand, client: &ClientArgs) -> anyhow::Result<()> {
    match command {
        TenantCommand::Create { name, quota_bytes } => {
            let body = json!({ "name": name, "storage_quota_bytes": quota_bytes });
            let tenant: Value = block_on(client.call(Method::POST, "/v1/tenants", Some(body)))?;
            print_rows(
                client,
                &tenant,
                &[vec![tenant.clone()]],
                &["name", "storage_quota_bytes", "created_at"],
            );
        }
        TenantCommand::List => {
            let tenants: Value = block_on(client.call(Method::GET, "/v1/tenants", None))?;
            let rows = tenants.as_array().cloned().unwrap_or_default();
            print_rows(client, &tenants, &[rows], &["name", "storage_quota_bytes", "created_at"]);
        }
        TenantCommand::Show { name } => {
            let tenant: Value = block_on(client.call(Method::GET, &format!("/v1/tenants/{name}"), None))?;
            print_rows(
                client,
                &tenant,
                &[vec![tenant.clone()]],
                &["name", "storage_quota_bytes", "created_at"],
            );
        }
        TenantCommand::Delete { name, force, skip_final_backup } => {
            let path = format!("/v1/tenants/{name}?force={force}&final_backup={}", !skip_final_backup);
            let _: Value = block_on(client.call(Method::DELETE, &path, None))?;
            if !client.json {
                println!("deleted tenant {name}");
            }
        }
        TenantCommand::Placement(args) => crate::placement::placement(&args, client)?,
    }
    Ok(())
}

/// `silo key create|list|revoke`.
pub fn key(command: KeyCommand, client: &ClientArgs) -> anyhow::Result<()> {
    match command {
        KeyCommand::Create { tenant } => {
            let key: Value =
                block_on(client.call(Method::POST, &format!("/v1/tenants/{tenant}/keys"), None))?;
            print_rows(client, &key, &[vec![key.clone()]], &["access_key_id", "secret_access_key"]);
            if !client.json {
                println!("\nThe secret is shown this one time: keep it now.");
            }
        }
        KeyCommand::List { tenant } => {
            let keys: Value =
                block_on(client.call(Method::GET, &format!("/v1/tenants/{tenant}/keys"), None))?;
            let rows = keys.as_array().cloned().unwrap_or_default();
            print_rows(client, &keys, &[rows], &["access_key_id", "created_at", "revoked_at"]);
        }
        KeyCommand::Revoke { tenant, access_key_id } => {
            let path = format!("/v1/tenants/{tenant}/keys/{access_key_id}");
            let _: Value = block_on(client.call(Method::DELETE, &path, None))?;
            if !client.json {
                println!("revoked {access_key_id}");
            }
        }
    }
    Ok(())
}

/// `silo usage TENANT`.
pub fn usage(tenant: &str, client: &ClientArgs) -> anyhow::Result<()> {
    let usage: Value = block_on(client.call(Method::GET, &format!("/v1/tenants/{tenant}/usage"), None))?;
    let columns = [
        "s3_objects",
        "backups",
        "objects",
        "logical_bytes",
        "stored_bytes",
        "dedup_ratio",
        "compression_ratio",
        "quota_bytes",
    ];
    print_rows(client, &usage, &[vec![usage.clone()]], &columns);
    Ok(())
}

/// Prints `json` with `--json`, otherwise `rows` as a table of `columns`.
pub(crate) fn print_rows(client: &ClientArgs, json: &Value, rows: &[Vec<Value>], columns: &[&str]) {
    if client.json {
        println!("{}", serde_json::to_string_pretty(json).unwrap_or_default());
        return;
    }
    let cells: Vec<Vec<String>> =
        rows.iter().flatten().map(|row| columns.iter().map(|c| cell(&row[*c])).collect()).collect();
    let widths: Vec<usize> = columns
        .iter()
        .enumerate()
        .map(|(i, c)| cells.iter().map(|r| r[i].len()).chain([c.len()]).max().unwrap_or(0))
        .collect();
    let line = |values: Vec<String>| {
        let padded: Vec<String> = values.iter().zip(&widths).map(|(v, w)| format!("{v:<w$}")).collect();
        println!("{}", padded.join("  ").trim_end());
    };
    line(columns.iter().map(|c| c.to_uppercase()).collect());
    for row in cells {
        line(row);
    }
}

fn cell(value: &Value) -> String {
    match value {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        Value::Number(n) => match n.as_f64() {
            Some(f) if n.is_f64() => format!("{f:.2}"),
            _ => n.to_string(),
        },
        other => other.to_string(),
    }
}
