//! Dedicated instances: a Postgres cluster of its own for one tenant, under
//! `<data-dir>/instances/<name>`, sized by a plan, started again when Silo starts and stopped
//! with it ("Postgres is not serverless: one or more servers per client").

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use crate::context::Context;
use crate::instance::{InstanceSpec, LocalInstance, PgBinaries, RunAs, SupervisorHandle, supervise};
use crate::plans::{Plan, Plans};
use crate::servers::{self, NewServer, Server};
use crate::states::ServerKind;
use crate::{DbError, InstanceError};

/// The superuser of a dedicated instance.
const SUPERUSER: &str = "silo";

/// What ops send to start a dedicated instance.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DedicatedRequest {
    pub dedicated_for: String,
    pub plan: String,
    /// The server's name; `<tenant>-dedicated` when absent.
    #[serde(default)]
    pub name: Option<String>,
    /// This node's zone when absent.
    #[serde(default)]
    pub zone: Option<String>,
}

/// How dedicated instances are run.
#[derive(Debug, Clone)]
pub struct DedicatedOptions {
    /// Where their clusters live: `<data-dir>/instances`.
    pub root: PathBuf,
    pub bin_dir: Option<PathBuf>,
    /// The OS user they run as when Silo runs as root.
    pub os_user: String,
    /// The address they listen on, which is also what clients are told.
    pub listen: IpAddr,
}

/// Where this node's instances are: the node that owns them and the zone they default to.
#[derive(Debug, Clone)]
pub struct Placement {
    pub node_name: String,
    pub zone: String,
}

/// A running dedicated instance and its supervisor.
struct Running {
    instance: Arc<LocalInstance>,
    stop: CancellationToken,
    supervisor: SupervisorHandle,
}

/// The dedicated-instances service: how they are run, and the ones running on this node.
pub(crate) struct Dedicated {
    ctx: Arc<Context>,
    options: DedicatedOptions,
    plans: Plans,
    placement: Placement,
    running: Mutex<HashMap<String, Running>>,
}

impl Dedicated {
    pub fn new(ctx: Arc<Context>, options: DedicatedOptions, plans: Plans, placement: Placement) -> Self {
        Dedicated { ctx, options, plans, placement, running: Mutex::new(HashMap::new()) }
    }

    /// Creates, starts and records a dedicated instance for a tenant.
    ///
    /// # Errors
    /// [`DbError::InvalidServerName`], [`DbError::UnknownPlan`], [`DbError::TenantNotFound`],
    /// [`DbError::ServerExists`], and [`DbError::Instance`] when the cluster cannot be made.
    pub async fn create(&self, request: DedicatedRequest) -> Result<Server, DbError> {
        let name = request.name.clone().unwrap_or_else(|| format!("{}-dedicated", request.dedicated_for));
        if !storage_node::catalog::tenants::is_valid_name(&name) {
            return Err(DbError::InvalidServerName(name));
        }
        let plan = self.plans.require(&request.plan)?.clone();
        let tenant = servers::tenant_id(self.ctx.pool(), &request.dedicated_for).await?;
        if servers::get(self.ctx.pool(), &name).await.is_ok() {
            return Err(DbError::ServerExists(name));
        }
        let options = &self.options;
        let port = free_port(options.listen)?;
        let password = crate::provision::generate_password();
        let admin_url = crate::conn_url::postgres_url(
            SUPERUSER,
            &password,
            &options.listen.to_string(),
            port,
            "postgres",
        )
        .map_err(|err| DbError::InvalidServer(err.to_string()))?;
        let instance = self.instance(&name, port, &password, &plan)?;
        let pid = start_blocking(instance.clone()).await?;
        let new = NewServer {
            name: name.clone(),
            kind: ServerKind::Dedicated,
            admin_url,
            host: options.listen.to_string(),
            port,
            zone: request.zone.clone().unwrap_or_else(|| self.placement.zone.clone()),
            owner: Some(tenant),
            plan: Some(request.plan.clone()),
            node: Some(self.placement.node_name.clone()),
            capacity_bytes: servers::DEFAULT_CAPACITY_BYTES,
            ca_cert: None,
        };
        let server = match servers::insert(self.ctx.pool(), self.ctx.secret(), &new).await {
            Ok(server) => server,
            Err(err) => {
                let _ = tokio::task::spawn_blocking(move || instance.stop()).await;
                return Err(err);
            }
        };
        self.keep_running(&name, instance, pid);
        tracing::info!(server = %name, tenant = %request.dedicated_for, plan = %request.plan, port, "started a dedicated instance");
        Ok(server)
    }

