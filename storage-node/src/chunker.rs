//! Content-defined chunking of a byte stream with FastCDC (2020).
//!
//! Boundaries follow content, so an insert near the front of a file shifts only the chunks it
//! touches and every later chunk dedups. The chunker reads into one buffer of a fixed size
//! (sized by the caller: two maximum-size chunks, or a small object's length) and hands out
//! each chunk as a copy of its own, so that what an upload holds is its buffer plus the chunks
//! in flight, each freed when it is stored (the memory budget counts on that).

use bytes::Bytes;
use fastcdc::v2020::{Normalization, cut_gear, get_gear_with_seed, select_masks};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt};

/// Chunk size bounds in bytes. FastCDC needs even sizes, `min <= 1 MiB`, `avg <= 4 MiB` and
/// `max <= 16 MiB`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ChunkSizes {
    pub min: usize,
    pub avg: usize,
    pub max: usize,
}

impl Default for ChunkSizes {
    /// 128 KiB / 512 KiB / 2 MiB. On the dedup benchmark (10 edited versions of a 256 MiB
    /// file) these store 0.68x what restic stores, where 256 KiB / 1 MiB / 4 MiB store 0.88x,
    /// for about a tenth less ingest throughput. See `docs/benchmarks.md`.
    fn default() -> Self {
        ChunkSizes { min: 128 * 1024, avg: 512 * 1024, max: 2 * 1024 * 1024 }
    }
}

impl ChunkSizes {
    /// Checks the bounds FastCDC accepts.
    ///
    /// # Errors
    /// A message naming the bound that is off.
    pub fn validate(&self) -> Result<(), String> {
        use fastcdc::v2020::{AVERAGE_MAX, AVERAGE_MIN, MAXIMUM_MAX, MAXIMUM_MIN, MINIMUM_MAX, MINIMUM_MIN};
        let ChunkSizes { min, avg, max } = *self;
        let ok = (MINIMUM_MIN..=MINIMUM_MAX).contains(&min)
            && (AVERAGE_MIN..=AVERAGE_MAX).contains(&avg)
            && (MAXIMUM_MIN..=MAXIMUM_MAX).contains(&max)
            && min <= avg
            && avg <= max
            && [min, avg, max].iter().all(|size| size % 2 == 0);
        if ok {
            Ok(())
        } else {
            Err(format!(
                "chunk sizes {min}/{avg}/{max} are out of bounds: need even sizes with \
                 {MINIMUM_MIN} <= min <= {MINIMUM_MAX}, {AVERAGE_MIN} <= avg <= {AVERAGE_MAX}, \
                 {MAXIMUM_MIN} <= max <= {MAXIMUM_MAX} and min <= avg <= max"
            ))
        }
    }
}

/// How many maximum-size chunks a full read buffer holds.
const BUFFER_CHUNKS: usize = 2;
/// A read buffer with less free room at its end than this moves its unchunked bytes to the front.
const MIN_READ: usize = 64 * 1024;

/// Splits an async byte stream into content-defined chunks.
pub struct Chunker<R> {
    source: R,
    /// The read buffer, allocated once; `start..end` is read and not yet chunked.
    buffer: Vec<u8>,
    start: usize,
    end: usize,
    eof: bool,
    sizes: ChunkSizes,
    masks: (u64, u64),
    gear: (Vec<u64>, Vec<u64>),
}

impl<R: AsyncRead + Unpin> Chunker<R> {
    /// A chunker over `source` whose gear table is seeded with `seed` (per tenant), with a
    /// buffer of [`Chunker::full_buffer`] bytes.
    pub fn new(source: R, sizes: ChunkSizes, seed: u64) -> Self {
        Self::with_buffer(source, sizes, seed, Self::full_buffer(sizes))
    }

    /// The buffer a source of any length needs: two maximum-size chunks.
    pub fn full_buffer(sizes: ChunkSizes) -> usize {
        BUFFER_CHUNKS * sizes.max
    }

    /// A chunker whose read buffer is `capacity` bytes and never grows. A source longer than
    /// the buffer needs a buffer of at least [`Chunker::full_buffer`] to be cut as any other
    /// (a smaller one cuts where it is full); a shorter one needs one byte more than its
    /// length, to see its end.
    pub fn with_buffer(source: R, sizes: ChunkSizes, seed: u64, capacity: usize) -> Self {
        let (gear, gear_ls) = get_gear_with_seed(seed);
        Chunker {
            source,
            buffer: vec![0; capacity.max(1)],
            start: 0,
            end: 0,
            eof: false,
            sizes,
            masks: select_masks(sizes.avg, Normalization::Level1),
            gear: (gear.into_owned(), gear_ls.into_owned()),
        }
    }

