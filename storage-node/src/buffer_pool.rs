//! Reused buffers for the chunk records that move between nodes: a record a peer serves (read
//! from its pack file) and the same record as the reading node receives it.
//!
//! Each record is a block of a chunk's size (256 KiB to several MiB), past glibc's mmap
//! threshold (see `store::allocator`): allocated fresh, every one is a new mapping, faulted in
//! page by page as it fills and unmapped (with a TLB shootdown on every core) when dropped. A
//! GET through a node with no copy spent about a sixth of its time on that. Buffers from here
//! come back when the last `Bytes` made of them is dropped, and the next record reuses their
//! pages. The idle ones hold at most [`POOL_BYTES`], outside the memory budget, and are freed
//! when the budget goes idle ([`clear`]).

use std::sync::{Mutex, MutexGuard};

use bytes::Bytes;

/// The most bytes the idle buffers hold together.
pub const POOL_BYTES: usize = 16 * 1024 * 1024;
/// Smaller buffers are not kept: glibc's heap reuses them by itself.
const MIN_POOLED: usize = crate::store::allocator::MMAP_THRESHOLD;

/// Idle buffers, up to a cap of bytes.
struct Pool {
    idle: Mutex<Vec<Vec<u8>>>,
    cap: usize,
}

static POOL: Pool = Pool::new(POOL_BYTES);

impl Pool {
    const fn new(cap: usize) -> Self {
        Pool { idle: Mutex::new(Vec::new()), cap }
    }

    fn idle(&self) -> MutexGuard<'_, Vec<Vec<u8>>> {
        self.idle.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The smallest idle buffer with room for `len` bytes, as it was left (its old bytes in
    /// it); or a new, empty one with room for `len` rounded up to a power of two, so that
    /// records of varied sizes find it big enough later (its pages beyond them are never
    /// touched, so they cost no memory).
    fn take_dirty(&self, len: usize) -> Vec<u8> {
        if len < MIN_POOLED {
            return Vec::with_capacity(len);
        }
        let mut idle = self.idle();
        let fit = idle
            .iter()
            .enumerate()
            .filter(|(_, buffer)| buffer.capacity() >= len)
            .min_by_key(|(_, buffer)| buffer.capacity())
            .map(|(at, _)| at);
        match fit {
            Some(at) => idle.swap_remove(at),
            None => Vec::with_capacity(len.checked_next_power_of_two().unwrap_or(len)),
        }
    }

    fn take(&self, len: usize) -> Vec<u8> {
        let mut buffer = self.take_dirty(len);
        buffer.clear();
        buffer
    }

    fn take_filled(&self, len: usize) -> Vec<u8> {
        let mut buffer = self.take_dirty(len);
        buffer.truncate(len);
        buffer.resize(len, 0);
        buffer
    }

    fn freeze(&'static self, buffer: Vec<u8>) -> Bytes {
        if buffer.capacity() < MIN_POOLED {
            return Bytes::from(buffer);
        }
        Bytes::from_owner(Pooled { buffer, pool: self })
    }

    fn give_back(&self, buffer: Vec<u8>) {
        let mut idle = self.idle();
        let held: usize = idle.iter().map(Vec::capacity).sum();
        if held + buffer.capacity() <= self.cap {
            idle.push(buffer);
        }
    }

    #[cfg(test)]
    fn idle_bytes(&self) -> usize {
        self.idle().iter().map(Vec::capacity).sum()
    }
}

/// An empty buffer with room for `len` bytes: the smallest idle one that is big enough, or a
/// new one.
pub fn take(len: usize) -> Vec<u8> {
    POOL.take(len)
}

/// A buffer of `len` bytes to read into, whose contents are unspecified (the bytes of an
/// earlier record, or zeros): the reader overwrites them all. Reusing a buffer costs no fill.
pub fn take_filled(len: usize) -> Vec<u8> {
    POOL.take_filled(len)
}

/// `buffer` as `Bytes` that give it back to the pool when the last of them is dropped.
pub fn freeze(buffer: Vec<u8>) -> Bytes {
    POOL.freeze(buffer)
}

/// Frees every idle buffer.
pub fn clear() {
    let freed = std::mem::take(&mut *POOL.idle());
    drop(freed);
}

/// A buffer lent out as `Bytes`.
struct Pooled {
    buffer: Vec<u8>,
    pool: &'static Pool,
}

impl AsRef<[u8]> for Pooled {
    fn as_ref(&self) -> &[u8] {
        &self.buffer
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        self.pool.give_back(std::mem::take(&mut self.buffer));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(cap: usize) -> &'static Pool {
        Box::leak(Box::new(Pool::new(cap)))
    }

    #[test]
    fn a_buffer_comes_back_when_its_last_bytes_go_and_is_reused_for_a_record_it_fits() {
        let pool = pool(POOL_BYTES);
        let mut buffer = pool.take(1 << 20);
        buffer.extend(std::iter::repeat_n(7u8, 1 << 20));
        let address = buffer.as_ptr();
        let bytes = pool.freeze(buffer);
        let piece = bytes.slice(10..20);
        drop(bytes);
        assert_eq!(pool.idle_bytes(), 0, "a slice still holds it");
        assert_eq!(&piece[..], &[7u8; 10]);
        drop(piece);
        assert!(pool.idle_bytes() >= 1 << 20);
        let again = pool.take(900 * 1024);
        assert_eq!(again.as_ptr(), address, "the idle buffer is reused");
        assert!(again.is_empty());
        drop(pool.freeze(again));
        let bigger = pool.take(2 << 20);
        assert!(
            bigger.as_ptr() != address && bigger.capacity() >= 2 << 20,
            "a bigger record gets a new buffer"
        );
        assert!(pool.idle_bytes() >= 1 << 20, "and the smaller one stays idle");
        let filled = pool.take_filled(300 * 1024);
        assert_eq!((filled.len(), filled.as_ptr()), (300 * 1024, address), "reused, at its length");
        assert_eq!(pool.take(200 * 1024).capacity(), 256 * 1024, "new buffers round up");
    }

    #[test]
    fn small_buffers_and_buffers_past_the_cap_are_not_kept() {
        let pool = pool(1 << 20);
        drop(pool.freeze(vec![1u8; 1024]));
        assert_eq!(pool.idle_bytes(), 0);
        let big: Vec<Bytes> = (0..5).map(|_| pool.freeze(vec![0u8; 400 * 1024])).collect();
        drop(big);
        assert_eq!(pool.idle_bytes(), 800 * 1024, "two fit under the cap");
    }
}
