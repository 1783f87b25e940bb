//! The CLI's backup commands: `silo backup run|list|prune|restore|verify|download`.

use std::io::Write;

use anyhow::{Context, bail};
use db_manager::states::RunStatus;
use indicatif::{ProgressBar, ProgressStyle};
use reqwest::Method;
use serde_json::{Value, json};

use crate::cli::BackupCommand;
use crate::client::{ClientArgs, block_on};
use crate::tenants::print_rows;

const BACKUP_COLUMNS: [&str; 9] = [
    "id",
    "tenant",
    "database",
    "kind",
    "status",
    "started_at",
    "finished_at",
    "logical_bytes",
    "new_stored_bytes",
];

/// `silo backup ...`.
pub fn backup(command: BackupCommand, client: &ClientArgs) -> anyhow::Result<()> {
    match command {
        BackupCommand::Run { all, tenant, db, force, verify, concurrency } => {
            let request = json!({
                "all": all, "tenant": tenant, "database": db, "force": force, "verify": verify,
                "concurrency": concurrency,
            });
            let summary = block_on(run(client, request))?;
            report_run(client, &summary)
        }
        BackupCommand::List { tenant, db } => {
            let (tenant, database) = match db.as_deref().map(|d| d.split_once('/')) {
                Some(Some((t, d))) => (Some(t.to_string()), Some(d.to_string())),
                Some(None) => bail!("--db takes TENANT/NAME"),
                None => (tenant, None),
            };
            let mut query = Vec::new();
            if let Some(tenant) = tenant {
                query.push(format!("tenant={tenant}"));
            }
            if let Some(database) = database {
                query.push(format!("database={database}"));
            }
            let path = format!("/v1/backups?{}", query.join("&"));
            let list: Value = block_on(client.call(Method::GET, &path, None))?;
            let rows = list.as_array().cloned().unwrap_or_default();
            print_rows(client, &list, &[rows], &BACKUP_COLUMNS);
            Ok(())
        }
        BackupCommand::Catalog => {
            let backup: Value = block_on(client.call(Method::POST, "/v1/backups/catalog", None))?;
            print_rows(
                client,
                &backup,
                &[vec![backup.clone()]],
                &["id", "logical_bytes", "new_stored_bytes", "manifest"],
            );
            Ok(())
        }
        BackupCommand::Prune => {
            let pruned: Value = block_on(client.call(Method::POST, "/v1/backups/prune", None))?;
            let rows = pruned.as_array().cloned().unwrap_or_default();
            print_rows(
                client,
                &pruned,
                &[rows],
                &["id", "tenant", "database", "kind", "started_at", "reason"],
            );
            Ok(())
        }
        BackupCommand::Restore { id, into, in_place, yes: _ } => {
            let body = json!({ "into": into, "in_place": in_place });
            let restored: Value =
                block_on(client.call(Method::POST, &format!("/v1/backups/{id}/restore"), Some(body)))?;
            if restored.get("password").is_some() {
                crate::databases::print_credentials(client, &restored);
            } else {
                print_rows(
                    client,
                    &restored,
                    &[vec![restored.clone()]],
                    &["tenant", "name", "safety_backup"],
                );
            }
            Ok(())
        }
        BackupCommand::Verify { id } => {
            let report: Value =
                block_on(client.call(Method::POST, &format!("/v1/backups/{id}/verify"), None))?;
            print_rows(client, &report, &[vec![report.clone()]], &["backup_id", "ok", "tables"]);
            if report["ok"] != Value::Bool(true) {
                let mismatches = report["mismatches"].as_array().cloned().unwrap_or_default();
                let names: Vec<String> =
                    mismatches.iter().map(|m| m["table"].as_str().unwrap_or("?").to_string()).collect();
                bail!("backup {id} does not verify: {} tables differ ({})", names.len(), names.join(", "));
            }
            Ok(())
        }
        BackupCommand::Download { id, output } => block_on(download(client, id, &output)),
    }
}

