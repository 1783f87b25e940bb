//! `backup run`: picks the databases that are due, backs them up with a concurrency limit, and
//! prunes by the retention policy. Safe to run every hour, and from several places at once:
//! each database's backup runs under a lease (an advisory lock), so two runs never back up the
//! same database twice; the second reports it as skipped.

use std::time::{Duration, Instant};

use futures::StreamExt;
use serde::{Deserialize, Serialize};

use super::Backups;
use super::catalog::SYSTEM_TENANT;
use crate::DbError;
use crate::databases::Row;
use crate::states::{BackupKind, BackupStatus, DatabaseState, RunStatus};

/// How a run names the catalog in its results.
const CATALOG: &str = "(catalog)";

/// A backup is due this long before its interval is up, so that an hourly cron does not let
/// a daily backup drift by an hour a day.
const DUE_SLACK: Duration = Duration::from_secs(15 * 60);

/// What to back up.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunRequest {
    /// Every database.
    #[serde(default)]
    pub all: bool,
    /// Every database of this tenant.
    #[serde(default)]
    pub tenant: Option<String>,
    /// One database, as `tenant/name`; backed up even when not due.
    #[serde(default)]
    pub database: Option<String>,
    /// Back up even what is not due.
    #[serde(default)]
    pub force: bool,
    /// Verify each new backup by restoring it into a scratch database.
    #[serde(default)]
    pub verify: bool,
    /// How many backups run at once (default 2).
    #[serde(default)]
    pub concurrency: Option<usize>,
}

/// What happened to one database in a run.
#[derive(Debug, Clone, Serialize)]
pub struct RunResult {
    pub tenant: String,
    pub database: String,
    pub status: RunStatus,
    pub backup_id: Option<i64>,
    pub logical_bytes: Option<i64>,
    pub new_stored_bytes: Option<i64>,
    pub seconds: f64,
    /// With `verify`: whether the backup restored with every table's row count.
    pub verified: Option<bool>,
    pub error: Option<String>,
}

impl RunResult {
    fn new(tenant: &str, database: &str, status: RunStatus) -> Self {
        RunResult {
            tenant: tenant.to_string(),
            database: database.to_string(),
            status,
            backup_id: None,
            logical_bytes: None,
            new_stored_bytes: None,
            seconds: 0.0,
            verified: None,
            error: None,
        }
    }
}

/// Progress of a run, as it happens.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum RunEvent {
    Planned { databases: usize, due: usize },
    Started { tenant: String, database: String },
    Finished(RunResult),
}

impl Backups {
    /// Runs the backups `request` selects; `progress` hears of each as it starts and ends.
    /// Then prunes what the retention policies no longer keep.
    ///
    /// # Errors
    /// A bad selection ([`DbError::InvalidRequest`], [`DbError::NotFound`],
    /// [`DbError::TenantNotFound`]) or catalog errors. A failed backup is a result, not an error.
    pub async fn run_backups(
        &self,
        request: RunRequest,
        progress: impl Fn(RunEvent) + Send + Sync,
    ) -> Result<Vec<RunResult>, DbError> {
        let selected = self.select_databases(&request).await?;
        let mut results = Vec::new();
        let mut due = Vec::new();
        for (row, is_due) in selected {
            if is_due || request.force || request.database.is_some() {
                due.push(row);
            } else {
                results.push(RunResult::new(&row.tenant, &row.name, RunStatus::NotDue));
            }
        }
        progress(RunEvent::Planned { databases: due.len() + results.len(), due: due.len() });
        let kind = if request.database.is_some() { BackupKind::Manual } else { BackupKind::Scheduled };
        let concurrency = request.concurrency.unwrap_or(2).clamp(1, 16);
        let progress = &progress;
        let finished: Vec<RunResult> = futures::stream::iter(due)
            .map(|row| async move {
                progress(RunEvent::Started { tenant: row.tenant.clone(), database: row.name.clone() });
                let result = self.backup_one(&row, kind, request.verify).await;
                progress(RunEvent::Finished(result.clone()));
                result
            })
            .buffer_unordered(concurrency)
            .collect()
            .await;
        results.extend(finished);
        results.sort_by(|a, b| (&a.tenant, &a.database).cmp(&(&b.tenant, &b.database)));
        if request.all {
            results.push(self.backup_catalog_for_run(&progress).await);
        }
        if let Err(err) = self.prune_backups().await {
            tracing::warn!(error = %err, "pruning after the run failed; the next run prunes");
        }
        Ok(results)
    }

