//! The statements that make, limit, lock and drop a client database on its server.
//!
//! Every step is idempotent, so a create that died between steps is finished by running them
//! all again. Identifiers are validated before they get here and escaped with
//! `postgres-protocol` anyway; passwords reach the server only as SCRAM verifiers.

use postgres_protocol::password::scram_sha_256;
use rand::distr::{Alphanumeric, SampleString};
use tokio_postgres::Client;

use crate::DbError;
use crate::names::{ident, literal, owner_role, reader_role};
use crate::plans::Plan;

/// A new password: 32 characters from the operating system's randomness.
pub fn generate_password() -> String {
    Alphanumeric.sample_string(&mut rand::rng(), 32)
}

/// The SCRAM-SHA-256 verifier of `password`, which is all the server ever sees.
pub fn verifier(password: &str) -> String {
    scram_sha_256(password.as_bytes())
}

/// The names of one database on its server.
#[derive(Debug, Clone)]
pub struct Target<'a> {
    pub server: &'a str,
    /// The database's and its login role's name.
    pub pg_name: &'a str,
}

impl Target<'_> {
    /// The NOLOGIN role that owns the database and everything in it.
    pub fn owner(&self) -> String {
        owner_role(self.pg_name)
    }

    /// The NOLOGIN role the login role becomes while the database is over its quota.
    pub fn reader(&self) -> String {
        reader_role(self.pg_name)
    }
}

/// The comment Silo puts on every role it makes for a database: `silo:<catalog id>:<row id>`.
/// Silo adopts (and may drop) a role or database only when its marker says Silo made it.
pub fn marker(catalog_id: &str, row_id: i64) -> String {
    format!("silo:{catalog_id}:{row_id}")
}

pub async fn database_exists(client: &Client, target: &Target<'_>) -> Result<bool, DbError> {
    database_named(client, target.server, target.pg_name).await
}

/// Whether `server` has a database called `name`.
pub async fn database_named(client: &Client, server: &str, name: &str) -> Result<bool, DbError> {
    let row = client
        .query_opt("SELECT 1 FROM pg_catalog.pg_database WHERE datname = $1", &[&name])
        .await
        .map_err(DbError::on_server(server))?;
    Ok(row.is_some())
}

/// Whether the role `client` is connected as is a superuser: a non-superuser admin must be made
/// a member of the roles it gives databases to or takes objects from, and may not touch the
/// large-object functions.
pub async fn admin_is_superuser(client: &Client, server: &str) -> Result<bool, DbError> {
    let row = client
        .query_one("SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user", &[])
        .await
        .map_err(DbError::on_server(server))?;
    Ok(row.get(0))
}

/// Refuses a role or database of the target's names that Silo did not make for this row: a
/// role whose comment is not `marker`, or a database not owned by the owner role. Nothing that
/// exists is changed; the caller answers 409.
///
/// # Errors
/// [`DbError::RoleTaken`] or [`DbError::DatabaseTaken`].
pub async fn check_ours(client: &Client, target: &Target<'_>, marker: &str) -> Result<(), DbError> {
    let names = [target.pg_name.to_string(), target.owner(), target.reader()];
    let roles = client
        .query(
            "SELECT rolname, pg_catalog.shobj_description(oid, 'pg_authid') FROM pg_catalog.pg_roles \
             WHERE rolname = ANY($1)",
            &[&names.as_slice()],
        )
        .await
        .map_err(DbError::on_server(target.server))?;
    for role in roles {
        if role.get::<_, Option<&str>>(1) != Some(marker) {
            return Err(DbError::RoleTaken { role: role.get(0), server: target.server.into() });
        }
    }
    let database = client
        .query_opt(
            "SELECT pg_catalog.pg_get_userbyid(datdba) FROM pg_catalog.pg_database WHERE datname = $1",
            &[&target.pg_name],
        )
        .await
        .map_err(DbError::on_server(target.server))?;
    if let Some(owner) = database
        && owner.get::<_, String>(0) != target.owner()
    {
        return Err(DbError::DatabaseTaken { database: target.pg_name.into(), server: target.server.into() });
    }
    Ok(())
}

