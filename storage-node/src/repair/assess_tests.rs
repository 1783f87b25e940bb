//! Unit tests of what a pack needs and where its missing copies go.

use std::collections::HashSet;

use super::*;
use crate::pack::PackId;
use crate::placement::PlacementPolicy;

const ACME: TenantId = TenantId(7);
const GB: u64 = 1 << 30;

fn node(id: i32, zone: &str) -> Candidate {
    Candidate {
        node: NodeId(id),
        zone: zone.into(),
        owner: None,
        internal_url: Some(format!("http://node-{id}:7000")),
        state: NodeState::Active,
        live: true,
        capacity_bytes: Some(100 * GB),
        held_bytes: 0,
    }
}

fn owned(id: i32, zone: &str) -> Candidate {
    Candidate { owner: Some(ACME), ..node(id, zone) }
}

/// Shared nodes 1 (a), 2 (b), 3 (c), 4 (a, with less room); acme's own 11 (a), 12 (b).
fn cluster(change: impl FnOnce(&mut Vec<Candidate>), gone: &[i32]) -> Cluster {
    let mut nodes = vec![
        node(1, "a"),
        node(2, "b"),
        node(3, "c"),
        Candidate { held_bytes: 50 * GB, ..node(4, "a") },
        owned(11, "a"),
        owned(12, "b"),
    ];
    change(&mut nodes);
    let gone: HashSet<NodeId> = gone.iter().map(|id| NodeId(*id)).collect();
    let acme = PlacementPolicy { mode: PlacementMode::Owned, ..PlacementPolicy::default() };
    Cluster::new(nodes, gone, &[(ACME, acme)])
}

fn pack(domain: Domain, replicas: &[(i32, ReplicaState)]) -> PackWork {
    PackWork {
        id: PackId(1),
        domain,
        replicas_wanted: 1,
        size: GB,
        replicas: replicas.iter().map(|(id, state)| (NodeId(*id), *state)).collect(),
    }
}

fn target_nodes(targets: &[CopyTarget]) -> Vec<(i32, bool)> {
    targets.iter().map(|target| (target.node.0, target.replaces_damaged)).collect()
}

use ReplicaState::{Damaged, Ok as Whole};

#[test]
fn a_pack_with_copies_in_two_zones_needs_nothing() {
    let cluster = cluster(|_| {}, &[]);
    let pack = pack(Domain::Shared, &[(1, Whole), (2, Whole)]);
    let assessment = assess(&pack, &cluster);
    assert_eq!(assessment.wanted, 2, "the default over three zones");
    assert_eq!(assessment.missing(), 0);
    assert!(targets(&pack, &assessment, &cluster).is_empty());
}

#[test]
fn two_copies_in_one_zone_count_once_and_the_new_copy_goes_to_another_zone() {
    let cluster = cluster(|_| {}, &[]);
    let pack = pack(Domain::Shared, &[(1, Whole), (4, Whole)]);
    let assessment = assess(&pack, &cluster);
    assert_eq!(assessment.missing(), 1);
    let chosen = targets(&pack, &assessment, &cluster);
    assert_eq!(chosen.len(), 1);
    assert_ne!(chosen[0].zone, "a", "{chosen:?}");
}

#[test]
fn a_gone_or_draining_node_does_not_count_but_a_silent_one_within_the_grace_does() {
    // Node 2 is silent (not live) but within the grace: its copy counts, it is no source.
    let silent = cluster(|nodes| nodes[1].live = false, &[]);
    let pack = pack(Domain::Shared, &[(1, Whole), (2, Whole)]);
    let assessment = assess(&pack, &silent);
    assert_eq!(assessment.missing(), 0);
    assert_eq!(assessment.sources.iter().map(|s| s.node.0).collect::<Vec<_>>(), [1]);
    // Gone: the copy is written off; the new one goes to zone c (b has no other node).
    let gone = cluster(|nodes| nodes[1].live = false, &[2]);
    let assessment = assess(&pack, &gone);
    assert_eq!(assessment.missing(), 1);
    assert_eq!(target_nodes(&targets(&pack, &assessment, &gone)), [(3, false)]);
    // Draining: not healthy, yet still read from (after the healthy copies).
    let draining = cluster(|nodes| nodes[1].state = NodeState::Draining, &[]);
    let assessment = assess(&pack, &draining);
    assert_eq!(assessment.missing(), 1);
    assert_eq!(assessment.sources.iter().map(|s| s.node.0).collect::<Vec<_>>(), [1, 2]);
    assert_eq!(target_nodes(&targets(&pack, &assessment, &draining)), [(3, false)]);
    assert_eq!(assessment.surplus(), [NodeId(2)], "dropped once the pack has its copies");
}

#[test]
fn the_packs_own_wanted_copies_are_a_floor() {
    let cluster = cluster(|_| {}, &[]);
    let pack = PackWork { replicas_wanted: 3, ..pack(Domain::Shared, &[(1, Whole), (2, Whole)]) };
    let assessment = assess(&pack, &cluster);
    assert_eq!((assessment.wanted, assessment.missing()), (3, 1));
    assert_eq!(target_nodes(&targets(&pack, &assessment, &cluster)), [(3, false)]);
}

