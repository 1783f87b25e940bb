//! Prometheus metrics: HTTP traffic, readiness, the catalog pool, the embedded Postgres,
//! repair (its backlog, and the packs and bytes it copied), the access-key cache, the batches of
//! small PUTs, the read cache and the memory budget of uploads.
//!
//! Request metrics are labelled by the matched route template, never by the raw path, so that
//! object keys and tenant names cannot blow up the label space.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use db_manager::instance::InstanceHealth;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use storage_node::catalog::key_cache::KeyCacheStats;
use storage_node::model::SmallPutStats;
use storage_node::read_cache::ReadCacheStats;
use storage_node::repair::RepairStats;
use storage_node::store::{MemoryStats, PackWriterStats};

use super::{ApiError, AppState, CatalogServer};

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: String,
    route: String,
    status: u16,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    method: String,
    route: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DatabaseLabels {
    tenant: String,
    database: String,
    server: String,
}

/// The public listener's connections: how many are open, how many were shed over the cap.
#[derive(Debug, Clone, Default)]
pub struct ConnectionMetrics {
    pub open: Gauge,
    pub shed: Counter,
}

/// The registry and the metrics in it.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    durations: Family<RouteLabels, Histogram>,
    ready: Gauge,
    postgres_up: Gauge,
    postgres_restarts: Gauge,
    pool_size: Gauge,
    pool_available: Gauge,
    uptime_seconds: Gauge,
    database_size: Family<DatabaseLabels, Gauge>,
    database_connections: Family<DatabaseLabels, Gauge>,
    database_quota: Family<DatabaseLabels, Gauge>,
    database_read_only: Family<DatabaseLabels, Gauge>,
    connections: ConnectionMetrics,
    repair: RepairMetrics,
    key_cache: KeyCacheMetrics,
    small_puts: SmallPutMetrics,
    read_cache: ReadCacheMetrics,
    memory: MemoryMetrics,
    pack_writers: PackWriterMetrics,
    started: Instant,
}

/// Moves each counter up to the value its source counts (a source's counters only grow; the
/// caller holds its group's lock, so two scrapes at once add each step once).
fn advance(counters: &[(&Counter, u64)]) {
    for (counter, value) in counters {
        counter.inc_by(value.saturating_sub(counter.get()));
    }
}

/// The access-key cache as `/metrics` shows it: counters that follow the cache's own, and
/// whether it answers now.
#[derive(Debug, Default)]
struct KeyCacheMetrics {
    hits: Counter,
    misses: Counter,
    losses: Counter,
    trusted: Gauge,
    keys: Gauge,
    sync: std::sync::Mutex<()>,
}

impl KeyCacheMetrics {
    fn register(&self, registry: &mut Registry) {
        let counters = [
            ("s3_key_cache_hits", "Access-key lookups answered from this node's cache", &self.hits),
            ("s3_key_cache_misses", "Access-key lookups that read the catalog", &self.misses),
            (
                "s3_key_cache_losses",
                "Times the key cache's LISTEN connection was lost (each cleared it)",
                &self.losses,
            ),
        ];
        for (name, help, counter) in counters {
            registry.register(name, help, counter.clone());
        }
        registry.register(
            "s3_key_cache_trusted",
            "1 while the key cache answers (its LISTEN connection is up to date)",
            self.trusted.clone(),
        );
        registry.register("s3_key_cache_keys", "Access keys this node's cache holds", self.keys.clone());
    }

    fn follow(&self, stats: KeyCacheStats) {
        let _turn = self.sync.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        self.trusted.set(i64::from(stats.trusted));
        self.keys.set(stats.keys as i64);
        advance(&[(&self.hits, stats.hits), (&self.misses, stats.misses), (&self.losses, stats.losses)]);
    }
}

/// The read cache of object lookups (`storage_node::read_cache`): counters that follow the
/// cache's own, whether it holds a lease, and what it holds.
#[derive(Debug, Default)]
struct ReadCacheMetrics {
    hits: Counter,
    misses: Counter,
    invalidations: Counter,
    fences: Counter,
    emptied: Counter,
    leased: Gauge,
    entries: Gauge,
    bytes: Gauge,
    sync: std::sync::Mutex<()>,
}