/// Makes (or finishes) the database's roles, each marked as Silo's: the owner (NOLOGIN), the
/// reader (NOLOGIN, used over quota) and the login role with `password`. The login role is
/// NOINHERIT and a member of the owner, and its sessions start as the owner: what it creates
/// belongs to the owner, and without that membership it can do nothing. The admin role becomes
/// a member of the owner when it is not a superuser (it needs that to create a database the
/// owner owns). Applies the plan's per-role limits. One query and one batch, in one transaction.
pub async fn ensure_roles(
    client: &Client,
    target: &Target<'_>,
    password: &str,
    plan: &Plan,
    marker: &str,
) -> Result<(), DbError> {
    check_ours(client, target, marker).await?;
    let (login, owner, reader) = (ident(target.pg_name), ident(&target.owner()), ident(&target.reader()));
    let (existing, superuser) = roles_present(client, target, &roles(target)).await?;
    let exists = |name: &str| existing.iter().any(|e| e == name);
    let marker = literal(marker);
    // One simple query: one implicit transaction, rolled back whole on any error.
    let mut sql = String::new();
    for (name, quoted) in [(target.owner(), &owner), (target.reader(), &reader)] {
        if !exists(&name) {
            sql.push_str(&format!(
                "CREATE ROLE {quoted} NOLOGIN INHERIT; COMMENT ON ROLE {quoted} IS {marker};"
            ));
        }
    }
    let verifier = literal(&verifier(password));
    if exists(target.pg_name) {
        sql.push_str(&format!("ALTER ROLE {login} LOGIN NOINHERIT PASSWORD {verifier};"));
    } else {
        sql.push_str(&format!(
            "CREATE ROLE {login} LOGIN NOINHERIT PASSWORD {verifier}; COMMENT ON ROLE {login} IS {marker};"
        ));
    }
    if !superuser {
        // A non-superuser admin needs their rights to create the owner's database and, over
        // quota, to take back what the login or reader roles own.
        sql.push_str(&format!("GRANT {owner}, {login}, {reader} TO CURRENT_USER;"));
    }
    sql.push_str(&format!(
        "GRANT {owner} TO {login}; ALTER ROLE {login} SET role = {owner_value};",
        owner_value = literal(&target.owner())
    ));
    sql.push_str(&role_limits(target, plan));
    client.batch_execute(&sql).await.map_err(DbError::on_server(target.server))
}

/// Which of `names` exist as roles, and whether the connected admin is a superuser: one query.
async fn roles_present(
    client: &Client,
    target: &Target<'_>,
    names: &[String],
) -> Result<(Vec<String>, bool), DbError> {
    let row = client
        .query_one(
            "SELECT array(SELECT rolname::text FROM pg_catalog.pg_roles WHERE rolname = ANY($1)), \
                    (SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user)",
            &[&names],
        )
        .await
        .map_err(DbError::on_server(target.server))?;
    Ok((row.get(0), row.get(1)))
}

fn role_limits(target: &Target<'_>, plan: &Plan) -> String {
    let role = ident(target.pg_name);
    format!(
        "ALTER ROLE {role} CONNECTION LIMIT {limit}; ALTER ROLE {role} SET statement_timeout = {timeout};",
        limit = plan.connection_limit,
        timeout = literal(&plan.statement_timeout_ms.to_string()),
    )
}

/// The plan's per-role settings: the connection limit and the statement timeout.
pub async fn apply_role_limits(client: &Client, target: &Target<'_>, plan: &Plan) -> Result<(), DbError> {
    client.batch_execute(&role_limits(target, plan)).await.map_err(DbError::on_server(target.server))
}

/// Creates the database owned by the owner role (unless it exists), closes it to PUBLIC, lets
/// the login role connect, and sets its connection limit.
pub async fn ensure_database(client: &Client, target: &Target<'_>, plan: &Plan) -> Result<(), DbError> {
    let (name, owner) = (ident(target.pg_name), ident(&target.owner()));
    if !database_exists(client, target).await? {
        client
            .batch_execute(&format!("CREATE DATABASE {name} OWNER {owner}"))
            .await
            .map_err(DbError::on_server(target.server))?;
    }
    let sql = format!(
        "REVOKE ALL ON DATABASE {name} FROM PUBLIC; GRANT CONNECT, TEMPORARY ON DATABASE {name} TO {name}; \
         ALTER DATABASE {name} CONNECTION LIMIT {limit}",
        limit = plan.connection_limit,
    );
    client.batch_execute(&sql).await.map_err(DbError::on_server(target.server))
}

/// Inside the new database (a connection to it as the admin): the owner role owns `public`,
/// and PUBLIC may not create in it.
pub async fn own_public_schema(client: &Client, target: &Target<'_>) -> Result<(), DbError> {
    let owner = ident(&target.owner());
    let sql = format!("ALTER SCHEMA public OWNER TO {owner}; REVOKE ALL ON SCHEMA public FROM PUBLIC");
    client.batch_execute(&sql).await.map_err(DbError::on_server(target.server))
}

/// Sets a new password.
pub async fn set_password(client: &Client, target: &Target<'_>, password: &str) -> Result<(), DbError> {
    let sql = format!("ALTER ROLE {} PASSWORD {}", ident(target.pg_name), literal(&verifier(password)));
    client.batch_execute(&sql).await.map_err(DbError::on_server(target.server))
}

/// Terminates every session of the database's login role, in any database (a session that
/// started as the owner keeps the owner's rights until it ends). Returns how many.
pub async fn terminate_login_sessions(client: &Client, target: &Target<'_>) -> Result<u64, DbError> {
    let rows = client
        .query(
            "SELECT pg_catalog.pg_terminate_backend(pid) FROM pg_catalog.pg_stat_activity \
             WHERE usename = $1 AND pid <> pg_catalog.pg_backend_pid()",
            &[&target.pg_name],
        )
        .await
        .map_err(DbError::on_server(target.server))?;
    Ok(rows.len() as u64)
}

