//! The reads of the web UI and JSON API: pages of DAGs, runs, task instances and events with
//! their filters, the latest runs of each listed DAG, pool usage.
//!
//! Every query here is bounded by what a page shows: a `LIMIT` on an indexed order, or the
//! rows of ids a page already holds, never a scan whose cost grows with the table.

use chrono::{DateTime, Utc};
use serde::Serialize;
use updraft_core::ids::{DagId, TaskId};
use updraft_core::state::{DagRunState, RunType, TaskState};

use crate::db::{Row, query, query_split};
use crate::{Backfill, DagRow, DagRun, Error, EventLog, Store, TaskInstance};

/// Which DAGs a DAG list shows. Only active DAGs (their file still defines them) are listed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DagFilter {
    /// Part of the DAG id, any case.
    pub search: Option<String>,
    /// Only DAGs with this tag.
    pub tag: Option<String>,
    pub paused: Option<bool>,
}

/// Which runs of a DAG a run list shows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RunFilter {
    pub state: Option<DagRunState>,
    pub run_type: Option<RunType>,
}

/// A run as a state dot of the DAG list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RunDot {
    pub run_id: String,
    pub state: DagRunState,
    pub logical_date: DateTime<Utc>,
}

/// How many slots of a pool its task instances take now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct PoolUsage {
    pub running: i64,
    pub queued: i64,
}

