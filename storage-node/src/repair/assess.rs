//! What one pack needs (pure functions over the [`Cluster`]): which of its copies are healthy,
//! which live copy to read it from, which copies are damaged or misplaced, and where the
//! missing copies go.

use std::collections::BTreeSet;

use super::ReplicaState;
use super::work::{Cluster, PackWork};
use crate::TenantId;
use crate::node_state::{NodeId, NodeState};
use crate::placement::{Candidate, Domain, OnShortage, PlacementMode, choose};

/// A copy that can be read: its node and where to reach it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    pub node: NodeId,
    pub url: String,
}

/// Where one missing copy goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyTarget {
    pub node: NodeId,
    pub zone: String,
    pub url: String,
    /// The node holds a damaged copy, deleted before the new one is sent.
    pub replaces_damaged: bool,
}

/// One pack's copies, as repair sees them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assessment {
    /// The copies it should have: its domain's replication factor, its own `replicas_wanted`
    /// as a floor.
    pub wanted: u8,
    /// The zones its healthy copies are in.
    pub healthy_zones: BTreeSet<String>,
    /// Whole copies on live nodes, healthy ones first (a draining node's copy is read too).
    pub sources: Vec<Source>,
    /// Nodes whose copy is damaged.
    pub damaged: Vec<NodeId>,
    /// Nodes outside the pack's domain or its allowed zones that hold a copy.
    pub misplaced: Vec<NodeId>,
    /// Draining nodes that hold a copy.
    pub draining: Vec<NodeId>,
}

impl Assessment {
    /// How many copies in new zones it lacks.
    pub fn missing(&self) -> usize {
        usize::from(self.wanted).saturating_sub(self.healthy_zones.len())
    }

    /// The copies to drop once the pack has all its copies: damaged, misplaced, draining.
    pub fn surplus(&self) -> Vec<NodeId> {
        let mut surplus: Vec<NodeId> =
            self.damaged.iter().chain(&self.misplaced).chain(&self.draining).copied().collect();
        surplus.sort_by_key(|node| node.0);
        surplus.dedup();
        surplus
    }
}

/// What `pack` has and lacks under `cluster`.
pub fn assess(pack: &PackWork, cluster: &Cluster) -> Assessment {
    let rule = cluster.rule(pack.domain);
    let mut assessment = Assessment {
        wanted: rule.copies.max(pack.replicas_wanted),
        healthy_zones: BTreeSet::new(),
        sources: Vec::new(),
        damaged: Vec::new(),
        misplaced: Vec::new(),
        draining: Vec::new(),
    };
    let mut other_sources = Vec::new();
    for &(id, state) in &pack.replicas {
        let Some(node) = cluster.node(id) else { continue };
        if !cluster.in_domain(node, pack.domain) {
            assessment.misplaced.push(id);
        } else if node.state == NodeState::Draining {
            assessment.draining.push(id);
        }
        match state {
            ReplicaState::Damaged => assessment.damaged.push(id),
            ReplicaState::Writing => {}
            ReplicaState::Ok => {
                let healthy = cluster.keeps_copies(node, pack.domain);
                if healthy {
                    assessment.healthy_zones.insert(node.zone.clone());
                }
                if let (true, Some(url)) = (node.live, &node.internal_url) {
                    let source = Source { node: id, url: url.clone() };
                    if healthy { assessment.sources.push(source) } else { other_sources.push(source) }
                }
            }
        }
    }
    assessment.sources.append(&mut other_sources);
    assessment
}

