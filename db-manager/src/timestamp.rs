//! The API's instants, written the one way `storage_node::timestamp` defines (RFC 3339 in UTC,
//! whole seconds, a trailing `Z`), under the short paths db-manager's rows use in
//! `#[serde(serialize_with = "crate::timestamp::serialize")]` (or `::option::serialize`).

pub use storage_node::timestamp::rfc3339_seconds::{option, serialize};
