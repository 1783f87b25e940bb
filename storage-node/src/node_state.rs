//! A storage node as every layer names it: its id in the catalog (`storage_nodes.id`) and its
//! state in the registry. Pack copies, placement, the internal API and the registry
//! (`model::node`) all use these, so they live below all of them.

/// A node is live while its last heartbeat is this recent and it has not stopped (three missed
/// heartbeats of 5 s). The node list, placement and remote reads all use this one window.
pub const LIVE_WITHIN: std::time::Duration = std::time::Duration::from_secs(15);

/// A storage node's id in the catalog.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct NodeId(pub i32);

crate::text_enum!(
    /// Where a storage node is in its life.
    NodeState {
        /// Takes new packs.
        Active => "active",
        /// Its packs are moving to other nodes; it takes no new ones.
        Draining => "draining",
        /// Holds nothing; the row stays for the names that old rows point at.
        Removed => "removed",
    }
);
