//! `silo serve`: start-up, the serving loop and an orderly shutdown.
//!
//! Start-up claims the data directory, binds the listener (so that a taken port fails fast,
//! before Postgres is touched), brings up the catalog Postgres (embedded or external),
//! migrates the catalog and loads the admin token. Shutdown, on SIGTERM or SIGINT, turns
//! `/readyz` to 503, lets in-flight requests finish within the grace period, then stops the
//! embedded Postgres. If the embedded Postgres dies for good, the same shutdown runs and the
//! process exits non-zero. With `--internal-listen`, the internal node API
//! (`storage_node::node_api`) is served on its own listener and drains with the public one,
//! over HTTPS with `--internal-tls-cert`/`--internal-tls-key`; with `--internal-tls-ca`, the
//! chunk store reaches `https://` peers trusting that CA alone.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, anyhow};
use db_manager::embedded::{self, EmbeddedOptions};
use db_manager::instance::{LocalInstance, SupervisorHandle, supervise};
use db_manager::servers::NewServer;
use db_manager::{DbManager, DedicatedOptions, ManagerConfig};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use rand::distr::{Alphanumeric, SampleString};
use storage_node::DataDir;
use storage_node::catalog::key_cache::KeyCache;
use storage_node::catalog::{self, CatalogPool};
use storage_node::data_dir::ADMIN_TOKEN_SECRET;
use storage_node::node_api::{NodeApi, PeerTls, ThisNode};
use storage_node::repair::Repairer;
use storage_node::store::{ChunkStore, GcReport};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::config::ServeConfig;
use crate::http::{self, AppState, CatalogServer, Metrics, ServerInfo};
use crate::secret::Secret;

const CATALOG_POOL_SIZE: usize = 32;

/// Runs the server until a shutdown signal, or until the embedded Postgres is lost for good.
///
/// # Errors
/// Any start-up failure, with a message that says what to fix; or the loss of Postgres.
pub fn run(config: ServeConfig) -> anyhow::Result<()> {
    crate::logging::init(config.log_format);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("silo")
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(serve(config))
}

/// The embedded Postgres and its supervisor, while they run.
struct Embedded {
    instance: Arc<LocalInstance>,
    supervisor: SupervisorHandle,
}

async fn serve(config: ServeConfig) -> anyhow::Result<()> {
    tracing::info!(version = env!("CARGO_PKG_VERSION"), ?config, "starting Silo");
    raise_open_files_limit(config.connection_cap());
    let internal_tls = internal_tls(&config)?;
    let data_dir = Arc::new(DataDir::open(&config.data_dir)?);
    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let metrics_listener = match config.metrics_listen {
        Some(addr) => Some(
            TcpListener::bind(addr).await.with_context(|| format!("cannot listen for metrics on {addr}"))?,
        ),
        None => None,
    };
    let internal_listener = match config.internal_listen {
        Some(addr) => Some(
            TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen for the internal node API on {addr}"))?,
        ),
        None => None,
    };
    let stop = CancellationToken::new();
    let (pool, embedded) = match &config.postgres_url {
        Some(url) => (external_catalog(url.expose())?, None),
        None => {
            let (pool, embedded) = embedded_catalog(&config, &data_dir, &stop).await?;
            (pool, Some(embedded))
        }
    };
    let listeners =
        Listeners { public: listener, metrics: metrics_listener, internal: internal_listener, internal_tls };
    let outcome =
        serve_with_catalog(&config, data_dir, listeners, pool.clone(), embedded.as_ref(), &stop).await;
    stop.cancel();
    pool.close();
    if let Some(Embedded { instance, supervisor }) = embedded {
        let supervised = supervisor.task.await;
        tokio::task::spawn_blocking(move || instance.stop()).await??;
        if let Ok(Err(lost)) = supervised {
            return Err(lost.into());
        }
    }
    tracing::info!("Silo stopped");
    outcome
}

