//! Deciding per chunk whether zstd pays, and doing it.
//!
//! A chunk is compressed only when that saves at least `min_saving` of its size. The decision
//! starts with a cheap probe: four 16 KiB samples spread over the chunk, compressed at level 1.
//! Media (JPEG, MP4, zip) fails the probe, and costs 64 KiB of level-1 work per chunk, not a
//! full compression.
//!
//! Compression and decompression contexts are kept for reuse (a few of each kind, whatever the
//! number of threads): a fresh compression context allocates its tables (a fresh `mmap` past
//! glibc's threshold, faulted in page by page) and clears them for every chunk, which was a fifth
//! of Silo's CPU in a small PUT; a fresh decompression context costs every read of a compressed
//! chunk (a small CSS or JS file from the read cache, say) an allocation of about 100 KiB and
//! its set-up.

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
    /// Whether its level compresses a small chunk (under 64 KiB) in tens of microseconds, quick
    /// enough for an async task: zstd's fast levels up to 3, the default. A higher level's
    /// search can take milliseconds.
    pub fn is_quick(&self) -> bool {
        self.level <= 3
    }

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

/// How many contexts of each kind (each compression level, decompression) are kept for reuse:
/// one per core of a small node.
const CONTEXTS_KEPT: usize = 4;

/// The largest compression context kept: about a megabyte at the default level 3 whatever the
/// chunk size (its window stops at 2 MiB); a high level's tables (tens of megabytes at level 19)
/// are not kept outside the memory budget.
const CONTEXT_KEPT_MAX_BYTES: usize = 4 * 1024 * 1024;

/// Contexts kept for reuse, at most [`CONTEXTS_KEPT`] of each kind. Only a context whose last
/// use succeeded is given back.
struct Kept<T>(Mutex<Vec<T>>);

impl<T> Kept<T> {
    const fn new() -> Self {
        Kept(Mutex::new(Vec::new()))
    }

    fn contexts(&self) -> std::sync::MutexGuard<'_, Vec<T>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A kept context of the kind `same` tells, if one is free.
    fn take(&self, same: impl Fn(&T) -> bool) -> Option<T> {
        let mut contexts = self.contexts();
        let at = contexts.iter().position(same)?;
        Some(contexts.swap_remove(at))
    }

    /// Keeps `context` unless [`CONTEXTS_KEPT`] of its kind (as `same` tells) are kept: one
    /// kind (the level-1 probes, say) never crowds out another.
    fn give(&self, context: T, same: impl Fn(&T) -> bool) {
        let mut contexts = self.contexts();
        if contexts.iter().filter(|kept| same(kept)).count() < CONTEXTS_KEPT {
            contexts.push(context);
        }
    }
}

