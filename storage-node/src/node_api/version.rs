//! The internal API's protocol version and how two nodes agree on one.
//!
//! Every request names the version it speaks in `Silo-Internal-Version`; a server accepts a
//! range of versions and answers anything else with `400 unsupported_version`, naming its range
//! in `Silo-Internal-Accepts` (`<min>-<max>`). Every response carries the server's own version
//! and that range. Two rules make nodes of versions N and N+1 interoperate during a rolling
//! upgrade: a server of N+1 keeps accepting N, and a client speaks the highest version that both
//! it and the peer accept, so a new client speaks N to an old peer (and moves up once the peer
//! answers with a newer range).
//!
//! A route that a version introduced needs at least that version: such a request in an older
//! one is refused like an unknown version, so a client learns that the peer is too old for it
//! rather than that the route is missing ([`APPEND_VERSION`]).

use std::fmt;

/// The oldest version this node accepts.
pub const MIN_VERSION: u32 = 1;
/// The version this node speaks.
pub const MAX_VERSION: u32 = 3;
/// The version that introduced appends to a pack being written (`PATCH`).
pub const APPEND_VERSION: u32 = 2;
/// The version that introduced read cache invalidations (`POST /internal/v1/reads/invalidate`).
pub const READS_VERSION: u32 = 3;
/// The request header that names the version a request speaks, and the response header that
/// names the server's version.
pub const VERSION_HEADER: &str = "silo-internal-version";
/// The response header that names the versions a server accepts, as `<min>-<max>`.
pub const ACCEPTS_HEADER: &str = "silo-internal-accepts";

/// The versions a node accepts, both ends included.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VersionRange {
    pub min: u32,
    pub max: u32,
}

impl VersionRange {
    /// The versions this build accepts.
    pub const OURS: VersionRange = VersionRange { min: MIN_VERSION, max: MAX_VERSION };

    pub fn accepts(&self, version: u32) -> bool {
        (self.min..=self.max).contains(&version)
    }

    /// The version to speak to a peer that accepts `peer`: the highest both accept.
    pub fn common(&self, peer: VersionRange) -> Option<u32> {
        let version = self.max.min(peer.max);
        (version >= self.min.max(peer.min)).then_some(version)
    }

    /// Reads `<min>-<max>`, or a single version.
    pub fn parse(text: &str) -> Option<Self> {
        let (min, max) = text.trim().split_once('-').unwrap_or((text.trim(), text.trim()));
        let range = VersionRange { min: parse_version(min)?, max: parse_version(max)? };
        (range.min <= range.max).then_some(range)
    }
}

impl fmt::Display for VersionRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.min, self.max)
    }
}

/// A version as a header spells it: decimal digits, nothing else.
pub fn parse_version(text: &str) -> Option<u32> {
    let text = text.trim();
    if text.is_empty() || text.len() > 9 || !text.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const fn range(min: u32, max: u32) -> VersionRange {
        VersionRange { min, max }
    }

    #[test]
    fn a_client_speaks_the_highest_version_both_ends_accept() {
        // Same build.
        assert_eq!(range(1, 1).common(range(1, 1)), Some(1));
        // A new client (speaks 2, still accepts 1) and an old server: it speaks 1.
        assert_eq!(range(1, 2).common(range(1, 1)), Some(1));
        // An old client and a new server that keeps accepting 1.
        assert_eq!(range(1, 1).common(range(1, 2)), Some(1));
        // Both upgraded.
        assert_eq!(range(1, 2).common(range(1, 2)), Some(2));
        // Two versions apart, with nothing in common.
        assert_eq!(range(3, 3).common(range(1, 2)), None);
        assert_eq!(range(1, 1).common(range(2, 3)), None);
    }

    #[test]
    fn versions_and_ranges_are_read_strictly() {
        assert_eq!(parse_version("1"), Some(1));
        assert_eq!(parse_version(" 12 "), Some(12));
        for bad in ["", "-1", "+1", "1.0", "v1", "0x1", "9999999999", "1 2"] {
            assert_eq!(parse_version(bad), None, "{bad:?}");
        }
        assert_eq!(VersionRange::parse("1-3"), Some(range(1, 3)));
        assert_eq!(VersionRange::parse("2"), Some(range(2, 2)));
        assert_eq!(VersionRange::parse("3-1"), None);
        assert_eq!(VersionRange::parse("1-"), None);
        assert_eq!(range(1, 3).to_string(), "1-3");
        assert!(VersionRange::OURS.accepts(MAX_VERSION) && VersionRange::OURS.accepts(MIN_VERSION));
        assert!(!VersionRange::OURS.accepts(MAX_VERSION + 1));
    }
}
