//! The rules a policy is read by over the registered nodes (pure functions): the domain a
//! tenant's packs go to, the zones that domain spans, the effective replication factor, and
//! whether the registered nodes can meet a policy at all.

use super::choice::Candidate;
use super::error::nodes_of;
use super::{DEFAULT_REPLICATION_FACTOR, Domain, PlacementError, PlacementMode, PlacementPolicy};
use crate::TenantId;
use crate::node_state::NodeState;

/// The domain `tenant`'s packs go to under `policy`, over the registered `nodes`: its own nodes
/// when owned; the shared nodes when shared, unless none is registered and the tenant owns
/// some (a one-node deployment started with `--owner`), then its own.
pub fn domain(policy: &PlacementPolicy, tenant: TenantId, nodes: &[Candidate]) -> Domain {
    let registered = |owner: Option<TenantId>| {
        nodes.iter().any(|node| node.state != NodeState::Removed && node.owner == owner)
    };
    match policy.mode {
        PlacementMode::Owned => Domain::Owned(tenant),
        PlacementMode::Shared if !registered(None) && registered(Some(tenant)) => Domain::Owned(tenant),
        PlacementMode::Shared => Domain::Shared,
    }
}

/// The distinct zones, sorted, of `domain`'s registered (not removed) nodes that `policy`
/// allows.
pub fn zones(domain: Domain, policy: &PlacementPolicy, nodes: &[Candidate]) -> Vec<String> {
    let mut zones: Vec<String> = nodes
        .iter()
        .filter(|node| node.state != NodeState::Removed && node.owner == domain.owner())
        .filter(|node| policy.allows(&node.zone))
        .map(|node| node.zone.clone())
        .collect();
    zones.sort();
    zones.dedup();
    zones
}

/// The copies each new pack gets: the policy's factor, or by default 2 where the domain spans
/// two zones or more, else 1.
pub fn replication_factor(policy: &PlacementPolicy, zones: usize) -> u8 {
    policy
        .replication_factor
        .unwrap_or_else(|| u8::try_from(zones).unwrap_or(u8::MAX).clamp(1, DEFAULT_REPLICATION_FACTOR))
}

/// Refuses `policy` for the tenant `tenant` (named `name`) when the registered `nodes` cannot
/// meet it: an owned policy and no owned node, an allowed zone without a node of the domain,
/// or a replication factor above the zones the domain spans.
///
/// # Errors
/// [`PlacementError::NoOwnedNodes`], [`PlacementError::ZoneWithoutNode`],
/// [`PlacementError::TooFewZones`].
pub fn check(
    policy: &PlacementPolicy,
    tenant: TenantId,
    name: &str,
    nodes: &[Candidate],
) -> Result<(), PlacementError> {
    let domain = domain(policy, tenant, nodes);
    let everywhere = PlacementPolicy { allowed_zones: None, ..policy.clone() };
    let all_zones = zones(domain, &everywhere, nodes);
    let owned_by = match domain {
        Domain::Owned(_) if all_zones.is_empty() => {
            return Err(PlacementError::NoOwnedNodes { tenant: name.to_string() });
        }
        Domain::Owned(_) => Some(name),
        Domain::Shared => None,
    };
    let allowed = policy.allowed_zones.as_deref().unwrap_or_default();
    if let Some(zone) = allowed.iter().find(|zone| !all_zones.contains(zone)) {
        return Err(PlacementError::ZoneWithoutNode {
            zone: zone.clone(),
            nodes: nodes_of(owned_by),
            zones: all_zones,
        });
    }
    let zones = zones(domain, policy, nodes);
    let wanted = replication_factor(policy, zones.len());
    if usize::from(wanted) > zones.len() {
        return Err(PlacementError::TooFewZones {
            wanted,
            nodes: nodes_of(owned_by),
            zones,
            restricted: policy.allowed_zones.is_some(),
        });
    }
    Ok(())
}
