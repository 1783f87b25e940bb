//! Names of client databases: what a tenant may choose, and what they become on a server.
//!
//! A tenant names its database (`shop`); on the server, where databases and roles of every
//! tenant share one namespace, it becomes `<tenant>_<name>`. Tenant names never hold an
//! underscore, so the first one splits the two and the mapping is one-to-one (an older rule
//! turned dashes into underscores, which made `a-b`/`c` and `a`/`b_c` collide; rows made under
//! it keep their stored name). Names longer than Postgres's 63 bytes are hashed down. Every name
//! that starts with [`RESERVED_PREFIX`] is Silo's own (owner, reader and worker roles, spare
//! databases), and no client database may map to one. Names are validated before anything
//! runs, and escaped anyway.

use postgres_protocol::escape::{escape_identifier, escape_literal};

/// The rule a database name must follow, as error messages state it.
pub const NAME_RULE: &str = "^[a-z][a-z0-9_]{0,62}$";
const MAX_IDENTIFIER: usize = 63;
/// The prefix of every role and database that Silo makes for itself on a server.
pub const RESERVED_PREFIX: &str = "silo_";

/// Whether `name` follows [`NAME_RULE`].
pub fn is_valid_database_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    (1..=MAX_IDENTIFIER).contains(&bytes.len())
        && bytes[0].is_ascii_lowercase()
        && bytes.iter().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'_')
}

/// The database's (and its login role's) name on the server, or `None` when it would fall in
/// Silo's reserved namespace (a tenant named `silo`).
pub fn server_name(tenant: &str, database: &str) -> Option<String> {
    let full = format!("{tenant}_{database}");
    if full.starts_with(RESERVED_PREFIX) {
        return None;
    }
    if full.len() <= MAX_IDENTIFIER {
        return Some(full);
    }
    let digest = blake3::hash(full.as_bytes()).to_hex();
    // `_-` never appears in a short name (tenant names hold no `_`, database names no `-`), so
    // a hashed name never equals another tenant's short one.
    Some(format!("{}_-{}", &full[..MAX_IDENTIFIER - 26], &digest[..24]))
}

/// The NOLOGIN role that owns a client database and everything in it.
pub fn owner_role(pg_name: &str) -> String {
    derived_role("silo_o_", pg_name)
}

/// The NOLOGIN role that a client database's login role becomes while it is over its quota.
pub fn reader_role(pg_name: &str) -> String {
    derived_role("silo_r_", pg_name)
}

fn derived_role(prefix: &str, pg_name: &str) -> String {
    format!("{prefix}{}", &blake3::hash(pg_name.as_bytes()).to_hex()[..32])
}

/// A quoted SQL identifier.
pub fn ident(name: &str) -> String {
    escape_identifier(name)
}

/// A quoted SQL string literal.
pub fn literal(value: &str) -> String {
    escape_literal(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_rule() {
        for good in ["shop", "a", "shop_2", &"x".repeat(63)] {
            assert!(is_valid_database_name(good), "{good}");
        }
        for bad in
            ["", "Shop", "2shop", "_shop", "shop-db", "x\"; DROP DATABASE postgres; --", &"x".repeat(64), "é"]
        {
            assert!(!is_valid_database_name(bad), "{bad}");
        }
    }

    #[test]
    fn server_names_are_distinct_and_fit() {
        assert_eq!(server_name("acme-shop", "main").as_deref(), Some("acme-shop_main"));
        let long_tenant = "t".repeat(63);
        let a = server_name(&long_tenant, "alpha").unwrap_or_default();
        let b = server_name(&long_tenant, "beta").unwrap_or_default();
        assert!(a.len() <= 63 && b.len() <= 63 && a != b, "{a} {b}");
        assert!(a.bytes().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_' || c == b'-'));
    }

    #[test]
    fn server_names_are_one_to_one() {
        // Under the old rule both were `a_b_c`.
        assert_ne!(server_name("a-b", "c"), server_name("a", "b_c"));
        assert_eq!(server_name("a", "b_c").as_deref(), Some("a_b_c"));
    }

    #[test]
    fn silos_namespace_is_reserved() {
        assert_eq!(server_name("silo", "spare_x"), None);
        assert_eq!(server_name("silo", "o_abc"), None);
        assert!(server_name("silos", "x").is_some());
        assert!(owner_role("acme_shop").starts_with(RESERVED_PREFIX));
        assert!(reader_role("acme_shop").starts_with(RESERVED_PREFIX));
        assert_ne!(owner_role("a_b"), owner_role("a-b"));
    }
}
