//! Pure display helpers for pages: times as the `<time>` elements carry them, durations for
//! people, query strings of links.

use chrono::{DateTime, SecondsFormat, Utc};

/// A time as pages carry it: RFC 3339 in UTC, to the second. The page's script shows it in
/// the viewer's timezone, with this text on hover.
pub fn iso(time: DateTime<Utc>) -> String {
    time.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// A duration for people (`updraft_core::time`), empty when either end is missing.
pub use updraft_core::time::duration_between;

/// `a=1&b=x%20y` from the pairs whose value is not empty.
pub fn query_string(pairs: &[(&str, &str)]) -> String {
    let kept: Vec<(&str, &str)> = pairs
        .iter()
        .copied()
        .filter(|(_, value)| !value.is_empty())
        .collect();
    serde_urlencoded::to_string(kept).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    #[test]
    fn a_duration_needs_both_ends() {
        let start = Utc.with_ymd_and_hms(2024, 1, 1, 0, 0, 0).unwrap();
        let end = Utc.with_ymd_and_hms(2024, 1, 1, 0, 1, 5).unwrap();
        assert_eq!(duration_between(Some(start), Some(end)), "1m 5s");
        assert_eq!(duration_between(Some(start), None), "");
        assert_eq!(iso(start), "2024-01-01T00:00:00Z");
    }

    #[test]
    fn query_strings_skip_empty_values_and_encode_the_rest() {
        assert_eq!(
            query_string(&[("q", "a b&c"), ("tag", ""), ("offset", "25")]),
            "q=a+b%26c&offset=25"
        );
    }
}