/// Runs the backups, following the streamed events with a progress bar on a terminal.
async fn run(client: &ClientArgs, request: Value) -> anyhow::Result<Value> {
    let mut response = client.send(Method::POST, "/v1/backups/run?stream=true", Some(request)).await?;
    let bar = if client.json { ProgressBar::hidden() } else { ProgressBar::new(0) };
    bar.set_style(
        ProgressStyle::with_template("{spinner} backups {pos}/{len} [{elapsed_precise}] {wide_msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.enable_steady_tick(std::time::Duration::from_millis(200));
    let mut pending = Vec::new();
    let mut summary = None;
    while let Some(piece) = response.chunk().await.context("the run's answer broke off")? {
        pending.extend_from_slice(&piece);
        while let Some(end) = pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = pending.drain(..=end).collect();
            let event: Value = serde_json::from_slice(&line).context("a malformed progress event")?;
            match event["event"].as_str() {
                Some("planned") => bar.set_length(event["due"].as_u64().unwrap_or(0)),
                Some("started") => bar.set_message(format!(
                    "{}/{}",
                    event["tenant"].as_str().unwrap_or(""),
                    event["database"].as_str().unwrap_or("")
                )),
                Some("finished") => {
                    bar.inc(1);
                    if is_failed(&event) {
                        bar.println(format!(
                            "failed: {}/{}: {}",
                            event["tenant"].as_str().unwrap_or(""),
                            event["database"].as_str().unwrap_or(""),
                            event["error"].as_str().unwrap_or("")
                        ));
                    }
                }
                Some("summary") => summary = Some(event),
                _ => {}
            }
        }
    }
    bar.finish_and_clear();
    summary.context("the run ended without a summary (see the server log)")
}

/// Whether a run's result (or its `finished` event) says the backup failed.
fn is_failed(result: &Value) -> bool {
    serde_json::from_value::<RunStatus>(result["status"].clone()).ok() == Some(RunStatus::Failed)
}

fn report_run(client: &ClientArgs, summary: &Value) -> anyhow::Result<()> {
    let results = summary["results"].as_array().cloned().unwrap_or_default();
    let columns = [
        "tenant",
        "database",
        "status",
        "backup_id",
        "logical_bytes",
        "new_stored_bytes",
        "seconds",
        "error",
    ];
    print_rows(client, summary, std::slice::from_ref(&results), &columns);
    let failed: Vec<String> = results
        .iter()
        .filter(|r| is_failed(r))
        .map(|r| format!("{}/{}", r["tenant"].as_str().unwrap_or(""), r["database"].as_str().unwrap_or("")))
        .collect();
    if !failed.is_empty() {
        bail!("{} backup(s) failed: {}", failed.len(), failed.join(", "));
    }
    Ok(())
}

/// Streams a backup into `output` (through a `.partial` file, renamed when whole).
async fn download(client: &ClientArgs, id: i64, output: &std::path::Path) -> anyhow::Result<()> {
    let mut response = client.send(Method::GET, &format!("/v1/backups/{id}/download"), None).await?;
    let expected = response.content_length();
    let partial = output.with_extension("partial");
    let mut file =
        std::fs::File::create(&partial).with_context(|| format!("cannot create {}", partial.display()))?;
    let mut written = 0u64;
    let outcome = async {
        while let Some(piece) =
            response.chunk().await.context("the download broke off (a damaged backup?)")?
        {
            file.write_all(&piece).with_context(|| format!("cannot write {}", partial.display()))?;
            written += piece.len() as u64;
        }
        if expected.is_some_and(|e| e != written) {
            bail!(
                "the download broke off after {written} of {} bytes (a damaged backup?)",
                expected.unwrap_or(0)
            );
        }
        file.sync_all().context("fsync")?;
        std::fs::rename(&partial, output).with_context(|| format!("cannot write {}", output.display()))?;
        Ok(())
    }
    .await;
    if outcome.is_err() {
        let _ = std::fs::remove_file(&partial);
    }
    outcome?;
    if !client.json {
        println!("wrote backup {id} to {} ({written} bytes)", output.display());
    }
    Ok(())
}
