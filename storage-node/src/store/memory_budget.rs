//! The node's memory budget for in-flight upload data: one byte semaphore that every upload
//! reserves its working set from (chunker buffer, prepared chunks and their compressed copies,
//! the transport's read buffer) before it reads a byte of its body.
//!
//! An upload that finds the budget spent waits for it, and while it waits its socket is not
//! read: the client is held back by TCP instead of Silo allocating. A wait longer than
//! [`MemoryLimits::wait`] fails with [`StoreError::MemoryBusy`] (S3: `503 SlowDown` with
//! `Retry-After`), before anything is stored. Only the first reservation of an upload waits;
//! what it takes beyond that (more chunks prepared at once) is taken only if free at once, so
//! uploads never wait on each other while holding memory, and cannot deadlock on the budget.
//!
//! [`WorkingSet`] says how much an upload needs, from its announced length: a small object
//! reserves its own size, not buffers for chunks of the maximum size.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore, TryAcquireError};

use super::StoreError;
use crate::chunker::ChunkSizes;

/// The budget's size and how long an upload may wait for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryLimits {
    /// Bytes of in-flight upload data the node holds at most.
    pub bytes: u64,
    /// How long an upload waits for memory before it fails with a retryable error.
    pub wait: Duration,
}

impl Default for MemoryLimits {
    /// 256 MiB, 30 seconds.
    fn default() -> Self {
        MemoryLimits { bytes: 256 * 1024 * 1024, wait: Duration::from_secs(30) }
    }
}

/// What `/metrics` shows of the budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryStats {
    pub budget_bytes: u64,
    pub in_use_bytes: u64,
    /// Uploads waiting for memory now.
    pub waiters: u64,
    /// Uploads that had to wait for memory (since the start), however that ended.
    pub waited: u64,
    /// Uploads that waited past the limit and failed (since the start).
    pub timeouts: u64,
}

/// The node-wide budget; a cheap handle.
#[derive(Debug, Clone)]
pub struct MemoryBudget {
    inner: Arc<BudgetInner>,
}

#[derive(Debug)]
struct BudgetInner {
    semaphore: Arc<Semaphore>,
    /// A trim of the heap is scheduled (the budget fell idle).
    trimming: AtomicBool,
    /// Permits are bytes; one reservation takes at most this many (the whole budget).
    total: usize,
    wait: Duration,
    waiters: AtomicU64,
    waited: AtomicU64,
    timeouts: AtomicU64,
}

/// Bytes of the budget held until dropped. The last charge to go, when nobody waits, has
/// the heap trimmed a moment later (see [`super::allocator`]).
#[derive(Debug)]
pub struct MemoryCharge {
    permit: Option<OwnedSemaphorePermit>,
    budget: Arc<BudgetInner>,
}

impl MemoryCharge {
    pub fn bytes(&self) -> usize {
        self.permit.as_ref().map_or(0, OwnedSemaphorePermit::num_permits)
    }

    /// Adds `other` to this charge.
    pub fn merge(&mut self, mut other: MemoryCharge) {
        if let (Some(permit), Some(more)) = (self.permit.as_mut(), other.permit.take()) {
            permit.merge(more);
        }
    }
}

/// How long the budget stays idle before the heap is trimmed.
const TRIM_AFTER: Duration = Duration::from_millis(500);

impl Drop for MemoryCharge {
    fn drop(&mut self) {
        if self.permit.take().is_none() {
            return;
        }
        let budget = &self.budget;
        if !budget.idle() || budget.trimming.swap(true, Ordering::AcqRel) {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            budget.trimming.store(false, Ordering::Release);
            return;
        };
        let budget = budget.clone();
        runtime.spawn(async move {
            tokio::time::sleep(TRIM_AFTER).await;
            if budget.idle() {
                crate::buffer_pool::clear();
                let _ = tokio::task::spawn_blocking(super::allocator::trim).await;
            }
            budget.trimming.store(false, Ordering::Release);
        });
    }
}

impl BudgetInner {
    /// The permits a reservation of `bytes` takes: at most the whole budget (and what one
    /// acquire counts).
    fn permits(&self, bytes: usize) -> u32 {
        u32::try_from(bytes.clamp(1, self.total)).unwrap_or(u32::MAX)
    }

    fn idle(&self) -> bool {
        self.semaphore.available_permits() >= self.total
    }

    fn charge(self: &Arc<Self>, permit: OwnedSemaphorePermit) -> MemoryCharge {
        MemoryCharge { permit: Some(permit), budget: self.clone() }
    }
}

impl MemoryBudget {
    /// A budget of `limits.bytes` (at least 1 MiB).
    pub fn new(limits: MemoryLimits) -> Self {
        let total =
            usize::try_from(limits.bytes).unwrap_or(usize::MAX).clamp(1 << 20, Semaphore::MAX_PERMITS);
        MemoryBudget {
            inner: Arc::new(BudgetInner {
                semaphore: Arc::new(Semaphore::new(total)),
                total,
                wait: limits.wait,
                waiters: AtomicU64::new(0),
                waited: AtomicU64::new(0),
                timeouts: AtomicU64::new(0),
                trimming: AtomicBool::new(false),
            }),
        }
    }

