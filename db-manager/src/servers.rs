//! The Postgres servers that hold client databases, and where a new database goes.
//!
//! A server is the embedded instance, one that ops registered (any Postgres reachable with a
//! role that has CREATEDB and CREATEROLE), or a dedicated instance Silo runs for one tenant.
//! Its admin URL holds a password, so the catalog keeps it sealed with the server secret; it
//! never appears in the API or the logs.

use serde::Serialize;
use storage_node::catalog::CatalogPool;
use storage_node::catalog::tenants::{self, TenantError};
use storage_node::{ServerSecret, TenantId};
use tokio_postgres::config::Host;

use crate::DbError;
use crate::states::ServerKind;
use crate::tls::Reach;

const SEALING_PURPOSE: &str = "db server admin url";
/// The capacity a server is assumed to have when none is given: the sum of the quotas of the
/// databases placed on it may not pass it.
pub const DEFAULT_CAPACITY_BYTES: u64 = 1 << 40;

/// A server as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct Server {
    #[serde(skip)]
    pub id: i64,
    pub name: String,
    pub kind: ServerKind,
    pub host: String,
    pub port: u16,
    pub zone: String,
    /// The tenant that owns it; `None` for the hosting company's servers.
    pub owner: Option<String>,
    pub plan: Option<String>,
    pub node: Option<String>,
    pub capacity_bytes: u64,
    pub databases: i64,
    /// The sum of the storage quotas of its databases.
    pub reserved_bytes: i64,
    #[serde(serialize_with = "crate::timestamp::serialize")]
    pub created_at: time::OffsetDateTime,
}

/// What ops send to register a server.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Registration {
    pub name: String,
    pub url: String,
    pub zone: String,
    /// A tenant name; absent for the hosting company.
    #[serde(default)]
    pub owner: Option<String>,
    #[serde(default)]
    pub capacity_bytes: Option<u64>,
    /// The CA (PEM) that verifies the server, with `sslmode=verify-full` in the URL.
    #[serde(default)]
    pub ca_cert: Option<String>,
}

/// How a server is reached and described, before it is recorded.
#[derive(Debug, Clone)]
pub struct NewServer {
    pub name: String,
    pub kind: ServerKind,
    pub admin_url: String,
    pub host: String,
    pub port: u16,
    pub zone: String,
    pub owner: Option<TenantId>,
    pub plan: Option<String>,
    pub node: Option<String>,
    pub capacity_bytes: u64,
    /// The CA that verifies the server over TLS (`sslmode=verify-full` in the admin URL).
    pub ca_cert: Option<String>,
}

fn select(filter: &str) -> String {
    format!(
        "SELECT s.id, s.name, s.kind, s.public_host, s.public_port, s.zone, t.name, s.plan, s.node_name, \
                s.capacity_bytes, count(d.id), coalesce(sum(d.storage_quota_bytes), 0)::int8, s.created_at \
         FROM db_servers s LEFT JOIN tenants t ON t.id = s.owner_tenant_id \
         LEFT JOIN tenant_databases d ON d.server_id = s.id \
         {filter} GROUP BY s.id, t.name ORDER BY s.name"
    )
}

fn from_row(row: &tokio_postgres::Row) -> Server {
    Server {
        id: row.get(0),
        name: row.get(1),
        kind: row.get(2),
        host: row.get(3),
        port: row.get::<_, i32>(4) as u16,
        zone: row.get(5),
        owner: row.get(6),
        plan: row.get(7),
        node: row.get(8),
        capacity_bytes: row.get::<_, i64>(9) as u64,
        databases: row.get(10),
        reserved_bytes: row.get(11),
        created_at: row.get(12),
    }
}

pub async fn list(pool: &CatalogPool) -> Result<Vec<Server>, DbError> {
    let client = pool.get().await?;
    Ok(client.query(&select(""), &[]).await?.iter().map(from_row).collect())
}

pub async fn get(pool: &CatalogPool, name: &str) -> Result<Server, DbError> {
    let client = pool.get().await?;
    let row = client.query_opt(&select("WHERE s.name = $1"), &[&name]).await?;
    row.as_ref().map(from_row).ok_or_else(|| DbError::ServerNotFound(name.to_string()))
}

pub(crate) async fn get_by_id(pool: &CatalogPool, id: i64) -> Result<Server, DbError> {
    let client = pool.get().await?;
    let row = client.query_opt(&select("WHERE s.id = $1"), &[&id]).await?;
    row.as_ref().map(from_row).ok_or_else(|| DbError::ServerNotFound(format!("#{id}")))
}

