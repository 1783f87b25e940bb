//! The internal node API: how the nodes of one cluster move packs between them.
//!
//! Served on a listener of its own (`--internal-listen`), never on the public port:
//!
//! - `PUT /internal/v1/packs/{id}`: a whole sealed pack, streamed into a temporary file,
//!   fsynced, verified record by record and only then linked into place; `201` when stored,
//!   `200` when the same bytes were already held, `409` when other bytes are ([`receive`]);
//! - `GET /internal/v1/packs/{id}`: the pack, or one byte range of it (`Range`, `206`, `416`);
//!   `HEAD` gives its length; `DELETE` removes it (idempotent) ([`packs`]).
//!
//! Every request presents the cluster token ([`auth`]) and names its protocol version
//! ([`version`]). Pack ids in paths are canonical positive integers ([`pack_id`]), and a pack
//! larger than [`pack_size_limit`] is refused with `413`. [`NodeClient`] is the other side. Next,
//! replicated writes stream each pack to its replicas through it, and repair copies packs.

mod auth;
mod client;
mod error;
mod pack_id;
mod packs;
mod receive;
mod server;
mod verify;
pub mod version;

pub use auth::ClusterToken;
pub use client::{ClientError, NodeClient};
pub use pack_id::parse_pack_id;
pub use packs::{PackRead, ReadError};
pub use receive::{ReceiveError, Received, receive_pack};
pub use server::{NodeApi, PACK_ROUTE};
pub use verify::{VerifiedPack, verify_pack_file};

use crate::pack::{PACK_HEADER_LEN, RECORD_HEADER_LEN};
use crate::store::StoreConfig;

/// The largest pack a node takes from a peer under `config`: a pack is sealed once it reaches
/// `pack_target_bytes`, so it may pass that by one record, of the largest chunk any
/// configuration allows (packs written under an older, larger chunk maximum still pass).
pub fn pack_size_limit(config: &StoreConfig) -> u64 {
    let largest_chunk = fastcdc::v2020::MAXIMUM_MAX as u64;
    config.pack_target_bytes + PACK_HEADER_LEN + RECORD_HEADER_LEN + largest_chunk
}
