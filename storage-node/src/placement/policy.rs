//! A tenant's placement policy as the catalog keeps it and the API shows it, a change to it
//! (absent fields keep their value), and the rule for zone names.

use serde::{Deserialize, Deserializer, Serialize};

use super::PlacementError;

crate::text_enum!(
    /// Whose nodes hold a tenant's packs.
    PlacementMode {
        /// The hosting company's nodes (those with no owner).
        Shared => "shared",
        /// Only the tenant's own nodes (`silo serve --owner <tenant>`).
        Owned => "owned",
    }
);

crate::text_enum!(
    /// What a write does when fewer zones than the replication factor can take a new pack.
    OnShortage {
        /// Refuse it (503 with Retry-After): nothing is stored with fewer copies than asked.
        Refuse => "refuse",
        /// Take it on the nodes there are (at least one); repair adds the missing copies first.
        Degraded => "degraded",
    }
);

/// The highest replication factor (the catalog's CHECK).
pub const MAX_REPLICATION_FACTOR: u8 = 8;

/// A tenant's placement policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlacementPolicy {
    pub mode: PlacementMode,
    /// Copies of each pack, each in a distinct zone; `None`: the default (2 where the domain
    /// spans two zones or more, else 1).
    pub replication_factor: Option<u8>,
    /// The zones its packs may live in; `None`: every zone.
    pub allowed_zones: Option<Vec<String>>,
    pub on_shortage: OnShortage,
}

impl Default for PlacementPolicy {
    fn default() -> Self {
        PlacementPolicy {
            mode: PlacementMode::Shared,
            replication_factor: None,
            allowed_zones: None,
            on_shortage: OnShortage::Refuse,
        }
    }
}

impl PlacementPolicy {
    /// Whether `zone` is one of the allowed zones.
    pub fn allows(&self, zone: &str) -> bool {
        self.allowed_zones.as_ref().is_none_or(|zones| zones.iter().any(|z| z == zone))
    }
}

/// A change to a policy: an absent field keeps its value; `null` resets the replication factor
/// to the default and the allowed zones to every zone.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyChange {
    pub mode: Option<PlacementMode>,
    #[serde(default, deserialize_with = "present")]
    pub replication_factor: Option<Option<u8>>,
    #[serde(default, deserialize_with = "present")]
    pub allowed_zones: Option<Option<Vec<String>>>,
    pub on_shortage: Option<OnShortage>,
}

/// A field that is present, possibly `null` (an absent one is `None` by `#[serde(default)]`).
fn present<'de, T: Deserialize<'de>, D: Deserializer<'de>>(de: D) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(de).map(Some)
}

impl PolicyChange {
    /// `current` with this change, its values checked on their own (not yet against nodes).
    /// The allowed zones are kept in the order given, without repeats.
    ///
    /// # Errors
    /// [`PlacementError::InvalidReplicationFactor`], [`PlacementError::InvalidZone`],
    /// [`PlacementError::NoZones`].
    pub fn apply(&self, current: &PlacementPolicy) -> Result<PlacementPolicy, PlacementError> {
        let mut policy = current.clone();
        if let Some(mode) = self.mode {
            policy.mode = mode;
        }
        if let Some(on_shortage) = self.on_shortage {
            policy.on_shortage = on_shortage;
        }
        if let Some(factor) = self.replication_factor {
            if let Some(n) = factor.filter(|n| !(1..=MAX_REPLICATION_FACTOR).contains(n)) {
                return Err(PlacementError::InvalidReplicationFactor(n));
            }
            policy.replication_factor = factor;
        }
        if let Some(zones) = &self.allowed_zones {
            policy.allowed_zones = zones.as_deref().map(checked_zones).transpose()?;
        }
        Ok(policy)
    }
}

