//! Names of client databases: what a tenant may choose, and what they become on a server.
//!
//! A tenant names its database (`shop`); on the server, where databases and roles of every
//! tenant share one namespace, it becomes `<tenant>_<name>` (dashes to underscores, which tenant
//! names never contain, so the mapping is one-to-one), hashed down when longer than Postgres's
//! 63 bytes. Names are validated before anything runs, and escaped anyway.

use postgres_protocol::escape::{escape_identifier, escape_literal};

/// The rule a database name must follow, as error messages state it.
pub const NAME_RULE: &str = "^[a-z][a-z0-9_]{0,62}$";
const MAX_IDENTIFIER: usize = 63;

/// Whether `name` follows [`NAME_RULE`].
pub fn is_valid_database_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    (1..=MAX_IDENTIFIER).contains(&bytes.len())
        && bytes[0].is_ascii_lowercase()
        && bytes.iter().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'_')
}

/// The database's (and its owner role's) name on the server.
pub fn server_name(tenant: &str, database: &str) -> String {
    let full = format!("{}_{database}", tenant.replace('-', "_"));
    if full.len() <= MAX_IDENTIFIER {
        return full;
    }
    let digest = blake3::hash(full.as_bytes()).to_hex();
    format!("{}_{}", &full[..MAX_IDENTIFIER - 13], &digest[..12])
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
        assert_eq!(server_name("acme-shop", "main"), "acme_shop_main");
        let long_tenant = "t".repeat(63);
        let a = server_name(&long_tenant, "alpha");
        let b = server_name(&long_tenant, "beta");
        assert!(a.len() <= 63 && b.len() <= 63 && a != b, "{a} {b}");
        assert!(a.bytes().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_'));
    }
}