impl ReadCacheMetrics {
    fn register(&self, registry: &mut Registry) {
        let counters = [
            ("read_cache_hits", "GET and HEAD lookups answered from this node's read cache", &self.hits),
            ("read_cache_misses", "GET and HEAD lookups that read the catalog", &self.misses),
            (
                "read_cache_invalidations",
                "Invalidations applied to this node's read cache (its own writes' and its peers')",
                &self.invalidations,
            ),
            (
                "read_cache_fences",
                "Peers this node's writes fenced for not confirming an invalidation in time",
                &self.fences,
            ),
            (
                "read_cache_emptied",
                "Times the read cache was emptied (a lapsed lease, a fence)",
                &self.emptied,
            ),
        ];
        for (name, help, counter) in counters {
            registry.register(name, help, counter.clone());
        }
        for (name, help, gauge) in [
            (
                "read_cache_leased",
                "1 while this node holds a read cache lease (it answers from it)",
                &self.leased,
            ),
            ("read_cache_entries", "Object lookups this node's read cache holds", &self.entries),
            ("read_cache_bytes", "About how many bytes this node's read cache holds", &self.bytes),
        ] {
            registry.register(name, help, gauge.clone());
        }
    }

    fn follow(&self, stats: ReadCacheStats) {
        let _turn = self.sync.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        self.leased.set(i64::from(stats.leased));
        self.entries.set(stats.entries as i64);
        self.bytes.set(stats.bytes as i64);
        advance(&[
            (&self.hits, stats.hits),
            (&self.misses, stats.misses),
            (&self.invalidations, stats.invalidations),
            (&self.fences, stats.fences),
            (&self.emptied, stats.emptied),
        ]);
    }
}

/// The memory budget of in-flight uploads (`--memory-budget-mb`), as the store counts it.
#[derive(Debug, Default)]
struct MemoryMetrics {
    budget: Gauge,
    in_use: Gauge,
    waiters: Gauge,
    waited: Counter,
    timeouts: Counter,
    sync: std::sync::Mutex<()>,
}

impl MemoryMetrics {
    fn register(&self, registry: &mut Registry) {
        for (name, help, gauge) in [
            ("memory_budget_bytes", "The memory budget of in-flight uploads", &self.budget),
            ("memory_in_use_bytes", "Bytes of the memory budget that uploads hold now", &self.in_use),
            ("memory_waiters", "Uploads waiting for memory now", &self.waiters),
        ] {
            registry.register(name, help, gauge.clone());
        }
        registry.register(
            "memory_waits",
            "Uploads that waited for memory before reading their body (backpressure)",
            self.waited.clone(),
        );
        registry.register(
            "memory_wait_timeouts",
            "Uploads answered 503 SlowDown after waiting for memory past --memory-wait-secs",
            self.timeouts.clone(),
        );
    }

    fn follow(&self, stats: MemoryStats) {
        let _turn = self.sync.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        self.budget.set(stats.budget_bytes as i64);
        self.in_use.set(stats.in_use_bytes as i64);
        self.waiters.set(stats.waiters as i64);
        advance(&[(&self.waited, stats.waited), (&self.timeouts, stats.timeouts)]);
    }
}

/// The shared pack writers of uploads: how many packs take records, and how many uploads
/// synced their packs or found their records made durable by another upload's sync.
#[derive(Debug, Default)]
struct PackWriterMetrics {
    open: Gauge,
    syncs: Counter,
    syncs_shared: Counter,
    sync: std::sync::Mutex<()>,
}

impl PackWriterMetrics {
    fn register(&self, registry: &mut Registry) {
        registry.register("open_packs", "Packs that take uploads' records now", self.open.clone());
        registry.register("pack_syncs", "Uploads that fsynced the packs they wrote into", self.syncs.clone());
        registry.register(
            "pack_syncs_shared",
            "Uploads whose records another upload's fsync had already made durable (group commit)",
            self.syncs_shared.clone(),
        );
    }

