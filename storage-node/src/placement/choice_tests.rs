//! Unit tests of the choice of nodes for a new pack and of the rules a policy is checked by.

use super::*;
use crate::placement::{PlacementMode, rules};

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

fn holding(held_bytes: u64, candidate: Candidate) -> Candidate {
    Candidate { held_bytes, ..candidate }
}

fn policy(mode: PlacementMode, replication_factor: Option<u8>) -> PlacementPolicy {
    PlacementPolicy { mode, replication_factor, ..PlacementPolicy::default() }
}

fn shared(replication_factor: Option<u8>) -> PlacementPolicy {
    policy(PlacementMode::Shared, replication_factor)
}

fn nodes_of(plan: &Plan) -> Vec<i32> {
    plan.targets.iter().map(|target| target.node.0).collect()
}

fn chosen(policy: &PlacementPolicy, this_node: i32, candidates: &[Candidate]) -> Plan {
    choose(policy, ACME, NodeId(this_node), GB, candidates).expect("a plan")
}

#[test]
fn the_embedded_single_node_takes_one_copy_itself_even_before_its_first_heartbeat() {
    let alone = Candidate { live: false, capacity_bytes: None, internal_url: None, ..node(1, "default") };
    let plan = chosen(&shared(None), 1, &[alone]);
    assert_eq!((plan.domain, plan.wanted, plan.degraded), (Domain::Shared, 1, false));
    assert_eq!(plan.targets, [Target { node: NodeId(1), zone: "default".into(), internal_url: None }]);
}

#[test]
fn one_node_per_distinct_zone_the_writer_first_then_the_most_free_space() {
    let candidates = [
        holding(50 * GB, node(1, "a")),
        holding(10 * GB, node(2, "a")),
        holding(30 * GB, node(3, "b")),
        holding(20 * GB, node(4, "c")),
        holding(5 * GB, node(5, "c")),
    ];
    let plan = chosen(&shared(Some(3)), 1, &candidates);
    assert_eq!(nodes_of(&plan), [1, 5, 3], "the writer, then c's emptiest node, then b's");
    let plan = chosen(&shared(Some(2)), 4, &candidates);
    assert_eq!(nodes_of(&plan), [4, 2], "the writer's zone is taken: the next is another zone's");
    let plan = chosen(&shared(Some(2)), 99, &candidates);
    assert_eq!(nodes_of(&plan), [5, 2], "a writer that is no candidate is skipped");
    let zones: Vec<&str> = plan.targets.iter().map(|t| t.zone.as_str()).collect();
    assert_eq!(zones, ["c", "a"]);
}

#[test]
fn the_default_factor_is_two_where_the_domain_spans_two_zones_and_one_below() {
    let plan = chosen(&shared(None), 1, &[node(1, "a"), node(2, "b"), node(3, "c")]);
    assert_eq!((plan.wanted, nodes_of(&plan).len()), (2, 2));
    let plan = chosen(&shared(None), 1, &[node(1, "a"), node(2, "a")]);
    assert_eq!((plan.wanted, nodes_of(&plan)), (1, vec![1]));
    // The zones of the registered nodes count, live or not: a dead zone is a shortage.
    let dead_b = Candidate { live: false, ..node(2, "b") };
    let refused = choose(&shared(None), ACME, NodeId(1), GB, &[node(1, "a"), dead_b]);
    assert!(matches!(&refused, Err(PlacementError::Shortage { wanted: 2, zones }) if zones == &["a"]));
    // Allowed zones narrow the default.
    let only_a = PlacementPolicy { allowed_zones: Some(vec!["a".into()]), ..shared(None) };
    let plan = chosen(&only_a, 2, &[node(1, "a"), node(2, "b")]);
    assert_eq!((plan.wanted, nodes_of(&plan)), (1, vec![1]), "b is not allowed, even for its writer");
}

#[test]
fn dead_stopped_draining_removed_and_full_nodes_take_no_new_pack() {
    let candidates = [
        node(1, "a"),
        Candidate { live: false, ..node(2, "b") },
        Candidate { state: NodeState::Draining, ..node(3, "c") },
        Candidate { state: NodeState::Removed, ..node(4, "d") },
        holding(99 * GB, node(5, "e")),
        holding(98 * GB, node(6, "f")),
        holding(97 * GB, node(7, "g")),
    ];
    let degraded = PlacementPolicy { on_shortage: OnShortage::Degraded, ..shared(Some(8)) };
    let plan = chosen(&degraded, 1, &candidates);
    assert_eq!(nodes_of(&plan), [1, 7], "98 GB + 1 GB leaves less than the 2 GB headroom of 100 GB");
    assert!(plan.degraded);
    let draining_writer = chosen(&degraded, 3, &candidates);
    assert!(!nodes_of(&draining_writer).contains(&3), "a draining writer is not a target");
}

#[test]
fn owned_tenants_use_only_their_own_nodes_and_shared_ones_never_an_owned_node() {
    let candidates = [node(1, "a"), node(2, "b"), owned(3, "a"), owned(4, "b"), owned(5, "c")];
    let plan = chosen(&policy(PlacementMode::Owned, Some(3)), 1, &candidates);
    assert_eq!(plan.domain, Domain::Owned(ACME));
    let mut nodes = nodes_of(&plan);
    nodes.sort();
    assert_eq!(nodes, [3, 4, 5], "the writing shared node relays but holds none of it");
    let plan = chosen(&shared(Some(2)), 3, &candidates);
    assert_eq!(plan.domain, Domain::Shared);
    let mut nodes = nodes_of(&plan);
    nodes.sort();
    assert_eq!(nodes, [1, 2], "the writing owned node holds no shared pack");
    let other = choose(&shared(Some(2)), TenantId(8), NodeId(3), GB, &candidates).expect("plan");
    assert_eq!(other.domain, Domain::Shared);
}

