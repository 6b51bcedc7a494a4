//! The scheduler's part of backfills: the order in which a backward backfill's runs start.
//! What a backfill creates is planned in `updraft_core::backfill` and written by
//! `updraft_ops::backfill`.

use std::collections::{HashMap, HashSet};
use updraft_core::ids::BackfillId;

use updraft_metadata::DagRun;

/// The order in which the scheduler considers `runs` (given oldest logical date first) for
/// starting: the same, except that the runs of each backfill in `backwards` take each other's
/// places newest first, so that within its `max_active_runs` a backward backfill starts its
/// newest runs first. Returns indices into `runs`.
pub fn start_order(runs: &[DagRun], backwards: &HashSet<BackfillId>) -> Vec<usize> {
    let mut order: Vec<usize> = (0..runs.len()).collect();
    if backwards.is_empty() {
        return order;
    }
    let mut places: HashMap<BackfillId, Vec<usize>> = HashMap::new();
    for (index, run) in runs.iter().enumerate() {
        if let Some(backfill) = run.backfill_id.filter(|id| backwards.contains(id)) {
            places.entry(backfill).or_default().push(index);
        }
    }
    for indices in places.values() {
        for (place, index) in indices.iter().zip(indices.iter().rev()) {
            order[*place] = *index;
        }
    }
    order
}

#[cfg(test)]
mod tests {
    use chrono::{Duration, TimeZone, Utc};
    use updraft_core::ids::DagId;
    use updraft_core::state::{DagRunState, RunType};

    use super::*;
    use updraft_core::ids::DagRunId;

    fn run(id: i64, day: u32, backfill_id: Option<i64>) -> DagRun {
        let (id, backfill_id) = (DagRunId(id), backfill_id.map(BackfillId));
        let logical_date = Utc.with_ymd_and_hms(2024, 1, day, 0, 0, 0).unwrap();
        DagRun {
            id,
            dag_id: DagId::parse("sales").unwrap(),
            run_id: format!("r{id}"),
            run_type: RunType::Backfill,
            logical_date,
            data_interval_start: logical_date,
            data_interval_end: logical_date + Duration::days(1),
            run_after: logical_date + Duration::days(1),
            state: DagRunState::Queued,
            conf: serde_json::json!({}),
            version_hash: "v1".to_owned(),
            queued_at: None,
            start_date: None,
            end_date: None,
            backfill_id,
            deadline_missed_at: None,
        }
    }

    #[test]
    fn a_backward_backfill_starts_its_newest_runs_first_in_its_own_places() {
        // Oldest first, as the scheduler lists them: backfill 7 backwards, 8 forwards.
        let runs = [
            run(1, 1, Some(7)),
            run(2, 2, None),
            run(3, 3, Some(7)),
            run(4, 4, Some(8)),
            run(5, 5, Some(7)),
            run(6, 6, Some(8)),
        ];
        let order = start_order(&runs, &HashSet::from([BackfillId(7)]));
        let ids: Vec<DagRunId> = order.iter().map(|&index| runs[index].id).collect();
        assert_eq!(ids, [5, 2, 3, 4, 1, 6].map(DagRunId));
        let forwards = start_order(&runs, &HashSet::new());
        assert_eq!(forwards, [0, 1, 2, 3, 4, 5]);
    }
}
