//! Cron lines as croniter (and so Airflow) reads them, rewritten into the syntax croner
//! reads the same way. A schedule copied from an Airflow DAG must mean the same here:
//! - `5/15` (from 5, every 15) becomes `5-59/15`; croner refuses the short form;
//! - a range that wraps around (`22-2`, `FRI-MON`) becomes two ranges;
//! - croniter's "last Friday" `L5` becomes croner's `5L`;
//! - names become numbers (a range ending in `SUN` ends in 7, so `SAT-SUN` does not wrap).
//!
//! Where the two already agree nothing changes. Notably both OR day-of-month with
//! day-of-week unless one of them is literally `*` (or `?`): Airflow runs `0 0 1-31 * MON`
//! every day, not on Mondays only, and so does croner.
//!
//! Anything not understood here passes through unchanged, for croner to accept or refuse
//! (`cron.rs` turns its refusals into messages).

/// What one field may hold.
struct Spec {
    /// As in messages: `day-of-month`.
    name: &'static str,
    /// What the field takes, for messages.
    takes: &'static str,
    min: u32,
    max: u32,
    /// Names for values from `names_from` on.
    names: &'static [&'static str],
    names_from: u32,
}

const SPECS: [Spec; 5] = [
    Spec {
        name: "minute",
        takes: "0-59",
        min: 0,
        max: 59,
        names: &[],
        names_from: 0,
    },
    Spec {
        name: "hour",
        takes: "0-23",
        min: 0,
        max: 23,
        names: &[],
        names_from: 0,
    },
    Spec {
        name: "day-of-month",
        takes: "1-31, L, W",
        min: 1,
        max: 31,
        names: &[],
        names_from: 0,
    },
    Spec {
        name: "month",
        takes: "1-12 or JAN-DEC",
        min: 1,
        max: 12,
        names: &[
            "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
        ],
        names_from: 1,
    },
    Spec {
        name: "day-of-week",
        takes: "0-7 or SUN-SAT, L, #",
        min: 0,
        max: 7,
        names: &["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"],
        names_from: 0,
    },
];

/// A field's name and what it takes, for messages about it.
pub(crate) fn describe_field(index: usize) -> (&'static str, &'static str) {
    (SPECS[index].name, SPECS[index].takes)
}

/// Rewrites five fields (already split) into croner's syntax. Errors only for what croner
/// would misread or explain badly; the message is the part after `invalid cron "...": `.
pub(crate) fn rewrite(fields: &[&str; 5]) -> Result<String, String> {
    let mut out: Vec<String> = Vec::with_capacity(5);
    for (raw, spec) in fields.iter().zip(&SPECS) {
        let field = rewrite_field(raw, spec).map_err(|problem| {
            format!(
                "{} field \"{raw}\": {problem} ({} takes {})",
                spec.name, spec.name, spec.takes
            )
        })?;
        out.push(field);
    }
    Ok(out.join(" "))
}

fn rewrite_field(raw: &str, spec: &Spec) -> Result<String, String> {
    let upper = raw.to_ascii_uppercase();
    let mut items = Vec::new();
    for item in upper.split(',') {
        items.push(match plain(item, spec)? {
            Some(text) => text,
            None => special(item, spec),
        });
    }
    Ok(items.join(","))
}

/// `*`, `?` (day fields), `n`, `a-b`, each with an optional `/step`, in croner's spelling.
/// `None`: not a plain item.
fn plain(item: &str, spec: &Spec) -> Result<Option<String>, String> {
    let (base, step) = match item.split_once('/') {
        Some((base, step)) => match step.parse::<u32>() {
            Ok(step) if step > 0 => (base, Some(step)),
            _ => return Ok(None),
        },
        None => (item, None),
    };
    let step_text = step.map(|s| format!("/{s}")).unwrap_or_default();
    let day_field = spec.name.starts_with("day");
    if base == "*" || (base == "?" && day_field) {
        return Ok(Some(format!("{base}{step_text}")));
    }
    if let Some((a, b)) = base.split_once('-') {
        let (Some(from), Some(mut to)) = (value(a, spec, false)?, value(b, spec, true)?) else {
            return Ok(None);
        };
        if from == 0 && b == "SUN" {
            // `SUN-SUN` is Sunday, not the whole week.
            to = 0;
        }
        if from <= to {
            return Ok(Some(format!("{from}-{to}{step_text}")));
        }
        if step.is_some() {
            return Err(format!(
                "the range {a}-{b} wraps around and cannot take a step; write it as a list"
            ));
        }
        return Ok(Some(format!("{from}-{},{}-{to}", spec.max, spec.min)));
    }
    let Some(from) = value(base, spec, false)? else {
        return Ok(None);
    };
    Ok(Some(match step {
        // croniter reads `5/15` as "from 5, every 15".
        Some(step) => format!("{from}-{}/{step}", spec.max),
        None => from.to_string(),
    }))
}