    fn follow(&self, stats: PackWriterStats) {
        let _turn = self.sync.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        self.open.set(stats.open_packs as i64);
        advance(&[(&self.syncs, stats.syncs), (&self.syncs_shared, stats.syncs_shared)]);
    }
}

/// Small PUTs committed many to a statement (`storage_node::model::SmallPuts`): counters that
/// follow its own.
#[derive(Debug, Default)]
struct SmallPutMetrics {
    batches: Counter,
    bound: Counter,
    failed: Counter,
    sync: std::sync::Mutex<()>,
}

impl SmallPutMetrics {
    fn register(&self, registry: &mut Registry) {
        for (name, help, counter) in [
            ("small_put_batches", "Statements that committed queued small PUTs together", &self.batches),
            ("small_put_batched", "Small PUTs bound by those statements", &self.bound),
            (
                "small_put_batch_failures",
                "Batch statements that failed (a lock waited for too long, say); their PUTs bound alone",
                &self.failed,
            ),
        ] {
            registry.register(name, help, counter.clone());
        }
    }

    fn follow(&self, stats: SmallPutStats) {
        let _turn = self.sync.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        advance(&[(&self.batches, stats.batches), (&self.bound, stats.bound), (&self.failed, stats.failed)]);
    }
}

/// Repair as `/metrics` shows it: the backlog at the latest pass, and counters that follow the
/// repairer's own (`RepairStats`); the lock makes two scrapes at once add each copy once.
#[derive(Debug, Default)]
struct RepairMetrics {
    backlog: Gauge,
    packs: Counter,
    bytes: Counter,
    failures: Counter,
    sync: std::sync::Mutex<()>,
}

impl RepairMetrics {
    fn register(&self, registry: &mut Registry) {
        registry.register(
            "repair_backlog_packs",
            "Packs below their wanted copies at this node's latest repair pass (0 where it does not repair)",
            self.backlog.clone(),
        );
        registry.register("repair_packs", "Copies of packs this node's repairs made", self.packs.clone());
        registry.register("repair_bytes", "Bytes this node's repairs copied", self.bytes.clone());
        registry.register(
            "repair_failures",
            "Repair items that failed (each is retried)",
            self.failures.clone(),
        );
    }

    fn follow(&self, stats: &RepairStats) {
        let _turn = self.sync.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        self.backlog.set(stats.backlog_packs());
        advance(&[
            (&self.packs, stats.packs_repaired()),
            (&self.bytes, stats.bytes_repaired()),
            (&self.failures, stats.failures()),
        ]);
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("silo");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register("http_requests", "HTTP requests answered", requests.clone());
        let durations = Family::<RouteLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.000_5, 2.0, 16))
        });
        registry.register("http_request_duration_seconds", "Time to the response head", durations.clone());
        let mut family = |name: &str, help: &str| {
            let family = Family::<DatabaseLabels, Gauge>::default();
            registry.register(name, help, family.clone());
            family
        };
        let database_size = family("database_size_bytes", "A client database's size at the latest sample");
        let database_connections =
            family("database_connections", "A client database's sessions at the latest sample");
        let database_quota = family("database_quota_bytes", "A client database's storage quota");
        let database_read_only =
            family("database_read_only", "1 while a client database is read-only over its quota");
        let repair = RepairMetrics::default();
        repair.register(&mut registry);
        let key_cache = KeyCacheMetrics::default();
        key_cache.register(&mut registry);
        let small_puts = SmallPutMetrics::default();
        small_puts.register(&mut registry);
        let read_cache = ReadCacheMetrics::default();
        read_cache.register(&mut registry);
        let memory = MemoryMetrics::default();
        memory.register(&mut registry);
        let pack_writers = PackWriterMetrics::default();
        pack_writers.register(&mut registry);
        let connections = ConnectionMetrics::default();
        registry.register(
            "http_connections",
            "Open connections on the public listener",
            connections.open.clone(),
        );
        registry.register(
            "http_connections_shed",
            "Connections answered 503 and closed over --max-connections",
            connections.shed.clone(),
        );
        let mut gauge = |name: &str, help: &str| {
            let gauge = Gauge::<i64, AtomicI64>::default();
            registry.register(name, help, gauge.clone());
            gauge
        };
        Metrics {
            database_size,
            database_connections,
            database_quota,
            database_read_only,
            ready: gauge("ready", "1 when the last readiness probe passed"),
            postgres_up: gauge(
                "embedded_postgres_up",
                "1 while the embedded Postgres runs (absent when external)",
            ),
            postgres_restarts: gauge(
                "embedded_postgres_restarts",
                "Restarts of the embedded Postgres after it died",
            ),
            pool_size: gauge("catalog_pool_connections", "Open catalog connections"),
            pool_available: gauge("catalog_pool_idle_connections", "Idle catalog connections"),
            uptime_seconds: gauge("uptime_seconds", "Seconds since the server started"),
            connections,
            repair,
            key_cache,
            small_puts,
            read_cache,
            memory,
            pack_writers,
            registry,
            requests,
            durations,
            started: Instant::now(),
        }
    }

    /// The handles the public listener counts its connections with.
    pub fn connections(&self) -> ConnectionMetrics {
        self.connections.clone()
    }

    pub fn set_ready(&self, ready: bool) {
        self.ready.set(i64::from(ready));
    }
}

