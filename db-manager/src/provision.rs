//! The statements that make, limit, lock and drop a client database on its server.
//!
//! Every step is idempotent, so a create that died between steps is finished by running them
//! all again. Identifiers are validated before they get here and escaped with
//! `postgres-protocol` anyway; passwords reach the server only as SCRAM verifiers.

use postgres_protocol::password::scram_sha_256;
use rand::distr::{Alphanumeric, SampleString};
use tokio_postgres::Client;

use crate::DbError;
use crate::names::{ident, literal};
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
    /// The database's and its owner role's name.
    pub pg_name: &'a str,
}

pub async fn role_exists(client: &Client, target: &Target<'_>) -> Result<bool, DbError> {
    let row = client
        .query_opt("SELECT 1 FROM pg_roles WHERE rolname = $1", &[&target.pg_name])
        .await
        .map_err(DbError::on_server(target.server))?;
    Ok(row.is_some())
}

pub async fn database_exists(client: &Client, target: &Target<'_>) -> Result<bool, DbError> {
    let row = client
        .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&target.pg_name])
        .await
        .map_err(DbError::on_server(target.server))?;
    Ok(row.is_some())
}

/// Creates the owner role with `password` (or sets the password if the role exists), lets
/// the admin role act as it (a non-superuser admin needs that to create a database it owns),
/// and applies the plan's per-role limits: one query and one batch.
pub async fn ensure_role(
    client: &Client,
    target: &Target<'_>,
    password: &str,
    plan: &Plan,
) -> Result<(), DbError> {
    let role = ident(target.pg_name);
    let verifier = literal(&verifier(password));
    let row = client
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1), \
                    (SELECT rolsuper FROM pg_roles WHERE rolname = current_user)",
            &[&target.pg_name],
        )
        .await
        .map_err(DbError::on_server(target.server))?;
    let (exists, superuser): (bool, bool) = (row.get(0), row.get(1));
    let mut sql = if exists {
        format!("ALTER ROLE {role} LOGIN INHERIT PASSWORD {verifier};")
    } else {
        format!("CREATE ROLE {role} LOGIN INHERIT PASSWORD {verifier};")
    };
    if !superuser {
        sql.push_str(&format!("GRANT {role} TO CURRENT_USER;"));
    }
    sql.push_str(&role_limits(target, plan));
    client.batch_execute(&sql).await.map_err(DbError::on_server(target.server))
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

/// Creates the database owned by the role (unless it exists), closes it to PUBLIC and sets its
/// connection limit.
pub async fn ensure_database(client: &Client, target: &Target<'_>, plan: &Plan) -> Result<(), DbError> {
    let name = ident(target.pg_name);
    if !database_exists(client, target).await? {
        client
            .batch_execute(&format!("CREATE DATABASE {name} OWNER {name}"))
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

/// Inside the new database (a connection to it as the admin): the role owns `public`, and
/// PUBLIC may not create in it.
pub async fn own_public_schema(client: &Client, target: &Target<'_>) -> Result<(), DbError> {
    let role = ident(target.pg_name);
    let sql = format!("ALTER SCHEMA public OWNER TO {role}; REVOKE ALL ON SCHEMA public FROM PUBLIC");
    client.batch_execute(&sql).await.map_err(DbError::on_server(target.server))
}

/// Sets a new password.
pub async fn set_password(client: &Client, target: &Target<'_>, password: &str) -> Result<(), DbError> {
    let sql = format!("ALTER ROLE {} PASSWORD {}", ident(target.pg_name), literal(&verifier(password)));
    client.batch_execute(&sql).await.map_err(DbError::on_server(target.server))
}

/// Terminates every session of the database. Returns how many.
pub async fn terminate_sessions(client: &Client, target: &Target<'_>) -> Result<u64, DbError> {
    let rows = client
        .query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
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

/// Drops the database (closing its sessions) and the role, whichever exist.
pub async fn drop_database_and_role(client: &Client, target: &Target<'_>) -> Result<(), DbError> {
    let name = ident(target.pg_name);
    client
        .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .await
        .map_err(DbError::on_server(target.server))?;
    client
        .batch_execute(&format!("DROP ROLE IF EXISTS {name}"))
        .await
        .map_err(DbError::on_server(target.server))
}

/// The user schemas of the database a client is connected to, and whether each belongs to
/// `pg_database_owner` (the `public` of a database made from a spare).
async fn user_schemas(client: &Client, target: &Target<'_>) -> Result<Vec<(String, bool)>, DbError> {
    let rows = client
        .query(
            "SELECT nspname, pg_get_userbyid(nspowner) = 'pg_database_owner' FROM pg_namespace \
             WHERE nspname NOT LIKE 'pg\\_%' AND nspname <> 'information_schema'",
            &[],
        )
        .await
        .map_err(DbError::on_server(target.server))?;
    Ok(rows.iter().map(|row| (row.get(0), row.get(1))).collect())
}

/// Over the quota (`read_only`) or back under it: revokes or grants INSERT, UPDATE and CREATE,
/// and sets or resets `default_transaction_read_only`. `admin` is connected to the server's
/// admin database, `inside` to the client database. DELETE and TRUNCATE stay allowed.
pub async fn set_read_only(
    admin: &Client,
    inside: &Client,
    target: &Target<'_>,
    read_only: bool,
) -> Result<(), DbError> {
    let role = ident(target.pg_name);
    let (verb, preposition) = if read_only { ("REVOKE", "FROM") } else { ("GRANT", "TO") };
    let mut sql = String::new();
    for (schema, owned_by_database_owner) in user_schemas(inside, target).await? {
        let schema = ident(&schema);
        if owned_by_database_owner {
            // The role holds pg_database_owner's rights, which a REVOKE from the role does not
            // touch: give it the schema by name first (it owned it already, by its office).
            sql.push_str(&format!("ALTER SCHEMA {schema} OWNER TO {role};"));
        }
        sql.push_str(&format!(
            "{verb} INSERT, UPDATE ON ALL TABLES IN SCHEMA {schema} {preposition} {role}; \
             {verb} CREATE ON SCHEMA {schema} {preposition} {role};"
        ));
    }
    inside.batch_execute(&sql).await.map_err(DbError::on_server(target.server))?;
    let setting = if read_only {
        format!("ALTER ROLE {role} SET default_transaction_read_only = on")
    } else {
        format!("ALTER ROLE {role} RESET default_transaction_read_only")
    };
    let database = format!("{verb} CREATE ON DATABASE {role} {preposition} {role}");
    admin.batch_execute(&format!("{setting}; {database}")).await.map_err(DbError::on_server(target.server))
}

/// Resets the role's read-only default (after an in-place restore, the sampler decides anew).
pub async fn clear_read_only_setting(client: &Client, target: &Target<'_>) -> Result<(), DbError> {
    let sql = format!("ALTER ROLE {} RESET default_transaction_read_only", ident(target.pg_name));
    client.batch_execute(&sql).await.map_err(DbError::on_server(target.server))
}
