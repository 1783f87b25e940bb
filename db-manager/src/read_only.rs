//! Read-only over quota, in a form the tenant cannot undo.
//!
//! A client database's login role writes only as its owner role, through membership (see
//! [`crate::provision`]). Over the quota that membership goes, and the login role's sessions
//! start as the reader role instead. The order matters: the membership goes first (so whatever
//! fails later, the login role writes no more as the owner), then every session of the login
//! role ends, in any database (a session that already acts as the owner keeps the owner's
//! rights until it ends), and only then is the database itself cleaned of what the tenant could
//! have prepared while it could still write.
//!
//! That cleaning leaves no role but the owner with a way to write: whatever the login role or
//! the reader owns is handed to the owner, whatever was granted to the reader is dropped, and
//! every write privilege held by anyone but the owner (PUBLIC, the login role, the reader,
//! other tenants' roles; table, column, schema, database and large-object grants alike) is
//! revoked with `CASCADE`. `EXECUTE` on `SECURITY DEFINER` routines (which run as the owner) is
//! revoked from everyone but the owner, and so, where the server's admin is a superuser, is
//! creating large objects. Then the reader gets `SELECT` everywhere, and `DELETE` or `TRUNCATE`
//! on the plain tables where that runs none of the tenant's code (no user triggers, no rules, no
//! child tables, no foreign key that cascades into another table), so the tenant can free space.
//!
//! Back under the quota, the membership and the routines' `EXECUTE` for PUBLIC come back; write
//! grants the tenant had made to other roles do not (docs/databases.md says so).

use tokio_postgres::Client;

use crate::DbError;
use crate::names::{ident, literal};
use crate::provision::{self, Target};

/// The large-object functions that create objects, closed over quota where Silo may.
const LARGE_OBJECT_MAKERS: &str = "pg_catalog.lo_creat(integer), pg_catalog.lo_create(oid), \
    pg_catalog.lo_from_bytea(oid, bytea), pg_catalog.lo_import(text), pg_catalog.lo_import(text, oid)";

/// Schemas the tenant may have made (everything but the system's).
const USER_SCHEMAS: &str = "SELECT n.nspname FROM pg_catalog.pg_namespace n \
    WHERE n.nspname !~ '^pg_' AND n.nspname <> 'information_schema'";

/// An ACL entry's grantee as SQL: `PUBLIC` or the quoted role name.
const GRANTEE: &str = "CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE pg_catalog.quote_ident(pg_catalog.pg_get_userbyid(a.grantee)) END";

/// Puts the database into read-only. `admin` is connected to the server's admin database and
/// `inside` to the client database, both as the admin with `search_path` pinned to
/// `pg_catalog` (so no name resolves to the tenant's code). Returns the routines whose
/// `EXECUTE` was taken from PUBLIC, for [`leave`] to give back.
///
/// # Errors
/// [`DbError::Server`] when a statement fails; each batch is one transaction, and once the
/// first has run the login role no longer acts as the owner.
pub async fn enter(admin: &Client, inside: &Client, target: &Target<'_>) -> Result<Vec<String>, DbError> {
    let on_server = DbError::on_server(target.server);
    let (login, owner, reader) = (ident(target.pg_name), ident(&target.owner()), ident(&target.reader()));
    let superuser = provision::admin_is_superuser(admin, target.server).await?;

    // 1. No more writing as the owner, and no membership loop that would block granting the
    //    reader (a login role may grant itself to others on Postgres 15).
    let mut sql = String::new();
    let grantees_of_login: Vec<String> = admin
        .query(
            "SELECT pg_catalog.quote_ident(pg_catalog.pg_get_userbyid(m.member)) FROM pg_catalog.pg_auth_members m \
             WHERE m.roleid = (SELECT oid FROM pg_catalog.pg_roles WHERE rolname = $1) \
               AND m.member <> (SELECT oid FROM pg_catalog.pg_roles WHERE rolname = current_user)",
            &[&target.pg_name],
        )
        .await
        .map_err(&on_server)?
        .iter()
        .map(|r| r.get(0))
        .collect();
    for member in grantees_of_login {
        sql.push_str(&format!("REVOKE {login} FROM {member} CASCADE;"));
    }
    sql.push_str(&format!(
        "REVOKE {owner} FROM {login} CASCADE; GRANT {reader} TO {login}; \
         ALTER ROLE {login} SET role = {reader_value}; \
         ALTER ROLE {login} SET default_transaction_read_only = on;",
        reader_value = literal(&target.reader()),
    ));
    for grantee in database_write_grantees(admin, target).await? {
        sql.push_str(&format!("REVOKE CREATE, TEMPORARY ON DATABASE {login} FROM {grantee} CASCADE;"));
    }
    admin.batch_execute(&sql).await.map_err(&on_server)?;

    // 2. Sessions that act as the owner keep its rights until they end: end them all.
    let ended = provision::terminate_login_sessions(admin, target).await?;
    tracing::debug!(ended, "ended the login role's sessions so that read-only takes hold");

    // 3. Nobody but the owner keeps a way to write.
    let mut sql = format!("REASSIGN OWNED BY {login}, {reader} TO {owner}; DROP OWNED BY {reader};");
    for statement in write_grant_revokes(inside, target).await? {
        sql.push_str(&statement);
    }
    let routines = definer_routines(inside, target).await?;
    for (routine, grantee) in &routines.grants {
        sql.push_str(&format!("REVOKE EXECUTE ON ROUTINE {routine} FROM {grantee} CASCADE;"));
    }
    if superuser {
        sql.push_str(&format!("REVOKE EXECUTE ON FUNCTION {LARGE_OBJECT_MAKERS} FROM PUBLIC;"));
    }
    let schemas: Vec<String> =
        inside.query(USER_SCHEMAS, &[]).await.map_err(&on_server)?.iter().map(|r| r.get(0)).collect();
    for schema in &schemas {
        let schema = ident(schema);
        sql.push_str(&format!(
            "GRANT USAGE ON SCHEMA {schema} TO {reader}; \
             GRANT SELECT ON ALL TABLES IN SCHEMA {schema} TO {reader}; \
             GRANT SELECT ON ALL SEQUENCES IN SCHEMA {schema} TO {reader};"
        ));
    }
    for table in deletable_tables(inside, target).await? {
        sql.push_str(&format!("GRANT DELETE, TRUNCATE ON TABLE {table} TO {reader};"));
    }
    inside.batch_execute(&sql).await.map_err(&on_server)?;
    Ok(routines.public)
}