/// Registers a server that ops run: checks that the URL connects with a role that may create
/// databases and roles, then records it.
///
/// # Errors
/// [`DbError::InvalidServer`] for a bad URL or a role without the privileges,
/// [`DbError::ServerUnreachable`], [`DbError::ServerExists`], [`DbError::TenantNotFound`].
pub async fn register(
    pool: &CatalogPool,
    secret: &ServerSecret,
    registration: Registration,
) -> Result<Server, DbError> {
    if !tenants::is_valid_name(&registration.name) {
        return Err(DbError::InvalidServerName(registration.name));
    }
    // The parse error never echoes the URL: it may hold a password.
    let reach =
        Reach::parse(&registration.url, registration.ca_cert.as_deref()).map_err(DbError::InvalidServer)?;
    let Endpoint { host, port } = public_endpoint(&reach.config)?;
    // Credentials the server refuses are the request's fault (400), not the network's (502);
    // so is a certificate that the CA does not vouch for.
    let client = reach.connect(&registration.name).await.map_err(|err| match err {
        DbError::ServerUnreachable { message, .. } if reach.verifies() && message.contains("certificate") => {
            DbError::InvalidServer(format!("the server's certificate does not verify: {message}"))
        }
        DbError::ServerUnreachable { message, .. }
            if message.ends_with("(28P01)") || message.ends_with("(28000)") =>
        {
            DbError::InvalidServer(format!("the server refused the URL's login: {message}"))
        }
        other => other,
    })?;
    let row = client
        .query_one(
            "SELECT rolsuper OR (rolcreatedb AND rolcreaterole) FROM pg_roles WHERE rolname = current_user",
            &[],
        )
        .await
        .map_err(DbError::on_server(&registration.name))?;
    if !row.get::<_, bool>(0) {
        return Err(DbError::InvalidServer("the URL's role needs CREATEDB and CREATEROLE".into()));
    }
    let owner = match &registration.owner {
        Some(tenant) => Some(tenant_id(pool, tenant).await?),
        None => None,
    };
    let server = NewServer {
        name: registration.name,
        kind: ServerKind::Registered,
        admin_url: registration.url,
        host,
        port,
        zone: registration.zone,
        owner,
        plan: None,
        node: None,
        capacity_bytes: registration.capacity_bytes.unwrap_or(DEFAULT_CAPACITY_BYTES),
        ca_cert: registration.ca_cert,
    };
    insert(pool, secret, &server).await
}

/// Records a server; the admin URL is sealed.
pub async fn insert(
    pool: &CatalogPool,
    secret: &ServerSecret,
    server: &NewServer,
) -> Result<Server, DbError> {
    let sealed = secret.seal(SEALING_PURPOSE, server.admin_url.as_bytes());
    let client = pool.get().await?;
    let inserted = client
        .execute(
            "INSERT INTO db_servers (name, kind, admin_url_sealed, public_host, public_port, zone, \
             owner_tenant_id, plan, node_name, capacity_bytes, tls_ca_pem) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) ON CONFLICT (name) DO NOTHING",
            &[
                &server.name,
                &server.kind,
                &sealed,
                &server.host,
                &i32::from(server.port),
                &server.zone,
                &server.owner.map(|t| t.0),
                &server.plan,
                &server.node,
                &(server.capacity_bytes as i64),
                &server.ca_cert,
            ],
        )
        .await?;
    if inserted == 0 {
        return Err(DbError::ServerExists(server.name.clone()));
    }
    drop(client);
    tracing::info!(server = %server.name, kind = %server.kind, zone = %server.zone, "registered Postgres server");
    get(pool, &server.name).await
}

/// Records the embedded instance as a server, or refreshes its address and password.
pub async fn upsert_embedded(
    pool: &CatalogPool,
    secret: &ServerSecret,
    server: &NewServer,
) -> Result<(), DbError> {
    let sealed = secret.seal(SEALING_PURPOSE, server.admin_url.as_bytes());
    let client = pool.get().await?;
    client
        .execute(
            "INSERT INTO db_servers (name, kind, admin_url_sealed, public_host, public_port, zone, capacity_bytes) \
             VALUES ($1, $7, $2, $3, $4, $5, $6) \
             ON CONFLICT (name) DO UPDATE SET admin_url_sealed = $2, public_host = $3, public_port = $4, zone = $5 \
             WHERE db_servers.kind = $7",
            &[
                &server.name,
                &sealed,
                &server.host,
                &i32::from(server.port),
                &server.zone,
                &(server.capacity_bytes as i64),
                &ServerKind::Embedded,
            ],
        )
        .await?;
    Ok(())
}

/// Forgets `server` unless it holds a database (checked in the same statement, so a create
/// that lands meanwhile cannot be orphaned).
pub async fn forget(pool: &CatalogPool, server: &Server) -> Result<(), DbError> {
    let client = pool.get().await?;
    let deleted = client
        .execute(
            "DELETE FROM db_servers WHERE id = $1 \
             AND NOT EXISTS (SELECT 1 FROM tenant_databases WHERE server_id = $1)",
            &[&server.id],
        )
        .await?;
    if deleted == 0 {
        let databases = get(pool, &server.name).await.map_or(0, |s| s.databases);
        return Err(DbError::ServerInUse { name: server.name.clone(), databases });
    }
    Ok(())
}