/// `%`, `_` and `\` matched literally in a `LIKE ... ESCAPE '\'` pattern.
fn like_pattern(text: &str) -> String {
    let mut pattern = String::with_capacity(text.len() + 2);
    pattern.push('%');
    for c in text.to_lowercase().chars() {
        if matches!(c, '%' | '_' | '\\') {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    pattern.push('%');
    pattern
}

impl Store {
    /// A page of the active DAGs matching `filter`, by id.
    pub async fn list_dags_page(
        &self,
        filter: &DagFilter,
        limit: i64,
        offset: i64,
    ) -> Result<Vec<DagRow>, Error> {
        let search = filter.search.as_deref().map(like_pattern);
        self.fetch_all(
            query_split(
                "list dags",
                "SELECT * FROM dag WHERE is_active \
                   AND ($1::text IS NULL OR LOWER(dag_id) LIKE $1 ESCAPE '\\') \
                   AND ($2::text IS NULL OR tags ? $2) \
                   AND ($3::text IS NULL OR is_paused = ($3 = 'true')) \
                 ORDER BY dag_id LIMIT $4 OFFSET $5",
                "SELECT * FROM dag WHERE is_active \
                   AND ($1 IS NULL OR LOWER(dag_id) LIKE $1 ESCAPE '\\') \
                   AND ($2 IS NULL OR EXISTS (SELECT 1 FROM json_each(tags) WHERE value = $2)) \
                   AND ($3 IS NULL OR is_paused = ($3 = 'true')) \
                 ORDER BY dag_id LIMIT $4 OFFSET $5",
            )
            .bind(search.as_deref())
            .bind(filter.tag.as_deref())
            .bind(
                filter
                    .paused
                    .map(|paused| if paused { "true" } else { "false" }),
            )
            .bind(limit)
            .bind(offset),
            DagRow::from_row,
        )
        .await
    }

    /// Every tag of the active DAGs, sorted, for the DAG list's tag filter.
    pub async fn list_dag_tags(&self) -> Result<Vec<String>, Error> {
        self.fetch_all(
            query_split(
                "list dag tags",
                "SELECT DISTINCT jsonb_array_elements_text(tags) AS tag FROM dag \
                 WHERE is_active ORDER BY tag",
                "SELECT DISTINCT j.value AS tag FROM dag, json_each(dag.tags) j \
                 WHERE dag.is_active ORDER BY tag",
            ),
            |row| row.get("tag"),
        )
        .await
    }

    /// The latest `count` runs of a DAG by logical date, newest first: its state dots.
    pub async fn recent_runs(&self, dag_id: &DagId, count: i64) -> Result<Vec<RunDot>, Error> {
        self.fetch_all(
            query(
                "list recent runs",
                "SELECT run_id, state, logical_date FROM dag_run WHERE dag_id = $1 \
                 ORDER BY logical_date DESC, id DESC LIMIT $2",
            )
            .bind(dag_id.as_str())
            .bind(count),
            |row| {
                Ok(RunDot {
                    run_id: row.get("run_id")?,
                    state: row.name("state")?,
                    logical_date: row.get("logical_date")?,
                })
            },
        )
        .await
    }

    /// A page of a DAG's runs matching `filter`, newest logical date first.
    pub async fn list_runs_page(
        &self,
        dag_id: &DagId,
        filter: RunFilter,
        limit: i64,
        offset: i64,
    ) -> Result<Vec<DagRun>, Error> {
        self.fetch_all(
            query_split(
                "list dag runs",
                "SELECT * FROM dag_run \
                 WHERE dag_id = $1 AND ($2::text IS NULL OR state = $2) \
                   AND ($3::text IS NULL OR run_type = $3) \
                 ORDER BY logical_date DESC, id DESC LIMIT $4 OFFSET $5",
                "SELECT * FROM dag_run \
                 WHERE dag_id = $1 AND ($2 IS NULL OR state = $2) \
                   AND ($3 IS NULL OR run_type = $3) \
                 ORDER BY logical_date DESC, id DESC LIMIT $4 OFFSET $5",
            )
            .bind(dag_id.as_str())
            .bind(filter.state.map(DagRunState::as_str))
            .bind(filter.run_type.map(RunType::as_str))
            .bind(limit)
            .bind(offset),
            DagRun::from_row,
        )
        .await
    }

    /// The task instance of `task_id` in run `run_id` of `dag_id`.
    pub async fn find_task_instance(
        &self,
        dag_id: &DagId,
        run_id: &str,
        task_id: &TaskId,
    ) -> Result<Option<TaskInstance>, Error> {
        self.fetch_optional(
            query(
                "read a task instance",
                "SELECT ti.* FROM task_instance ti JOIN dag_run r ON r.id = ti.dag_run_id \
                 WHERE r.dag_id = $1 AND r.run_id = $2 AND ti.task_id = $3",
            )
            .bind(dag_id.as_str())
            .bind(run_id)
            .bind(task_id.as_str()),
            TaskInstance::from_row,
        )
        .await
    }

    /// The task instances of `task_ids` in the DAG's runs whose logical date lies in
    /// `[from, to]`, newest run first, at most `limit`: what a clear over past or future runs
    /// selects.
    pub async fn task_instances_in_range(
        &self,
        dag_id: &DagId,
        task_ids: &[TaskId],
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        limit: i64,
    ) -> Result<Vec<TaskInstance>, Error> {
        let task_ids = serde_json::json!(task_ids);
        self.fetch_all(
            query_split(
                "list task instances to clear",
                "SELECT ti.* FROM dag_run r JOIN task_instance ti ON ti.dag_run_id = r.id \
                 WHERE r.dag_id = $1 AND r.logical_date >= $2 AND r.logical_date <= $3 \
                   AND ti.task_id IN (SELECT jsonb_array_elements_text($4)) \
                 ORDER BY r.logical_date DESC, r.id DESC, ti.id LIMIT $5",
                "SELECT ti.* FROM dag_run r JOIN task_instance ti ON ti.dag_run_id = r.id \
                 WHERE r.dag_id = $1 AND r.logical_date >= $2 AND r.logical_date <= $3 \
                   AND ti.task_id IN (SELECT value FROM json_each($4)) \
                 ORDER BY r.logical_date DESC, r.id DESC, ti.id LIMIT $5",
            )
            .bind(dag_id.as_str())
            .bind(from)
            .bind(to)
            .bind(&task_ids)
            .bind(limit),
            TaskInstance::from_row,
        )
        .await
    }

    /// A page of the event log, newest first, of one DAG or of all.
    pub async fn list_events_page(
        &self,
        dag_id: Option<&DagId>,
        limit: i64,
        offset: i64,
    ) -> Result<Vec<EventLog>, Error> {
        // One text per case, so that each is planned with its own index (see `list_events`).
        let events = match dag_id {
            None => query(
                "list events",
                "SELECT * FROM event_log ORDER BY at DESC, id DESC LIMIT $1 OFFSET $2",
            )
            .bind(limit)
            .bind(offset),
            Some(dag_id) => query(
                "list events",
                "SELECT * FROM event_log WHERE dag_id = $3 \
                 ORDER BY at DESC, id DESC LIMIT $1 OFFSET $2",
            )
            .bind(limit)
            .bind(offset)
            .bind(dag_id.as_str()),
        };
        self.fetch_all(events, EventLog::from_row).await
    }

    /// A page of backfills, newest first, of one DAG or of all.
    pub async fn list_backfills_page(
        &self,
        dag_id: Option<&DagId>,
        limit: i64,
        offset: i64,
    ) -> Result<Vec<Backfill>, Error> {
        let backfills = match dag_id {
            None => query(
                "list backfills",
                "SELECT * FROM backfill ORDER BY created_at DESC, id DESC LIMIT $1 OFFSET $2",
            )
            .bind(limit)
            .bind(offset),
            Some(dag_id) => query(
                "list backfills",
                "SELECT * FROM backfill WHERE dag_id = $3 \
                 ORDER BY created_at DESC, id DESC LIMIT $1 OFFSET $2",
            )
            .bind(limit)
            .bind(offset)
            .bind(dag_id.as_str()),
        };
        self.fetch_all(backfills, Backfill::from_row).await
    }

    /// The slots each pool's `running` and `queued` task instances take, by pool name. Reads
    /// only the task instances in those two states (through the state index).
    pub async fn pool_usage(&self) -> Result<Vec<(String, PoolUsage)>, Error> {
        let rows = self
            .fetch_all(
                query(
                    "read pool usage",
                    "SELECT pool, state, SUM(pool_slots) AS slots FROM task_instance \
                     WHERE state IN ('running', 'queued') GROUP BY pool, state ORDER BY pool",
                ),
                |row: &Row<'_>| {
                    Ok((
                        row.get::<String>("pool")?,
                        row.name::<TaskState>("state")?,
                        row.get::<i64>("slots")?,
                    ))
                },
            )
            .await?;
        let mut usage: Vec<(String, PoolUsage)> = Vec::new();
        for (pool, state, slots) in rows {
            if usage.last().is_none_or(|(name, _)| *name != pool) {
                usage.push((pool, PoolUsage::default()));
            }
            let (_, entry) = usage.last_mut().expect("pushed above");
            match state {
                TaskState::Running => entry.running = slots,
                _ => entry.queued = slots,
            }
        }
        Ok(usage)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn like_patterns_match_wildcards_literally_and_ignore_case() {
        assert_eq!(like_pattern("Sales"), "%sales%");
        assert_eq!(like_pattern("a_b%c\\"), "%a\\_b\\%c\\\\%");
    }
}