/// Counts and times every request.
pub async fn track(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().to_string();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |path| path.as_str().to_string());
    let response = next.run(request).await;
    let metrics = &state.metrics;
    let status = response.status().as_u16();
    metrics
        .requests
        .get_or_create(&RequestLabels { method: method.clone(), route: route.clone(), status })
        .inc();
    metrics.durations.get_or_create(&RouteLabels { method, route }).observe(started.elapsed().as_secs_f64());
    response
}

/// `GET /metrics` on the public port: not here. Metrics name every tenant, database and server,
/// so they are served only on the metrics listener (`metrics_listen`).
pub async fn elsewhere() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        "metrics are served on the metrics listener (metrics_listen), not on this port",
    )
}

/// `GET /metrics` in the Prometheus text format (on the metrics listener only).
pub async fn render(State(state): State<Arc<AppState>>) -> Response {
    let metrics = &state.metrics;
    let pool = state.catalog.status();
    metrics.pool_size.set(pool.size as i64);
    metrics.pool_available.set(pool.available as i64);
    metrics.uptime_seconds.set(metrics.started.elapsed().as_secs() as i64);
    if let CatalogServer::Embedded { health, restarts } = &state.catalog_server {
        metrics.postgres_up.set(i64::from(matches!(*health.borrow(), InstanceHealth::Up { .. })));
        metrics.postgres_restarts.set(restarts.load(Ordering::Relaxed) as i64);
    }
    for family in [
        &metrics.database_size,
        &metrics.database_connections,
        &metrics.database_quota,
        &metrics.database_read_only,
    ] {
        family.clear();
    }
    for sample in state.databases.samples() {
        let labels =
            DatabaseLabels { tenant: sample.tenant, database: sample.database, server: sample.server };
        metrics.database_size.get_or_create(&labels).set(sample.size_bytes);
        metrics.database_connections.get_or_create(&labels).set(i64::from(sample.connections));
        metrics.database_quota.get_or_create(&labels).set(sample.quota_bytes);
        metrics.database_read_only.get_or_create(&labels).set(i64::from(sample.read_only));
    }
    metrics.repair.follow(&state.repair);
    metrics.key_cache.follow(state.s3.keys().stats());
    metrics.small_puts.follow(state.s3.small_put_stats());
    metrics.read_cache.follow(state.store.read_cache().stats());
    metrics.memory.follow(state.store.memory_stats());
    metrics.pack_writers.follow(state.store.pack_writer_stats());
    let mut body = String::new();
    if let Err(err) = encode(&mut body, &metrics.registry) {
        return ApiError::internal(err).into_response();
    }
    let content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8";
    (StatusCode::OK, [(header::CONTENT_TYPE, content_type)], body).into_response()
}
