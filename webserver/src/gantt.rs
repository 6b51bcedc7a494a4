//! The gantt view of one run: a row per task, a bar per try on a shared time axis, drawn as
//! SVG server-side. Pure: the caller passes the tries and the time "now" (for tries still
//! running).

use std::fmt::Write as _;

use chrono::{DateTime, Utc};
use updraft_core::state::TaskState;

/// Width of the task-name column and of the time area, in SVG user units.
const LABEL_WIDTH: f64 = 190.0;
const CHART_WIDTH: f64 = 760.0;
const ROW_HEIGHT: f64 = 24.0;
const BAR_HEIGHT: f64 = 14.0;
const AXIS_HEIGHT: f64 = 22.0;
/// A bar is at least this wide, so a try of a few milliseconds can still be seen and clicked.
const MIN_BAR: f64 = 2.0;
/// Roughly how many ticks the axis gets.
const TICKS: i64 = 6;

/// One task's row: its tries in order.
#[derive(Debug, Clone)]
pub struct GanttRow {
    pub task_id: String,
    pub tries: Vec<GanttTry>,
}

#[derive(Debug, Clone)]
pub struct GanttTry {
    pub try_number: i64,
    pub start: DateTime<Utc>,
    /// None while the try runs: its bar reaches `now`.
    pub end: Option<DateTime<Utc>>,
    pub state: TaskState,
    /// Where a click on the bar goes (the try's page).
    pub href: Option<String>,
}

/// Draws the rows as an inline SVG element; rows without tries are drawn empty. `None` when no
/// task has started yet (there is no time axis to draw).
pub fn render_svg(rows: &[GanttRow], now: DateTime<Utc>) -> Option<String> {
    let tries = rows.iter().flat_map(|row| &row.tries);
    let first = tries.clone().map(|t| t.start).min()?;
    let last = tries
        .map(|t| t.end.unwrap_or(now).max(t.start))
        .max()
        .unwrap_or(first);
    let span_ms = (last - first).num_milliseconds().max(1);
    let x_of = |at: DateTime<Utc>| {
        LABEL_WIDTH + (at - first).num_milliseconds() as f64 / span_ms as f64 * CHART_WIDTH
    };

    let width = LABEL_WIDTH + CHART_WIDTH + 10.0;
    let height = AXIS_HEIGHT + rows.len() as f64 * ROW_HEIGHT;
    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg class="gantt" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img" aria-label="gantt chart">"#
    );
    let step = tick_step_ms(span_ms);
    let mut tick = 0;
    while tick <= span_ms {
        let x = LABEL_WIDTH + tick as f64 / span_ms as f64 * CHART_WIDTH;
        let _ = write!(
            svg,
            r##"<line x1="{x}" y1="{AXIS_HEIGHT}" x2="{x}" y2="{height}" stroke="#e4e7ec"/><text x="{x}" y="14" font-size="11" text-anchor="middle" fill="#667085">+{}</text>"##,
            offset_label(tick)
        );
        tick += step;
    }
    for (i, row) in rows.iter().enumerate() {
        let top = AXIS_HEIGHT + i as f64 * ROW_HEIGHT;
        let _ = write!(
            svg,
            r#"<text x="{}" y="{}" font-size="12" text-anchor="end" dominant-baseline="middle">{}</text>"#,
            LABEL_WIDTH - 8.0,
            top + ROW_HEIGHT / 2.0,
            escape(&row.task_id)
        );
        for t in &row.tries {
            let end = t.end.unwrap_or(now).max(t.start);
            let x = x_of(t.start);
            let w = (x_of(end) - x).max(MIN_BAR);
            let state = t.state.as_str();
            let seconds = (end - t.start).num_milliseconds() as f64 / 1000.0;
            if let Some(href) = &t.href {
                let _ = write!(svg, r#"<a href="{}">"#, escape(href));
            }
            let _ = write!(
                svg,
                r#"<rect class="bar fill-{state}" data-task="{id}" data-try="{n}" data-state="{state}" x="{x}" y="{y}" width="{w}" height="{BAR_HEIGHT}" rx="3"><title>{id} try {n}: {state}, {seconds:.1} s</title></rect>"#,
                id = escape(&row.task_id),
                n = t.try_number,
                y = top + (ROW_HEIGHT - BAR_HEIGHT) / 2.0,
            );
            if t.href.is_some() {
                svg.push_str("</a>");
            }
        }
    }
    svg.push_str("</svg>");
    Some(svg)
}

