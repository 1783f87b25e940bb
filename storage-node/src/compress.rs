//! Deciding per chunk whether zstd pays, and doing it.
//!
//! A chunk is compressed only when that saves at least `min_saving` of its size. The decision
//! starts with a cheap probe: four 16 KiB samples spread over the chunk, compressed at level 1.
//! Media (JPEG, MP4, zip) fails the probe, and costs 64 KiB of level-1 work per chunk, not a
//! full compression.
//!
//! Compression and decompression contexts are kept for reuse (a few, whatever the number of
//! threads): a fresh compression context allocates its tables (a fresh `mmap` past glibc's
//! threshold, faulted in page by page) and clears them for every chunk, which was a fifth of
//! Silo's CPU in a small PUT; a fresh decompression context costs every read of a compressed
//! chunk (a small CSS or JS file from the read cache, say) an allocation of about 100 KiB and its
//! set-up.

use std::sync::{Mutex, PoisonError};

use serde::{Deserialize, Serialize};
use zstd::bulk::{Compressor, Decompressor};

/// How a chunk is stored in its pack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Compression {
    None = 0,
    Zstd = 1,
}

impl Compression {
    /// From the catalog's or a pack header's code.
    pub fn from_code(code: i16) -> Option<Self> {
        match code {
            0 => Some(Compression::None),
            1 => Some(Compression::Zstd),
            _ => None,
        }
    }
}

/// Compression settings.
#[derive(Debug, Clone, Copy, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct CompressionPolicy {
    /// The least share of a chunk that compression must save to be kept (0.10 = 10%).
    pub min_saving: f64,
    /// The zstd level for chunks that pass the probe.
    pub level: i32,
}

impl Default for CompressionPolicy {
    fn default() -> Self {
        CompressionPolicy { min_saving: 0.10, level: 3 }
    }
}

const PROBE_SAMPLES: usize = 4;
const PROBE_SAMPLE_BYTES: usize = 16 * 1024;

impl CompressionPolicy {
    /// The stored form of `raw`: compressed when that saves enough, otherwise `None`.
    pub fn compress(&self, raw: &[u8]) -> Option<Vec<u8>> {
        if raw.len() < 512 {
            return None;
        }
        if raw.len() > 2 * PROBE_SAMPLES * PROBE_SAMPLE_BYTES {
            let stride = raw.len() / PROBE_SAMPLES;
            let probe: Vec<u8> = (0..PROBE_SAMPLES)
                .flat_map(|i| &raw[i * stride..i * stride + PROBE_SAMPLE_BYTES])
                .copied()
                .collect();
            let probed = compress_at(&probe, 1).ok()?;
            if !self.saves_enough(probe.len(), probed.len()) {
                return None;
            }
        }
        let compressed = compress_at(raw, self.level).ok()?;
        self.saves_enough(raw.len(), compressed.len()).then_some(compressed)
    }

    fn saves_enough(&self, raw: usize, stored: usize) -> bool {
        (stored as f64) <= (raw as f64) * (1.0 - self.min_saving)
    }
}

/// How many contexts of each kind are kept for reuse: one per core of a small node, each up to
/// about a megabyte (level 3's tables for the largest chunk).
const CONTEXTS_KEPT: usize = 4;

/// Contexts kept for reuse, at most [`CONTEXTS_KEPT`]. Only a context whose last use succeeded
/// is given back.
struct Kept<T>(Mutex<Vec<T>>);

impl<T> Kept<T> {
    const fn new() -> Self {
        Kept(Mutex::new(Vec::new()))
    }

    fn contexts(&self) -> std::sync::MutexGuard<'_, Vec<T>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A kept context that `fits`, if one is free.
    fn take(&self, fits: impl Fn(&T) -> bool) -> Option<T> {
        let mut contexts = self.contexts();
        let at = contexts.iter().position(fits)?;
        Some(contexts.swap_remove(at))
    }

    fn give(&self, context: T) {
        let mut contexts = self.contexts();
        if contexts.len() < CONTEXTS_KEPT {
            contexts.push(context);
        }
    }
}

