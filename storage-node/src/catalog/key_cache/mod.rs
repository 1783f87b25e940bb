//! A node's cache of the active access keys it has checked (tenant and secret), so that a
//! signed request costs no key query, kept correct across nodes by Postgres `LISTEN/NOTIFY`.
//!
//! Every change that can end a key's life (a revocation, a deletion, a tenant's deletion
//! starting or ending, a truncation) sends a notice on [`CHANNEL`] from a trigger, in the same
//! transaction (migration V13). Each node holds one dedicated connection that `LISTEN`s there
//! and drops the named entries as the notices arrive, about a millisecond after the commit.
//!
//! The cache answers only while it can prove that it has seen every notice up to about a second
//! ago: every [`CONFIRM_EVERY`] the listening connection notifies a channel of its own and waits
//! for that probe to come back. Postgres delivers notices in commit order, so once the probe is
//! back, every notice committed before it was sent has been applied; a hit requires a probe sent
//! less than [`TRUSTED_FOR`] ago and back. When the connection is lost, stalls or is terminated,
//! the cache is cleared and bypassed (every key is read from the catalog) until a new connection
//! listens and proves itself: a notice lost with a connection can never leave a revoked key
//! working. Behind a pooler that does not carry `LISTEN` (PgBouncer's transaction mode) the
//! probes never come back, and the cache simply stays off.
//!
//! A lookup that raced with a notice must not put back what the notice removed: each lookup
//! notes the cache's generation before it queries, and its answer is kept only if no notice
//! (and no reconnection) came in between.
//!
//! Secrets are held as s3s's `SecretKey` (zeroized when dropped) and never logged. The cache
//! holds at most [`MAX_KEYS`] keys; unknown and revoked keys are never cached.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use s3s::auth::SecretKey;
use tokio_util::sync::CancellationToken;

use super::CatalogPool;
use super::access_keys::{self, ActiveKey};
use super::tenants::TenantError;
use crate::{ServerSecret, TenantId};

mod listener;

/// The channel the catalog's triggers notify.
pub const CHANNEL: &str = "silo_access";
/// The `application_name` of the listening connection, as `pg_stat_activity` shows it.
pub const APPLICATION_NAME: &str = "silo key cache";
/// How many keys a node keeps at most.
pub const MAX_KEYS: usize = 10_000;
/// How often the listening connection proves that it is alive and up to date (a probe).
pub const CONFIRM_EVERY: Duration = Duration::from_millis(250);
/// How long after the last proof the cache still answers: how long a revoked key may keep
/// working on a node whose listening connection silently stalled. Under the 1 s the docs
/// promise, leaving room for the request that was decided just before.
pub const TRUSTED_FOR: Duration = Duration::from_millis(900);
/// How long to wait before connecting again after the listening connection was lost.
const RECONNECT_AFTER: Duration = Duration::from_millis(500);
/// The longest wait between attempts while no connection proves itself.
const MAX_RECONNECT_AFTER: Duration = Duration::from_secs(30);

/// A cached key: its tenant and its secret (whose `Debug` shows a placeholder).
#[derive(Debug, Clone)]
pub struct CachedKey {
    pub tenant: TenantId,
    pub secret: SecretKey,
}

impl From<ActiveKey> for CachedKey {
    fn from(key: ActiveKey) -> Self {
        CachedKey { tenant: key.tenant, secret: SecretKey::from(key.secret) }
    }
}

/// The key cache of a node; clones share it. [`KeyCache::default`] never answers (every
/// lookup reads the catalog) until [`KeyCache::listen`] starts its listener.
#[derive(Clone, Default)]
pub struct KeyCache {
    state: Arc<Mutex<State>>,
    counts: Arc<Counts>,
}

/// What the cache did since the node started (`/metrics`).
#[derive(Default)]
struct Counts {
    hits: AtomicU64,
    misses: AtomicU64,
    losses: AtomicU64,
}

/// The cache as `/metrics` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyCacheStats {
    /// Lookups answered from the cache.
    pub hits: u64,
    /// Lookups that read the catalog (the cache did not hold the key, or was not trusted).
    pub misses: u64,
    /// Listening connections lost (each cleared the cache).
    pub losses: u64,
    /// Whether the cache answers now (its listener is up to date).
    pub trusted: bool,
    /// The keys it holds.
    pub keys: usize,
}

impl std::fmt::Debug for KeyCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyCache").finish_non_exhaustive()
    }
}

