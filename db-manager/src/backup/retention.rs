//! Retention: which backups a plan's policy keeps, and pruning the rest.
//!
//! The policy is grandfather-father-son: the newest `keep_last`, plus the newest backup of each
//! of the last `daily` days, `weekly` ISO weeks and `monthly` months that have one (restic's
//! rules). Final backups (taken before a delete) and safety backups (before an in-place
//! restore) are kept until their expiry instead. The newest complete backup of a database that
//! still exists is never deleted. Pruning deletes only what the policy names; the space comes
//! back through the chunk store's GC.

use std::collections::{BTreeMap, HashSet};

use serde::Serialize;
use storage_node::TenantId;
use storage_node::store::ObjectId;

use super::Backups;
use crate::DbError;
use crate::plans::Retention;
use crate::states::{BackupKind, BackupStatus};
use crate::timestamp;

/// One complete backup as retention sees it, newest first in the input.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub id: i64,
    /// `YYYY-MM-DD`, `IYYY-IW` and `YYYY-MM` of its start, in UTC.
    pub day: String,
    pub week: String,
    pub month: String,
}

impl Candidate {
    /// Backup `id`, started at `at`: its buckets are taken in UTC.
    pub fn started(id: i64, at: time::OffsetDateTime) -> Self {
        let at = at.to_offset(time::UtcOffset::UTC);
        let (iso_year, iso_week, _) = at.to_iso_week_date();
        Candidate {
            id,
            day: format!("{:04}-{:02}-{:02}", at.year(), u8::from(at.month()), at.day()),
            week: format!("{iso_year:04}-{iso_week:02}"),
            month: format!("{:04}-{:02}", at.year(), u8::from(at.month())),
        }
    }
}

/// The ids `policy` keeps among `newest_first`.
pub fn kept(newest_first: &[Candidate], policy: &Retention) -> HashSet<i64> {
    let mut keep: HashSet<i64> = newest_first.iter().take(policy.keep_last as usize).map(|c| c.id).collect();
    let mut by_bucket = |bucket: fn(&Candidate) -> &str, count: u32| {
        let mut seen = HashSet::new();
        for candidate in newest_first {
            if seen.len() >= count as usize {
                break;
            }
            if seen.insert(bucket(candidate).to_string()) {
                keep.insert(candidate.id);
            }
        }
    };
    by_bucket(|c| &c.day, policy.daily);
    by_bucket(|c| &c.week, policy.weekly);
    by_bucket(|c| &c.month, policy.monthly);
    keep
}

/// A backup that pruning deleted.
#[derive(Debug, Clone, Serialize)]
pub struct Pruned {
    pub id: i64,
    pub tenant: String,
    pub database: String,
    pub kind: BackupKind,
    #[serde(serialize_with = "timestamp::serialize")]
    pub started_at: time::OffsetDateTime,
    pub reason: String,
}

struct Row {
    id: i64,
    tenant_id: TenantId,
    tenant: String,
    database: String,
    database_exists: bool,
    plan: String,
    kind: BackupKind,
    object: Option<ObjectId>,
    started_at: time::OffsetDateTime,
    candidate: Candidate,
}