fn external_catalog(url: &str) -> anyhow::Result<CatalogPool> {
    // The parse error never echoes the URL, which may hold a password.
    let config: tokio_postgres::Config =
        url.parse().map_err(|_| anyhow!("--postgres-url is not a valid libpq URL"))?;
    tracing::info!(hosts = ?config.get_hosts(), dbname = ?config.get_dbname(), "using an external catalog Postgres");
    Ok(catalog::connect_pool(config, CATALOG_POOL_SIZE)?)
}

async fn embedded_catalog(
    config: &ServeConfig,
    data_dir: &DataDir,
    stop: &CancellationToken,
) -> anyhow::Result<(CatalogPool, Embedded)> {
    let options = EmbeddedOptions {
        bin_dir: config.postgres_bin_dir.clone(),
        os_user: config.postgres_os_user.clone(),
        listen: config.postgres_listen,
    };
    let (instance, pid) = embedded::start(data_dir, &options).await?;
    let supervisor = supervise(instance.clone(), pid, stop.child_token());
    let pool = catalog::connect_pool(instance.client_config(embedded::CATALOG_DATABASE), CATALOG_POOL_SIZE);
    match pool {
        Ok(pool) => Ok((pool, Embedded { instance, supervisor })),
        Err(err) => {
            stop.cancel();
            let _ = tokio::task::spawn_blocking(move || instance.stop()).await;
            Err(err.into())
        }
    }
}

/// The bound listeners: the public one, and the metrics and internal ones if configured.
struct Listeners {
    public: TcpListener,
    metrics: Option<TcpListener>,
    internal: Option<TcpListener>,
    internal_tls: InternalTls,
}

/// TLS on the internal node API: the listener's, and the cluster CA peers are trusted by.
struct InternalTls {
    acceptor: Option<TlsAcceptor>,
    peers: Option<PeerTls>,
}

/// Checks the internal TLS settings and loads their files, before anything else starts.
fn internal_tls(config: &ServeConfig) -> anyhow::Result<InternalTls> {
    let pair = config.internal_tls_pair().map_err(|err| anyhow!(err))?;
    let acceptor = match pair {
        Some((cert, key)) => Some(TlsAcceptor::from(
            storage_node::node_api::server_config(cert, key)
                .context("--internal-tls-cert/--internal-tls-key")?,
        )),
        None => None,
    };
    let peers = match &config.internal_tls_ca {
        Some(ca) => Some(PeerTls::trusting(ca).context("--internal-tls-ca")?),
        None => None,
    };
    Ok(InternalTls { acceptor, peers })
}

/// Connections on the metrics listener (a scraper or two).
const METRICS_MAX_CONNECTIONS: usize = 16;