#[derive(Default)]
struct State {
    keys: HashMap<String, CachedKey>,
    /// Bumped by every notice and every (re)connection: a lookup that saw another generation
    /// before it queried does not store its answer.
    generation: u64,
    /// When the last query answered on the listening connection was sent.
    confirmed: Option<Instant>,
}

impl State {
    fn trusted(&self) -> bool {
        self.confirmed.is_some_and(|at| at.elapsed() < TRUSTED_FOR)
    }
}

impl KeyCache {
    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves nothing half-done that matters: every change
        // is a single insert, removal or assignment.
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A cache whose listener follows the catalog at `config`, until `stop`.
    pub fn listen(mut config: tokio_postgres::Config, stop: CancellationToken) -> KeyCache {
        config.application_name(APPLICATION_NAME);
        let cache = KeyCache::default();
        tokio::spawn(cache.clone().follow(config, stop));
        cache
    }

    /// The active key `access_key_id`: from the cache while it is trusted, else from the
    /// catalog (and then kept, unless a notice came meanwhile).
    ///
    /// # Errors
    /// Catalog errors; an unknown, revoked or undecryptable key is `Ok(None)`.
    pub async fn lookup(
        &self,
        pool: &CatalogPool,
        secret: &ServerSecret,
        access_key_id: &str,
    ) -> Result<Option<CachedKey>, TenantError> {
        let generation = {
            let state = self.state();
            if state.trusted()
                && let Some(key) = state.keys.get(access_key_id)
            {
                self.counts.hits.fetch_add(1, Ordering::Relaxed);
                return Ok(Some(key.clone()));
            }
            state.generation
        };
        self.counts.misses.fetch_add(1, Ordering::Relaxed);
        let Some(found) = access_keys::lookup(pool, secret, access_key_id).await? else {
            return Ok(None);
        };
        let key = CachedKey::from(found);
        self.keep(access_key_id, &key, generation);
        Ok(Some(key))
    }

    /// Whether a lookup now would be answered from the cache.
    pub fn holds(&self, access_key_id: &str) -> bool {
        let state = self.state();
        state.trusted() && state.keys.contains_key(access_key_id)
    }

    /// What the cache did and holds.
    pub fn stats(&self) -> KeyCacheStats {
        let state = self.state();
        KeyCacheStats {
            hits: self.counts.hits.load(Ordering::Relaxed),
            misses: self.counts.misses.load(Ordering::Relaxed),
            losses: self.counts.losses.load(Ordering::Relaxed),
            trusted: state.trusted(),
            keys: state.keys.len(),
        }
    }

    /// Drops `access_key_id` now, on this node (the node that revoked it need not wait for
    /// its own notice).
    pub fn forget(&self, access_key_id: &str) {
        self.invalidate(&format!("key:{access_key_id}"));
    }

    /// Drops every key now, on this node.
    pub fn forget_all(&self) {
        self.invalidate("all");
    }

    fn keep(&self, access_key_id: &str, key: &CachedKey, generation: u64) {
        let mut state = self.state();
        if state.generation != generation || !state.trusted() {
            return;
        }
        if state.keys.len() >= MAX_KEYS
            && !state.keys.contains_key(access_key_id)
            && let Some(evicted) = state.keys.keys().next().cloned()
        {
            state.keys.remove(&evicted);
        }
        state.keys.insert(access_key_id.to_string(), key.clone());
    }

    /// Applies a notice: `key:<id>`, `tenant:<id>`, or anything else (`all`) for every key.
    fn invalidate(&self, payload: &str) {
        let mut state = self.state();
        state.generation += 1;
        if let Some(id) = payload.strip_prefix("key:") {
            state.keys.remove(id);
        } else if let Some(tenant) = payload.strip_prefix("tenant:").and_then(|t| t.parse().ok()) {
            state.keys.retain(|_, key| key.tenant != TenantId(tenant));
        } else {
            state.keys.clear();
        }
    }

    /// The listening connection is gone: notices may be lost, so forget everything and stop
    /// answering until a new connection listens.
    fn lost(&self) {
        let mut state = self.state();
        state.generation += 1;
        state.keys.clear();
        state.confirmed = None;
    }

    /// A probe sent at `sent` on the listening connection came back: every notice committed
    /// before then has been applied. `fresh` for the first on a new connection, after which
    /// lookups begun before it no longer store their answers.
    fn confirm(&self, sent: Instant, fresh: bool) {
        let mut state = self.state();
        if fresh {
            state.generation += 1;
            state.keys.clear();
        }
        state.confirmed = Some(sent);
    }
}

#[cfg(test)]
mod tests;
