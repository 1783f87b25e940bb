//! Verifying part of a chunk: the chaining values of a chunk's keyed BLAKE3 tree, kept per
//! 64 KiB block, so that a range read hashes only the blocks it touches.
//!
//! BLAKE3 is a tree hash: a chunk's id is the root of a binary tree over its 1 KiB BLAKE3
//! chunks, and every 64 KiB-aligned block is a whole subtree of it. A [`ChunkTree`] is the
//! chaining value of each block, computed when the chunk is named (about 0.05% of its size:
//! 32 bytes per 64 KiB). To verify a range, the blocks it covers are hashed from the bytes
//! read, the other blocks' values are taken from the tree, and all of them are merged up to
//! the root, which must be the chunk's id. A wrong byte in the range changes its block's value
//! and so the root; a wrong stored value changes the root too. Either way nothing unverified
//! is served. This is what Bao outboards do, at a coarser grain, through blake3's `hazmat`
//! module (which supports the keyed mode that chunk ids use).

use std::ops::Range;

use blake3::hazmat::{
    ChainingValue, HasherExt, Mode, left_subtree_len, merge_subtrees_non_root, merge_subtrees_root,
};

use crate::{ChunkId, ChunkKey};

/// The grain of partial verification: a range is verified in whole blocks of this size.
pub const BLOCK_LEN: usize = 64 * 1024;

/// The chaining values of a chunk's 64 KiB blocks. Chunks of one block or less have none:
/// verifying them whole costs no more than verifying a block.
#[derive(Clone, PartialEq, Eq)]
pub struct ChunkTree {
    blocks: Vec<ChainingValue>,
}

impl std::fmt::Debug for ChunkTree {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ChunkTree({} blocks)", self.blocks.len())
    }
}

impl ChunkTree {
    /// The tree of a chunk of `raw_len` bytes as stored (32 bytes a block), if well formed.
    pub fn from_bytes(bytes: &[u8], raw_len: u64) -> Option<Self> {
        if !bytes.len().is_multiple_of(32)
            || bytes.len() / 32 != block_count(raw_len)
            || raw_len <= BLOCK_LEN as u64
        {
            return None;
        }
        let blocks = bytes.chunks_exact(32).map(|cv| cv.try_into().unwrap_or([0; 32])).collect();
        Some(ChunkTree { blocks })
    }

    /// The bytes the tree holds in memory.
    pub fn weight(&self) -> usize {
        self.blocks.len() * 32
    }

    /// The stored form: the blocks' chaining values, in order.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.blocks.concat()
    }

    /// The whole blocks that cover `range` of the chunk's raw bytes, as a byte range of the
    /// chunk (clipped to its length): what a reader must load to verify `range`.
    pub fn covering(range: &Range<u64>, raw_len: u64) -> Range<u64> {
        let block = BLOCK_LEN as u64;
        let start = range.start / block * block;
        let end = range.end.div_ceil(block).saturating_mul(block).min(raw_len);
        start..end
    }

    /// Whether `span`, the bytes at `span_start..` of the chunk (a result of
    /// [`ChunkTree::covering`]), belongs to the chunk `id` of `raw_len` bytes under `key`.
    pub fn verify_span(
        &self,
        key: &ChunkKey,
        id: &ChunkId,
        raw_len: u64,
        span_start: u64,
        span: &[u8],
    ) -> bool {
        let block = BLOCK_LEN as u64;
        let span_end = span_start + span.len() as u64;
        if !span_start.is_multiple_of(block)
            || (!span_end.is_multiple_of(block) && span_end != raw_len)
            || span_end > raw_len
            || self.blocks.len() != block_count(raw_len)
        {
            return false;
        }
        let mut blocks = self.blocks.clone();
        let first = (span_start / block) as usize;
        for (i, bytes) in span.chunks(BLOCK_LEN).enumerate() {
            blocks[first + i] = key.block_value(((first + i) * BLOCK_LEN) as u64, bytes);
        }
        root_of(key, &blocks, raw_len).is_some_and(|root| root == id.0)
    }
}

impl ChunkKey {
    /// The id of a chunk and, when it spans more than one block, its tree. The id is the same
    /// as [`ChunkKey::chunk_id`]'s.
    pub fn chunk_id_and_tree(&self, raw: &[u8]) -> (ChunkId, Option<ChunkTree>) {
        if raw.len() <= BLOCK_LEN {
            return (self.chunk_id(raw), None);
        }
        let blocks: Vec<ChainingValue> = raw
            .chunks(BLOCK_LEN)
            .enumerate()
            .map(|(i, bytes)| self.block_value((i * BLOCK_LEN) as u64, bytes))
            .collect();
        match root_of(self, &blocks, raw.len() as u64) {
            Some(root) => (ChunkId(root), Some(ChunkTree { blocks })),
            None => (self.chunk_id(raw), None),
        }
    }

