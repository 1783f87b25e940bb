//! Repair (issue 12): keeps every sealed pack at the copies its placement wants, in distinct
//! zones of its domain.
//!
//! One node at a time repairs (a session-level advisory lock on a catalog connection of its
//! own, tried again every pass, so any node takes over when the holder dies). Each pass:
//! - [`work`] reads the registered nodes, the rules of each placement domain and, in one query,
//!   the packs that need work: fewer healthy copies in distinct zones than wanted (the domain's
//!   effective replication factor, the pack's `replicas_wanted` as a floor), a damaged copy, or
//!   a copy outside the pack's domain; fewest healthy copies first;
//! - [`assess`] says, for one pack, which copies are healthy, where to read it and where the
//!   missing copies go ([`crate::placement::choose`]'s rules; pure functions);
//! - [`copy`] streams the pack from a live copy to each target through memory (never through
//!   this node's disk), at most [`RepairConfig::rate_bytes_per_sec`] ([`bucket`]), then records
//!   the copy; once the pack has its copies, the damaged, misplaced and draining ones are
//!   dropped (a drained node ends up holding nothing). [`run`] repairs a few packs at a time,
//!   all within the one rate limit.
//!
//! A copy is *healthy* when it is `ok`, on an `active` node (not draining nor removed) of the
//! pack's domain in an allowed zone, whose heartbeat is within [`RepairConfig::grace`]: a node
//! that is merely restarting keeps its copies counted, so a rolling restart causes no repair
//! storm. An item that fails is logged, counted and retried the next pass; a pass never aborts
//! on one item. [`RepairStats`] is what `/metrics` shows.

pub mod assess;
pub mod bucket;
pub mod copy;
pub mod error;
pub mod run;
pub mod work;

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

pub use error::RepairError;
pub use run::Repairer;

/// A node silent for longer than this is gone: its copies no longer count.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(600);
/// The default copy rate, in bytes per second.
pub const DEFAULT_RATE_BYTES_PER_SEC: u64 = 100 * 1_000_000;
/// The default pause between two passes.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(10);
/// The advisory lock only the repairing node holds ("RP").
pub const REPAIR_LOCK: i64 = 0x5250_0000;
/// The most packs one pass takes on (the rest wait for the next pass, fewest copies first).
const BATCH: i64 = 500;
/// The packs repaired at the same time (their copies share the one rate limit).
const PACKS_AT_ONCE: usize = 4;

crate::text_enum!(
    /// The state of one copy of a pack (`pack_replicas.state`).
    ReplicaState {
        /// The pack is open and this copy holds every byte up to the last commit.
        Writing => "writing",
        /// A whole copy.
        Ok => "ok",
        /// A read or scrub found bad bytes in it; repair replaces it.
        Damaged => "damaged",
    }
);

/// How the repairer runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RepairConfig {
    /// How long a node may be silent before its copies stop counting.
    pub grace: Duration,
    /// The most bytes per second it copies.
    pub rate_bytes_per_sec: u64,
    /// The pause between two passes.
    pub interval: Duration,
}

impl Default for RepairConfig {
    fn default() -> Self {
        RepairConfig {
            grace: DEFAULT_GRACE,
            rate_bytes_per_sec: DEFAULT_RATE_BYTES_PER_SEC,
            interval: DEFAULT_INTERVAL,
        }
    }
}

/// What the repairer did, for `/metrics`: shared between the task and the metrics endpoint.
#[derive(Debug, Default)]
pub struct RepairStats {
    backlog: AtomicI64,
    bytes: AtomicU64,
    packs: AtomicU64,
    failures: AtomicU64,
}

impl RepairStats {
    /// The packs below their wanted copies at the latest pass of this node (0 on a node that
    /// does not repair).
    pub fn backlog_packs(&self) -> i64 {
        self.backlog.load(Ordering::Relaxed)
    }

    /// The bytes copied by this node's repairs since it started.
    pub fn bytes_repaired(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    /// The copies of packs this node's repairs made since it started.
    pub fn packs_repaired(&self) -> u64 {
        self.packs.load(Ordering::Relaxed)
    }

    /// The repair items that failed (and are retried) since it started.
    pub fn failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }

    fn set_backlog(&self, packs: i64) {
        self.backlog.store(packs, Ordering::Relaxed);
    }

    fn copied(&self, bytes: u64) {
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
        self.packs.fetch_add(1, Ordering::Relaxed);
    }

    fn failed(&self) {
        self.failures.fetch_add(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
#[path = "catalog_tests.rs"]
mod catalog_tests;