    /// `run --all` also backs up Silo's own catalog.
    async fn backup_catalog_for_run(&self, progress: &(impl Fn(RunEvent) + Send + Sync)) -> RunResult {
        let started = Instant::now();
        progress(RunEvent::Started { tenant: SYSTEM_TENANT.into(), database: CATALOG.into() });
        let mut result = RunResult::new(SYSTEM_TENANT, CATALOG, RunStatus::Failed);
        match self.backup_catalog().await {
            Ok(backup) => {
                result.status = RunStatus::Complete;
                result.backup_id = Some(backup.id);
                result.logical_bytes = Some(backup.logical_bytes as i64);
                result.new_stored_bytes = Some(backup.new_stored_bytes as i64);
            }
            Err(DbError::BackupBusy { .. }) => result.status = RunStatus::Skipped,
            Err(err) => result.error = Some(err.to_string()),
        }
        result.seconds = started.elapsed().as_secs_f64();
        progress(RunEvent::Finished(result.clone()));
        result
    }

    async fn backup_one(&self, row: &Row, kind: BackupKind, verify: bool) -> RunResult {
        let started = Instant::now();
        let mut result = RunResult::new(&row.tenant, &row.name, RunStatus::Failed);
        // A delete, restore or resize of the database holds its lock: skip it this time.
        let lock = match self.ctx.lock_database(row.id).await {
            Ok(Some(lock)) => Some(lock),
            Ok(None) => None,
            Err(err) => {
                result.error = Some(err.to_string());
                return result;
            }
        };
        let outcome = match lock {
            Some(_) => self.backup_now(row, kind).await,
            None => Err(DbError::BackupBusy { name: row.name.clone() }),
        };
        drop(lock);
        match outcome {
            Ok(backup) => {
                result.status = RunStatus::Complete;
                result.backup_id = Some(backup.id);
                result.logical_bytes = backup.logical_bytes;
                result.new_stored_bytes = backup.new_stored_bytes;
                if verify {
                    match self.verify_backup(backup.id).await {
                        Ok(report) if report.ok => result.verified = Some(true),
                        Ok(report) => {
                            result.verified = Some(false);
                            result.status = RunStatus::Failed;
                            result.error = Some(report.summary());
                        }
                        Err(err) => {
                            result.verified = Some(false);
                            result.status = RunStatus::Failed;
                            result.error = Some(format!("verification failed: {err}"));
                        }
                    }
                }
            }
            Err(DbError::BackupBusy { .. }) => {
                result.status = RunStatus::Skipped;
                result.error = Some("another run is backing it up, or the database is being changed".into());
            }
            Err(err) => result.error = Some(err.to_string()),
        }
        result.seconds = started.elapsed().as_secs_f64();
        result
    }

    /// The databases a request names, each with whether it is due.
    async fn select_databases(&self, request: &RunRequest) -> Result<Vec<(Row, bool)>, DbError> {
        let chosen = [request.all, request.tenant.is_some(), request.database.is_some()];
        if chosen.iter().filter(|c| **c).count() != 1 {
            return Err(DbError::InvalidRequest("choose exactly one of all, tenant or database".into()));
        }
        let (tenant, name) = match &request.database {
            Some(path) => {
                let (tenant, name) = path
                    .split_once('/')
                    .ok_or_else(|| DbError::InvalidRequest(format!("{path:?} is not tenant/database")))?;
                let row = self.databases.row(tenant, name).await?;
                return Ok(vec![(row, true)]);
            }
            None => (request.tenant.clone(), None::<String>),
        };
        if let Some(tenant) = &tenant {
            crate::servers::tenant_id(self.ctx.pool(), tenant).await?;
        }
        let client = self.ctx.pool().get().await?;
        let rows = client
            .query(
                "SELECT d.id, d.plan, \
                        (SELECT extract(epoch FROM now() - max(b.started_at))::float8 FROM database_backups b \
                         WHERE b.database_id = d.id AND b.status = $3) \
                 FROM tenant_databases d JOIN tenants t ON t.id = d.tenant_id \
                 WHERE d.state IN ($4, $5) AND ($1::text IS NULL OR t.name = $1) \
                   AND ($2::text IS NULL OR d.name = $2) \
                 ORDER BY t.name, d.name",
                &[
                    &tenant,
                    &name,
                    &BackupStatus::Complete,
                    &DatabaseState::Active,
                    &DatabaseState::ReadOnlyOverQuota,
                ],
            )
            .await?;
        drop(client);
        let mut selected = Vec::new();
        for db in rows {
            let (id, plan, age): (i64, String, Option<f64>) = (db.get(0), db.get(1), db.get(2));
            let every = self.settings.plans.get(&plan).map_or(24, |p| p.backup_every_hours);
            let interval = Duration::from_secs(u64::from(every) * 3600).saturating_sub(DUE_SLACK);
            let due = age.is_none_or(|age| age >= interval.as_secs_f64());
            selected.push((self.databases.row_by_id(id).await?, due));
        }
        Ok(selected)
    }
}