async fn serve_with_catalog(
    config: &ServeConfig,
    data_dir: Arc<DataDir>,
    listeners: Listeners,
    pool: CatalogPool,
    embedded: Option<&Embedded>,
    stop: &CancellationToken,
) -> anyhow::Result<()> {
    let schema = db_manager::catalog::migrate_all(&pool).await?;
    let meta = catalog::meta::read(&pool).await?;
    let registered = crate::registration::register(config, &pool, &data_dir).await?;
    let store = ChunkStore::open(pool.clone(), &data_dir, &config.node(), config.store_config()).await?;
    if let Some(tls) = listeners.internal_tls.peers.clone() {
        store.set_peer_tls(tls);
    }
    let databases = DbManager::new(
        store.clone(),
        ManagerConfig {
            plans: config.plans.clone(),
            sample_interval: config.database_sample_interval(),
            node_name: config.node_name.clone(),
            zone: config.zone.clone(),
            dedicated: DedicatedOptions {
                root: data_dir.instances_dir(),
                bin_dir: config.postgres_bin_dir.clone(),
                os_user: config.postgres_os_user.clone(),
                listen: config.dedicated_listen,
            },
            final_backup_retention: config.final_backup_retention(),
            catalog: catalog_config(config, embedded)?,
            catalog_backups_dir: data_dir.catalog_backups_dir(),
            tls_dir: data_dir.tls_dir(),
            spares_per_server: config.spare_databases,
        },
        stop.clone(),
    );
    if let Some(Embedded { instance, .. }) = embedded {
        databases.fleet().register_embedded(&embedded_server(instance, config)?).await?;
    }
    databases.start().await?;
    tokio::spawn(store_upkeep_every(store.clone(), stop.clone()));
    if let Some(interval) = config.gc_interval() {
        let (store, databases, stop) = (store.clone(), databases.clone(), stop.clone());
        tokio::spawn(collect_garbage_every(store, databases, interval, config.multipart_expiry(), stop));
    }
    let repair = config.repair().map(|repair| {
        Repairer::new(pool.clone(), store.server_secret().clone(), registered.id, repair)
            .with_peer_tls(listeners.internal_tls.peers.clone())
    });
    let repair_stats = repair.as_ref().map(Repairer::stats).unwrap_or_default();
    if let Some(repairer) = repair {
        tokio::spawn(repairer.run(stop.clone()));
    }
    let admin_token = admin_token(&data_dir)?;
    let catalog_server = match embedded {
        Some(Embedded { supervisor, .. }) => CatalogServer::Embedded {
            health: supervisor.health.clone(),
            restarts: supervisor.restarts.clone(),
        },
        None => CatalogServer::External,
    };
    let census = storage_node::model::node::census(&pool).await?;
    let keys = KeyCache::listen(catalog_config(config, embedded)?, stop.child_token());
    let state = Arc::new(AppState {
        catalog: pool,
        store: store.clone(),
        databases: databases.clone(),
        data_dir,
        catalog_server,
        admin_token_digest: http::auth_digest(admin_token.expose()),
        metrics: Metrics::new(),
        draining: AtomicBool::new(false),
        s3: storage_node::s3::service(store.clone(), config.region(), keys),
        repair: repair_stats,
        repair_grace: config.repair_grace(),
        info: ServerInfo {
            version: env!("CARGO_PKG_VERSION"),
            catalog_id: meta.catalog_id,
            catalog_schema: schema,
            postgres_mode: if embedded.is_some() { "embedded" } else { "external" },
            postgres_version: meta.server_version,
            started_at: now_rfc3339(),
            node: http::NodeInfo {
                name: config.node_name.clone(),
                zone: config.zone.clone(),
                owner: config.owner.clone(),
                nodes_in_catalog: census.nodes,
                copies: census.default_copies,
            },
        },
    });
    let http_stop = CancellationToken::new();
    // The lease goes with the internal API, which stops taking invalidations at the same time.
    tokio::spawn(storage_node::read_cache::lease::keep_leased(
        store.read_cache().clone(),
        state.catalog.clone(),
        store.node(),
        http_stop.clone(),
    ));
    tokio::spawn(stop_on_signal_or_loss(
        http_stop.clone(),
        stop.clone(),
        embedded.map(|e| e.supervisor.health.clone()),
        Draining { state: state.clone(), delay: config.shutdown_delay() },
    ));
    let app = http::router(state.clone());
    let limits = http::listener::Limits {
        max_connections: config.connection_cap(),
        header_timeout: config.header_timeout(),
        idle_timeout: config.idle_timeout(),
    };
    if let Some(metrics) = listeners.metrics {
        let metrics_limits = http::listener::Limits { max_connections: METRICS_MAX_CONNECTIONS, ..limits };
        tracing::info!(address = %config.metrics_listen.map(|a| a.to_string()).unwrap_or_default(), "serving metrics");
        tokio::spawn(http::listener::serve(
            metrics,
            http::metrics_router(state.clone()),
            metrics_limits,
            // The scraper's own connections are not counted.
            http::ConnectionMetrics::default(),
            stop.clone(),
        ));
    }
    let mut internal = match listeners.internal {
        Some(listener) => {
            let limit = storage_node::node_api::pack_size_limit(config.store.pack_target_bytes);
            let api = NodeApi::new(store.packs_dir(), store.server_secret().clone(), limit)
                .protecting(ThisNode { catalog: store.catalog().clone(), node: store.node() })
                .invalidating(store.read_cache().clone());
            let tls = listeners.internal_tls.acceptor;
            tracing::info!(address = %config.internal_listen.map(|a| a.to_string()).unwrap_or_default(), tls = tls.is_some(), "serving the internal node API");
            // Peers' connections are not counted with the public ones.
            let counts = http::ConnectionMetrics::default();
            Some(tokio::spawn(http::listener::serve_tls(
                listener,
                api.router(),
                limits,
                counts,
                http_stop.clone(),
                tls,
            )))
        }
        None => None,
    };
    tracing::info!(address = %config.listen, max_connections = limits.max_connections, "listening");
    let graceful = http_stop.clone();
    let counts = state.metrics.connections();
    let mut server = tokio::spawn(http::listener::serve(listeners.public, app, limits, counts, graceful));
    tokio::select! {
        // A stop first: the server, stopped gracefully, may be done by the time this is polled,
        // and the shutdown below (the stop mark, sealing the packs, the instances) must still run.
        biased;
        () = http_stop.cancelled() => {}
        served = &mut server => return served.context("the HTTP server failed"),
    }
    state.draining.store(true, Ordering::Relaxed);
    let deadline = tokio::time::Instant::now() + config.shutdown_grace();
    for server in std::iter::once(&mut server).chain(internal.as_mut()) {
        match tokio::time::timeout_at(deadline, &mut *server).await {
            Ok(served) => served.context("the HTTP server failed")?,
            Err(_) => {
                tracing::warn!(grace = ?config.shutdown_grace(), "requests still running after the grace period; closing them");
                server.abort();
            }
        }
    }
    // Nothing is served any more: the node is stopped, whatever the rest of the shutdown takes.
    registered.stop().await;
    if let Err(err) = store.close().await {
        tracing::warn!(error = %err, "could not seal the open packs; the next start seals them");
    }
    databases.shutdown().await;
    Ok(())
}