#[test]
fn a_shared_tenant_with_own_nodes_and_no_shared_node_writes_to_its_own() {
    let plan = chosen(&shared(None), 3, &[owned(3, "a")]);
    assert_eq!((plan.domain, nodes_of(&plan)), (Domain::Owned(ACME), vec![3]));
    let stranger = choose(&shared(None), TenantId(8), NodeId(3), GB, &[owned(3, "a")]);
    assert!(
        matches!(&stranger, Err(PlacementError::Shortage { wanted: 1, zones }) if zones.is_empty()),
        "another tenant's bytes never land on acme's node: {stranger:?}"
    );
    let removed_shared = Candidate { state: NodeState::Removed, ..node(1, "b") };
    let plan = chosen(&shared(None), 3, &[removed_shared, owned(3, "a")]);
    assert_eq!(plan.domain, Domain::Owned(ACME), "a removed shared node does not count");
}

#[test]
fn a_shortage_is_refused_or_taken_degraded_as_the_policy_says() {
    let candidates = [node(1, "a"), Candidate { live: false, ..node(2, "b") }, node(3, "a")];
    let refused = choose(&shared(Some(2)), ACME, NodeId(1), GB, &candidates);
    assert!(matches!(&refused, Err(PlacementError::Shortage { wanted: 2, zones }) if zones == &["a"]));
    let message = refused.expect_err("refused").to_string();
    assert!(message.contains("needs 2 zone(s)") && message.contains("1 (a)"), "{message}");
    let degraded = PlacementPolicy { on_shortage: OnShortage::Degraded, ..shared(Some(2)) };
    let plan = chosen(&degraded, 1, &candidates);
    assert_eq!((plan.wanted, nodes_of(&plan), plan.degraded), (2, vec![1], true));
    // Degraded still needs one node.
    let nothing = [Candidate { live: false, ..node(2, "b") }];
    let refused = choose(&degraded, ACME, NodeId(1), GB, &nothing);
    assert!(matches!(&refused, Err(PlacementError::Shortage { zones, .. }) if zones.is_empty()));
}

#[test]
fn room_is_capacity_less_held_bytes_less_headroom() {
    let unlimited = Candidate { capacity_bytes: None, held_bytes: u64::MAX, ..node(1, "a") };
    assert!(unlimited.has_room_for(u64::MAX) && unlimited.free_bytes() == u64::MAX);
    let full = holding(101 * GB, node(2, "a"));
    assert_eq!(full.free_bytes(), 0);
    assert!(!full.has_room_for(0));
    let edge = holding(97 * GB, node(3, "a"));
    assert!(edge.has_room_for(GB) && !edge.has_room_for(GB + 1), "97 + 1 + 2 GB of headroom fill 100 GB");
}

#[test]
fn the_checks_of_a_policy_against_the_registered_nodes() {
    // Owned nodes in a and b (and a dead one in a); shared nodes in a, b and c (one draining).
    let nodes = [
        owned(1, "a"),
        owned(2, "b"),
        Candidate { live: false, ..owned(3, "a") },
        node(4, "a"),
        node(5, "b"),
        Candidate { state: NodeState::Draining, ..node(6, "c") },
        Candidate { state: NodeState::Removed, ..node(7, "d") },
    ];
    let check = |policy: &PlacementPolicy| rules::check(policy, ACME, "acme", &nodes);
    assert!(check(&shared(Some(3))).is_ok());
    assert!(check(&policy(PlacementMode::Owned, Some(2))).is_ok());
    let err = check(&policy(PlacementMode::Owned, Some(3))).expect_err("3 owned zones");
    assert_eq!(
        err.to_string(),
        "replication factor 3 needs nodes in 3 zones; tenant acme's own nodes are in 2 (a, b); \
         lower the replication factor, or add nodes in other zones"
    );
    let err = check(&shared(Some(4))).expect_err("4 shared zones");
    assert!(matches!(&err, PlacementError::TooFewZones { zones, .. } if zones == &["a", "b", "c"]), "{err}");
    let in_d = PlacementPolicy { allowed_zones: Some(vec!["a".into(), "d".into()]), ..shared(None) };
    let err = check(&in_d).expect_err("d has only a removed node");
    assert!(matches!(&err, PlacementError::ZoneWithoutNode { zone, .. } if zone == "d"), "{err}");
    let only_a = PlacementPolicy { allowed_zones: Some(vec!["a".into()]), ..shared(Some(2)) };
    let err = check(&only_a).expect_err("one allowed zone");
    assert!(err.to_string().contains("allow more zones"), "{err}");
    let stranger = rules::check(&policy(PlacementMode::Owned, None), TenantId(8), "bob", &nodes);
    assert!(matches!(&stranger, Err(PlacementError::NoOwnedNodes { tenant }) if tenant == "bob"));
    assert_eq!(rules::zones(Domain::Shared, &shared(None), &nodes), ["a", "b", "c"]);
    assert_eq!(rules::replication_factor(&shared(None), 3), 2);
    assert_eq!(rules::replication_factor(&shared(None), 0), 1);
}
