//! The choice of nodes for a new pack, a pure function over the candidate nodes: the live,
//! active nodes of the tenant's domain in its allowed zones that have room for the pack (with
//! [`HEADROOM_PERCENT`] of their capacity to spare), one per distinct zone, the writing node
//! first when it is one of them, then the others by most free space.

use super::{Domain, HEADROOM_PERCENT, OnShortage, PlacementError, PlacementPolicy, rules};
use crate::TenantId;
use crate::node_state::NodeId;
use crate::node_state::NodeState;

/// A registered node as placement sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub node: NodeId,
    pub zone: String,
    /// The tenant whose own node it is; `None` for a shared node.
    pub owner: Option<TenantId>,
    pub internal_url: Option<String>,
    pub state: NodeState,
    /// Its heartbeat is within [`super::LIVE_WITHIN`] and it has not stopped.
    pub live: bool,
    /// `None`: no limit recorded.
    pub capacity_bytes: Option<u64>,
    /// The bytes of the packs it holds a copy of (not damaged).
    pub held_bytes: u64,
}

impl Candidate {
    /// The bytes it may still take.
    pub fn free_bytes(&self) -> u64 {
        self.capacity_bytes.map_or(u64::MAX, |capacity| capacity.saturating_sub(self.held_bytes))
    }

    /// Whether a pack of `pack_bytes` leaves it at least its headroom free.
    pub fn has_room_for(&self, pack_bytes: u64) -> bool {
        self.capacity_bytes.is_none_or(|capacity| {
            let headroom = capacity / 100 * HEADROOM_PERCENT;
            self.held_bytes.saturating_add(pack_bytes).saturating_add(headroom) <= capacity
        })
    }
}

/// One node chosen for a new pack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub node: NodeId,
    pub zone: String,
    pub internal_url: Option<String>,
}

/// Where a new pack goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub domain: Domain,
    /// The replication factor: the copies the pack is recorded as wanting.
    pub wanted: u8,
    /// One node per distinct zone, the writing node first when it is one of them.
    pub targets: Vec<Target>,
    /// Fewer targets than wanted (the policy accepts that): repair tops the pack up first.
    pub degraded: bool,
}

/// The nodes for a new pack of about `pack_bytes` that `this_node` writes for `tenant` under
/// `policy`, among the registered `candidates` (`this_node` is live: it is the one asking).
///
/// # Errors
/// [`PlacementError::Shortage`] when fewer zones than the replication factor can take the pack
/// and the policy refuses that, or when none can.
pub fn choose(
    policy: &PlacementPolicy,
    tenant: TenantId,
    this_node: NodeId,
    pack_bytes: u64,
    candidates: &[Candidate],
) -> Result<Plan, PlacementError> {
    let domain = rules::domain(policy, tenant, candidates);
    let wanted = rules::replication_factor(policy, rules::zones(domain, policy, candidates).len());
    let mut eligible: Vec<&Candidate> = candidates
        .iter()
        .filter(|node| node.owner == domain.owner() && node.state == NodeState::Active)
        .filter(|node| node.live || node.node == this_node)
        .filter(|node| policy.allows(&node.zone) && node.has_room_for(pack_bytes))
        .collect();
    eligible.sort_by_key(|node| (node.node != this_node, std::cmp::Reverse(node.free_bytes()), node.node.0));
    let mut targets: Vec<Target> = Vec::new();
    for node in eligible {
        if targets.len() == usize::from(wanted) {
            break;
        }
        if targets.iter().all(|target| target.zone != node.zone) {
            targets.push(Target {
                node: node.node,
                zone: node.zone.clone(),
                internal_url: node.internal_url.clone(),
            });
        }
    }
    let degraded = targets.len() < usize::from(wanted);
    if targets.is_empty() || (degraded && policy.on_shortage == OnShortage::Refuse) {
        let mut zones: Vec<String> = targets.into_iter().map(|target| target.zone).collect();
        zones.sort();
        return Err(PlacementError::Shortage { wanted, zones });
    }
    Ok(Plan { domain, wanted, targets, degraded })
}

#[cfg(test)]
#[path = "choice_tests.rs"]
mod tests;
