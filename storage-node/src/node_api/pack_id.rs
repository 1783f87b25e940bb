//! Pack ids as the internal API's paths spell them: a positive decimal integer and nothing
//! else, so that no path segment can name a file other than a pack (`..`, `/`, signs, hex,
//! leading zeros and overflow are all refused).

use crate::pack::PackId;

/// The id a path segment names, or `None` when it is not a canonical positive integer.
pub fn parse_pack_id(segment: &str) -> Option<PackId> {
    let canonical = !segment.is_empty()
        && segment.len() <= 19
        && !segment.starts_with('0')
        && segment.bytes().all(|byte| byte.is_ascii_digit());
    if !canonical {
        return None;
    }
    segment.parse::<i64>().ok().filter(|id| *id > 0).map(PackId)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_canonical_positive_integers_name_packs() {
        assert_eq!(parse_pack_id("1"), Some(PackId(1)));
        assert_eq!(parse_pack_id("9223372036854775807"), Some(PackId(i64::MAX)));
        for bad in [
            "",
            "0",
            "007",
            "-1",
            "+1",
            " 1",
            "1 ",
            "1.0",
            "0x1f",
            "1f",
            "9223372036854775808",
            "99999999999999999999",
            "..",
            "../1",
            "1/..",
            "%2e%2e",
            "1%00",
            "1\0",
            "٣",
        ] {
            assert_eq!(parse_pack_id(bad), None, "{bad:?}");
        }
    }
}
