//! One module per command group. Each `run` returns the process exit code.

pub mod backfill;
pub mod bench;
pub mod dags;
pub mod db;
pub mod local_run;
pub mod pools;
pub mod runs;
pub mod serve;
pub mod tasks;
pub mod users;
pub mod workers;

use anyhow::{Context, Result, bail};
use chrono::{DateTime, NaiveDate, Utc};
use updraft_metadata::{Backend, Store};

use crate::config::Config;

/// The async runtime of commands that talk to the database or run tasks.
pub fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// Opens the metadata database. The embedded SQLite database is created and migrated on first
/// use, so one machine needs no setup; Postgres must be migrated with `updraft db migrate`
/// (a shared database is changed on purpose, not by whichever process starts first).
pub async fn open_store(config: &Config) -> Result<Store> {
    let url = config.database_url()?;
    if Backend::of_url(&url) == Some(Backend::Sqlite) {
        let store = Store::connect(&url).await?;
        store.migrate().await?;
        store.close().await;
    }
    Ok(Store::open(&url).await?)
}

/// A time given on the command line: RFC 3339, or a date meaning midnight UTC.
pub fn parse_time(flag: &str, text: &str) -> Result<DateTime<Utc>> {
    if let Ok(instant) = DateTime::parse_from_rfc3339(text) {
        return Ok(instant.with_timezone(&Utc));
    }
    if let Ok(date) = NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        return Ok(date
            .and_hms_opt(0, 0, 0)
            .expect("midnight exists")
            .and_utc());
    }
    bail!(
        "{flag}: bad time \"{text}\"; write RFC 3339 (2024-03-01T12:00:00Z) or a date (2024-03-01)"
    )
}

/// A time as the CLI prints it: RFC 3339 in UTC, to the second.
pub fn rfc3339(time: DateTime<Utc>) -> String {
    time.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// A duration as the CLI prints it: `1.2s`, `3m 4s`.
pub fn human_duration(start: Option<DateTime<Utc>>, end: Option<DateTime<Utc>>) -> String {
    match (start, end) {
        (Some(start), Some(end)) => {
            let millis = (end - start).num_milliseconds().max(0);
            if millis < 60_000 {
                format!("{:.1}s", millis as f64 / 1000.0)
            } else {
                let seconds = millis / 1000;
                humantime::format_duration(std::time::Duration::from_secs(seconds as u64))
                    .to_string()
            }
        }
        _ => String::new(),
    }
}

/// Left-aligned columns two spaces apart; the last column is not padded.
pub fn print_table<const N: usize>(header: [&str; N], rows: &[[String; N]]) {
    let mut widths = header.map(str::len);
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let format_row = |cells: Vec<&str>| {
        let mut line = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i + 1 == N {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<width$}  ", width = widths[i]));
            }
        }
        line.trim_end().to_owned()
    };
    println!("{}", format_row(header.to_vec()));
    for row in rows {
        println!("{}", format_row(row.iter().map(String::as_str).collect()));
    }
}
