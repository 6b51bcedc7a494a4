//! Cron patterns in words for people ("every Monday to Friday at 09:00"), for the patterns
//! people write most. Anything else gets no words (`None`), and callers show the cron text:
//! a wrong sentence is worse than none.

use croner::CronPattern;

const WEEKDAYS: [&str; 7] = [
    "Sunday",
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
];

const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];

/// When in the day a pattern fires.
enum Times {
    /// At these clock times.
    At(Vec<String>),
    /// Repeatedly: "every 15 minutes from 09:00 to 17:45".
    Every(String),
}

pub(crate) fn describe(pattern: &CronPattern) -> Option<String> {
    if pattern.days.has_modifiers() || pattern.days_of_week.has_modifiers() {
        return None;
    }
    let days = days(pattern)?;
    Some(
        match times(&pattern.minutes.values(), &pattern.hours.values())? {
            Times::At(times) => format!("{days} at {}", join_and(&times)),
            Times::Every(every) if days == "every day" => every,
            Times::Every(every) => format!("{every}, {days}"),
        },
    )
}

fn times(minutes: &[u16], hours: &[u16]) -> Option<Times> {
    if let ([minute], Some(step)) = (minutes, step_from_zero(hours, 24))
        && step > 1
        && hours.len() >= 3
    {
        return Some(Times::Every(match minute {
            0 => format!("every {step} hours"),
            _ => format!("every {step} hours at minute {minute}"),
        }));
    }
    if minutes.len() * hours.len() <= 4 {
        let mut times = Vec::new();
        for hour in hours {
            for minute in minutes {
                times.push(format!("{hour:02}:{minute:02}"));
            }
        }
        return Some(Times::At(times));
    }
    let per_hour = match minutes {
        [0] => "every hour".to_owned(),
        [minute] => format!("every hour at minute {minute}"),
        _ => match step_from_zero(minutes, 60)? {
            1 => "every minute".to_owned(),
            step => format!("every {step} minutes"),
        },
    };
    if hours.len() == 24 {
        return Some(Times::Every(per_hour));
    }
    let (first, last) = (hours[0], hours[hours.len() - 1]);
    if usize::from(last - first) + 1 != hours.len() {
        return None;
    }
    let (start, end) = (minutes[0], minutes[minutes.len() - 1]);
    // "from 09:05 to 17:05" already says which minute.
    let per_hour = if minutes.len() == 1 {
        "every hour".to_owned()
    } else {
        per_hour
    };
    Some(Times::Every(format!(
        "{per_hour} from {first:02}:{start:02} to {last:02}:{end:02}"
    )))
}

/// `n` when `values` is 0, n, 2n, ... below `limit`, and n divides `limit`.
fn step_from_zero(values: &[u16], limit: u16) -> Option<u16> {
    let [0, step, ..] = values else {
        return None;
    };
    let expected = (0..limit).step_by(usize::from(*step));
    (limit.is_multiple_of(*step) && values.iter().copied().eq(expected)).then_some(*step)
}

fn days(pattern: &CronPattern) -> Option<String> {
    let any_day = pattern.is_dom_wildcard();
    let any_weekday = pattern.is_dow_wildcard();
    let months = pattern.months.values();
    let month_names: Vec<&str> = months.iter().map(|m| MONTHS[usize::from(*m) - 1]).collect();
    let days = pattern.days.values();
    let day_list = join_and(&days.iter().map(u16::to_string).collect::<Vec<_>>());
    let day_word = if days.len() == 1 { "day" } else { "days" };
    let weekdays = weekdays(&pattern.days_of_week.values());
    Some(match (months.len() == 12, any_day, any_weekday) {
        (true, true, true) => "every day".to_owned(),
        (true, true, false) => format!("every {weekdays}"),
        (true, false, true) => format!("on {day_word} {day_list} of every month"),
        (true, false, false) => {
            format!("on {day_word} {day_list} of every month and every {weekdays}")
        }
        (false, true, true) => format!("every day in {}", join_and(&month_names)),
        (false, true, false) => format!("every {weekdays} in {}", join_and(&month_names)),
        (false, false, true) if months.len() == 1 && days.len() == 1 => {
            format!("every year on {} {}", month_names[0], days[0])
        }
        (false, false, true) => format!("on {day_word} {day_list} of {}", join_and(&month_names)),
        (false, false, false) => return None,
    })
}

/// "Monday to Friday", "Saturday and Sunday": Monday first, as calendars in most places.
fn weekdays(values: &[u16]) -> String {
    let mut days: Vec<u16> = values.iter().map(|d| (d + 6) % 7).collect();
    days.sort_unstable();
    let names: Vec<&str> = days
        .iter()
        .map(|d| WEEKDAYS[usize::from((d + 1) % 7)])
        .collect();
    let contiguous = days.windows(2).all(|pair| pair[1] == pair[0] + 1);
    if days.len() >= 3 && contiguous {
        format!("{} to {}", names[0], names[names.len() - 1])
    } else {
        join_and(&names)
    }
}

/// "a", "a and b", "a, b and c".
fn join_and<S: AsRef<str>>(items: &[S]) -> String {
    match items {
        [] => String::new(),
        [one] => one.as_ref().to_owned(),
        [rest @ .., last] => {
            let rest: Vec<&str> = rest.iter().map(AsRef::as_ref).collect();
            format!("{} and {}", rest.join(", "), last.as_ref())
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::schedule::CronSchedule;

    #[test]
    fn common_patterns_in_words() {
        let cases = [
            ("0 2 * * *", Some("every day at 02:00")),
            ("@daily", Some("every day at 00:00")),
            ("@hourly", Some("every hour")),
            ("@weekly", Some("every Sunday at 00:00")),
            ("@monthly", Some("on day 1 of every month at 00:00")),
            (
                "@quarterly",
                Some("on day 1 of January, April, July and October at 00:00"),
            ),
            ("@yearly", Some("every year on January 1 at 00:00")),
            ("* * * * *", Some("every minute")),
            ("*/15 * * * *", Some("every 15 minutes")),
            ("5 * * * *", Some("every hour at minute 5")),
            ("0 */6 * * *", Some("every 6 hours")),
            ("30 */2 * * *", Some("every 2 hours at minute 30")),
            ("0 9,18 * * *", Some("every day at 09:00 and 18:00")),
            ("5 9-17 * * *", Some("every hour from 09:05 to 17:05")),
            (
                "*/15 9-17 * * MON-FRI",
                Some("every 15 minutes from 09:00 to 17:45, every Monday to Friday"),
            ),
            ("0 9 * * MON-FRI", Some("every Monday to Friday at 09:00")),
            (
                "0 10 * * SAT,SUN",
                Some("every Saturday and Sunday at 10:00"),
            ),
            ("* * * * 7", Some("every minute, every Sunday")),
            (
                "0 0 1,15 * *",
                Some("on days 1 and 15 of every month at 00:00"),
            ),
            (
                "0 12 * JAN,JUL *",
                Some("every day in January and July at 12:00"),
            ),
            (
                "0 0 13 * FRI",
                Some("on day 13 of every month and every Friday at 00:00"),
            ),
            ("0 0 L * *", None),
            ("0 0 * * 5#3", None),
            ("7,19,41 3,5 * * *", None),
            ("0 0 13 JAN FRI", None),
        ];
        for (expression, words) in cases {
            let cron = CronSchedule::parse(expression).unwrap();
            assert_eq!(cron.describe().as_deref(), words, "{expression}");
        }
    }
}
