//! [`Secret`]: a setting that must never be printed (the catalog's Postgres URL with its
//! password, the admin token, a registered server's URL).
//!
//! It wraps [`secrecy::SecretString`], so the value is zeroed when dropped and reachable only
//! through [`Secret::expose`]. `Debug` and `Serialize` (what `silo config show` prints) give
//! [`Secret::MASK`] instead of the value; flags, variables and files read it like a string.

use std::fmt;
use std::str::FromStr;

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A string that no `Debug`, log line or printed configuration shows.
pub struct Secret(SecretString);

impl Secret {
    /// What is shown in the secret's place.
    pub const MASK: &'static str = "<secret>";

    /// The value itself, for the one place that uses it.
    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Secret(SecretString::from(value))
    }
}

impl FromStr for Secret {
    type Err = std::convert::Infallible;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        Ok(Secret::from(value.to_owned()))
    }
}

impl Clone for Secret {
    fn clone(&self) -> Self {
        Secret::from(self.expose().to_owned())
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(Self::MASK)
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(Self::MASK)
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(Secret::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn neither_debug_nor_serialize_shows_the_value() {
        let secret: Secret = "postgresql://silo:hunter2@db/silo".parse().unwrap();
        assert_eq!(format!("{secret:?}"), Secret::MASK);
        assert_eq!(serde_json::to_string(&secret).unwrap(), format!("\"{}\"", Secret::MASK));
        assert_eq!(secret.clone().expose(), "postgresql://silo:hunter2@db/silo");
    }
}
