//! How the management API writes an instant: RFC 3339 in UTC, whole seconds, a trailing `Z`
//! (`2026-01-31T12:00:00Z`), the shape the API has always shown.
//!
//! Rows read instants as [`time::OffsetDateTime`] from `timestamptz` columns (tokio-postgres'
//! `with-time-0_3`); fields that the API shows use `#[serde(with = "rfc3339_seconds")]`, or
//! `rfc3339_seconds::option` for an optional one. The fraction of a second is dropped when
//! writing, as Postgres' `to_char(.., 'YYYY-MM-DD"T"HH24:MI:SS"Z"')` used to drop it.

/// Serde for an [`OffsetDateTime`](time::OffsetDateTime) as RFC 3339 in UTC, whole seconds.
pub mod rfc3339_seconds {
    use serde::Serializer;
    use time::{OffsetDateTime, UtcOffset};

    /// `at` in UTC without its fraction of a second.
    pub fn whole_seconds_utc(at: OffsetDateTime) -> OffsetDateTime {
        let utc = at.to_offset(UtcOffset::UTC);
        utc - time::Duration::nanoseconds(i64::from(utc.nanosecond()))
    }

    /// Writes `at` as `YYYY-MM-DDTHH:MM:SSZ`.
    ///
    /// # Errors
    /// An instant RFC 3339 cannot write (a year outside 0..=9999).
    pub fn serialize<S: Serializer>(at: &OffsetDateTime, serializer: S) -> Result<S::Ok, S::Error> {
        time::serde::rfc3339::serialize(&whole_seconds_utc(*at), serializer)
    }

    /// The same for an optional instant (`null` when absent).
    pub mod option {
        use serde::Serializer;
        use time::OffsetDateTime;

        /// Writes `at` as `YYYY-MM-DDTHH:MM:SSZ`, or `null`.
        ///
        /// # Errors
        /// An instant RFC 3339 cannot write (a year outside 0..=9999).
        pub fn serialize<S: Serializer>(
            at: &Option<OffsetDateTime>,
            serializer: S,
        ) -> Result<S::Ok, S::Error> {
            time::serde::rfc3339::option::serialize(&at.map(super::whole_seconds_utc), serializer)
        }
    }
}

#[cfg(test)]
mod tests {
    use time::macros::datetime;

    #[derive(serde::Serialize)]
    struct Shown {
        #[serde(with = "super::rfc3339_seconds")]
        at: time::OffsetDateTime,
        #[serde(with = "super::rfc3339_seconds::option")]
        maybe: Option<time::OffsetDateTime>,
    }

    #[test]
    fn instants_are_shown_in_utc_whole_seconds_with_z() {
        let shown = Shown { at: datetime!(2026-01-31 13:04:05.987654 +01:00), maybe: None };
        let json = serde_json::to_string(&shown).unwrap();
        assert_eq!(json, r#"{"at":"2026-01-31T12:04:05Z","maybe":null}"#);
    }

    #[test]
    fn an_optional_instant_is_shown_the_same_way() {
        let shown =
            Shown { at: datetime!(2026-01-31 12:00 UTC), maybe: Some(datetime!(1999-12-31 23:59:59.5 UTC)) };
        let json = serde_json::to_string(&shown).unwrap();
        assert_eq!(json, r#"{"at":"2026-01-31T12:00:00Z","maybe":"1999-12-31T23:59:59Z"}"#);
    }
}
