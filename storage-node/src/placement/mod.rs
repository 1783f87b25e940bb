//! Placement (issue 12): on which nodes the packs of a tenant live. A tenant's
//! [`PlacementPolicy`] (its `tenants` columns) says how many copies, in which zones, and
//! whether on the shared nodes or only on the tenant's own ([`Domain`]); [`catalog`] reads and
//! sets it, refusing a policy the registered nodes cannot meet; [`choice`] picks the nodes of a
//! new pack (a pure function over the candidate nodes), and [`plan`] is that choice over the
//! catalog, as the chunk store calls it for every new pack.
//!
//! One rule is not in the policy's words: a `shared` tenant whose catalog has no shared node
//! that is not removed, but which owns nodes, writes to its own nodes (a one-node deployment
//! started with `--owner`). Its bytes then stay on its own infrastructure, never on another
//! tenant's node.

pub mod catalog;
pub mod choice;
pub mod error;
pub mod policy;
pub mod rules;

use crate::TenantId;

pub use catalog::{PlacementView, plan, set_policy, show_policy};
pub use choice::{Candidate, Plan, Target, choose};
pub use error::PlacementError;
pub use policy::{OnShortage, PlacementMode, PlacementPolicy, PolicyChange, is_valid_zone};

pub use crate::node_state::LIVE_WITHIN;

/// The share of a node's capacity, in percent, kept free: a node takes a new pack only if it
/// still has this much room after the pack.
pub const HEADROOM_PERCENT: u64 = 2;

/// The default replication factor where the domain spans two zones or more.
pub const DEFAULT_REPLICATION_FACTOR: u8 = 2;

/// The nodes a pack may live on, and the chunks it may hold (dedup stays inside one domain).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Domain {
    /// The hosting company's nodes (no owner); any shared tenant's chunks.
    Shared,
    /// The tenant's own nodes; its chunks only.
    Owned(TenantId),
}

impl Domain {
    /// The owner a node must have to be in this domain.
    pub fn owner(self) -> Option<TenantId> {
        match self {
            Domain::Shared => None,
            Domain::Owned(tenant) => Some(tenant),
        }
    }
}
