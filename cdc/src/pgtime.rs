//! PostgreSQL timestamps on the wire: microseconds since 2000-01-01 00:00:00 UTC.

use chrono::{DateTime, Utc};

/// Seconds between the Unix epoch and PostgreSQL's epoch.
pub const PG_EPOCH_UNIX_SECS: i64 = 946_684_800;

/// Converts a wire timestamp to a UTC date-time (`None` when out of chrono's range).
pub fn to_datetime(micros_since_2000: i64) -> Option<DateTime<Utc>> {
    let unix_micros = micros_since_2000.checked_add(PG_EPOCH_UNIX_SECS * 1_000_000)?;
    DateTime::from_timestamp_micros(unix_micros)
}

/// RFC 3339 with microseconds and `Z`, e.g. `2026-11-29T18:00:00.123456Z`.
pub fn to_rfc3339(micros_since_2000: i64) -> String {
    match to_datetime(micros_since_2000) {
        Some(t) => t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string(),
        None => micros_since_2000.to_string(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn formats_with_microseconds() {
        assert_eq!(super::to_rfc3339(0), "2000-01-01T00:00:00.000000Z");
        assert_eq!(super::to_rfc3339(1_500_001), "2000-01-01T00:00:01.500001Z");
    }
}