/// `zones` without repeats, each a valid zone name, at least one.
fn checked_zones(zones: &[String]) -> Result<Vec<String>, PlacementError> {
    if let Some(bad) = zones.iter().find(|zone| !is_valid_zone(zone)) {
        return Err(PlacementError::InvalidZone(bad.clone()));
    }
    let mut kept: Vec<String> = Vec::with_capacity(zones.len());
    for zone in zones {
        if !kept.contains(zone) {
            kept.push(zone.clone());
        }
    }
    if kept.is_empty() {
        return Err(PlacementError::NoZones);
    }
    Ok(kept)
}

/// Whether `zone` is a valid zone name: 1 to 63 ASCII letters, digits, `-`, `_` or `.`,
/// starting with a letter or digit (`eu-west-1a`, `fsn1-dc14`, `zone-a`).
pub fn is_valid_zone(zone: &str) -> bool {
    let bytes = zone.as_bytes();
    (1..=63).contains(&bytes.len())
        && bytes[0].is_ascii_alphanumeric()
        && bytes.iter().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(json: &str) -> PolicyChange {
        serde_json::from_str(json).expect("a change")
    }

    #[test]
    fn absent_fields_keep_their_value_and_null_resets_to_the_default() {
        let current = PlacementPolicy {
            mode: PlacementMode::Owned,
            replication_factor: Some(2),
            allowed_zones: Some(vec!["a".into(), "b".into()]),
            on_shortage: OnShortage::Degraded,
        };
        assert_eq!(change("{}").apply(&current).ok(), Some(current.clone()));
        let reset = change(r#"{"replication_factor": null, "allowed_zones": null}"#).apply(&current);
        let expected = PlacementPolicy { replication_factor: None, allowed_zones: None, ..current.clone() };
        assert_eq!(reset.ok(), Some(expected));
        let set = change(r#"{"mode": "shared", "on_shortage": "refuse", "allowed_zones": ["b", "c", "b"]}"#)
            .apply(&current)
            .expect("valid");
        assert_eq!((set.mode, set.on_shortage), (PlacementMode::Shared, OnShortage::Refuse));
        assert_eq!(set.allowed_zones, Some(vec!["b".to_string(), "c".to_string()]), "repeats dropped");
        assert!(serde_json::from_str::<PolicyChange>(r#"{"replicas": 2}"#).is_err(), "unknown field");
        assert!(serde_json::from_str::<PolicyChange>(r#"{"mode": "mine"}"#).is_err());
    }

    #[test]
    fn bad_values_are_refused_before_any_node_is_looked_at() {
        let current = PlacementPolicy::default();
        for factor in [0, 9] {
            let refused = change(&format!(r#"{{"replication_factor": {factor}}}"#)).apply(&current);
            assert!(matches!(refused, Err(PlacementError::InvalidReplicationFactor(n)) if n == factor));
        }
        let refused = change(r#"{"allowed_zones": []}"#).apply(&current);
        assert!(matches!(refused, Err(PlacementError::NoZones)), "{refused:?}");
        let refused = change(r#"{"allowed_zones": ["a", "b c"]}"#).apply(&current);
        assert!(matches!(refused, Err(PlacementError::InvalidZone(z)) if z == "b c"));
    }

    #[test]
    fn zone_names_follow_the_rule() {
        for good in ["a", "zone-a", "eu-west-1a", "fsn1_dc14", "z.1", &"z".repeat(63)] {
            assert!(is_valid_zone(good), "{good}");
        }
        for bad in ["", "-a", ".a", "a b", "a,b", "zöne", &"z".repeat(64)] {
            assert!(!is_valid_zone(bad), "{bad}");
        }
    }

    #[test]
    fn the_policy_serializes_as_the_api_shows_it() {
        let json = serde_json::to_value(PlacementPolicy::default()).expect("json");
        assert_eq!(
            json,
            serde_json::json!({"mode": "shared", "replication_factor": null, "allowed_zones": null,
                               "on_shortage": "refuse"})
        );
        assert!(PlacementPolicy::default().allows("anywhere"));
    }
}
