//! Timestamps in the API: `time::OffsetDateTime` read from `timestamptz` columns, written to
//! JSON as RFC 3339 in UTC to the second with a `Z` (`2026-11-30T04:21:18Z`), as the catalog's
//! `to_char` formats wrote them before.

use serde::Serializer;
use time::OffsetDateTime;
use time::format_description::FormatItem;
use time::macros::format_description;

const SECONDS_Z: &[FormatItem<'static>] =
    format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z");

/// `at` in UTC, to the second (the fraction is dropped, as `to_char`'s `SS` did).
pub fn format(at: OffsetDateTime) -> String {
    at.to_offset(time::UtcOffset::UTC).format(SECONDS_Z).unwrap_or_default()
}

/// For `#[serde(serialize_with = "crate::timestamp::serialize")]`.
pub fn serialize<S: Serializer>(at: &OffsetDateTime, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&format(*at))
}

/// For optional timestamps: `null` when absent.
pub mod option {
    use serde::Serializer;
    use time::OffsetDateTime;

    pub fn serialize<S: Serializer>(at: &Option<OffsetDateTime>, serializer: S) -> Result<S::Ok, S::Error> {
        match at {
            Some(at) => serializer.serialize_str(&super::format(*at)),
            None => serializer.serialize_none(),
        }
    }
}

#[cfg(test)]
mod tests {
    use time::macros::datetime;

    #[test]
    fn utc_to_the_second_with_a_z() {
        assert_eq!(super::format(datetime!(2026-11-30 05:21:18.987 +01:00)), "2026-11-30T04:21:18Z");
    }
}