/// Gives write access back: the login role is a member of the owner again, its sessions start
/// as the owner, and `routines` (from [`enter`]) are executable by PUBLIC again.
///
/// # Errors
/// [`DbError::Server`] when a statement fails.
pub async fn leave(
    admin: &Client,
    inside: &Client,
    target: &Target<'_>,
    routines: &[String],
) -> Result<(), DbError> {
    let on_server = DbError::on_server(target.server);
    let (login, owner, reader) = (ident(target.pg_name), ident(&target.owner()), ident(&target.reader()));
    let mut sql = String::new();
    // Routines dropped meanwhile (by a restore, say) are skipped.
    let present: Vec<String> = inside
        .query(
            "SELECT r FROM unnest($1::text[]) AS r WHERE pg_catalog.to_regprocedure(r) IS NOT NULL",
            &[&routines],
        )
        .await
        .map_err(&on_server)?
        .iter()
        .map(|r| r.get(0))
        .collect();
    for routine in present {
        sql.push_str(&format!("GRANT EXECUTE ON ROUTINE {routine} TO PUBLIC;"));
    }
    if provision::admin_is_superuser(admin, target.server).await? {
        sql.push_str(&format!("GRANT EXECUTE ON FUNCTION {LARGE_OBJECT_MAKERS} TO PUBLIC;"));
    }
    if !sql.is_empty() {
        inside.batch_execute(&sql).await.map_err(&on_server)?;
    }
    let sql = format!(
        "REVOKE {reader} FROM {login}; GRANT {owner} TO {login}; \
         ALTER ROLE {login} SET role = {owner_value}; \
         ALTER ROLE {login} RESET default_transaction_read_only; \
         GRANT CONNECT, TEMPORARY ON DATABASE {login} TO {login};",
        owner_value = literal(&target.owner()),
    );
    admin.batch_execute(&sql).await.map_err(&on_server)
}

/// An ACL column as `aclexplode` takes it: NULL (nothing) instead of an empty array, which it
/// refuses.
fn nonempty(column: &str) -> String {
    format!("CASE WHEN pg_catalog.cardinality({column}) > 0 THEN {column} END")
}

