//! Pure display helpers for pages: times as the `<time>` elements carry them, durations for
//! people, query strings of links.

use chrono::{DateTime, SecondsFormat, Utc};

/// A time as pages carry it: RFC 3339 in UTC, to the second. The page's script shows it in
/// the viewer's timezone, with this text on hover.
pub fn iso(time: DateTime<Utc>) -> String {
    time.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// A duration for people: `0.4s`, `12s`, `3m 4s`, `2h 5m`, `3d 4h`. Only the two largest
/// units count past a minute.
pub fn human_duration(seconds: f64) -> String {
    if seconds < 0.0 || !seconds.is_finite() {
        return String::new();
    }
    if seconds < 10.0 {
        return format!("{seconds:.1}s");
    }
    let total = seconds.round() as u64;
    let (days, hours, minutes, secs) = (
        total / 86_400,
        total / 3600 % 24,
        total / 60 % 60,
        total % 60,
    );
    match (days, hours, minutes) {
        (0, 0, 0) => format!("{secs}s"),
        (0, 0, _) => format!("{minutes}m {secs}s"),
        (0, _, _) => format!("{hours}h {minutes}m"),
        _ => format!("{days}d {hours}h"),
    }
}

/// The duration between two times, empty when either is missing (not started, not ended).
pub fn duration_between(start: Option<DateTime<Utc>>, end: Option<DateTime<Utc>>) -> String {
    match (start, end) {
        (Some(start), Some(end)) => {
            human_duration((end - start).num_milliseconds() as f64 / 1000.0)
        }
        _ => String::new(),
    }
}

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
    fn durations_read_like_people_write_them() {
        assert_eq!(human_duration(0.43), "0.4s");
        assert_eq!(human_duration(12.4), "12s");
        assert_eq!(human_duration(184.0), "3m 4s");
        assert_eq!(human_duration(7500.0), "2h 5m");
        assert_eq!(
            human_duration(3.0 * 86_400.0 + 4.0 * 3600.0 + 59.0),
            "3d 4h"
        );
        assert_eq!(human_duration(-1.0), "");
    }

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