    /// The next chunk (a copy of its own, so the buffer is reused), or `None` at the end of
    /// the stream.
    ///
    /// # Errors
    /// The source's read error.
    pub async fn next_chunk(&mut self) -> std::io::Result<Option<Bytes>> {
        while !self.eof && self.end - self.start < self.sizes.max {
            if self.buffer.len() - self.end < MIN_READ.min(self.buffer.len()) && self.start > 0 {
                self.buffer.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            }
            if self.end == self.buffer.len() {
                // Full, and smaller than a maximum-size chunk: cut what it holds.
                break;
            }
            match self.source.read(&mut self.buffer[self.end..]).await? {
                0 => self.eof = true,
                read => self.end += read,
            }
        }
        let data = &self.buffer[self.start..self.end];
        if data.is_empty() {
            return Ok(None);
        }
        let (mask_s, mask_l) = self.masks;
        let (_, count) = cut_gear(
            data,
            self.sizes.min,
            self.sizes.avg,
            self.sizes.max,
            mask_s,
            mask_l,
            mask_s << 1,
            mask_l << 1,
            &self.gear.0,
            &self.gear.1,
        );
        let count = count.clamp(1, data.len());
        let chunk = Bytes::copy_from_slice(&data[..count]);
        self.start += count;
        if self.start == self.end {
            (self.start, self.end) = (0, 0);
        }
        Ok(Some(chunk))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{RngCore, SeedableRng};
    use std::collections::HashSet;

    /// A reader of `len` pseudo-random bytes from `seed`, after an optional prefix. The bytes
    /// are drawn in blocks of 1 MiB, so they do not depend on the sizes of the reads.
    struct RandomReader {
        prefix: Vec<u8>,
        rng: rand::rngs::StdRng,
        left: u64,
        block: Vec<u8>,
    }

    impl AsyncRead for RandomReader {
        fn poll_read(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            buf: &mut tokio::io::ReadBuf<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            if !self.prefix.is_empty() {
                let n = self.prefix.len().min(buf.remaining());
                let taken: Vec<u8> = self.prefix.drain(..n).collect();
                buf.put_slice(&taken);
                return std::task::Poll::Ready(Ok(()));
            }
            if self.block.is_empty() {
                let n = self.left.min(1 << 20) as usize;
                let mut block = vec![0u8; n];
                self.rng.fill_bytes(&mut block);
                self.left -= n as u64;
                self.block = block;
            }
            let n = self.block.len().min(buf.remaining());
            let taken: Vec<u8> = self.block.drain(..n).collect();
            buf.put_slice(&taken);
            std::task::Poll::Ready(Ok(()))
        }
    }

    async fn chunk_hashes(prefix: &[u8], len: u64) -> (Vec<blake3::Hash>, u64) {
        let reader = RandomReader {
            prefix: prefix.to_vec(),
            rng: rand::rngs::StdRng::seed_from_u64(42),
            left: len,
            block: Vec::new(),
        };
        let sizes = ChunkSizes { min: 256 * 1024, avg: 1024 * 1024, max: 4 * 1024 * 1024 };
        let mut chunker = Chunker::new(reader, sizes, 9);
        let mut hashes = Vec::new();
        let mut total = 0;
        while let Some(chunk) = chunker.next_chunk().await.unwrap() {
            assert!(chunk.len() <= sizes.max);
            total += chunk.len() as u64;
            hashes.push(blake3::hash(&chunk));
        }
        (hashes, total)
    }

    #[tokio::test]
    async fn one_byte_inserted_at_the_front_of_1_gib_leaves_all_but_a_few_chunks_shared() {
        const GIB: u64 = 1 << 30;
        let (original, total) = chunk_hashes(&[], GIB).await;
        assert_eq!(total, GIB);
        let (shifted, total) = chunk_hashes(&[0xA5], GIB).await;
        assert_eq!(total, GIB + 1);
        let known: HashSet<_> = original.iter().collect();
        let new = shifted.iter().filter(|hash| !known.contains(hash)).count();
        assert!(original.len() > 500, "about 1 MiB average: {} chunks", original.len());
        assert!(new <= 2, "{new} of {} chunks changed", shifted.len());
    }

    #[tokio::test]
    async fn an_empty_stream_has_no_chunks_and_a_tiny_one_has_one() {
        assert_eq!(chunk_hashes(&[], 0).await.0.len(), 0);
        assert_eq!(chunk_hashes(&[1, 2, 3], 0).await.0.len(), 1);
    }

    #[tokio::test]
    async fn a_buffer_the_size_of_a_small_body_holds_it_whole_and_a_smaller_one_still_reads_all() {
        let body = vec![7u8; 1000];
        let sizes = ChunkSizes::default();
        let mut whole = Chunker::with_buffer(&body[..], sizes, 1, body.len() + 1);
        assert_eq!(whole.next_chunk().await.unwrap().map(|chunk| chunk.len()), Some(1000));
        assert!(whole.next_chunk().await.unwrap().is_none());
        let mut cramped = Chunker::with_buffer(&body[..], sizes, 1, 300);
        let mut total = 0;
        while let Some(chunk) = cramped.next_chunk().await.unwrap() {
            assert!(chunk.len() <= 300);
            total += chunk.len();
        }
        assert_eq!(total, 1000);
    }

    #[test]
    fn out_of_bound_sizes_are_refused() {
        assert!(ChunkSizes::default().validate().is_ok());
        assert!(ChunkSizes { min: 1024, avg: 512, max: 4096 }.validate().is_err());
        assert!(ChunkSizes { min: 1025, avg: 4096, max: 8192 }.validate().is_err());
    }
}
