//! Retention (issue 18): deleting finished runs older than a cutoff, with their task instances,
//! tries, logs and outputs (the foreign keys cascade), and older events, a bounded batch per
//! transaction so that no lock is held for long while schedulers and workers go on.
//!
//! Kept whatever their age: runs not finished, each DAG's latest scheduled run (its next run
//! is computed from it: without it the schedule would start over, and catch up), and the runs
//! of a backfill still running or paused (its progress counts them).

use chrono::{DateTime, Utc};
use updraft_core::ids::{DagId, DagRunId};

use crate::db::{query, query_split};
use crate::{Error, Store};

/// Runs or events deleted per transaction at most: each holds its locks for a few milliseconds.
pub const CLEAN_BATCH: i64 = 500;

/// Task instances deleted per transaction at most (with their tries, logs and outputs): a
/// batch takes runs while their task instances fit, and one run at least.
pub const CLEAN_BATCH_TASK_INSTANCES: i64 = 5_000;

/// What a clean removed, or would remove.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Cleaned {
    pub runs: u64,
    pub task_instances: u64,
    pub events: u64,
}

impl std::ops::AddAssign for Cleaned {
    fn add_assign(&mut self, other: Cleaned) {
        self.runs += other.runs;
        self.task_instances += other.task_instances;
        self.events += other.events;
    }
}

/// What is old: the runs a clean may delete (see the module's documentation) ending before
/// `$1`, of DAG `$2` when it is not empty.
macro_rules! old_runs {
    () => {
        "r.state IN ('success', 'failed') AND r.end_date < $1 \
         AND ($2 = '' OR r.dag_id = $2) \
         AND NOT (r.run_type = 'scheduled' AND NOT EXISTS (SELECT 1 FROM dag_run l \
             WHERE l.dag_id = r.dag_id AND l.run_type = 'scheduled' \
               AND l.logical_date > r.logical_date)) \
         AND NOT EXISTS (SELECT 1 FROM backfill b \
             WHERE b.id = r.backfill_id AND b.state IN ('running', 'paused'))"
    };
}

impl Store {
    /// What [`Store::clean`] would delete now.
    pub async fn count_old(
        &self,
        cutoff: DateTime<Utc>,
        dag_id: Option<&DagId>,
    ) -> Result<Cleaned, Error> {
        let dag = dag_id.map_or("", DagId::as_str);
        let (runs, task_instances) = self
            .fetch_one(
                query(
                    "count old runs",
                    concat!(
                        "SELECT COUNT(*) AS runs, CAST(COALESCE(SUM((SELECT COUNT(*) \
                             FROM task_instance t WHERE t.dag_run_id = r.id)), 0) AS BIGINT) \
                             AS instances \
                         FROM dag_run r WHERE ",
                        old_runs!()
                    ),
                )
                .bind(cutoff)
                .bind(dag),
                |row| Ok((row.get::<i64>("runs")?, row.get::<i64>("instances")?)),
            )
            .await?;
        let events = self
            .fetch_one(
                query(
                    "count old events",
                    "SELECT COUNT(*) AS events FROM event_log \
                     WHERE at < $1 AND ($2 = '' OR dag_id = $2)",
                )
                .bind(cutoff)
                .bind(dag),
                |row| row.get::<i64>("events"),
            )
            .await?;
        Ok(Cleaned {
            runs: runs as u64,
            task_instances: task_instances as u64,
            events: events as u64,
        })
    }

    /// Deletes what is old before `cutoff` (of one DAG, or all), `batch` runs or events per
    /// transaction; `progress` hears what each batch deleted. Returns the whole.
    pub async fn clean(
        &self,
        cutoff: DateTime<Utc>,
        dag_id: Option<&DagId>,
        batch: i64,
        mut progress: impl FnMut(Cleaned),
    ) -> Result<Cleaned, Error> {
        let mut total = Cleaned::default();
        let mut after = DagRunId(0);
        while let Some((deleted, last)) = self.delete_old_runs(cutoff, dag_id, after, batch).await?
        {
            after = last;
            total += deleted;
            progress(deleted);
        }
        loop {
            let events = self.delete_old_events(cutoff, dag_id, batch).await?;
            if events == 0 {
                break;
            }
            let deleted = Cleaned {
                events,
                ..Cleaned::default()
            };
            total += deleted;
            progress(deleted);
        }
        Ok(total)
    }

    /// One batch: up to `batch` old runs after run `after`, by id, deleted in one transaction
    /// with what hangs on them; `None` when none is left. On Postgres the runs are locked as
    /// they are chosen (others' locked rows skipped), so a run cleared meanwhile is not taken.
    async fn delete_old_runs(
        &self,
        cutoff: DateTime<Utc>,
        dag_id: Option<&DagId>,
        after: DagRunId,
        batch: i64,
    ) -> Result<Option<(Cleaned, DagRunId)>, Error> {
        let dag = dag_id.map_or("", DagId::as_str);
        let mut tx = self.begin("delete old runs").await?;
        // Each with its task instances: the batch takes runs while they fit.
        let found: Vec<(DagRunId, i64)> = tx
            .fetch_all(
                query_split(
                    "find old runs",
                    concat!(
                        "SELECT r.id, (SELECT COUNT(*) FROM task_instance t \
                             WHERE t.dag_run_id = r.id) AS n \
                         FROM dag_run r WHERE r.id > $3 AND ",
                        old_runs!(),
                        " ORDER BY r.id LIMIT $4 FOR UPDATE OF r SKIP LOCKED"
                    ),
                    concat!(
                        "SELECT r.id, (SELECT COUNT(*) FROM task_instance t \
                             WHERE t.dag_run_id = r.id) AS n \
                         FROM dag_run r WHERE r.id > $3 AND ",
                        old_runs!(),
                        " ORDER BY r.id LIMIT $4"
                    ),
                )
                .bind(cutoff)
                .bind(dag)
                .bind(after)
                .bind(batch),
                |row| Ok((row.row_id("id")?, row.get::<i64>("n")?)),
            )
            .await?;
        let mut ids = Vec::new();
        let mut task_instances = 0;
        for (id, instances) in found {
            if !ids.is_empty() && task_instances + instances > CLEAN_BATCH_TASK_INSTANCES {
                break;
            }
            ids.push(id);
            task_instances += instances;
        }
        let Some(&last) = ids.last() else {
            return Ok(None);
        };
        let ids = serde_json::json!(ids);
        let runs = tx
            .execute(
                query_split(
                    "delete old runs",
                    "DELETE FROM dag_run \
                     WHERE id = ANY(ARRAY(SELECT jsonb_array_elements_text($1)::bigint))",
                    "DELETE FROM dag_run WHERE id IN (SELECT value FROM json_each($1))",
                )
                .bind(&ids),
            )
            .await?;
        tx.commit("delete old runs").await?;
        let deleted = Cleaned {
            runs,
            task_instances: task_instances as u64,
            events: 0,
        };
        Ok(Some((deleted, last)))
    }

    /// Deletes up to `batch` events older than `cutoff`, oldest first; returns how many.
    async fn delete_old_events(
        &self,
        cutoff: DateTime<Utc>,
        dag_id: Option<&DagId>,
        batch: i64,
    ) -> Result<u64, Error> {
        self.execute(
            query(
                "delete old events",
                "DELETE FROM event_log WHERE id IN (SELECT id FROM event_log \
                     WHERE at < $1 AND ($2 = '' OR dag_id = $2) ORDER BY id LIMIT $3)",
            )
            .bind(cutoff)
            .bind(dag_id.map_or("", DagId::as_str))
            .bind(batch),
        )
        .await
    }
}
