//! clap's value parsers for what several commands take: times, durations, conf.

use updraft_core::time::{TIME_FORMS, WrittenTime};

/// A time of a flag, read later in the DAG's timezone: RFC 3339, `YYYY-MM-DD` (midnight in the
/// DAG's timezone) or a date-time without offset (in the DAG's timezone).
pub fn time(text: &str) -> Result<WrittenTime, String> {
    WrittenTime::parse(text).ok_or_else(|| format!("not a time; write {TIME_FORMS}"))
}

/// The instant `written` (the value of `flag`) means in `tz`; a message for the user when it
/// means none (a date at the end of the calendar).
pub fn in_zone(
    flag: &str,
    written: WrittenTime,
    tz: chrono_tz::Tz,
) -> Result<chrono::DateTime<chrono::Utc>, String> {
    written
        .in_zone(tz)
        .ok_or_else(|| format!("{flag}: {written:?} is no time in {}", tz.name()))
}

/// A name of the worker's environment its tries get (`--inherit-env`): a variable name, not
/// `UPDRAFT_*`.
pub fn inherited_name(text: &str) -> Result<String, String> {
    updraft_core::worker_env::check_inherited_name(text)?;
    Ok(text.to_owned())
}

/// A size in bytes with an optional unit: 512KB, 20MB, 1GB (of 1024), or bytes.
pub fn size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let digits = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(digits);
    let unit_size: u64 = match unit.trim().to_ascii_uppercase().as_str() {
        "" | "B" => 1,
        "K" | "KB" | "KIB" => 1 << 10,
        "M" | "MB" | "MIB" => 1 << 20,
        "G" | "GB" | "GIB" => 1 << 30,
        _ => {
            return Err(format!(
                "unknown unit \"{unit}\" (write e.g. 512KB, 20MB or 1GB)"
            ));
        }
    };
    number
        .parse::<u64>()
        .ok()
        .and_then(|number| number.checked_mul(unit_size))
        .filter(|bytes| *bytes > 0)
        .ok_or_else(|| format!("\"{text}\" is not a size (write e.g. 512KB, 20MB or 1GB)"))
}

/// A duration with its unit: 500ms, 30s, 5m.
pub fn duration(text: &str) -> Result<std::time::Duration, String> {
    humantime::parse_duration(text).map_err(|error| format!("{error} (write e.g. 30s or 5m)"))
}

/// `--conf`: a JSON object.
pub fn conf(text: &str) -> Result<serde_json::Value, String> {
    match serde_json::from_str::<serde_json::Value>(text) {
        Ok(value @ serde_json::Value::Object(_)) => Ok(value),
        Ok(_) => Err("not a JSON object; write e.g. '{\"region\": \"eu\"}'".to_owned()),
        Err(error) => Err(format!("not valid JSON: {error}")),
    }
}

/// The web UI's address as its users reach it: `http://` or `https://`, a host, perhaps a
/// path; kept without a trailing `/`.
pub fn base_url(text: &str) -> Result<String, String> {
    let url = url::Url::parse(text)
        .map_err(|error| format!("not a URL ({error}): write e.g. https://updraft.example.com"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err(format!(
            "{text}: write the address the UI is reached at, e.g. https://updraft.example.com"
        ));
    }
    Ok(text.trim_end_matches('/').to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_time_is_kept_as_written_until_a_timezone_reads_it() {
        let written = time("2024-03-01").unwrap();
        assert!(matches!(written, WrittenTime::Wall(_)));
        assert!(matches!(
            time("2024-03-01T00:00:00Z").unwrap(),
            WrittenTime::Instant(_)
        ));
        let refused = time("tomorrow").unwrap_err();
        assert!(refused.contains("RFC 3339"), "{refused}");
    }

    #[test]
    fn a_conf_is_a_json_object() {
        assert_eq!(conf(r#"{"a": 1}"#), Ok(serde_json::json!({"a": 1})));
        assert!(conf("[1]").unwrap_err().contains("not a JSON object"));
        assert!(conf("{").unwrap_err().contains("not valid JSON"));
    }

    #[test]
    fn a_base_url_is_an_http_address_kept_without_its_last_slash() {
        assert_eq!(
            base_url("https://updraft.example.com/"),
            Ok("https://updraft.example.com".to_owned())
        );
        assert!(
            base_url("updraft.example.com")
                .unwrap_err()
                .contains("not a URL")
        );
        assert!(
            base_url("ftp://x")
                .unwrap_err()
                .contains("write the address")
        );
    }
}