/// How to reach the catalog database (for its backups).
fn catalog_config(
    config: &ServeConfig,
    embedded: Option<&Embedded>,
) -> anyhow::Result<tokio_postgres::Config> {
    match (&config.postgres_url, embedded) {
        (Some(url), _) => {
            url.expose().parse().map_err(|_| anyhow!("--postgres-url is not a valid libpq URL"))
        }
        (None, Some(Embedded { instance, .. })) => Ok(instance.client_config(embedded::CATALOG_DATABASE)),
        (None, None) => Err(anyhow!("no catalog configured")),
    }
}

/// The embedded instance as a database server: its superuser over the unix socket (or TCP when
/// `--postgres-listen` is set), and the same address for clients.
fn embedded_server(instance: &LocalInstance, config: &ServeConfig) -> anyhow::Result<NewServer> {
    let spec = instance.spec();
    let host = match config.postgres_listen {
        Some(addr) => addr.ip().to_string(),
        None => instance.socket_dir().display().to_string(),
    };
    Ok(NewServer {
        name: "local".into(),
        kind: db_manager::states::ServerKind::Embedded,
        admin_url: superuser_url(&spec.superuser, &spec.superuser_password, &host, spec.port)?,
        host,
        port: spec.port,
        zone: config.zone.clone(),
        owner: None,
        plan: None,
        node: Some(config.node_name.clone()),
        capacity_bytes: db_manager::servers::DEFAULT_CAPACITY_BYTES,
        ca_cert: None,
    })
}

/// What a URL's host keeps as it is: RFC 3986's unreserved characters.
const HOST_ENCODE: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

/// A libpq URL for `user` on `host` (an IP address, or a socket directory, which goes in the
/// host part percent-encoded as libpq and tokio-postgres read it) and `port`, database `postgres`.
fn superuser_url(user: &str, password: &str, host: &str, port: u16) -> anyhow::Result<String> {
    let mut url = url::Url::parse("postgresql://localhost/postgres").context("the URL template")?;
    let with_host = match host.parse::<IpAddr>() {
        Ok(ip) => url.set_ip_host(ip),
        Err(_) => url.set_host(Some(&utf8_percent_encode(host, HOST_ENCODE).to_string())).map_err(drop),
    };
    with_host
        .and_then(|()| url.set_port(Some(port)))
        .and_then(|()| url.set_username(user))
        .and_then(|()| url.set_password(Some(password)))
        .map_err(|()| anyhow!("cannot build the embedded Postgres URL for host {host}"))?;
    Ok(url.into())
}