    /// Reserves `bytes` (at most the whole budget), waiting for them in turn (first come,
    /// first served) up to the wait limit.
    ///
    /// # Errors
    /// [`StoreError::MemoryBusy`] after waiting past the limit.
    pub async fn reserve(&self, bytes: usize) -> Result<MemoryCharge, StoreError> {
        let inner = &self.inner;
        let permits = inner.permits(bytes);
        if let Ok(permit) = inner.semaphore.clone().try_acquire_many_owned(permits) {
            return Ok(inner.charge(permit));
        }
        inner.waiters.fetch_add(1, Ordering::Relaxed);
        inner.waited.fetch_add(1, Ordering::Relaxed);
        let acquired =
            tokio::time::timeout(inner.wait, inner.semaphore.clone().acquire_many_owned(permits)).await;
        inner.waiters.fetch_sub(1, Ordering::Relaxed);
        match acquired {
            Ok(Ok(permit)) => Ok(inner.charge(permit)),
            // The semaphore is never closed.
            Ok(Err(_)) => Err(StoreError::Task("the memory budget was closed".into())),
            Err(_) => {
                inner.timeouts.fetch_add(1, Ordering::Relaxed);
                Err(StoreError::MemoryBusy { wanted: permits as u64, waited: inner.wait })
            }
        }
    }

    /// Reserves `bytes` if they are free now (and nobody waits before).
    pub fn try_reserve(&self, bytes: usize) -> Option<MemoryCharge> {
        let permits = self.inner.permits(bytes);
        match self.inner.semaphore.clone().try_acquire_many_owned(permits) {
            Ok(permit) => Some(self.inner.charge(permit)),
            Err(TryAcquireError::NoPermits | TryAcquireError::Closed) => None,
        }
    }

    pub fn stats(&self) -> MemoryStats {
        let inner = &self.inner;
        let free = inner.semaphore.available_permits().min(inner.total);
        MemoryStats {
            budget_bytes: inner.total as u64,
            in_use_bytes: (inner.total - free) as u64,
            waiters: inner.waiters.load(Ordering::Relaxed),
            waited: inner.waited.load(Ordering::Relaxed),
            timeouts: inner.timeouts.load(Ordering::Relaxed),
        }
    }
}

/// What one upload holds in memory at most, from its announced length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct WorkingSet {
    /// The chunker's read buffer.
    pub buffer: usize,
    /// One chunk in flight: its raw bytes, its compressed copy and zstd's working memory.
    pub slot: usize,
    /// The transport's buffers in front of the chunker (hyper's read buffer, decoders).
    pub transport: usize,
}

/// The most hyper buffers of a request body (its default `max_buf_size`), with the decoders'.
const TRANSPORT_BYTES: usize = 416 * 1024;
/// zstd's working memory for one compression at the store's levels (about 1.3 MB at level 3
/// for a 2 MiB input), capped by a multiple of a small input.
const ZSTD_WORKSPACE: usize = 1536 * 1024;
/// A small upload's buffer takes one byte more than its length (to see the end of its body).
const END_PROBE: usize = 1;

impl WorkingSet {
    /// The working set of an upload of `expected` bytes (unknown: as large as it may be).
    pub fn new(expected: Option<u64>, sizes: ChunkSizes) -> Self {
        let cap = 2 * sizes.max;
        let length = expected.map_or(cap, |len| usize::try_from(len).unwrap_or(usize::MAX).min(cap));
        let buffer = length.saturating_add(END_PROBE).min(cap);
        let chunk = length.min(sizes.max);
        let compressed = if chunk < 512 { 0 } else { zstd::zstd_safe::compress_bound(chunk) };
        let workspace = if chunk < 512 { 0 } else { ZSTD_WORKSPACE.min(4 * chunk + 64 * 1024) };
        WorkingSet {
            buffer,
            slot: chunk + compressed + workspace,
            transport: TRANSPORT_BYTES.min(length + 16 * 1024),
        }
    }

    /// What an upload needs to move at all: its buffers and one chunk in flight.
    pub fn base(&self) -> usize {
        self.buffer + self.slot + self.transport
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: usize = 1 << 20;

    #[tokio::test]
    async fn a_reservation_waits_for_memory_then_times_out() {
        let budget =
            MemoryBudget::new(MemoryLimits { bytes: 4 * MIB as u64, wait: Duration::from_millis(100) });
        let held = budget.reserve(3 * MIB).await.expect("free");
        assert_eq!(budget.stats().in_use_bytes, 3 * MIB as u64);
        assert!(budget.try_reserve(2 * MIB).is_none());
        let waiting = {
            let budget = budget.clone();
            tokio::spawn(async move { budget.reserve(2 * MIB).await.map(|charge| charge.bytes()) })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(budget.stats().waiters, 1);
        drop(held);
        assert_eq!(waiting.await.expect("joined").expect("memory came back"), 2 * MIB);
        let _held = budget.reserve(3 * MIB).await.expect("free");
        let err = budget.reserve(2 * MIB).await.expect_err("nothing comes back");
        assert!(matches!(err, StoreError::MemoryBusy { .. }), "{err}");
        let stats = budget.stats();
        assert_eq!((stats.waiters, stats.timeouts, stats.in_use_bytes), (0, 1, 3 * MIB as u64));
    }

    #[tokio::test]
    async fn a_reservation_larger_than_the_budget_takes_all_of_it() {
        let budget = MemoryBudget::new(MemoryLimits { bytes: 2 * MIB as u64, wait: Duration::from_secs(1) });
        let charge = budget.reserve(64 * MIB).await.expect("clamped");
        assert_eq!(charge.bytes(), 2 * MIB);
    }

    #[test]
    fn a_small_upload_reserves_about_its_size() {
        let sizes = ChunkSizes::default();
        let tiny = WorkingSet::new(Some(100), sizes);
        assert_eq!(tiny.base(), 101 + 100 + 100 + 16 * 1024);
        let small = WorkingSet::new(Some(64 * 1024), sizes);
        assert!(small.base() < 600 * 1024, "{small:?}");
        let large = WorkingSet::new(Some(1 << 30), sizes);
        assert_eq!(large, WorkingSet::new(None, sizes));
        assert_eq!(large.buffer, 2 * sizes.max);
        assert!(large.base() < 10 * MIB, "{large:?}");
    }
}