/// How to reach a server as its admin: the admin URL unsealed, with the TLS that verifies it.
pub(crate) async fn admin_config(
    pool: &CatalogPool,
    secret: &ServerSecret,
    server_id: i64,
) -> Result<Reach, DbError> {
    let client = pool.get().await?;
    let row = client
        .query_opt("SELECT admin_url_sealed, tls_ca_pem FROM db_servers WHERE id = $1", &[&server_id])
        .await?
        .ok_or_else(|| DbError::ServerNotFound(format!("#{server_id}")))?;
    let url = secret.open(SEALING_PURPOSE, row.get(0)).ok_or(DbError::SealedSecret)?;
    let url = String::from_utf8(url).map_err(|_| DbError::SealedSecret)?;
    Reach::parse(&url, row.get(1)).map_err(|_| DbError::SealedSecret)
}

/// An admin URL sealed by [`insert`], opened.
pub(crate) fn open_admin_url(
    secret: &ServerSecret,
    sealed: &[u8],
) -> Result<tokio_postgres::Config, DbError> {
    let url = secret.open(SEALING_PURPOSE, sealed).ok_or(DbError::SealedSecret)?;
    let url = String::from_utf8(url).map_err(|_| DbError::SealedSecret)?;
    url.parse().map_err(|_| DbError::SealedSecret)
}

/// Where clients reach a server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// A host name, an address, or a unix-socket directory.
    pub host: String,
    pub port: u16,
}

/// Where clients reach a server, from its URL: the first host and port.
pub fn public_endpoint(config: &tokio_postgres::Config) -> Result<Endpoint, DbError> {
    let host = match config.get_hosts().first() {
        Some(Host::Tcp(host)) => host.clone(),
        Some(Host::Unix(path)) => path.display().to_string(),
        None => return Err(DbError::InvalidServer("the URL names no host".into())),
    };
    Ok(Endpoint { host, port: config.get_ports().first().copied().unwrap_or(5432) })
}

pub(crate) async fn tenant_id(pool: &CatalogPool, tenant: &str) -> Result<TenantId, DbError> {
    tenants::find(pool, tenant).await.map_err(|err| match err {
        TenantError::NotFound(_) | TenantError::InvalidName(_) => DbError::TenantNotFound(tenant.to_string()),
        TenantError::Catalog(err) => DbError::Catalog(err),
        other => DbError::InvalidServer(other.to_string()),
    })
}

/// Chooses the server for a new database of `tenant` with `quota` bytes: the tenant's own or
/// dedicated server if it has one (in `zone`, when given), otherwise the company's server with
/// the most room left (capacity less the quotas already placed), in `zone` when given.
pub async fn place(
    pool: &CatalogPool,
    tenant: TenantId,
    tenant_name: &str,
    zone: Option<&str>,
    quota: u64,
) -> Result<Server, DbError> {
    let client = pool.get().await?;
    let own = client
        .query_opt(
            "SELECT s.id FROM db_servers s WHERE s.owner_tenant_id = $1 AND ($2::text IS NULL OR s.zone = $2) \
             ORDER BY (s.kind = $3) DESC, s.id LIMIT 1",
            &[&tenant.0, &zone, &ServerKind::Dedicated],
        )
        .await?;
    let chosen = match own {
        Some(row) => Some(row.get::<_, i64>(0)),
        None => client
            .query_opt(
                "SELECT s.id FROM db_servers s LEFT JOIN tenant_databases d ON d.server_id = s.id \
                 WHERE s.owner_tenant_id IS NULL AND ($1::text IS NULL OR s.zone = $1) \
                 GROUP BY s.id \
                 HAVING s.capacity_bytes - coalesce(sum(d.storage_quota_bytes), 0)::int8 >= $2 \
                 ORDER BY s.capacity_bytes - coalesce(sum(d.storage_quota_bytes), 0)::int8 DESC, s.id LIMIT 1",
                &[&zone, &(quota as i64)],
            )
            .await?
            .map(|row| row.get::<_, i64>(0)),
    };
    if chosen.is_none()
        && let Some(zone) = zone
    {
        // A zone with no server at all is a mistake of the request, not a lack of room.
        let zones: Vec<String> = client
            .query(
                "SELECT DISTINCT zone FROM db_servers WHERE owner_tenant_id IS NULL OR owner_tenant_id = $1 \
                 ORDER BY zone",
                &[&tenant.0],
            )
            .await?
            .iter()
            .map(|row| row.get(0))
            .collect();
        if !zones.iter().any(|z| z == zone) {
            return Err(DbError::UnknownZone { zone: zone.to_string(), known: zones.join(", ") });
        }
    }
    drop(client);
    match chosen {
        Some(id) => get_by_id(pool, id).await,
        None => Err(DbError::NoServer { tenant: tenant_name.to_string(), zone: zone.map(str::to_string) }),
    }
}
