//! Why a repair pass or one repair item failed.

use crate::catalog::CatalogError;
use crate::node_api::ClientError;
use crate::placement::PlacementError;
use crate::store::NodeId;

/// Why a repair pass, or the repair of one pack, failed.
#[derive(Debug, thiserror::Error)]
pub enum RepairError {
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error(transparent)]
    Placement(#[from] PlacementError),
    #[error("node #{node}: {source}", node = .node.0)]
    Peer {
        node: NodeId,
        #[source]
        source: ClientError,
    },
}

impl RepairError {
    pub(crate) fn peer(node: NodeId) -> impl FnOnce(ClientError) -> RepairError {
        move |source| RepairError::Peer { node, source }
    }
}

impl From<tokio_postgres::Error> for RepairError {
    fn from(err: tokio_postgres::Error) -> Self {
        RepairError::Catalog(err.into())
    }
}

impl From<deadpool_postgres::PoolError> for RepairError {
    fn from(err: deadpool_postgres::PoolError) -> Self {
        RepairError::Catalog(err.into())
    }
}