/// A round step (1, 2 or 5 times a power of ten ms, or whole seconds/minutes/hours) giving
/// about [`TICKS`] ticks over `span_ms`.
fn tick_step_ms(span_ms: i64) -> i64 {
    const STEPS: [i64; 22] = [
        1, 2, 5, 10, 20, 50, 100, 200, 500, 1_000, 2_000, 5_000, 10_000, 15_000, 30_000, 60_000,
        120_000, 300_000, 600_000, 1_800_000, 3_600_000, 7_200_000,
    ];
    let wanted = span_ms / TICKS;
    STEPS
        .into_iter()
        .find(|&step| step >= wanted)
        .unwrap_or_else(|| (wanted + 3_599_999) / 3_600_000 * 3_600_000)
}

/// An offset from the first start: `250ms`, `4s`, `2m30s`, `1h5m`.
fn offset_label(ms: i64) -> String {
    match ms {
        0 => "0s".to_owned(),
        ms if ms < 1_000 => format!("{ms}ms"),
        ms if ms < 60_000 && ms % 1_000 != 0 => format!("{:.1}s", ms as f64 / 1000.0),
        ms if ms < 60_000 => format!("{}s", ms / 1000),
        ms if ms < 3_600_000 => match (ms / 60_000, ms % 60_000 / 1000) {
            (m, 0) => format!("{m}m"),
            (m, s) => format!("{m}m{s}s"),
        },
        ms => match (ms / 3_600_000, ms % 3_600_000 / 60_000) {
            (h, 0) => format!("{h}h"),
            (h, m) => format!("{h}h{m}m"),
        },
    }
}

fn escape(text: &str) -> String {
    crate::graph::escape(text)
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn at(second: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2024, 1, 1, 0, 0, second).unwrap()
    }

    fn attempt(n: i64, start: u32, end: Option<u32>, state: TaskState) -> GanttTry {
        GanttTry {
            try_number: n,
            start: at(start),
            end: end.map(at),
            state,
            href: Some(format!("/try/{n}")),
        }
    }

    /// The `x` and `width` of every bar, in order.
    fn bars(svg: &str) -> Vec<(f64, f64)> {
        svg.split("<rect class=\"bar ")
            .skip(1)
            .map(|bar| {
                let number = |name: &str| -> f64 {
                    let start = bar.find(&format!(" {name}=\"")).unwrap() + name.len() + 3;
                    let end = start + bar[start..].find('"').unwrap();
                    bar[start..end].parse().unwrap()
                };
                (number("x"), number("width"))
            })
            .collect()
    }

    #[test]
    fn bars_sit_on_one_time_axis_and_a_running_try_reaches_now() {
        let rows = vec![
            GanttRow {
                task_id: "extract".to_owned(),
                tries: vec![
                    attempt(1, 0, Some(10), TaskState::Failed),
                    attempt(2, 20, Some(30), TaskState::Success),
                ],
            },
            GanttRow {
                task_id: "load".to_owned(),
                tries: vec![attempt(1, 30, None, TaskState::Running)],
            },
            GanttRow {
                task_id: "report".to_owned(),
                tries: vec![],
            },
        ];
        let svg = render_svg(&rows, at(40)).unwrap();
        let unit = CHART_WIDTH / 40.0;
        assert_eq!(
            bars(&svg),
            [
                (LABEL_WIDTH, 10.0 * unit),
                (LABEL_WIDTH + 20.0 * unit, 10.0 * unit),
                (LABEL_WIDTH + 30.0 * unit, 10.0 * unit),
            ]
        );
        assert!(svg.contains(r#"data-task="extract" data-try="1" data-state="failed""#));
        assert!(svg.contains("bar fill-running"));
        assert!(svg.contains(r#"<a href="/try/2">"#));
        assert!(svg.contains(">report</text>"));
        assert!(svg.contains(">+10s</text>"), "{svg}");
    }

    #[test]
    fn nothing_to_draw_before_any_task_started() {
        let rows = vec![GanttRow {
            task_id: "a".to_owned(),
            tries: vec![],
        }];
        assert_eq!(render_svg(&rows, at(0)), None);
    }

    #[test]
    fn an_instant_try_still_gets_a_visible_bar_and_names_are_escaped() {
        let rows = vec![GanttRow {
            task_id: "<b>".to_owned(),
            tries: vec![attempt(1, 5, Some(5), TaskState::Success)],
        }];
        let svg = render_svg(&rows, at(5)).unwrap();
        assert_eq!(bars(&svg), [(LABEL_WIDTH, MIN_BAR)]);
        assert!(svg.contains("&lt;b&gt;") && !svg.contains("<b>"));
    }

    #[test]
    fn ticks_are_round_and_few() {
        assert_eq!(tick_step_ms(40_000), 10_000);
        assert_eq!(tick_step_ms(900), 200);
        assert_eq!(tick_step_ms(3 * 3_600_000), 1_800_000);
        assert_eq!(tick_step_ms(100 * 3_600_000), 17 * 3_600_000);
        assert_eq!(offset_label(150_000), "2m30s");
        assert_eq!(offset_label(3_900_000), "1h5m");
        assert_eq!(offset_label(2_500), "2.5s");
    }
}
