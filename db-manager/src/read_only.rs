//! Read-only over quota, in a form the tenant cannot undo.
//!
//! A client database's login role writes only as its owner role, through membership (see
//! [`crate::provision`]). Over the quota that membership goes, and the login role's sessions
//! start as the reader role instead. The tenant then owns nothing it can write to, so no
//! `GRANT`, `SET`, `BEGIN READ WRITE` or `ALTER DEFAULT PRIVILEGES` gives writing back. The
//! reader may read everything, and `DELETE` or `TRUNCATE` the plain tables where that runs none
//! of the tenant's code (no user triggers, no rules, no child tables, no foreign key that
//! cascades into another table), so the tenant can free space.
//!
//! What the tenant could have prepared while it still could is taken away as well: write
//! grants (table and column) and `CREATE` on schemas to PUBLIC or to the login role itself,
//! and `EXECUTE` on `SECURITY DEFINER` routines, which would run as the owner. On a server
//! whose admin is a superuser, so is creating large objects. Back under the quota, the
//! membership and the routines' `EXECUTE` come back; write grants that the tenant had made to
//! PUBLIC or to the login role do not (docs/databases.md says so).

use tokio_postgres::Client;

use crate::DbError;
use crate::names::{ident, literal};
use crate::provision::Target;

/// The large-object functions that create objects, closed over quota where Silo may.
const LARGE_OBJECT_MAKERS: &str = "pg_catalog.lo_creat(integer), pg_catalog.lo_create(oid), \
    pg_catalog.lo_from_bytea(oid, bytea), pg_catalog.lo_import(text), pg_catalog.lo_import(text, oid)";

/// Schemas the tenant may have made (everything but the system's).
const USER_SCHEMAS: &str = "SELECT n.nspname FROM pg_catalog.pg_namespace n \
    WHERE n.nspname !~ '^pg_' AND n.nspname <> 'information_schema'";

/// Puts the database into read-only. `admin` is connected to the server's admin database and
/// `inside` to the client database, both as the admin with `search_path` pinned to
/// `pg_catalog` (so no name resolves to the tenant's code). Returns the routines whose
/// `EXECUTE` was taken from PUBLIC, for [`leave`] to give back.
///
/// # Errors
/// [`DbError::Server`] when a statement fails; each batch is one transaction.
pub async fn enter(admin: &Client, inside: &Client, target: &Target<'_>) -> Result<Vec<String>, DbError> {
    let on_server = DbError::on_server(target.server);
    let (login, owner, reader) = (ident(target.pg_name), ident(&target.owner()), ident(&target.reader()));
    let superuser = is_superuser(admin, target).await?;
    let schemas: Vec<String> =
        inside.query(USER_SCHEMAS, &[]).await.map_err(&on_server)?.iter().map(|r| r.get(0)).collect();
    let mut sql = String::new();
    for schema in &schemas {
        let schema = ident(schema);
        sql.push_str(&format!(
            "REVOKE CREATE ON SCHEMA {schema} FROM PUBLIC, {login}; GRANT USAGE ON SCHEMA {schema} TO {reader}; \
             REVOKE INSERT, UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER ON ALL TABLES IN SCHEMA {schema} \
             FROM PUBLIC, {login}; \
             GRANT SELECT ON ALL TABLES IN SCHEMA {schema} TO {reader}; \
             GRANT SELECT ON ALL SEQUENCES IN SCHEMA {schema} TO {reader};"
        ));
    }
    for table in deletable_tables(inside, target).await? {
        sql.push_str(&format!("GRANT DELETE, TRUNCATE ON TABLE {table} TO {reader};"));
    }
    let routines = definer_routines(inside, target).await?;
    for routine in &routines.all {
        sql.push_str(&format!("REVOKE EXECUTE ON ROUTINE {routine} FROM PUBLIC, {login};"));
    }
    let shared_large_objects: Vec<u32> = inside
        .query("SELECT oid FROM pg_catalog.pg_largeobject_metadata WHERE lomacl IS NOT NULL", &[])
        .await
        .map_err(&on_server)?
        .iter()
        .map(|r| r.get(0))
        .collect();
    for oid in shared_large_objects {
        sql.push_str(&format!("REVOKE UPDATE ON LARGE OBJECT {oid} FROM PUBLIC, {login};"));
    }
    if superuser {
        sql.push_str(&format!("REVOKE EXECUTE ON FUNCTION {LARGE_OBJECT_MAKERS} FROM PUBLIC;"));
    }
    inside.batch_execute(&sql).await.map_err(&on_server)?;
    let sql = format!(
        "REVOKE {owner} FROM {login}; GRANT {reader} TO {login}; \
         ALTER ROLE {login} SET role = {reader_value}; \
         ALTER ROLE {login} SET default_transaction_read_only = on; \
         REVOKE CREATE, TEMPORARY ON DATABASE {login} FROM PUBLIC, {login};",
        reader_value = literal(&target.reader()),
    );
    admin.batch_execute(&sql).await.map_err(&on_server)?;
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
    if is_superuser(admin, target).await? {
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

async fn is_superuser(admin: &Client, target: &Target<'_>) -> Result<bool, DbError> {
    let row = admin
        .query_one("SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user", &[])
        .await
        .map_err(DbError::on_server(target.server))?;
    Ok(row.get(0))
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
    /// Every `SECURITY DEFINER` routine in the tenant's schemas.
    all: Vec<String>,
    /// Those PUBLIC may execute now (to give back later).
    public: Vec<String>,
}

async fn definer_routines(inside: &Client, target: &Target<'_>) -> Result<DefinerRoutines, DbError> {
    let rows = inside
        .query(
            &format!(
                "SELECT p.oid::pg_catalog.regprocedure::text, \
                        p.proacl IS NULL OR EXISTS (SELECT 1 FROM pg_catalog.aclexplode(p.proacl) a \
                          WHERE a.grantee = 0 AND a.privilege_type = 'EXECUTE') \
                 FROM pg_catalog.pg_proc p \
                 WHERE p.prosecdef AND p.pronamespace IN (SELECT oid FROM pg_catalog.pg_namespace \
                   WHERE nspname IN ({USER_SCHEMAS}))"
            ),
            &[],
        )
        .await
        .map_err(DbError::on_server(target.server))?;
    let all = rows.iter().map(|r| r.get::<_, String>(0)).collect();
    let public = rows.iter().filter(|r| r.get::<_, bool>(1)).map(|r| r.get(0)).collect();
    Ok(DefinerRoutines { all, public })
}