/// Compression contexts, with their level.
type LeveledCompressors = Kept<(i32, Compressor<'static>)>;

static COMPRESSORS: LeveledCompressors = Kept::new();
static DECOMPRESSORS: Kept<Decompressor<'static>> = Kept::new();

/// `raw` compressed at `level`, with a kept context of that level when one is free.
fn compress_at(raw: &[u8], level: i32) -> std::io::Result<Vec<u8>> {
    compress_with(&COMPRESSORS, raw, level)
}

fn compress_with(kept: &LeveledCompressors, raw: &[u8], level: i32) -> std::io::Result<Vec<u8>> {
    let of_level = |context: &(i32, Compressor<'static>)| context.0 == level;
    let (_, mut compressor) = match kept.take(of_level) {
        Some(context) => context,
        None => (level, Compressor::new(level)?),
    };
    let compressed = compressor.compress(raw)?;
    if compressor.context_mut().sizeof() <= CONTEXT_KEPT_MAX_BYTES {
        kept.give((level, compressor), of_level);
    }
    Ok(compressed)
}

/// Restores a compressed chunk of `raw_len` bytes.
///
/// # Errors
/// The decompressor's error, or a length other than `raw_len`.
pub fn decompress(stored: &[u8], raw_len: usize) -> std::io::Result<Vec<u8>> {
    decompress_with(&DECOMPRESSORS, stored, raw_len)
}

fn decompress_with(
    kept: &Kept<Decompressor<'static>>,
    stored: &[u8],
    raw_len: usize,
) -> std::io::Result<Vec<u8>> {
    let mut decompressor = match kept.take(|_| true) {
        Some(context) => context,
        None => Decompressor::new()?,
    };
    let raw = decompressor.decompress(stored, raw_len)?;
    kept.give(decompressor, |_| true);
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
    fn contexts_are_kept_per_level_and_compress_as_fresh_ones_do() {
        // A pool of this test's own: other tests share the global one.
        let kept = LeveledCompressors::new();
        let chunks: Vec<Vec<u8>> = (1..6usize)
            .map(|i| format!("row {i}, value {} ;", i * 7).repeat(i * 9_000).into_bytes())
            .collect();
        for chunk in chunks.iter().chain(chunks.iter().rev()) {
            // At levels 1 and 3 a kept context's output equals a fresh one's (higher levels
            // salt their hashes from earlier input: the output still decodes alike).
            for level in [1, 3] {
                let reused = compress_with(&kept, chunk, level).expect("kept");
                assert_eq!(reused, zstd::bulk::compress(chunk, level).expect("fresh"), "level {level}");
                assert_eq!(decompress(&reused, chunk.len()).expect("back"), *chunk);
            }
        }
        let levels: Vec<i32> = kept.contexts().iter().map(|(level, _)| *level).collect();
        assert_eq!(levels.iter().filter(|level| **level == 1).count(), 1, "{levels:?}");
        assert_eq!(levels.iter().filter(|level| **level == 3).count(), 1, "{levels:?}");
        // Each level keeps its own up to the cap: a burst of one never crowds out the other.
        for _ in 0..CONTEXTS_KEPT + 2 {
            kept.give((1, Compressor::new(1).expect("context")), |context| context.0 == 1);
        }
        let levels: Vec<i32> = kept.contexts().iter().map(|(level, _)| *level).collect();
        assert_eq!(levels.iter().filter(|level| **level == 1).count(), CONTEXTS_KEPT, "{levels:?}");
        assert_eq!(levels.iter().filter(|level| **level == 3).count(), 1, "{levels:?}");
    }

    #[test]
    fn a_high_levels_large_context_is_not_kept() {
        let kept = LeveledCompressors::new();
        let chunk = "a few words, again and again; ".repeat(70_000).into_bytes();
        compress_with(&kept, &chunk, 19).expect("level 19");
        assert!(kept.contexts().is_empty(), "a context past CONTEXT_KEPT_MAX_BYTES went back");
        compress_with(&kept, &chunk, 3).expect("level 3");
        assert_eq!(kept.contexts().len(), 1);
    }

    #[test]
    fn a_decompression_context_goes_back_only_after_it_succeeded() {
        let kept = Kept::new();
        let chunks: Vec<Vec<u8>> =
            (1..5usize).map(|i| format!("line {i};").repeat(i * 5_000).into_bytes()).collect();
        for chunk in &chunks {
            let stored = compress_at(chunk, 3).expect("compress");
            assert_eq!(decompress_with(&kept, &stored, chunk.len()).expect("back"), *chunk);
            assert_eq!(kept.contexts().len(), 1, "a context that succeeded is kept");
            let mut damaged = stored.clone();
            damaged.truncate(stored.len() - 1);
            assert!(decompress_with(&kept, &damaged, chunk.len()).is_err(), "a damaged chunk is refused");
            assert!(kept.contexts().is_empty(), "a context that failed is not kept");
            assert_eq!(decompress_with(&kept, &stored, chunk.len()).expect("back after a refusal"), *chunk);
        }
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