/// Compression contexts, with their level.
static COMPRESSORS: Kept<(i32, Compressor<'static>)> = Kept::new();
static DECOMPRESSORS: Kept<Decompressor<'static>> = Kept::new();

/// `raw` compressed at `level`, with a kept context of that level when one is free.
fn compress_at(raw: &[u8], level: i32) -> std::io::Result<Vec<u8>> {
    let (level, mut compressor) = match COMPRESSORS.take(|(kept, _)| *kept == level) {
        Some(kept) => kept,
        None => (level, Compressor::new(level)?),
    };
    let compressed = compressor.compress(raw)?;
    COMPRESSORS.give((level, compressor));
    Ok(compressed)
}

/// Restores a compressed chunk of `raw_len` bytes.
///
/// # Errors
/// The decompressor's error, or a length other than `raw_len`.
pub fn decompress(stored: &[u8], raw_len: usize) -> std::io::Result<Vec<u8>> {
    let mut decompressor = match DECOMPRESSORS.take(|_| true) {
        Some(kept) => kept,
        None => Decompressor::new()?,
    };
    let raw = decompressor.decompress(stored, raw_len)?;
    DECOMPRESSORS.give(decompressor);
    if raw.len() != raw_len {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("decompressed to {} bytes, expected {raw_len}", raw.len()),
        ));
    }
    Ok(raw)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::RngCore;

    #[test]
    fn text_is_compressed_and_comes_back() {
        let text = "INSERT INTO logs VALUES (42, 'GET /index.html 200');\n".repeat(20_000);
        let stored = CompressionPolicy::default().compress(text.as_bytes()).expect("text compresses");
        assert!(stored.len() < text.len() / 5);
        assert_eq!(decompress(&stored, text.len()).unwrap(), text.as_bytes());
    }

    #[test]
    fn a_kept_context_compresses_each_chunk_as_a_fresh_one_does() {
        // Chunks of several sizes and contents, each compressed once with a kept context (after
        // the first), equal the output of a fresh context: nothing carries over between them.
        let chunks: Vec<Vec<u8>> = (1..6usize)
            .map(|i| format!("row {i}, value {} ;", i * 7).repeat(i * 9_000).into_bytes())
            .collect();
        for chunk in chunks.iter().chain(chunks.iter().rev()) {
            let kept = compress_at(chunk, 3).expect("kept");
            assert_eq!(kept, zstd::bulk::compress(chunk, 3).expect("fresh"));
            assert_eq!(decompress(&kept, chunk.len()).expect("back"), *chunk);
        }
        assert!((1..=CONTEXTS_KEPT).contains(&COMPRESSORS.contexts().len()));
    }

    #[test]
    fn a_kept_decompression_context_restores_chunk_after_chunk_and_refuses_damage() {
        let chunks: Vec<Vec<u8>> =
            (1..5usize).map(|i| format!("line {i};").repeat(i * 5_000).into_bytes()).collect();
        for chunk in &chunks {
            let stored = compress_at(chunk, 3).expect("compress");
            assert_eq!(decompress(&stored, chunk.len()).expect("back"), *chunk);
            let mut damaged = stored.clone();
            let last = damaged.len() - 1;
            damaged[last / 2] ^= 0x40;
            damaged.truncate(last);
            assert!(decompress(&damaged, chunk.len()).is_err(), "a damaged chunk is refused");
            assert_eq!(decompress(&stored, chunk.len()).expect("back after a refusal"), *chunk);
        }
        assert!((1..=CONTEXTS_KEPT).contains(&DECOMPRESSORS.contexts().len()));
    }

    #[test]
    fn random_bytes_are_kept_raw() {
        let mut media = vec![0u8; 1 << 20];
        rand::rng().fill_bytes(&mut media);
        assert!(CompressionPolicy::default().compress(&media).is_none());
    }

    #[test]
    fn a_chunk_that_saves_too_little_is_kept_raw() {
        // Half random, half zeros: saves about 50%; a policy demanding 60% keeps it raw.
        let mut chunk = vec![0u8; 1 << 20];
        rand::rng().fill_bytes(&mut chunk[..1 << 19]);
        chunk.rotate_left(1 << 18);
        let strict = CompressionPolicy { min_saving: 0.6, level: 3 };
        assert!(strict.compress(&chunk).is_none());
        assert!(CompressionPolicy::default().compress(&chunk).is_some());
    }
}
