//! What the bench prints: each workload's figures over its runs (median and spread) beside
//! their floors, as text lines or as one JSON document.

use serde::Serialize;

use crate::floors::Floor;

/// What one run of a workload measured.
#[derive(Debug, Serialize)]
pub struct Figure {
    pub workload: String,
    pub metric: &'static str,
    pub value: f64,
    pub unit: &'static str,
    /// The floor this figure is compared with, and how many times the floor it is
    /// (fanout-1000: its task rate as a share of the floor's spawn rate).
    pub floor: &'static str,
    pub ratio: f64,
    /// What the workload checked (so a fast wrong answer cannot pass).
    pub checked: String,
}

/// A figure over the runs of its workload: the median run's figure (its `value` is the
/// median), beside the spread of all of them.
#[derive(Debug, Serialize)]
pub struct Summary {
    #[serde(flatten)]
    median: Figure,
    min: f64,
    max: f64,
    /// Every run's value, in the order they ran.
    values: Vec<f64>,
}

/// The `--json` document.
#[derive(Debug, Serialize)]
pub struct Report {
    pub floors: Vec<Floor>,
    pub figures: Vec<Summary>,
}

/// Each figure over the runs of its workload (`runs`: the figures of each run), grouped by
/// workload and metric in the order they first appear. The median of an even count is the
/// upper of the middle two.
pub fn summarize(runs: Vec<Vec<Figure>>) -> Vec<Summary> {
    let mut groups: Vec<Vec<Figure>> = Vec::new();
    for figure in runs.into_iter().flatten() {
        let group = groups
            .iter_mut()
            .find(|group| group[0].workload == figure.workload && group[0].metric == figure.metric);
        match group {
            Some(group) => group.push(figure),
            None => groups.push(vec![figure]),
        }
    }
    groups
        .into_iter()
        .map(|mut group| {
            let values: Vec<f64> = group.iter().map(|figure| figure.value).collect();
            group.sort_by(|a, b| a.value.total_cmp(&b.value));
            let (min, max) = (group[0].value, group[group.len() - 1].value);
            let median = group.swap_remove(group.len() / 2);
            Summary {
                median,
                min,
                max,
                values,
            }
        })
        .collect()
}

pub fn print_summary(summary: &Summary) {
    let figure = &summary.median;
    let runs = summary.values.len();
    println!(
        "{:<22} {}: median {:.3} {} ({:.3}-{:.3} over {runs} run{}); {:.2}x the floor \"{}\"; {}",
        figure.workload,
        figure.metric,
        figure.value,
        figure.unit,
        summary.min,
        summary.max,
        if runs == 1 { "" } else { "s" },
        figure.ratio,
        figure.floor,
        figure.checked
    );
}

/// Seconds in the unit that reads best: µs, ms or s.
pub fn human(seconds: f64) -> String {
    if seconds < 1e-3 {
        format!("{:.1} µs", seconds * 1e6)
    } else if seconds < 1.0 {
        format!("{:.2} ms", seconds * 1e3)
    } else {
        format!("{seconds:.2} s")
    }
}