/// Everyone but the owner who may create in, or make temporary tables in, the database.
async fn database_write_grantees(admin: &Client, target: &Target<'_>) -> Result<Vec<String>, DbError> {
    let rows = admin
        .query(
            &format!(
                "SELECT DISTINCT {GRANTEE} FROM pg_catalog.pg_database d, pg_catalog.aclexplode({datacl}) a \
                 WHERE d.datname = $1 AND a.grantee <> d.datdba AND a.privilege_type IN ('CREATE', 'TEMPORARY')",
                datacl = nonempty("d.datacl"),
            ),
            &[&target.pg_name],
        )
        .await
        .map_err(DbError::on_server(target.server))?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// `REVOKE ... CASCADE` statements that take every write privilege from everyone but the owner:
/// on tables (column grants go with them), schemas and large objects.
async fn write_grant_revokes(inside: &Client, target: &Target<'_>) -> Result<Vec<String>, DbError> {
    let rows = inside
        .query(
            &format!(
                "SELECT DISTINCT 'REVOKE INSERT, UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER ON TABLE ' \
                   || c.oid::pg_catalog.regclass::text || ' FROM ' || {GRANTEE} || ' CASCADE;' \
                 FROM pg_catalog.pg_class c \
                 CROSS JOIN LATERAL (SELECT * FROM pg_catalog.aclexplode({relacl}) \
                   UNION ALL SELECT x.* FROM pg_catalog.pg_attribute t, pg_catalog.aclexplode({attacl}) x \
                   WHERE t.attrelid = c.oid) a \
                 WHERE c.relnamespace IN (SELECT oid FROM pg_catalog.pg_namespace WHERE nspname IN ({USER_SCHEMAS})) \
                   AND c.relkind IN ('r', 'p', 'v', 'm', 'f') AND a.grantee <> c.relowner \
                   AND a.privilege_type IN ('INSERT', 'UPDATE', 'DELETE', 'TRUNCATE', 'REFERENCES', 'TRIGGER') \
                 UNION \
                 SELECT DISTINCT 'REVOKE CREATE ON SCHEMA ' || pg_catalog.quote_ident(n.nspname) || ' FROM ' \
                   || {GRANTEE} || ' CASCADE;' \
                 FROM pg_catalog.pg_namespace n, pg_catalog.aclexplode({nspacl}) a \
                 WHERE n.nspname IN ({USER_SCHEMAS}) AND a.grantee <> n.nspowner AND a.privilege_type = 'CREATE' \
                 UNION \
                 SELECT DISTINCT 'REVOKE UPDATE ON LARGE OBJECT ' || l.oid || ' FROM ' || {GRANTEE} || ' CASCADE;' \
                 FROM pg_catalog.pg_largeobject_metadata l, pg_catalog.aclexplode({lomacl}) a \
                 WHERE a.grantee <> l.lomowner AND a.privilege_type = 'UPDATE'",
                relacl = nonempty("c.relacl"),
                attacl = nonempty("t.attacl"),
                nspacl = nonempty("n.nspacl"),
                lomacl = nonempty("l.lomacl"),
            ),
            &[],
        )
        .await
        .map_err(DbError::on_server(target.server))?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// Plain tables whose `DELETE` and `TRUNCATE` run none of the tenant's code, as qualified,
/// quoted names.
async fn deletable_tables(inside: &Client, target: &Target<'_>) -> Result<Vec<String>, DbError> {
    let rows = inside
        .query(
            &format!(
                "SELECT c.oid::pg_catalog.regclass::text FROM pg_catalog.pg_class c \
                 WHERE c.relkind = 'r' AND c.relnamespace IN (SELECT oid FROM pg_catalog.pg_namespace \
                   WHERE nspname IN ({USER_SCHEMAS})) \
                 AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_trigger t WHERE t.tgrelid = c.oid AND NOT t.tgisinternal) \
                 AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_rewrite r WHERE r.ev_class = c.oid) \
                 AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_inherits i WHERE i.inhparent = c.oid) \
                 AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_constraint f \
                   WHERE f.contype = 'f' AND f.confrelid = c.oid AND f.confdeltype NOT IN ('a', 'r'))"
            ),
            &[],
        )
        .await
        .map_err(DbError::on_server(target.server))?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

struct DefinerRoutines {
    /// Every grant of `EXECUTE` on a `SECURITY DEFINER` routine in the tenant's schemas to
    /// anyone but its owner (PUBLIC's implicit one included): (routine, grantee).
    grants: Vec<(String, String)>,
    /// The routines PUBLIC may execute now (to give back later).
    public: Vec<String>,
}

async fn definer_routines(inside: &Client, target: &Target<'_>) -> Result<DefinerRoutines, DbError> {
    let rows = inside
        .query(
            &format!(
                "SELECT p.oid::pg_catalog.regprocedure::text, {GRANTEE} \
                 FROM pg_catalog.pg_proc p \
                 CROSS JOIN LATERAL pg_catalog.aclexplode(CASE WHEN p.proacl IS NULL THEN pg_catalog.acldefault('f', p.proowner) ELSE {proacl} END) a \
                 WHERE p.prosecdef AND a.grantee <> p.proowner AND a.privilege_type = 'EXECUTE' \
                   AND p.pronamespace IN (SELECT oid FROM pg_catalog.pg_namespace WHERE nspname IN ({USER_SCHEMAS}))",
                proacl = nonempty("p.proacl"),
            ),
            &[],
        )
        .await
        .map_err(DbError::on_server(target.server))?;
    let grants: Vec<(String, String)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    let public = grants.iter().filter(|(_, grantee)| grantee == "PUBLIC").map(|(r, _)| r.clone()).collect();
    Ok(DefinerRoutines { grants, public })
}