/// A number or a name within the field's range. `None`: neither (croner will say why).
/// A word that is not a name is an error here, because croner would report a stray letter
/// of what is left after its own name replacement ("illegal character 'D' in '1DAY'").
fn value(token: &str, spec: &Spec, range_end: bool) -> Result<Option<u32>, String> {
    if let Ok(number) = token.parse::<u32>() {
        return Ok((spec.min..=spec.max).contains(&number).then_some(number));
    }
    if let Some(index) = spec.names.iter().position(|name| *name == token) {
        let number = index as u32 + spec.names_from;
        return Ok(Some(if range_end && number == 0 { 7 } else { number }));
    }
    // `L`, `LW`: croner's to read.
    let special = token.chars().all(|c| c == 'L' || c == 'W');
    if special || !token.chars().all(|c| c.is_ascii_alphabetic()) {
        return Ok(None);
    }
    Err(if spec.names.is_empty() {
        format!("\"{token}\" is not a number")
    } else {
        format!("unknown name \"{token}\"")
    })
}

/// `L`/`W`/`#` items: croniter's `L5` as croner's `5L`, names as numbers; the rest as is.
fn special(item: &str, spec: &Spec) -> String {
    if spec.name != "day-of-week" {
        return item.to_owned();
    }
    let number = |day: &str| match value(day, spec, false) {
        Ok(Some(number)) => number.to_string(),
        _ => day.to_owned(),
    };
    if let Some((day, nth)) = item.split_once('#') {
        return format!("{}#{nth}", number(day));
    }
    match item.strip_suffix('L').or_else(|| item.strip_prefix('L')) {
        Some(day) if !day.is_empty() => format!("{}L", number(day)),
        _ => item.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rewritten(line: &str) -> Result<String, String> {
        let fields: Vec<&str> = line.split_whitespace().collect();
        rewrite(&fields.try_into().unwrap())
    }

    #[test]
    fn rewrites_croniter_spellings_for_croner() {
        let cases = [
            ("*/15 9-17 * * MON-FRI", "*/15 9-17 * * 1-5"),
            ("0 12 * JAN,JUL *", "0 12 * 1,7 *"),
            ("0 12 * jan,Jul *", "0 12 * 1,7 *"),
            ("5/15 * * * *", "5-59/15 * * * *"),
            ("0 22-2 * * *", "0 22-23,0-2 * * *"),
            ("0 0 * * FRI-MON", "0 0 * * 5-7,0-1"),
            ("0 0 * * SAT-SUN", "0 0 * * 6-7"),
            ("0 0 * * SUN-SUN", "0 0 * * 0-0"),
            ("0 0 * * L5", "0 0 * * 5L"),
            ("0 0 * * 5L", "0 0 * * 5L"),
            ("0 0 * * FRI#3", "0 0 * * 5#3"),
            ("0 0 * * WED#2", "0 0 * * 3#2"),
            ("0 0 1-31 * MON", "0 0 1-31 * 1"),
            ("0 0 13 * SUN-SAT", "0 0 13 * 0-6"),
            ("0 0 */10 * MON", "0 0 */10 * 1"),
            ("0 0 ? * MON", "0 0 ? * 1"),
            ("0 0 LW * *", "0 0 LW * *"),
            // Left for croner to judge.
            ("0 25 * * *", "0 25 * * *"),
            ("*/0 * * * *", "*/0 * * * *"),
            ("? * * * *", "? * * * *"),
        ];
        for (line, expected) in cases {
            assert_eq!(rewritten(line).as_deref(), Ok(expected), "{line}");
        }
    }

    #[test]
    fn explains_what_croner_would_misreport() {
        let cases = [
            (
                "0 0 * * MONDAY",
                "day-of-week field \"MONDAY\": unknown name \"MONDAY\" (day-of-week takes 0-7 \
                 or SUN-SAT, L, #)",
            ),
            (
                "0 0 * FOO *",
                "month field \"FOO\": unknown name \"FOO\" (month takes 1-12 or JAN-DEC)",
            ),
            (
                "x 0 * * *",
                "minute field \"x\": \"X\" is not a number (minute takes 0-59)",
            ),
            (
                "0 0 * * X",
                "day-of-week field \"X\": unknown name \"X\" (day-of-week takes 0-7 or SUN-SAT, \
                 L, #)",
            ),
            (
                "0 22-2/2 * * *",
                "hour field \"22-2/2\": the range 22-2 wraps around and cannot take a step; \
                 write it as a list (hour takes 0-23)",
            ),
        ];
        for (line, message) in cases {
            assert_eq!(rewritten(line).unwrap_err(), message, "{line}");
        }
    }
}
