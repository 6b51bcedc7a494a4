//! What the commands show on the terminal and ask there: tables, times, durations,
//! confirmations, usage errors.

use std::fmt::Display;
use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result};
use chrono::{DateTime, Utc};

/// A time as the CLI prints it: RFC 3339 in UTC, to the second.
pub fn rfc3339(time: DateTime<Utc>) -> String {
    time.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// The duration from `start` to `end` as the CLI prints it (`updraft_core::time`); empty
/// while either is missing.
pub fn duration(start: Option<DateTime<Utc>>, end: Option<DateTime<Utc>>) -> String {
    updraft_core::time::duration_between(start, end)
}

/// Prints `error: message` for a command line that cannot be right, and returns exit code 2
/// (clap's code for the same kind of mistake).
pub fn usage_error(message: impl Display) -> i32 {
    eprintln!("error: {message}");
    2
}

/// Asks `question [y/N]` on the terminal; only `y` or `yes` is a yes.
pub fn confirm(question: &str) -> Result<bool> {
    print!("{question} [y/N] ");
    std::io::stdout().flush()?;
    let mut answer = String::new();
    std::io::stdin().read_line(&mut answer)?;
    Ok(matches!(
        answer.trim().to_ascii_lowercase().as_str(),
        "y" | "yes"
    ))
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

/// Who acts from this terminal: its user (`$USER`), or `cli`.
pub fn actor() -> updraft_ops::Actor {
    updraft_ops::Actor::Cli(
        std::env::var("USER")
            .ok()
            .filter(|user| !user.is_empty())
            .unwrap_or_else(|| "cli".to_owned()),
    )
}

/// Stdin without its final newline.
pub fn read_stdin() -> Result<String> {
    let mut text = String::new();
    std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)
        .context("cannot read the value from stdin")?;
    Ok(text.strip_suffix('\n').unwrap_or(&text).to_owned())
}

/// The JSON object in `file` (an import file), or a usage error's message saying why it is
/// not one; an unreadable file is an error.
pub fn json_object_file(
    file: &Path,
) -> Result<std::result::Result<serde_json::Map<String, serde_json::Value>, String>> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    Ok(match serde_json::from_str(&text) {
        Ok(serde_json::Value::Object(entries)) => Ok(entries),
        Ok(_) => Err(format!("{}: not a JSON object", file.display())),
        Err(error) => Err(format!("{}: {error}", file.display())),
    })
}

/// Writes `text` to `file` readable by its owner only (it holds secrets), or to stdout for `-`.
pub fn write_private(file: &Path, text: &str) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    if file == Path::new("-") {
        print!("{text}");
        return Ok(());
    }
    let mut out = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(file)
        .with_context(|| format!("cannot write {}", file.display()))?;
    out.write_all(text.as_bytes())?;
    eprintln!("wrote {}", file.display());
    Ok(())
}