#[test]
fn an_owned_pack_goes_only_to_its_tenants_nodes_and_leaves_a_shared_one() {
    let cluster = cluster(|_| {}, &[]);
    // A copy on shared node 1 is misplaced: it does not count, but it is a source.
    let pack = pack(Domain::Owned(ACME), &[(11, Whole), (1, Whole)]);
    let assessment = assess(&pack, &cluster);
    assert_eq!(assessment.misplaced, [NodeId(1)]);
    assert_eq!((assessment.wanted, assessment.missing()), (2, 1));
    assert_eq!(target_nodes(&targets(&pack, &assessment, &cluster)), [(12, false)]);
    // Every acme node holds a copy already and zone a is taken: no shared node is ever chosen.
    let full = self::pack(Domain::Owned(ACME), &[(11, Whole), (1, Whole), (12, Damaged)]);
    let gone = self::cluster(|_| {}, &[12]);
    let assessment = assess(&full, &gone);
    assert!(targets(&full, &assessment, &gone).is_empty());
}

#[test]
fn a_damaged_copy_is_replaced_elsewhere_or_in_place_when_no_other_node_fits() {
    let cluster = cluster(|_| {}, &[]);
    let shared = pack(Domain::Shared, &[(1, Whole), (2, Damaged)]);
    let assessment = assess(&shared, &cluster);
    assert_eq!(assessment.damaged, [NodeId(2)]);
    assert_eq!(target_nodes(&targets(&shared, &assessment, &cluster)), [(3, false)], "a fresh node first");
    let owned = pack(Domain::Owned(ACME), &[(11, Whole), (12, Damaged)]);
    let assessment = assess(&owned, &cluster);
    assert_eq!(target_nodes(&targets(&owned, &assessment, &cluster)), [(12, true)], "in place");
}

#[test]
fn a_target_needs_room_for_the_pack_and_its_headroom() {
    let cluster = cluster(|nodes| nodes[2].capacity_bytes = Some(GB), &[]);
    let pack = pack(Domain::Shared, &[(1, Whole), (4, Whole)]);
    let assessment = assess(&pack, &cluster);
    assert_eq!(target_nodes(&targets(&pack, &assessment, &cluster)), [(2, false)], "c is full");
}

#[test]
fn an_allowed_zone_change_makes_a_copy_misplaced() {
    let mut cluster = cluster(|nodes| nodes.push(owned(13, "c")), &[]);
    let policy = PlacementPolicy {
        mode: PlacementMode::Owned,
        allowed_zones: Some(vec!["a".into(), "c".into()]),
        ..PlacementPolicy::default()
    };
    cluster = Cluster::new(cluster.nodes, cluster.gone, &[(ACME, policy)]);
    let pack = pack(Domain::Owned(ACME), &[(11, Whole), (12, Whole)]);
    let assessment = assess(&pack, &cluster);
    assert_eq!(assessment.misplaced, [NodeId(12)]);
    assert_eq!(assessment.missing(), 1);
    assert_eq!(target_nodes(&targets(&pack, &assessment, &cluster)), [(13, false)]);
}

#[test]
fn a_copy_made_in_a_pass_takes_room_from_the_next_choice() {
    let mut cluster = cluster(|nodes| nodes[1].held_bytes = 90 * GB, &[]);
    let pack = pack(Domain::Shared, &[(1, Whole), (4, Whole)]);
    let assessment = assess(&pack, &cluster);
    assert_eq!(target_nodes(&targets(&pack, &assessment, &cluster)), [(3, false)], "c has the most room");
    cluster.add_held(NodeId(3), 95 * GB);
    assert_eq!(target_nodes(&targets(&pack, &assessment, &cluster)), [(2, false)], "now b has more");
}

#[test]
fn a_copy_beyond_the_wanted_ones_is_dropped_from_the_fullest_node_of_its_zone() {
    // Node 4 (zone a, less room) came back after its copy was made again on node 1 (zone a).
    let cluster = cluster(|_| {}, &[]);
    let extra = pack(Domain::Shared, &[(1, Whole), (2, Whole), (4, Whole)]);
    let assessment = assess(&extra, &cluster);
    assert_eq!(extra_copies(&extra, &assessment, &cluster), vec![NodeId(4)]);

    // Exactly the wanted copies, or one of them unhealthy: nothing to drop.
    let exact = pack(Domain::Shared, &[(1, Whole), (2, Whole)]);
    assert!(extra_copies(&exact, &assess(&exact, &cluster), &cluster).is_empty());
    let with_damaged = pack(Domain::Shared, &[(1, Whole), (4, Damaged), (2, Whole)]);
    assert!(extra_copies(&with_damaged, &assess(&with_damaged, &cluster), &cluster).is_empty());
}

#[test]
fn no_copy_is_dropped_while_a_kept_one_is_unreachable_or_one_is_missing() {
    // Node 2 (the only copy in zone b) is not live: the extra copy in zone a stays for now.
    let cluster_down = cluster(|nodes| nodes[1].live = false, &[]);
    let extra = pack(Domain::Shared, &[(1, Whole), (2, Whole), (4, Whole)]);
    assert!(extra_copies(&extra, &assess(&extra, &cluster_down), &cluster_down).is_empty());

    // Three copies, two of them in zone a, and node 2 gone for good: zone b lacks a copy, so
    // repair makes one first and trims after.
    let cluster_gone = cluster(|_| {}, &[2]);
    let assessment = assess(&extra, &cluster_gone);
    assert_eq!(assessment.missing(), 1);
    assert!(extra_copies(&extra, &assessment, &cluster_gone).is_empty());
}