/// Healthy copies beyond the ones `pack` wants, to drop once it lacks none. A node that comes
/// back after the grace finds its copies repaired elsewhere meanwhile, and the pack then has
/// one copy too many. One copy per zone is kept, up to the copies wanted, preferring live
/// nodes and then the ones with the most free space; nothing is dropped unless every kept copy
/// is on a live node, so a pack is never trimmed down to copies that cannot be read now.
pub fn extra_copies(pack: &PackWork, assessment: &Assessment, cluster: &Cluster) -> Vec<NodeId> {
    let wanted = usize::from(assessment.wanted);
    if assessment.missing() > 0 {
        return Vec::new();
    }
    let mut healthy: Vec<&Candidate> = pack
        .replicas
        .iter()
        .filter(|(_, state)| *state == ReplicaState::Ok)
        .filter_map(|(id, _)| cluster.node(*id))
        .filter(|node| cluster.keeps_copies(node, pack.domain))
        .collect();
    if healthy.len() <= wanted {
        return Vec::new();
    }
    healthy.sort_by_key(|node| (!node.live, std::cmp::Reverse(node.free_bytes()), node.node.0));
    let mut zones = BTreeSet::new();
    let (mut kept, mut extra) = (Vec::new(), Vec::new());
    for node in healthy {
        if kept.len() < wanted && zones.insert(node.zone.as_str()) {
            kept.push(node);
        } else {
            extra.push(node.node);
        }
    }
    if kept.len() < wanted || kept.iter().any(|node| !node.live) {
        return Vec::new();
    }
    extra
}

/// Where the missing copies of `pack` go: live, active nodes of its domain in allowed zones,
/// each in a zone that holds no healthy copy yet, with room for it and its headroom, by most
/// free space ([`choose`]'s rules), among the nodes that hold no copy of it; then, if that is
/// not enough, the nodes holding a damaged copy that pass the same rules (their copy is
/// replaced in place).
pub fn targets(pack: &PackWork, assessment: &Assessment, cluster: &Cluster) -> Vec<CopyTarget> {
    let missing = assessment.missing();
    if missing == 0 {
        return Vec::new();
    }
    let holds = |node: &Candidate| pack.replicas.iter().any(|(id, _)| *id == node.node);
    let fresh: Vec<Candidate> = cluster
        .nodes
        .iter()
        .filter(|node| !holds(node))
        .filter(|node| usable(node, assessment, cluster))
        .cloned()
        .collect();
    let mut chosen: Vec<CopyTarget> = pick(pack, missing, &fresh, cluster)
        .into_iter()
        .map(|(node, zone, url)| CopyTarget { node, zone, url, replaces_damaged: false })
        .collect();
    for id in &assessment.damaged {
        let Some(node) = cluster.node(*id) else { continue };
        let zone_taken = chosen.iter().any(|target| target.zone == node.zone);
        if chosen.len() < missing && !zone_taken && usable(node, assessment, cluster) {
            let placed = pick(pack, 1, std::slice::from_ref(node), cluster);
            chosen.extend(placed.into_iter().map(|(node, zone, url)| CopyTarget {
                node,
                zone,
                url,
                replaces_damaged: true,
            }));
        }
    }
    chosen
}

/// Whether `node` may take a copy: not gone, and in a zone without a healthy copy.
fn usable(node: &Candidate, assessment: &Assessment, cluster: &Cluster) -> bool {
    !cluster.gone.contains(&node.node) && !assessment.healthy_zones.contains(&node.zone)
}

/// Up to `copies` nodes among `nodes` by [`choose`], for `pack`'s domain and rule.
fn pick(
    pack: &PackWork,
    copies: usize,
    nodes: &[Candidate],
    cluster: &Cluster,
) -> Vec<(NodeId, String, String)> {
    let mut policy = cluster.rule(pack.domain).policy;
    policy.replication_factor = Some(u8::try_from(copies).unwrap_or(u8::MAX));
    policy.on_shortage = OnShortage::Degraded;
    let tenant = match pack.domain {
        Domain::Shared => {
            policy.mode = PlacementMode::Shared;
            // No node has this owner, so the shared domain stays shared over any subset.
            TenantId(i64::MIN)
        }
        Domain::Owned(tenant) => {
            policy.mode = PlacementMode::Owned;
            tenant
        }
    };
    // No node asks: every target must be live.
    let nobody = NodeId(i32::MIN);
    let Ok(plan) = choose(&policy, tenant, nobody, pack.size, nodes) else { return Vec::new() };
    plan.targets
        .into_iter()
        .filter_map(|target| Some((target.node, target.zone, target.internal_url?)))
        .filter(|(node, ..)| cluster.node(*node).is_some_and(|n| n.state == NodeState::Active))
        .collect()
}

#[cfg(test)]
#[path = "assess_tests.rs"]
mod tests;