/// Terminates the sessions of the database's role that started before `before` (server time):
/// those opened with a password that has since changed. Returns how many.
pub async fn terminate_role_sessions(
    client: &Client,
    target: &Target<'_>,
    before: std::time::SystemTime,
) -> Result<u64, DbError> {
    let rows = client
        .query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE usename = $1 AND pid <> pg_backend_pid() AND backend_start < $2",
            &[&target.pg_name, &before],
        )
        .await
        .map_err(DbError::on_server(target.server))?;
    Ok(rows.len() as u64)
}

/// The database's roles: login, reader, owner.
pub fn roles(target: &Target<'_>) -> [String; 3] {
    [target.pg_name.to_string(), target.reader(), target.owner()]
}

/// Drops the database's roles, whichever exist. Call it after the database is gone and the
/// roles own nothing anywhere (see `Workers::drop_database_and_roles`).
pub async fn drop_roles(client: &Client, target: &Target<'_>) -> Result<(), DbError> {
    let roles = roles(target).iter().map(|r| ident(r)).collect::<Vec<_>>().join(", ");
    client
        .batch_execute(&format!("DROP ROLE IF EXISTS {roles}"))
        .await
        .map_err(DbError::on_server(target.server))
}

/// Whether the database still has the single-role layout of Silo before owner roles (its
/// login role owns everything, so it could undo read-only): its login role carries no marker.
/// Only a role with CREATEROLE may comment on a role, so the tenant cannot fake this (its role
/// settings, which it may change, are not asked).
pub async fn is_legacy(client: &Client, target: &Target<'_>) -> Result<bool, DbError> {
    let row = client
        .query_one(
            "SELECT coalesce(pg_catalog.shobj_description(oid, 'pg_authid'), '') NOT LIKE 'silo:%' \
             FROM pg_catalog.pg_roles WHERE rolname = $1",
            &[&target.pg_name],
        )
        .await
        .map_err(DbError::on_server(target.server))?;
    Ok(row.get(0))
}

/// Drops a database, whatever the tenant did to it: `IS_TEMPLATE` (which blocks a drop) is
/// cleared first, and open sessions are ended.
pub async fn drop_database(client: &Client, server: &str, name: &str) -> Result<(), DbError> {
    if !database_named(client, server, name).await? {
        return Ok(());
    }
    let name = ident(name);
    client
        .batch_execute(&format!("ALTER DATABASE {name} IS_TEMPLATE false"))
        .await
        .map_err(DbError::on_server(server))?;
    client
        .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .await
        .map_err(DbError::on_server(server))
}

/// Moves a legacy database to the owner-role layout: makes the owner and reader roles, hands
/// the owner everything the login role owned (the database included), and makes the login
/// role a NOINHERIT member whose sessions start as the owner. `admin` is connected to the
/// admin database, `inside` to the client database (with `search_path` pinned). Every step
/// can run again, so a start after a crash half-way finishes the job.
pub async fn upgrade_legacy(
    admin: &Client,
    inside: &Client,
    target: &Target<'_>,
    marker: &str,
) -> Result<(), DbError> {
    let on_server = DbError::on_server(target.server);
    let (login, owner, reader) = (ident(target.pg_name), ident(&target.owner()), ident(&target.reader()));
    let (existing, superuser) = roles_present(admin, target, &[target.owner(), target.reader()]).await?;
    let marker = literal(marker);
    let mut sql = format!("COMMENT ON ROLE {login} IS {marker};");
    for (name, quoted) in [(target.owner(), &owner), (target.reader(), &reader)] {
        if !existing.contains(&name) {
            sql.push_str(&format!(
                "CREATE ROLE {quoted} NOLOGIN INHERIT; COMMENT ON ROLE {quoted} IS {marker};"
            ));
        }
    }
    if !superuser {
        sql.push_str(&format!("GRANT {owner} TO CURRENT_USER;"));
    }
    admin.batch_execute(&sql).await.map_err(&on_server)?;
    // The old read-only switch revoked INSERT, UPDATE and CREATE from the login role, and
    // ownership carries such gaps over: the owner gets them back.
    let mut sql = format!("REASSIGN OWNED BY {login} TO {owner};");
    let schemas = inside
        .query("SELECT nspname::text FROM pg_catalog.pg_namespace WHERE nspname !~ '^pg_' AND nspname <> 'information_schema'", &[])
        .await
        .map_err(&on_server)?;
    for schema in schemas {
        let schema = ident(schema.get(0));
        sql.push_str(&format!(
            "GRANT INSERT, UPDATE ON ALL TABLES IN SCHEMA {schema} TO {owner}; GRANT CREATE ON SCHEMA {schema} TO {owner};"
        ));
    }
    inside.batch_execute(&sql).await.map_err(&on_server)?;
    let sql = format!(
        "ALTER ROLE {login} NOINHERIT; GRANT {owner} TO {login}; ALTER ROLE {login} SET role = {owner_value}; \
         ALTER ROLE {login} RESET default_transaction_read_only; \
         GRANT CONNECT, TEMPORARY ON DATABASE {login} TO {login};",
        owner_value = literal(&target.owner())
    );
    admin.batch_execute(&sql).await.map_err(&on_server)
}