/// How often the store's small upkeep runs: often enough that a quota check sums at most
/// about a second of a tenant's commits, and that repair (which works on sealed packs) sees a
/// degraded or broken pack within a second of its last upload.
const STORE_UPKEEP_EVERY: Duration = Duration::from_secs(1);

/// Every [`STORE_UPKEEP_EVERY`] until `stop`: folds the tenants' usage deltas into their rows
/// and seals the packs writers are done with.
async fn store_upkeep_every(store: ChunkStore, stop: CancellationToken) {
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(STORE_UPKEEP_EVERY) => {}
        }
        if let Err(err) = store.fold_usage().await {
            tracing::warn!(error = %err, "could not fold usage deltas");
        }
        if let Err(err) = store.seal_finished_packs().await {
            tracing::warn!(error = %err, "could not seal finished packs; retrying");
        }
    }
}

/// How often the orphan sweep (a scan of every object) runs at most.
const ORPHAN_SWEEP_EVERY: Duration = Duration::from_secs(3600);

/// Every `interval` until `stop`: aborts multipart uploads older than `expiry`, deletes orphan
/// objects (hourly at most), finishes interrupted tenant deletions, then runs GC.
async fn collect_garbage_every(
    store: ChunkStore,
    databases: DbManager,
    interval: Duration,
    expiry: Duration,
    stop: CancellationToken,
) {
    let mut last_sweep: Option<std::time::Instant> = None;
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(interval) => {}
        }
        if let Err(err) = storage_node::model::multipart::abort_stale(&store, expiry).await {
            tracing::warn!(error = %err, "could not abort stale multipart uploads");
        }
        if last_sweep.is_none_or(|at| at.elapsed() >= ORPHAN_SWEEP_EVERY) {
            last_sweep = Some(std::time::Instant::now());
            if let Err(err) = databases.sweep_orphan_objects().await {
                tracing::warn!(error = %err, "could not sweep orphan objects");
            }
        }
        if let Err(err) = databases.tenant_deletions().resume_tenant_deletions().await {
            tracing::warn!(error = %err, "could not resume tenant deletions");
        }
        match store.gc().await {
            Ok(report) if report != GcReport::default() => tracing::info!(?report, "GC pass"),
            Ok(_) => {}
            Err(err) => tracing::warn!(error = %err, "GC pass failed"),
        }
    }
}

/// How a signalled shutdown begins: `/readyz` turns 503 at once, and the listeners keep
/// serving for `delay` (while load balancers take the node out) before they close.
struct Draining {
    state: Arc<AppState>,
    delay: Duration,
}

/// Cancels `http_stop` on SIGTERM or SIGINT (after the drain delay; a second signal cuts it
/// short), or at once when the embedded Postgres is lost for good.
async fn stop_on_signal_or_loss(
    http_stop: CancellationToken,
    stop: CancellationToken,
    health: Option<tokio::sync::watch::Receiver<db_manager::instance::InstanceHealth>>,
    draining: Draining,
) {
    use db_manager::instance::InstanceHealth;
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt()))
    else {
        tracing::error!("cannot install signal handlers");
        return;
    };
    let lost = async {
        match health {
            Some(mut health) => {
                let _ = health.wait_for(|h| matches!(h, InstanceHealth::Failed { .. })).await;
            }
            None => std::future::pending::<()>().await,
        }
    };
    tokio::pin!(lost);
    let signalled = tokio::select! {
        _ = term.recv() => { tracing::info!("SIGTERM: shutting down"); true }
        _ = int.recv() => { tracing::info!("SIGINT: shutting down"); true }
        () = &mut lost => { tracing::error!("the embedded Postgres is lost: shutting down"); false }
        () = stop.cancelled() => false,
    };
    if signalled && !draining.delay.is_zero() {
        draining.state.draining.store(true, Ordering::Relaxed);
        tracing::info!(delay = ?draining.delay, "/readyz answers 503; still serving until the delay is over");
        tokio::select! {
            () = tokio::time::sleep(draining.delay) => {}
            _ = term.recv() => tracing::info!("SIGTERM again: stopping now"),
            _ = int.recv() => tracing::info!("SIGINT again: stopping now"),
            () = &mut lost => tracing::error!("the embedded Postgres is lost: stopping now"),
            () = stop.cancelled() => {}
        }
    }
    http_stop.cancel();
}