    /// Starts every dedicated instance of this node that is not running.
    pub async fn start_all(&self) -> Result<(), DbError> {
        let client = self.ctx.pool().get().await?;
        let rows = client
            .query(
                "SELECT name, public_port, plan, admin_url_sealed FROM db_servers \
                 WHERE kind = $2 AND node_name = $1",
                &[&self.placement.node_name, &ServerKind::Dedicated],
            )
            .await?;
        drop(client);
        for row in rows {
            let (name, port, plan): (String, i32, String) = (row.get(0), row.get(1), row.get(2));
            let password = self.dedicated_password(row.get(3))?;
            let Some(plan) = self.plans.get(&plan).or_else(|| self.plans.get("small")).cloned() else {
                tracing::error!(server = %name, plan, "the plan of a dedicated instance is gone from the config");
                continue;
            };
            let instance = self.instance(&name, port as u16, &password, &plan)?;
            match start_blocking(instance.clone()).await {
                Ok(pid) => {
                    tracing::info!(server = %name, port, "started a dedicated instance");
                    self.keep_running(&name, instance, pid);
                }
                Err(err) => {
                    tracing::error!(server = %name, error = %err, "a dedicated instance does not start")
                }
            }
        }
        Ok(())
    }

    /// Stops every running instance (at shutdown).
    pub async fn stop_all(&self) {
        let running: Vec<(String, Running)> = match self.running.lock() {
            Ok(mut map) => map.drain().collect(),
            Err(_) => return,
        };
        for (name, running) in running {
            running.stop.cancel();
            let _ = running.supervisor.task.await;
            match tokio::task::spawn_blocking(move || running.instance.stop()).await {
                Ok(Ok(())) => tracing::info!(server = %name, "stopped a dedicated instance"),
                Ok(Err(err)) => {
                    tracing::warn!(server = %name, error = %err, "a dedicated instance did not stop cleanly")
                }
                Err(err) => {
                    tracing::warn!(server = %name, error = %err, "stopping a dedicated instance failed")
                }
            }
        }
    }

    /// Stops a dedicated instance and deletes its cluster.
    pub async fn destroy(&self, name: &str) {
        let running = self.running.lock().ok().and_then(|mut map| map.remove(name));
        if let Some(running) = running {
            running.stop.cancel();
            let _ = running.supervisor.task.await;
            let instance = running.instance;
            let root = instance.spec().root.clone();
            let _ = tokio::task::spawn_blocking(move || instance.stop()).await;
            if let Err(err) = std::fs::remove_dir_all(&root) {
                tracing::warn!(server = name, error = %err, "cannot remove a dedicated instance's directory");
            }
        }
    }

    fn dedicated_password(&self, sealed: &[u8]) -> Result<String, DbError> {
        let config = servers::open_admin_url(self.ctx.secret(), sealed)?;
        let password = config.get_password().ok_or(DbError::SealedSecret)?;
        String::from_utf8(password.to_vec()).map_err(|_| DbError::SealedSecret)
    }

    fn instance(
        &self,
        name: &str,
        port: u16,
        password: &str,
        plan: &Plan,
    ) -> Result<Arc<LocalInstance>, DbError> {
        let options = &self.options;
        std::fs::create_dir_all(&options.root).map_err(|err| {
            DbError::Instance(InstanceError::Io { path: options.root.clone(), source: err })
        })?;
        let run_as = RunAs::for_this_process(&options.os_user)?;
        if run_as.switched_user().is_some() {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(&options.root, std::fs::Permissions::from_mode(0o711));
            // The data directory above is 0700: the instance's OS user must traverse it too
            // (not list it), as for the embedded instance.
            if let Some(data_dir) = options.root.parent()
                && let Ok(meta) = std::fs::metadata(data_dir)
            {
                let mode = meta.permissions().mode() | 0o011;
                let _ = std::fs::set_permissions(data_dir, std::fs::Permissions::from_mode(mode));
            }
        }
        let spec = InstanceSpec {
            root: options.root.join(name),
            superuser: SUPERUSER.into(),
            superuser_password: password.to_string(),
            port,
            listen: Some(options.listen),
            settings: vec![
                ("shared_buffers".into(), plan.shared_buffers.clone()),
                ("max_connections".into(), plan.max_connections.to_string()),
                ("work_mem".into(), plan.work_mem.clone()),
            ],
        };
        Ok(Arc::new(LocalInstance::new(spec, PgBinaries::locate(options.bin_dir.as_deref())?, run_as)))
    }

    fn keep_running(&self, name: &str, instance: Arc<LocalInstance>, pid: u32) {
        let stop = self.ctx.stop().child_token();
        let supervisor = supervise(instance.clone(), pid, stop.clone());
        if let Ok(mut map) = self.running.lock() {
            map.insert(name.to_string(), Running { instance, stop, supervisor });
        }
    }
}

async fn start_blocking(instance: Arc<LocalInstance>) -> Result<u32, DbError> {
    let pid = tokio::task::spawn_blocking(move || {
        instance.ensure_initialized()?;
        instance.start()
    })
    .await
    .map_err(|err| InstanceError::Task(err.to_string()))??;
    Ok(pid)
}

fn free_port(ip: std::net::IpAddr) -> Result<u16, DbError> {
    let listener = std::net::TcpListener::bind((ip, 0)).map_err(|err| {
        DbError::Instance(InstanceError::Io { path: format!("{ip}:0").into(), source: err })
    })?;
    listener
        .local_addr()
        .map(|addr| addr.port())
        .map_err(|err| DbError::Instance(InstanceError::Io { path: format!("{ip}:0").into(), source: err }))
}
