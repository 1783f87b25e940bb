//! A node's cache of object lookups for GET and HEAD: the bucket's access, the object's row and
//! its whole manifest (with the bytes of chunks kept inline), so that a hot small object is
//! served with no catalog query; and of buckets' access alone, for the requests on a bucket
//! that look up no object first (a PUT of a new key: its commit checks the bucket again by
//! id). Coherent across the nodes of a catalog by leases and
//! invalidations, under issue 13's rule: no node answers with an object's old bytes or old
//! access once an overwrite, a delete or an ACL change of it has been acknowledged on any node.
//!
//! - **Writers invalidate before they acknowledge.** After its commit, a write that replaces,
//!   deletes or changes the access of objects drops them here and has every node that may hold
//!   them drop them too, over the internal API ([`broadcast`]).
//! - **Leases.** A node answers from its cache only while it holds a lease ([`lease`]): every
//!   [`lease::RENEW_EVERY`] it stamps `storage_nodes.cache_lease_at` in the catalog, and the lease
//!   runs [`lease::LEASE`] from the moment it sent that statement, on its own monotonic clock.
//!   Writers ask every node stamped within a little more than a lease; a node they leave out
//!   has no lease, and empties its cache when it gets one again.
//! - **Fences.** A node that does not confirm an invalidation in time (hung, cut off) gets its
//!   `cache_fence` raised, and the writer waits out the node's lease before acknowledging. The
//!   node's next renewal sees the new fence and empties the cache before it answers from it.
//! - **Races.** A lookup that read the catalog before a write committed must not put the old row
//!   back after the write's invalidation ran here: a fill carries the generation of its key's
//!   stripe it started at, and is dropped if an invalidation of a key of that stripe (or of a
//!   whole bucket, or an emptying) came in between. Keys are spread over [`STRIPES`] stripes so
//!   that a steady stream of writes does not drop the fills of every other key.
//!
//! Each entry's life is drawn between half its limit and all of it, so that entries filled
//! together do not expire together. An entry whose chunks live in packs is served for at most
//! [`MAX_AGE`]. Where a chunk lives can change without an invalidation (GC moves it, repair
//! copies it); a read of a moved chunk already looks it up again, and the age bounds how long
//! reads of an entry go that long way. A small object's chunks are kept in the catalog and
//! travel with the entry: nothing of it can move, so it stays up to [`INLINE_MAX_AGE`]
//! whatever the store's age limit, unless invalidated or evicted first. That age still bounds
//! an invalidation lost with a node that died between a commit and its broadcast, where no
//! later write of the key would send it again (a tenant's deletion, whose bucket names are
//! gone). Only whole manifests are cached: a lookup brings the first entries of an object's
//! manifest, which are the whole of a small one. A range GET of a larger object has its whole manifest read in the background
//! ([`ReadCache::whole_wanted`]), so that the next ranges (a video seeked through) cost no
//! catalog query.

pub mod broadcast;
pub mod lease;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::model::bucket::BucketAccess;
use crate::model::object::Lookup;
use crate::store::ManifestHead;

/// How long an entry is served before it is looked up again, at most (and at most half the
/// store's retire grace, so that a cached location never outlives the retired pack's files).
pub const MAX_AGE: Duration = Duration::from_secs(30);

/// How long an entry with no chunk in a pack is served, at most: nothing of it can move, so
/// this only bounds an invalidation lost with a node that died between a commit and its
/// broadcast. Long, because every expiry is a catalog lookup on the hot path: with 15-30 s,
/// Silo's p99 at half the peak was 25-144 ms in five s3 bench runs, against 15-17 ms in two
/// runs with no expiry (docs/benchmarks.md).
pub const INLINE_MAX_AGE: Duration = Duration::from_secs(600);

/// How long after a read of an object's whole manifest for the cache another may start: what
/// the first one cached serves the ranges meanwhile, and a manifest too long to be cached is
/// not read again on every range.
pub const WHOLE_RETRY: Duration = Duration::from_secs(30);

/// The most buckets whose access the cache keeps.
const BUCKETS_KEPT: usize = 4096;

/// The most objects [`ReadCache::whole_wanted`] remembers a recent whole read of.
const WHOLE_TRIES_KEPT: usize = 1024;

/// How many reads of whole manifests run at once, at most: they are for later requests, and
/// must not take the catalog's connections from the ones waiting now.
const WHOLE_READS_AT_ONCE: usize = 2;

/// An entry heavier than the cache's capacity over this is not kept (a long manifest must not
/// push out the many small objects' entries).
const HEAVIEST_SHARE: u64 = 8;

/// What a write makes stale: some keys of a bucket, or all of it (`keys` absent: its access
/// changed, or it was deleted).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Invalidation {
    pub bucket: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keys: Option<Vec<String>>,
}