/// The admin token: `SILO_ADMIN_TOKEN` if set, else the one kept in the data directory,
/// generated and printed once on first start.
fn admin_token(data_dir: &DataDir) -> anyhow::Result<Secret> {
    if let Ok(token) = std::env::var("SILO_ADMIN_TOKEN") {
        let token = token.trim().to_string();
        if token.len() < 16 {
            return Err(anyhow!("SILO_ADMIN_TOKEN must be at least 16 characters long"));
        }
        tracing::info!("using the admin token from SILO_ADMIN_TOKEN");
        return Ok(Secret::from(token));
    }
    let generate = || format!("silo_{}", Alphanumeric.sample_string(&mut rand::rng(), 40));
    let (token, created) = data_dir.secret_or_create(ADMIN_TOKEN_SECRET, generate)?;
    let path = data_dir.secret_path(ADMIN_TOKEN_SECRET)?;
    if created {
        // Printed on stdout, never logged: this is the one time it is shown.
        println!("Silo admin token (shown once; kept in {}):\n{token}", path.display());
    } else {
        tracing::info!(path = %path.display(), "using the admin token kept in the data directory");
    }
    Ok(Secret::from(token))
}

/// Raises the soft limit on open files to the hard one: each connection is a descriptor, and the
/// usual soft limit (1024) is below `--max-connections` plus Silo's own files and sockets. Says so
/// when even the hard limit leaves too little room.
fn raise_open_files_limit(max_connections: usize) {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return;
    };
    if soft < hard && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_err() {
        tracing::warn!(soft, hard, "cannot raise the open files limit");
    }
    let limit = getrlimit(Resource::RLIMIT_NOFILE).map_or(soft, |(soft, _)| soft);
    // Room for the catalog pool, packs, Postgres sockets and the metrics listener.
    if (max_connections as u64).saturating_add(256) > limit {
        tracing::warn!(
            max_connections,
            open_files_limit = limit,
            "--max-connections is near the open files limit; raise `ulimit -n` or lower the cap"
        );
    }
}

fn now_rfc3339() -> String {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + now).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_postgres::config::Host;

    #[test]
    fn the_superuser_url_reads_back_as_the_socket_directory_and_password_it_was_built_from() {
        let url = superuser_url("silo admin", "p@ss/w:rd%", "/srv/silo data/postgres", 5433).unwrap();
        let config: tokio_postgres::Config = url.parse().unwrap();
        assert_eq!(config.get_hosts(), [Host::Unix("/srv/silo data/postgres".into())]);
        assert_eq!(config.get_ports(), [5433]);
        assert_eq!(config.get_user(), Some("silo admin"));
        assert_eq!(config.get_password(), Some(&b"p@ss/w:rd%"[..]));
        assert_eq!(config.get_dbname(), Some("postgres"));
    }

    #[test]
    fn the_superuser_url_takes_an_ip_address_as_its_host() {
        let url = superuser_url("postgres", "secret", "::1", 5432).unwrap();
        assert!(url.starts_with("postgresql://postgres:secret@[::1]:5432/"), "{url}");
        let config: tokio_postgres::Config = url.parse().unwrap();
        assert_eq!(config.get_hosts(), [Host::Tcp("::1".into())]);
    }
}