impl Backups {
    /// Deletes the backups that no policy keeps: regular backups outside their plan's GFS
    /// policy, final and safety backups past their expiry, and failed attempts older than a
    /// day. Returns what it deleted.
    ///
    /// # Errors
    /// Catalog and store errors; what was deleted before the error stays deleted.
    pub async fn prune_backups(&self) -> Result<Vec<Pruned>, DbError> {
        let client = self.ctx.pool().get().await?;
        let rows = client
            .query(
                "SELECT b.id, b.tenant_id, t.name, b.database_name, b.database_id IS NOT NULL, \
                        coalesce(d.plan, b.plan), b.kind, b.object_id, b.started_at, \
                        b.status, coalesce(b.expires_at < now(), false), b.started_at < now() - interval '1 day' \
                 FROM database_backups b JOIN tenants t ON t.id = b.tenant_id \
                 LEFT JOIN tenant_databases d ON d.id = b.database_id \
                 WHERE b.status <> $1 \
                 ORDER BY b.tenant_id, b.database_name, b.started_at DESC, b.id DESC",
                &[&BackupStatus::Running],
            )
            .await?;
        drop(client);
        let mut doomed: Vec<(Row, String)> = Vec::new();
        let mut regular: BTreeMap<(i64, String), Vec<Row>> = BTreeMap::new();
        for r in rows {
            let started_at: time::OffsetDateTime = r.get(8);
            let row = Row {
                id: r.get(0),
                tenant_id: TenantId(r.get(1)),
                tenant: r.get(2),
                database: r.get(3),
                database_exists: r.get(4),
                plan: r.get(5),
                kind: r.get(6),
                object: r.get::<_, Option<i64>>(7).map(ObjectId),
                started_at,
                candidate: Candidate::started(r.get(0), started_at),
            };
            let (status, expired, day_old): (BackupStatus, bool, bool) = (r.get(9), r.get(10), r.get(11));
            if status == BackupStatus::Failed {
                if day_old {
                    doomed.push((row, "a failed attempt older than a day".into()));
                }
            } else if matches!(row.kind, BackupKind::Final | BackupKind::Safety) {
                if expired {
                    let reason = format!("a {} backup past its expiry", row.kind);
                    doomed.push((row, reason));
                }
            } else {
                regular.entry((row.tenant_id.0, row.database.clone())).or_default().push(row);
            }
        }
        for (_, backups) in regular {
            let policy = self
                .settings
                .plans
                .get(&backups[0].plan)
                .map(|p| p.backup_retention.clone())
                .unwrap_or_default();
            let candidates: Vec<Candidate> = backups.iter().map(|b| b.candidate.clone()).collect();
            let mut keep = kept(&candidates, &policy);
            if backups[0].database_exists {
                keep.insert(backups[0].id);
            }
            for backup in backups {
                if !keep.contains(&backup.id) {
                    let reason = format!("outside plan {}'s retention", backup.plan);
                    doomed.push((backup, reason));
                }
            }
        }
        let mut pruned = Vec::new();
        for (row, reason) in doomed {
            if let Some(object) = row.object {
                match self.store.delete(row.tenant_id, object).await {
                    Ok(()) | Err(storage_node::store::StoreError::NoSuchObject(_)) => {}
                    Err(err) => return Err(err.into()),
                }
            }
            // Deleting the object deleted the row with it (ON DELETE CASCADE); a row without
            // an object goes here.
            let client = self.ctx.pool().get().await?;
            client.execute("DELETE FROM database_backups WHERE id = $1", &[&row.id]).await?;
            tracing::info!(backup = row.id, tenant = %row.tenant, database = %row.database, reason, "pruned backup");
            pruned.push(Pruned {
                id: row.id,
                tenant: row.tenant,
                database: row.database,
                kind: row.kind,
                started_at: row.started_at,
                reason,
            });
        }
        Ok(pruned)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn candidate(id: i64, day: &str, week: &str, month: &str) -> Candidate {
        Candidate { id, day: day.into(), week: week.into(), month: month.into() }
    }

    #[test]
    fn buckets_are_utc_days_iso_weeks_and_months() {
        // 2027-01-01 00:30 in UTC+2 is 2026-12-31 in UTC, in ISO week 53 of 2026.
        let c = Candidate::started(1, time::macros::datetime!(2027-01-01 00:30 +02:00));
        assert_eq!((c.day.as_str(), c.week.as_str(), c.month.as_str()), ("2026-12-31", "2026-53", "2026-12"));
        let c = Candidate::started(2, time::macros::datetime!(2027-01-04 12:00 UTC));
        assert_eq!((c.day.as_str(), c.week.as_str(), c.month.as_str()), ("2027-01-04", "2027-01", "2027-01"));
    }

    #[test]
    fn grandfather_father_son_keeps_the_newest_of_each_bucket() {
        // Newest first: two backups a day for four days across two weeks and two months.
        let backups = vec![
            candidate(8, "2026-11-02", "2026-45", "2026-11"),
            candidate(7, "2026-11-02", "2026-45", "2026-11"),
            candidate(6, "2026-11-01", "2026-44", "2026-11"),
            candidate(5, "2026-11-01", "2026-44", "2026-11"),
            candidate(4, "2026-10-31", "2026-44", "2026-10"),
            candidate(3, "2026-10-31", "2026-44", "2026-10"),
            candidate(2, "2026-10-30", "2026-44", "2026-10"),
            candidate(1, "2026-10-30", "2026-44", "2026-10"),
        ];
        let policy = |keep_last, daily, weekly, monthly| Retention { keep_last, daily, weekly, monthly };
        let sorted = |set: HashSet<i64>| {
            let mut v: Vec<_> = set.into_iter().collect();
            v.sort();
            v
        };
        assert_eq!(sorted(kept(&backups, &policy(1, 0, 0, 0))), [8]);
        assert_eq!(sorted(kept(&backups, &policy(0, 2, 0, 0))), [6, 8]);
        assert_eq!(sorted(kept(&backups, &policy(0, 0, 2, 0))), [6, 8]);
        assert_eq!(sorted(kept(&backups, &policy(0, 0, 0, 2))), [4, 8]);
        assert_eq!(sorted(kept(&backups, &policy(2, 3, 0, 2))), [4, 6, 7, 8]);
        assert!(kept(&backups, &policy(0, 0, 0, 0)).is_empty());
        assert_eq!(kept(&backups, &policy(100, 0, 0, 0)).len(), 8);
    }
}
