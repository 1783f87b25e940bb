//! [`Fleet`]: the servers client databases are placed on (the embedded one, registered ones and
//! this node's dedicated instances). It registers and removes them, runs the [`Dedicated`]
//! instances, and asks [`Spares`] to keep spare databases on each. Below the databases, backups
//! and tenant deletion, which use it; it uses none of them.

use std::sync::Arc;

use crate::DbError;
use crate::context::Context;
use crate::dedicated::{Dedicated, DedicatedRequest};
use crate::servers::{self, Server};
use crate::spares::Spares;
use crate::states::ServerKind;

/// The servers service (see the module doc).
pub struct Fleet {
    ctx: Arc<Context>,
    dedicated: Dedicated,
    spares: Arc<Spares>,
}

impl std::fmt::Debug for Fleet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fleet").finish_non_exhaustive()
    }
}

impl Fleet {
    pub(crate) fn new(ctx: Arc<Context>, dedicated: Dedicated, spares: Arc<Spares>) -> Self {
        Fleet { ctx, dedicated, spares }
    }

    /// Starts this node's dedicated instances.
    pub(crate) async fn start(&self) -> Result<(), DbError> {
        self.dedicated.start_all().await
    }

    /// Stops the dedicated instances.
    pub(crate) async fn shutdown(&self) {
        self.dedicated.stop_all().await;
    }

    pub async fn list(&self) -> Result<Vec<Server>, DbError> {
        servers::list(self.ctx.pool()).await
    }

    pub async fn register(&self, registration: servers::Registration) -> Result<Server, DbError> {
        let server = servers::register(self.ctx.pool(), self.ctx.secret(), registration).await?;
        self.spares.replenish_soon();
        Ok(server)
    }

    /// Records the embedded instance as the server `name`.
    pub async fn register_embedded(&self, server: &servers::NewServer) -> Result<(), DbError> {
        servers::upsert_embedded(self.ctx.pool(), self.ctx.secret(), server).await
    }

    /// Creates, starts and records a dedicated instance for a tenant, then refills spares.
    ///
    /// # Errors
    /// [`DbError::InvalidServerName`], [`DbError::UnknownPlan`], [`DbError::TenantNotFound`],
    /// [`DbError::ServerExists`], and [`DbError::Instance`] when the cluster cannot be made.
    pub async fn create_dedicated(&self, request: DedicatedRequest) -> Result<Server, DbError> {
        let server = self.dedicated.create(request).await?;
        self.spares.replenish_soon();
        Ok(server)
    }

    /// Forgets a server that holds no database; a dedicated instance is stopped and its
    /// cluster deleted.
    pub async fn remove(&self, name: &str) -> Result<Server, DbError> {
        let server = servers::get(self.ctx.pool(), name).await?;
        if server.databases > 0 {
            return Err(DbError::ServerInUse { name: name.to_string(), databases: server.databases });
        }
        if let Err(err) = self.spares.drop_all(&server).await {
            tracing::warn!(server = name, error = %err, "cannot drop the server's spare databases");
        }
        servers::forget(self.ctx.pool(), &server).await?;
        self.ctx.forget_admin_pool(server.id);
        if server.kind == ServerKind::Dedicated {
            self.dedicated.destroy(&server.name).await;
        }
        Ok(server)
    }
}
