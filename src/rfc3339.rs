//! Times as the API writes them: RFC 3339 in UTC with milliseconds
//! (`2026-12-07T05:49:12.123Z`). The store keeps milliseconds since the Unix epoch; the
//! conversion happens only here, at the API's edge (`#[serde(with = "crate::rfc3339")]`).

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{de, Deserialize, Deserializer, Serializer};

/// A time outside what RFC 3339 can write (years before 0 or after 9999), or text that is not
/// an RFC 3339 time.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TimeError {
    /// Milliseconds with no RFC 3339 spelling.
    #[error("{0} ms since the epoch has no RFC 3339 form")]
    OutOfRange(i64),
    /// Not an RFC 3339 time.
    #[error("{text:?} is not an RFC 3339 time: {problem}")]
    Parse {
        /// The text.
        text: String,
        /// What is wrong.
        problem: String,
    },
}

/// `ms` since the Unix epoch as `YYYY-MM-DDTHH:MM:SS.mmmZ`.
pub fn format_ms(ms: i64) -> Result<String, TimeError> {
    DateTime::<Utc>::from_timestamp_millis(ms)
        .filter(|t| (0..=9999).contains(&chrono::Datelike::year(t)))
        .map(|t| t.to_rfc3339_opts(SecondsFormat::Millis, true))
        .ok_or(TimeError::OutOfRange(ms))
}

/// An RFC 3339 time (any offset) as milliseconds since the Unix epoch.
pub fn parse_ms(text: &str) -> Result<i64, TimeError> {
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.timestamp_millis())
        .map_err(|e| TimeError::Parse {
            text: text.to_string(),
            problem: e.to_string(),
        })
}

/// Serializes milliseconds as RFC 3339.
pub fn serialize<S: Serializer>(ms: &i64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format_ms(*ms).map_err(serde::ser::Error::custom)?)
}

/// Reads an RFC 3339 string, or (as answers before RFC 3339 times had it) milliseconds.
pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    match Wire::deserialize(d)? {
        Wire::Text(t) => parse_ms(&t).map_err(de::Error::custom),
        Wire::Millis(ms) => Ok(ms),
    }
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Wire {
    Text(String),
    Millis(i64),
}

/// The same for `Option<i64>` (`#[serde(with = "crate::rfc3339::option")]`; pair it with
/// `default` and `skip_serializing_if = "Option::is_none"`).
pub mod option {
    use super::*;

    /// Serializes `Some` milliseconds as RFC 3339, `None` as null.
    pub fn serialize<S: Serializer>(ms: &Option<i64>, s: S) -> Result<S::Ok, S::Error> {
        match ms {
            Some(ms) => super::serialize(ms, s),
            None => s.serialize_none(),
        }
    }

    /// Reads what [`super::deserialize`] reads, or null.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
        match Option::<Wire>::deserialize(d)? {
            Some(Wire::Text(t)) => parse_ms(&t).map(Some).map_err(de::Error::custom),
            Some(Wire::Millis(ms)) => Ok(Some(ms)),
            None => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn millis_round_trip_in_utc_with_three_decimals() {
        let ms = 1_796_622_552_123;
        assert_eq!(format_ms(ms).as_deref(), Ok("2026-12-07T05:49:12.123Z"));
        assert_eq!(format_ms(0).as_deref(), Ok("1970-01-01T00:00:00.000Z"));
        assert_eq!(parse_ms("2026-12-07T05:49:12.123Z"), Ok(ms));
        // Another offset names the same instant.
        assert_eq!(parse_ms("2026-12-07T06:49:12.123+01:00"), Ok(ms));
        assert!(parse_ms("yesterday").is_err());
        assert_eq!(format_ms(i64::MAX), Err(TimeError::OutOfRange(i64::MAX)));
    }

    #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
    struct T {
        #[serde(with = "super")]
        at: i64,
        #[serde(
            default,
            with = "super::option",
            skip_serializing_if = "Option::is_none"
        )]
        done: Option<i64>,
    }

    #[test]
    fn fields_write_strings_and_read_strings_or_millis() {
        let t = T {
            at: 1_796_622_552_123,
            done: None,
        };
        let json = serde_json::to_value(&t).unwrap_or_default();
        assert_eq!(json, serde_json::json!({"at": "2026-12-07T05:49:12.123Z"}));
        let back: Result<T, _> = serde_json::from_value(json);
        assert_eq!(back.ok(), Some(t));
        let old: Result<T, _> = serde_json::from_value(
            serde_json::json!({"at": 5, "done": "1970-01-01T00:00:00.007Z"}),
        );
        assert_eq!(
            old.ok(),
            Some(T {
                at: 5,
                done: Some(7)
            })
        );
    }
}
