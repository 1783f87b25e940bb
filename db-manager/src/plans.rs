//! Database plans: the limits a client database gets, named and defined in the config file.
//!
//! A plan sets the connection limit, the storage quota, the statement timeout and the backup
//! retention of a database, and, for a dedicated instance, the server's memory settings.
//! `small`, `medium` and `large` exist unless the config file redefines them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// How many backups a plan keeps (grandfather-father-son).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Retention {
    /// The newest N backups, whatever their age.
    pub keep_last: u32,
    /// The newest backup of each of the last N days.
    pub daily: u32,
    /// The newest backup of each of the last N ISO weeks.
    pub weekly: u32,
    /// The newest backup of each of the last N months.
    pub monthly: u32,
}

impl Default for Retention {
    fn default() -> Self {
        Retention { keep_last: 3, daily: 7, weekly: 4, monthly: 3 }
    }
}

/// One plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Plan {
    /// The most sessions the database's role may hold at once.
    pub connection_limit: u32,
    /// Past this size the database turns read-only.
    pub storage_quota_bytes: u64,
    /// `statement_timeout` of every session, in milliseconds (0: none).
    pub statement_timeout_ms: u64,
    #[serde(default)]
    pub backup_retention: Retention,
    /// A database is due for a backup this long after its last one.
    #[serde(default = "default_backup_every_hours")]
    pub backup_every_hours: u32,
    /// A dedicated instance's `shared_buffers`, `max_connections` and `work_mem`.
    #[serde(default = "default_shared_buffers")]
    pub shared_buffers: String,
    #[serde(default = "default_max_connections")]
    pub max_connections: u32,
    #[serde(default = "default_work_mem")]
    pub work_mem: String,
}

fn default_backup_every_hours() -> u32 {
    24
}

fn default_shared_buffers() -> String {
    "128MB".into()
}

fn default_max_connections() -> u32 {
    100
}

fn default_work_mem() -> String {
    "4MB".into()
}

const MIB: u64 = 1024 * 1024;

/// The plans by name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Plans(BTreeMap<String, Plan>);

impl Default for Plans {
    fn default() -> Self {
        let plan = |connections: u32, quota_mib: u64, timeout_s: u64, buffers: &str, work_mem: &str| Plan {
            connection_limit: connections,
            storage_quota_bytes: quota_mib * MIB,
            statement_timeout_ms: timeout_s * 1000,
            backup_retention: Retention::default(),
            backup_every_hours: default_backup_every_hours(),
            shared_buffers: buffers.into(),
            max_connections: connections + 10,
            work_mem: work_mem.into(),
        };
        Plans(BTreeMap::from([
            ("small".into(), plan(20, 1024, 30, "128MB", "4MB")),
            ("medium".into(), plan(50, 10 * 1024, 60, "512MB", "8MB")),
            ("large".into(), plan(200, 100 * 1024, 300, "2GB", "16MB")),
        ]))
    }
}

impl Plans {
    /// The default plans, with `defined` added or replacing them by name.
    pub fn with(defined: BTreeMap<String, Plan>) -> Self {
        let mut plans = Plans::default();
        plans.0.extend(defined);
        plans
    }

    pub fn get(&self, name: &str) -> Option<&Plan> {
        self.0.get(name)
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.0.keys().map(String::as_str)
    }

    /// A plan by name, or an error that lists the plans there are.
    ///
    /// # Errors
    /// [`crate::DbError::UnknownPlan`].
    pub fn require(&self, name: &str) -> Result<&Plan, crate::DbError> {
        self.get(name).ok_or_else(|| crate::DbError::UnknownPlan {
            plan: name.to_string(),
            known: self.names().collect::<Vec<_>>().join(", "),
        })
    }
}