impl Invalidation {
    /// One key of `bucket`.
    pub fn key(bucket: &str, key: &str) -> Self {
        Invalidation { bucket: bucket.to_string(), keys: Some(vec![key.to_string()]) }
    }

    /// Every key of `bucket`.
    pub fn bucket(bucket: &str) -> Self {
        Invalidation { bucket: bucket.to_string(), keys: None }
    }
}

/// An invalidation as it travels to a peer: addressed to one node, which refuses it if it is
/// not that node (a stale URL must not confirm for another).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Addressed {
    pub node: i32,
    #[serde(flatten)]
    pub what: Invalidation,
}

/// A cached lookup: the bucket, the object (never absent: misses are not cached) and its whole
/// manifest.
#[derive(Debug, Clone)]
pub struct CachedRead {
    pub lookup: Lookup,
    pub head: Option<ManifestHead>,
    /// When it must be looked up again: after the store's age limit when a chunk lives in a
    /// pack, after [`INLINE_MAX_AGE`] when all are kept in the catalog.
    expires: Instant,
}

/// What [`ReadCache::ticket`] noted before a lookup read the catalog: its key's stripe, and the
/// stripe's generation then.
#[derive(Debug, Clone, Copy)]
pub struct Ticket {
    stripe: usize,
    generation: u64,
}

/// What [`ReadCache::bucket_ticket`] noted before a bucket's access was read from the catalog:
/// the generation of buckets then.
#[derive(Debug, Clone, Copy)]
pub struct BucketTicket(u64);

/// How many generations the keys are spread over.
pub const STRIPES: usize = 64;

/// The counters `/metrics` shows.
#[derive(Debug, Clone, Copy, Default)]
pub struct ReadCacheStats {
    pub hits: u64,
    pub misses: u64,
    /// Invalidations applied here (this node's writes' and its peers').
    pub invalidations: u64,
    /// Peers this node's writes fenced (they did not confirm an invalidation in time).
    pub fences: u64,
    /// Times the cache was emptied: a lapsed lease, a fence, a lease refused.
    pub emptied: u64,
    pub leased: bool,
    pub entries: u64,
    pub bytes: u64,
}

/// The read cache of a node; clones share it. A new one holds no lease, so it answers nothing
/// until [`lease::keep_leased`] renews one.
#[derive(Clone)]
pub struct ReadCache {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for ReadCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadCache").field("entries", &self.inner.entries.len()).finish()
    }
}

type Entries = quick_cache::sync::Cache<String, Arc<CachedRead>, Weigher>;

struct Inner {
    entries: Entries,
    /// Buckets' access by name, each until its expiry.
    buckets: quick_cache::sync::Cache<String, (BucketAccess, Instant)>,
    /// Held while an entry is put in or invalidated, so that a fill checks its generation and
    /// inserts with no invalidation in between.
    state: Mutex<State>,
    /// The lease's end, in nanoseconds since `epoch` (0: no lease).
    lease_until: AtomicU64,
    epoch: Instant,
    max_age: Duration,
    counts: Counts,
    /// When a read of each object's whole manifest last started.
    whole_tries: Mutex<std::collections::HashMap<String, Instant>>,
    /// The reads of whole manifests running now.
    whole_reads: Arc<AtomicU64>,
}

/// A read of a whole manifest running for the cache ([`ReadCache::whole_wanted`]); it counts
/// against [`WHOLE_READS_AT_ONCE`] until dropped.
#[derive(Debug)]
pub struct WholeRead {
    running: Arc<AtomicU64>,
}

impl Drop for WholeRead {
    fn drop(&mut self) {
        self.running.fetch_sub(1, Ordering::AcqRel);
    }
}

struct State {
    /// Bumped by an invalidation of a key of the stripe; all of them by a bucket's or an
    /// emptying.
    generations: [u64; STRIPES],
    /// Bumped with all of them: a fill of a bucket's access is dropped when any bucket was
    /// invalidated (or the cache emptied) since its lookup began.
    buckets: u64,
    /// The fence of the last renewal.
    fence: Option<i64>,
}

impl Default for State {
    fn default() -> Self {
        State { generations: [0; STRIPES], buckets: 0, fence: None }
    }
}

impl State {
    fn bump_all(&mut self) {
        for generation in &mut self.generations {
            *generation += 1;
        }
        self.buckets += 1;
    }
}

/// The stripe of the cache's key `entry`.
fn stripe_of(entry: &str) -> usize {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    entry.hash(&mut hasher);
    (hasher.finish() % STRIPES as u64) as usize
}

#[derive(Default)]
struct Counts {
    hits: AtomicU64,
    misses: AtomicU64,
    invalidations: AtomicU64,
    fences: AtomicU64,
    emptied: AtomicU64,
}

#[derive(Clone)]
struct Weigher;

