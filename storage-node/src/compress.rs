//! Deciding per chunk whether zstd pays, and doing it.
//!
//! A chunk is compressed only when that saves at least `min_saving` of its size. The decision
//! starts with a cheap probe: four 16 KiB samples spread over the chunk, compressed at level 1.
//! Media (JPEG, MP4, zip) fails the probe, and costs 64 KiB of level-1 work per chunk, not a
//! full compression.
//!
//! Compression contexts are kept for reuse (a few, whatever the number of threads): a fresh one
//! allocates its tables (a fresh `mmap` past glibc's threshold, faulted in page by page) and
//! clears them for every chunk, which was a fifth of Silo's CPU in a small PUT.

use std::sync::{Mutex, PoisonError};

use serde::{Deserialize, Serialize};
use zstd::bulk::Compressor;

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

/// How many compression contexts are kept for reuse: one per core of a small node, each up to
/// about a megabyte (level 3's tables for the largest chunk).
const CONTEXTS_KEPT: usize = 4;

/// Contexts kept for reuse, with their level.
static CONTEXTS: Mutex<Vec<(i32, Compressor<'static>)>> = Mutex::new(Vec::new());

/// `raw` compressed at `level`, with a kept context of that level when one is free.
fn compress_at(raw: &[u8], level: i32) -> std::io::Result<Vec<u8>> {
    let kept = {
        let mut contexts = CONTEXTS.lock().unwrap_or_else(PoisonError::into_inner);
        let at = contexts.iter().position(|(kept_level, _)| *kept_level == level);
        at.map(|at| contexts.swap_remove(at).1)
    };
    let mut compressor = match kept {
        Some(compressor) => compressor,
        None => Compressor::new(level)?,
    };
    let compressed = compressor.compress(raw)?;
    let mut contexts = CONTEXTS.lock().unwrap_or_else(PoisonError::into_inner);
    if contexts.len() < CONTEXTS_KEPT {
        contexts.push((level, compressor));
    }
    Ok(compressed)
}

/// Restores a compressed chunk of `raw_len` bytes.
///
/// # Errors
/// The decompressor's error, or a length other than `raw_len`.
pub fn decompress(stored: &[u8], raw_len: usize) -> std::io::Result<Vec<u8>> {
    let raw = zstd::bulk::decompress(stored, raw_len)?;
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
        let contexts = CONTEXTS.lock().unwrap_or_else(PoisonError::into_inner);
        assert!((1..=CONTEXTS_KEPT).contains(&contexts.len()));
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