    /// The chaining value of the block at `offset` (a multiple of [`BLOCK_LEN`]).
    fn block_value(&self, offset: u64, bytes: &[u8]) -> ChainingValue {
        let mut hasher = self.hasher();
        hasher.set_input_offset(offset);
        hasher.update(bytes);
        hasher.finalize_non_root()
    }
}

fn block_count(raw_len: u64) -> usize {
    raw_len.div_ceil(BLOCK_LEN as u64) as usize
}

/// The root hash of a chunk of `len` bytes (more than one block) from its blocks' values,
/// merged in BLAKE3's tree shape: each subtree splits at [`left_subtree_len`], which for more
/// than one block is always a whole number of blocks.
fn root_of(key: &ChunkKey, blocks: &[ChainingValue], len: u64) -> Option<[u8; 32]> {
    if len <= BLOCK_LEN as u64 || blocks.len() != block_count(len) {
        return None;
    }
    let key_bytes = key.bytes();
    let mode = Mode::KeyedHash(&key_bytes);
    let left = left_subtree_len(len);
    let left_value = subtree_value(mode, blocks, 0, left);
    let right_value = subtree_value(mode, blocks, left, len - left);
    Some(*merge_subtrees_root(&left_value, &right_value, mode).as_bytes())
}

/// The chaining value of the subtree over bytes `start..start + len`.
fn subtree_value(mode: Mode<'_>, blocks: &[ChainingValue], start: u64, len: u64) -> ChainingValue {
    let block = BLOCK_LEN as u64;
    if len <= block {
        return blocks[(start / block) as usize];
    }
    let left = left_subtree_len(len);
    let left_value = subtree_value(mode, blocks, start, left);
    let right_value = subtree_value(mode, blocks, start + left, len - left);
    merge_subtrees_non_root(&left_value, &right_value, mode)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ServerSecret, TenantId};

    fn key() -> ChunkKey {
        ServerSecret::from_bytes([9; 32]).chunk_key(TenantId(3))
    }

    fn bytes(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 + i / 1000) as u8).collect()
    }

    #[test]
    fn the_tree_names_the_same_id_as_the_plain_hash() {
        let key = key();
        for len in
            [0, 1, 1024, BLOCK_LEN, BLOCK_LEN + 1, 2 * BLOCK_LEN, 3 * BLOCK_LEN - 5, 2 * 1024 * 1024 + 77]
        {
            let raw = bytes(len);
            let (id, tree) = key.chunk_id_and_tree(&raw);
            assert_eq!(id, key.chunk_id(&raw), "length {len}");
            assert_eq!(tree.is_some(), len > BLOCK_LEN, "length {len}");
        }
    }

    #[test]
    fn a_range_verifies_with_only_its_blocks() {
        let key = key();
        let raw = bytes(2 * 1024 * 1024 + 12_345);
        let len = raw.len() as u64;
        let (id, tree) = key.chunk_id_and_tree(&raw);
        let tree = tree.expect("a tree");
        let stored = ChunkTree::from_bytes(&tree.to_bytes(), len).expect("round trip");
        for range in [0..1, 70_000..200_000, len - 10..len, 0..len, 131_072..131_073] {
            let span = ChunkTree::covering(&range, len);
            assert!(span.start <= range.start && span.end >= range.end);
            let bytes = &raw[span.start as usize..span.end as usize];
            assert!(stored.verify_span(&key, &id, len, span.start, bytes), "{range:?}");
        }
    }

    #[test]
    fn a_flipped_bit_or_a_wrong_tree_fails() {
        let key = key();
        let mut raw = bytes(5 * BLOCK_LEN + 3);
        let len = raw.len() as u64;
        let (id, tree) = key.chunk_id_and_tree(&raw);
        let tree = tree.expect("a tree");
        let span = ChunkTree::covering(&(BLOCK_LEN as u64 + 5..BLOCK_LEN as u64 + 9), len);
        raw[BLOCK_LEN + 100] ^= 0x10;
        assert!(!tree.verify_span(&key, &id, len, span.start, &raw[span.start as usize..span.end as usize]));
        raw[BLOCK_LEN + 100] ^= 0x10;
        let mut wrong = tree.to_bytes();
        wrong[4 * 32] ^= 1;
        let wrong = ChunkTree::from_bytes(&wrong, len).expect("well formed");
        assert!(!wrong.verify_span(&key, &id, len, span.start, &raw[span.start as usize..span.end as usize]));
        assert!(!tree.verify_span(&key, &id, len, 5, &raw[5..BLOCK_LEN]), "a span must start on a block");
        assert!(ChunkTree::from_bytes(&[0; 31], len).is_none());
        assert!(!tree.verify_span(
            &other_key(),
            &id,
            len,
            span.start,
            &raw[span.start as usize..span.end as usize]
        ));
    }

    fn other_key() -> ChunkKey {
        ServerSecret::from_bytes([9; 32]).chunk_key(TenantId(4))
    }
}