impl quick_cache::Weighter<String, Arc<CachedRead>> for Weigher {
    fn weight(&self, key: &String, value: &Arc<CachedRead>) -> u64 {
        let head = value.head.as_ref().map_or(0, ManifestHead::weight);
        let row = value.lookup.object.as_ref().map_or(0, |row| row.etag.len() + row.headers.weight());
        (key.len() + std::mem::size_of::<CachedRead>() + row) as u64 + head
    }
}

/// An entry's life: between half of `age` and all of it, drawn at random, so that the entries
/// a burst of reads filled together are not all looked up again in one burst when they expire.
fn spread(age: Duration) -> Duration {
    age.mul_f64(1.0 - rand::random::<f64>() / 2.0)
}

/// The cache's key of `bucket`/`key`: bucket names never hold a `/`.
fn entry_key(bucket: &str, key: &str) -> String {
    format!("{bucket}/{key}")
}

impl ReadCache {
    /// A cache of at most about `bytes` bytes, whose entries are served for at most `max_age`
    /// (and never longer than [`MAX_AGE`]).
    pub fn new(bytes: u64, max_age: Duration) -> Self {
        ReadCache {
            inner: Arc::new(Inner {
                entries: Entries::with_weighter(1024, bytes.max(1), Weigher),
                buckets: quick_cache::sync::Cache::new(BUCKETS_KEPT),
                state: Mutex::default(),
                lease_until: AtomicU64::new(0),
                epoch: Instant::now(),
                max_age: max_age.min(MAX_AGE),
                counts: Counts::default(),
                whole_tries: Mutex::default(),
                whole_reads: Arc::default(),
            }),
        }
    }

    /// Whether the node holds a lease now, and so may answer from its cache.
    pub fn leased(&self) -> bool {
        let until = self.inner.lease_until.load(Ordering::Acquire);
        until != 0 && self.nanos(Instant::now()) < until
    }

    /// The lookup of `bucket`/`key`, if it is cached and may be served.
    pub fn get(&self, bucket: &str, key: &str) -> Option<Arc<CachedRead>> {
        let found = if self.leased() {
            self.inner
                .entries
                .get(entry_key(bucket, key).as_str())
                .filter(|entry| Instant::now() < entry.expires)
        } else {
            None
        };
        let counter = if found.is_some() { &self.inner.counts.hits } else { &self.inner.counts.misses };
        counter.fetch_add(1, Ordering::Relaxed);
        found
    }

    /// Whether a read of the whole manifest of `bucket`/`key` should start now, for a range GET
    /// that missed the cache: the node holds a lease (else nothing would be kept), fewer than
    /// [`WHOLE_READS_AT_ONCE`] such reads run, and none of this object started in the last
    /// [`WHOLE_RETRY`]. The read counts as running until the answer is dropped.
    pub fn whole_wanted(&self, bucket: &str, key: &str) -> Option<WholeRead> {
        if !self.leased() {
            return None;
        }
        let running = &self.inner.whole_reads;
        let taken = running.fetch_update(Ordering::AcqRel, Ordering::Acquire, |now| {
            (now < WHOLE_READS_AT_ONCE as u64).then_some(now + 1)
        });
        let permit = WholeRead { running: taken.ok().map(|_| running.clone())? };
        let now = Instant::now();
        let mut tries = self.inner.whole_tries.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let entry = entry_key(bucket, key);
        if tries.get(&entry).is_some_and(|at| now.duration_since(*at) < WHOLE_RETRY) {
            return None;
        }
        if tries.len() >= WHOLE_TRIES_KEPT {
            tries.retain(|_, at| now.duration_since(*at) < WHOLE_RETRY);
            if tries.len() >= WHOLE_TRIES_KEPT {
                // Many objects at once: forget them all rather than refuse every other one.
                tries.clear();
            }
        }
        tries.insert(entry, now);
        Some(permit)
    }

    /// Notes where the cache stands for `bucket`/`key` before a lookup of it reads the catalog,
    /// for [`ReadCache::fill`].
    pub fn ticket(&self, bucket: &str, key: &str) -> Ticket {
        let stripe = stripe_of(&entry_key(bucket, key));
        Ticket { stripe, generation: self.state().generations[stripe] }
    }

