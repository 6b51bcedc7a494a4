//! Rate limits: at most `count` tries start per `period` (Celery's `rate_limit`), for a task
//! across its runs or for a pool. The queue admits a task instance only while its windows have
//! room; what is in a window is counted by the store, and what is decided here is pure.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// At most `count` tries start in any `period`. Written `10/m` (Celery's `N/s`, `N/m`, `N/h`)
/// or with a duration, `10/30s`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    pub count: u32,
    pub period: Duration,
}

impl FromStr for RateLimit {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let bad = |why: &str| {
            format!(
                "bad rate limit \"{text}\" ({why}); write tries per period, e.g. 10/m, 2/s or 100/h"
            )
        };
        let (count, per) = text.split_once('/').ok_or_else(|| bad("no '/'"))?;
        let count: u32 = count
            .trim()
            .parse()
            .map_err(|_| bad("the count is not a whole number"))?;
        if count == 0 {
            return Err(bad("the count must be at least 1"));
        }
        let period = match per.trim() {
            "s" => Duration::from_secs(1),
            "m" => Duration::from_secs(60),
            "h" => Duration::from_secs(3600),
            other => humantime::parse_duration(other).map_err(|error| bad(&error.to_string()))?,
        };
        if period.is_zero() {
            return Err(bad("the period must be longer than zero"));
        }
        Ok(RateLimit { count, period })
    }
}

impl fmt::Display for RateLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.period.as_secs_f64() {
            1.0 => write!(f, "{}/s", self.count),
            60.0 => write!(f, "{}/m", self.count),
            3600.0 => write!(f, "{}/h", self.count),
            _ => write!(
                f,
                "{}/{}",
                self.count,
                humantime::format_duration(self.period)
            ),
        }
    }
}

impl Serialize for RateLimit {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for RateLimit {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// One limit's window ending now: the tries that started in it, and the task instances queued
/// (each will start, so each counts already).
#[derive(Debug, Clone, PartialEq)]
pub struct Window {
    pub limit: RateLimit,
    /// Tries started in the window, and task instances queued.
    pub used: u64,
    /// The earliest start in the window, if any.
    pub oldest: Option<DateTime<Utc>>,
}

impl Window {
    /// Whether another try may start in the window.
    pub fn has_room(&self) -> bool {
        self.used < u64::from(self.limit.count)
    }

    /// Takes a place in the window (once [`Window::has_room`] said there is one).
    pub fn take(&mut self) {
        self.used += 1;
    }

    /// Gives back a place [`Window::take`] took.
    pub fn give_back(&mut self) {
        self.used = self.used.saturating_sub(1);
    }

    /// When a full window may have room again: when its earliest start leaves it. A window
    /// full of queued task instances has none before a period from `now`, whenever they start.
    pub fn frees_at(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        let period = chrono::Duration::from_std(self.limit.period).unwrap_or(chrono::Duration::MAX);
        self.oldest
            .unwrap_or(now)
            .checked_add_signed(period)
            .unwrap_or(DateTime::<Utc>::MAX_UTC)
    }

    /// The start of the window ending at `now`: tries that started after it count.
    pub fn since(limit: RateLimit, now: DateTime<Utc>) -> DateTime<Utc> {
        let period = chrono::Duration::from_std(limit.period).unwrap_or(chrono::Duration::MAX);
        now.checked_sub_signed(period)
            .unwrap_or(DateTime::<Utc>::MIN_UTC)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000 + seconds, 0).unwrap()
    }

    #[test]
    fn reads_celery_units_and_durations() {
        let limit = |text: &str| text.parse::<RateLimit>();
        assert_eq!(
            limit("10/m"),
            Ok(RateLimit {
                count: 10,
                period: Duration::from_secs(60)
            })
        );
        assert_eq!(limit("2/s").unwrap().period, Duration::from_secs(1));
        assert_eq!(limit("100/h").unwrap().period, Duration::from_secs(3600));
        assert_eq!(limit("5/30s").unwrap().period, Duration::from_secs(30));
        for (text, shown) in [
            ("10/m", "10/m"),
            ("2/s", "2/s"),
            ("5/30s", "5/30s"),
            ("1/1d", "1/1day"),
        ] {
            assert_eq!(limit(text).unwrap().to_string(), shown);
            assert_eq!(limit(shown), limit(text));
        }
        for bad in ["10", "x/m", "0/m", "-1/m", "10/", "10/0s", "10/fortnight"] {
            let error = limit(bad).unwrap_err();
            assert!(error.contains(&format!("\"{bad}\"")), "{error}");
            assert!(error.contains("e.g. 10/m"), "{error}");
        }
    }

    #[test]
    fn serializes_as_its_text() {
        let limit: RateLimit = "3/m".parse().unwrap();
        assert_eq!(serde_json::to_string(&limit).unwrap(), "\"3/m\"");
        assert_eq!(serde_json::from_str::<RateLimit>("\"3/m\"").unwrap(), limit);
        assert!(serde_json::from_str::<RateLimit>("\"3 per minute\"").is_err());
    }

    #[test]
    fn a_window_admits_up_to_its_count_and_frees_when_its_oldest_start_leaves() {
        let limit: RateLimit = "3/m".parse().unwrap();
        let mut window = Window {
            limit,
            used: 1,
            oldest: Some(at(10)),
        };
        for _ in 0..2 {
            assert!(window.has_room());
            window.take();
        }
        assert!(!window.has_room());
        assert_eq!(window.used, 3);
        assert_eq!(window.frees_at(at(30)), at(70));
        window.give_back();
        assert!(window.has_room());
        assert_eq!(Window::since(limit, at(100)), at(40));
    }

    #[test]
    fn a_window_full_of_queued_instances_frees_a_period_from_now() {
        let window = Window {
            limit: "2/m".parse().unwrap(),
            used: 2,
            oldest: None,
        };
        assert!(!window.has_room());
        assert_eq!(window.frees_at(at(5)), at(65));
    }
}
