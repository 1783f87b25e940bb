//! Why a placement policy could not be set, or a new pack could not be placed: each message
//! says what is wrong and what would fix it.

use crate::catalog::CatalogError;

/// Why a placement policy could not be read or set, or a pack placed.
#[derive(Debug, thiserror::Error)]
pub enum PlacementError {
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error("no tenant named {0:?}")]
    UnknownTenant(String),
    #[error(
        "invalid replication factor {0}: a replication factor is 1 to {max}, or null for the default",
        max = super::policy::MAX_REPLICATION_FACTOR
    )]
    InvalidReplicationFactor(u8),
    #[error(
        "invalid zone name {0:?}: a zone name is 1 to 63 letters, digits, '-', '_' or '.', \
         starting with a letter or digit"
    )]
    InvalidZone(String),
    #[error("the allowed zones are empty: name at least one zone, or null for every zone")]
    NoZones,
    #[error(
        "tenant {tenant} owns no storage node: start one with `silo serve --owner {tenant}` \
         before making its placement owned, or keep it shared"
    )]
    NoOwnedNodes { tenant: String },
    #[error(
        "zone {zone} has none of {nodes}: {nodes} are in {}; allow only those zones, or add a \
         node in zone {zone}",
        counted(zones)
    )]
    ZoneWithoutNode { zone: String, nodes: String, zones: Vec<String> },
    #[error(
        "replication factor {wanted} needs nodes in {wanted} {}; {nodes} are in {}; {}",
        if *wanted == 1 { "zone" } else { "zones" }, counted(zones), fixes(*wanted, *restricted)
    )]
    TooFewZones { wanted: u8, nodes: String, zones: Vec<String>, restricted: bool },
    #[error(
        "a new pack needs {wanted} zone(s) with a live node that has room; now only {} can take \
         it; retry later",
        counted(zones)
    )]
    Shortage { wanted: u8, zones: Vec<String> },
}

/// `2 (a, b)`, or `none`.
fn counted(zones: &[String]) -> String {
    match zones.len() {
        0 => "none".to_string(),
        n => format!("{n} ({})", zones.join(", ")),
    }
}

/// What would meet a replication factor of `wanted` (zones restricted or not).
fn fixes(wanted: u8, restricted: bool) -> &'static str {
    match (wanted, restricted) {
        (1, _) => "start a node first",
        (_, false) => "lower the replication factor, or add nodes in other zones",
        (_, true) => "lower the replication factor, allow more zones, or add nodes in other zones",
    }
}

impl From<tokio_postgres::Error> for PlacementError {
    fn from(err: tokio_postgres::Error) -> Self {
        PlacementError::Catalog(err.into())
    }
}

impl From<deadpool_postgres::PoolError> for PlacementError {
    fn from(err: deadpool_postgres::PoolError) -> Self {
        PlacementError::Catalog(err.into())
    }
}

/// How an error message names the nodes of a domain: `the shared nodes`, `tenant acme's own
/// nodes`.
pub(crate) fn nodes_of(owned_by: Option<&str>) -> String {
    match owned_by {
        Some(tenant) => format!("tenant {tenant}'s own nodes"),
        None => "the shared nodes".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_say_what_is_wrong_and_what_would_fix_it() {
        let err = PlacementError::TooFewZones {
            wanted: 3,
            nodes: nodes_of(Some("acme")),
            zones: vec!["a".into(), "b".into()],
            restricted: false,
        };
        assert_eq!(
            err.to_string(),
            "replication factor 3 needs nodes in 3 zones; tenant acme's own nodes are in 2 (a, b); \
             lower the replication factor, or add nodes in other zones"
        );
        let err = PlacementError::TooFewZones {
            wanted: 1,
            nodes: nodes_of(None),
            zones: vec![],
            restricted: false,
        };
        assert_eq!(
            err.to_string(),
            "replication factor 1 needs nodes in 1 zone; the shared nodes are in none; start a node first"
        );
        let err = PlacementError::ZoneWithoutNode {
            zone: "c".into(),
            nodes: nodes_of(None),
            zones: vec!["a".into()],
        };
        assert_eq!(
            err.to_string(),
            "zone c has none of the shared nodes: the shared nodes are in 1 (a); allow only those \
             zones, or add a node in zone c"
        );
    }
}