    /// Keeps the lookup of `bucket`/`key` that was read after `ticket` was taken, unless an
    /// invalidation came in between, the node holds no lease, or it is not worth keeping (no
    /// object, or not its whole manifest).
    pub fn fill(
        &self,
        ticket: Ticket,
        bucket: &str,
        key: &str,
        lookup: &Lookup,
        head: Option<&ManifestHead>,
    ) {
        let Some(object) = &lookup.object else { return };
        let whole = head.is_some_and(|head| head.is_whole(object.size));
        if !whole || !self.leased() {
            return;
        }
        let expires = match head {
            Some(head) if head.is_inline() => Instant::now() + spread(INLINE_MAX_AGE),
            _ if self.inner.max_age.is_zero() => return,
            _ => Instant::now() + spread(self.inner.max_age),
        };
        if head.map_or(0, ManifestHead::weight) > self.inner.entries.capacity() / HEAVIEST_SHARE {
            return;
        }
        let entry = CachedRead { lookup: lookup.clone(), head: head.cloned(), expires };
        let entry_key = entry_key(bucket, key);
        let state = self.state();
        if stripe_of(&entry_key) == ticket.stripe && state.generations[ticket.stripe] == ticket.generation {
            self.inner.entries.insert(entry_key, Arc::new(entry));
        }
    }

    /// The access of bucket `name`, when the node holds a lease and has it, kept less than
    /// [`MAX_AGE`] ago (a bound on any invalidation lost with a node that died between a
    /// bucket's change and its broadcast). Not counted in the hits and misses, which are of
    /// objects.
    pub fn bucket(&self, name: &str) -> Option<BucketAccess> {
        if !self.leased() {
            return None;
        }
        self.inner
            .buckets
            .get(name)
            .filter(|(_, expires)| Instant::now() < *expires)
            .map(|(access, _)| access)
    }

    /// Notes what a lookup of a bucket's access must be checked against before it is kept.
    pub fn bucket_ticket(&self) -> BucketTicket {
        BucketTicket(self.state().buckets)
    }

    /// Keeps `access` of bucket `name`, read after `ticket` was taken, unless a bucket was
    /// invalidated (or the cache emptied) in between, or the node holds no lease.
    pub fn fill_bucket(&self, ticket: BucketTicket, name: &str, access: BucketAccess) {
        if !self.leased() {
            return;
        }
        let state = self.state();
        if state.buckets == ticket.0 {
            self.inner.buckets.insert(name.to_string(), (access, Instant::now() + MAX_AGE));
        }
    }

    /// Drops what `what` names, and makes every lookup in flight drop its answer.
    pub fn invalidate(&self, what: &Invalidation) {
        let mut state = self.state();
        match &what.keys {
            Some(keys) => {
                for key in keys {
                    let entry = entry_key(&what.bucket, key);
                    state.generations[stripe_of(&entry)] += 1;
                    self.inner.entries.remove(entry.as_str());
                }
            }
            None => {
                state.bump_all();
                self.inner.buckets.remove(what.bucket.as_str());
                let prefix = format!("{}/", what.bucket);
                self.inner.entries.retain(|key, _| !key.starts_with(&prefix));
            }
        }
        self.inner.counts.invalidations.fetch_add(1, Ordering::Relaxed);
    }

    /// Records a renewal sent at `sent` that found this node's fence at `fence`: the lease runs
    /// [`lease::LEASE`] from `sent`. The cache is emptied first if the last lease lapsed (writers
    /// stopped asking this node) or the fence moved (a writer gave up on asking it).
    pub(crate) fn renewed(&self, sent: Instant, fence: i64) {
        let mut state = self.state();
        if !self.leased() || state.fence != Some(fence) {
            self.empty(&mut state);
        }
        state.fence = Some(fence);
        let until = self.nanos(sent + lease::LEASE).max(1);
        self.inner.lease_until.store(until, Ordering::Release);
    }

    /// Gives up the lease (refused, fenced, or the node is stopping) and empties the cache; a
    /// cache without a lease answers nothing already, and is emptied when it gets one.
    pub(crate) fn unleased(&self) {
        let mut state = self.state();
        if self.inner.lease_until.swap(0, Ordering::AcqRel) != 0 {
            self.empty(&mut state);
        }
    }

    /// Counts a peer this node fenced.
    pub(crate) fn note_fence(&self) {
        self.inner.counts.fences.fetch_add(1, Ordering::Relaxed);
    }

    /// What the cache did since the node started, and what it holds.
    pub fn stats(&self) -> ReadCacheStats {
        let counts = &self.inner.counts;
        ReadCacheStats {
            hits: counts.hits.load(Ordering::Relaxed),
            misses: counts.misses.load(Ordering::Relaxed),
            invalidations: counts.invalidations.load(Ordering::Relaxed),
            fences: counts.fences.load(Ordering::Relaxed),
            emptied: counts.emptied.load(Ordering::Relaxed),
            leased: self.leased(),
            entries: self.inner.entries.len() as u64,
            bytes: self.inner.entries.weight(),
        }
    }

    fn empty(&self, state: &mut State) {
        state.bump_all();
        if !self.inner.entries.is_empty() {
            self.inner.entries.clear();
        }
        self.inner.buckets.clear();
        self.inner.counts.emptied.fetch_add(1, Ordering::Relaxed);
    }

    fn nanos(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.inner.epoch).as_nanos()).unwrap_or(u64::MAX)
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.inner.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests;
