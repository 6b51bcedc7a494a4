//! The validated DAG: what a DAG file means once every key is parsed and checked.
//!
//! A `Dag` exists only after validation (`decode.rs`), so code that holds one may rely on its
//! invariants: task ids are unique, every `depends_on` names a task of the DAG, the graph is
//! acyclic, exactly one command per task. DAGs are stored as JSON in `dag_version`, so every
//! type here serializes, and the graph, which derives from `depends_on`, is rebuilt on demand.

use crate::hash::fnv1a;
use std::sync::OnceLock;
use std::time::Duration;

use indexmap::IndexMap;
use petgraph::graph::{DiGraph, NodeIndex};
use serde::{Deserialize, Serialize};

use crate::deadline::Deadline;
use crate::ids::{ConnectionId, DagId, TaskId};
use crate::notify::Notifier;
use crate::rate::RateLimit;
use crate::schedule::Timetable;
use crate::state::{HandlerName, TriggerRule};

/// The task defaults an Airflow user expects, where a file says nothing.
pub mod defaults {
    use std::time::Duration;

    pub const MAX_ACTIVE_RUNS: u32 = 16;
    pub const MAX_ACTIVE_TASKS: u32 = 16;
    pub const RETRY_DELAY: Duration = Duration::from_secs(300);
    pub const POOL: &str = "default_pool";
    pub const QUEUE: &str = "default";
    pub const PRIORITY_WEIGHT: i32 = 1;
    pub const SKIP_ON_EXIT_CODE: i32 = 99;
    pub const KILL_GRACE: Duration = Duration::from_secs(30);
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Dag {
    pub id: DagId,
    /// The file the DAG was loaded from, as given to the loader.
    pub fileloc: String,
    pub description: Option<String>,
    pub owner: Option<String>,
    pub tags: Vec<String>,
    /// Schedule, timezone, data interval mode, start and end dates, catchup.
    pub timetable: Timetable,
    pub max_active_runs: u32,
    pub max_active_tasks: u32,
    /// Whole-run deadline.
    #[serde(with = "humantime_opt")]
    pub timeout: Option<Duration>,
    pub params: IndexMap<String, Param>,
    /// Templated values, rendered per task instance.
    pub env: IndexMap<String, String>,
    /// Names of the worker's environment its tasks get (`crate::worker_env`).
    #[serde(default)]
    pub inherit_env: Vec<String>,
    /// In file order, which is the display order.
    pub tasks: IndexMap<TaskId, Task>,
    pub on_success: Option<Handler>,
    pub on_failure: Option<Handler>,
    /// When a run should have finished. Left out of the serialized DAG when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline: Option<Deadline>,
    /// Whom to tell of its runs' and tasks' events. Left out of the serialized DAG when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notify: Vec<Notifier>,
    /// Derived from the tasks' `depends_on`; node `i` is task `i`, edges go upstream -> downstream.
    #[serde(skip)]
    pub(super) graph: DerivedGraph,
}

/// The graph cache of a `Dag` and its topological order (task positions), computed once per
/// parsed version: the scheduler asks for the order at every step of every run. They derive
/// from the tasks, so they take no part in equality.
#[derive(Debug, Clone, Default)]
pub(super) struct DerivedGraph {
    graph: OnceLock<DiGraph<(), ()>>,
    order: OnceLock<Vec<usize>>,
}

impl PartialEq for DerivedGraph {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Task {
    pub id: TaskId,
    pub command: Command,
    pub depends_on: Vec<TaskId>,
    pub description: Option<String>,
    pub env: IndexMap<String, String>,
    /// Names of the worker's environment it gets, besides its DAG's (`crate::worker_env`).
    #[serde(default)]
    pub inherit_env: Vec<String>,
    /// Connections whose URI it gets as `UPDRAFT_CONN_<ID>` (Airflow's `AIRFLOW_CONN_*`).
    #[serde(default)]
    pub connections: Vec<ConnectionId>,
    pub working_dir: Option<String>,
    /// Tries after the first one.
    pub retries: u32,
    #[serde(with = "humantime_serde_compat")]
    pub retry_delay: Duration,
    pub retry_exponential_backoff: bool,
    #[serde(with = "humantime_opt")]
    pub max_retry_delay: Option<Duration>,
    /// Each retry waits a pseudo-random part of its delay (Celery's full jitter). Left out of
    /// the serialized DAG when off, so that DAGs without it keep their version.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub retry_jitter: bool,
    /// Per-try deadline.
    #[serde(with = "humantime_opt")]
    pub timeout: Option<Duration>,
    pub pool: String,
    pub pool_slots: u32,
    /// At most so many tries of this task start per period, across its runs (Celery's
    /// `rate_limit`). Left out of the serialized DAG when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimit>,
    pub priority_weight: i32,
    pub queue: String,
    pub trigger_rule: TriggerRule,
    /// Exit codes that end the try `skipped` instead of failed; never retried.
    pub skip_on_exit_code: Vec<i32>,
    /// Names read from `$UPDRAFT_OUTPUT` (`key=value` lines).
    pub outputs: Vec<String>,
    pub depends_on_past: bool,
    /// Between SIGTERM and SIGKILL of the process group.
    #[serde(with = "humantime_serde_compat")]
    pub kill_grace: Duration,
    pub on_success: Option<Handler>,
    pub on_failure: Option<Handler>,
    pub on_retry: Option<Handler>,
    /// When a task instance should have finished. Left out of the serialized DAG when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline: Option<Deadline>,
    /// Whom to tell of its events. Left out of the serialized DAG when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notify: Vec<Notifier>,
}

/// What a task runs: a shell command line, or an argv with no shell.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Command {
    Run(String),
    Exec(Vec<String>),
}

/// A command run when a DAG or task succeeds, fails or retries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Handler {
    pub command: Command,
    pub env: IndexMap<String, String>,
}

/// A typed DAG parameter; a form field in the UI, checked before a run is created.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Param {
    #[serde(rename = "type")]
    pub kind: ParamType,
    pub default: Option<serde_json::Value>,
    pub description: Option<String>,
    /// When not empty, the value must be one of these.
    #[serde(rename = "enum")]
    pub allowed: Vec<serde_json::Value>,
    pub minimum: Option<f64>,
    pub maximum: Option<f64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ParamType {
    String,
    Integer,
    Number,
    Boolean,
    Array,
    Object,
}

impl ParamType {
    pub const NAMES: &'static [&'static str] =
        &["string", "integer", "number", "boolean", "array", "object"];

    pub fn parse(name: &str) -> Option<ParamType> {
        Some(match name {
            "string" => ParamType::String,
            "integer" => ParamType::Integer,
            "number" => ParamType::Number,
            "boolean" => ParamType::Boolean,
            "array" => ParamType::Array,
            "object" => ParamType::Object,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        Self::NAMES[self as usize]
    }

    /// The type a bare value declares, for the `name: value` shorthand.
    pub fn of(value: &serde_json::Value) -> ParamType {
        match value {
            serde_json::Value::Bool(_) => ParamType::Boolean,
            serde_json::Value::Number(n) if n.is_i64() || n.is_u64() => ParamType::Integer,
            serde_json::Value::Number(_) => ParamType::Number,
            serde_json::Value::Array(_) => ParamType::Array,
            serde_json::Value::Object(_) => ParamType::Object,
            serde_json::Value::String(_) | serde_json::Value::Null => ParamType::String,
        }
    }
}

impl Param {
    /// Checks a value against this param's type, enum and bounds.
    pub fn check(&self, value: &serde_json::Value) -> Result<(), String> {
        use serde_json::Value as J;
        let type_ok = match (self.kind, value) {
            (ParamType::String, J::String(_)) | (ParamType::Boolean, J::Bool(_)) => true,
            (ParamType::Integer, J::Number(n)) => n.is_i64() || n.is_u64(),
            (ParamType::Number, J::Number(_)) => true,
            (ParamType::Array, J::Array(_)) | (ParamType::Object, J::Object(_)) => true,
            _ => false,
        };
        if !type_ok {
            return Err(format!("expected {}, found {value}", self.kind.as_str()));
        }
        if !self.allowed.is_empty() && !self.allowed.contains(value) {
            let allowed: Vec<String> = self.allowed.iter().map(|v| v.to_string()).collect();
            return Err(format!("{value} is not one of {}", allowed.join(", ")));
        }
        if let Some(number) = value.as_f64() {
            if let Some(minimum) = self.minimum.filter(|m| number < *m) {
                return Err(format!("{value} is less than the minimum {minimum}"));
            }
            if let Some(maximum) = self.maximum.filter(|m| number > *m) {
                return Err(format!("{value} is more than the maximum {maximum}"));
            }
        }
        Ok(())
    }
}

impl Dag {
    /// The DAG's handler `name`, if it declares one (a DAG has no `on_retry`).
    pub fn handler(&self, name: HandlerName) -> Option<&Handler> {
        match name {
            HandlerName::OnSuccess => self.on_success.as_ref(),
            HandlerName::OnFailure => self.on_failure.as_ref(),
            HandlerName::OnRetry => None,
        }
    }

    /// The dependency graph: node `i` is the `i`-th task, edges point downstream.
    pub fn graph(&self) -> &DiGraph<(), ()> {
        self.graph.graph.get_or_init(|| build_graph(&self.tasks))
    }

    pub fn task(&self, id: &str) -> Option<&Task> {
        self.tasks.get(id)
    }

    fn index_of(&self, id: &str) -> Option<NodeIndex> {
        self.tasks.get_index_of(id).map(NodeIndex::new)
    }

    fn task_at(&self, index: NodeIndex) -> &Task {
        &self.tasks[index.index()]
    }

    /// Tasks with no downstream task: their states decide the run's state.
    pub fn leaves(&self) -> impl Iterator<Item = &Task> {
        let graph = self.graph();
        graph
            .node_indices()
            .filter(|&n| {
                graph
                    .neighbors_directed(n, petgraph::Direction::Outgoing)
                    .next()
                    .is_none()
            })
            .map(|n| self.task_at(n))
    }

    /// Tasks that depend on `id`, directly or not, in file order.
    pub fn downstream(&self, id: &str) -> Vec<&Task> {
        self.reachable(id, petgraph::Direction::Outgoing)
    }

    /// Tasks `id` depends on, directly or not, in file order.
    pub fn upstream(&self, id: &str) -> Vec<&Task> {
        self.reachable(id, petgraph::Direction::Incoming)
    }

    fn reachable(&self, id: &str, direction: petgraph::Direction) -> Vec<&Task> {
        let Some(start) = self.index_of(id) else {
            return Vec::new();
        };
        let graph = self.graph();
        let mut seen = vec![false; graph.node_count()];
        let mut stack = vec![start];
        while let Some(node) = stack.pop() {
            for next in graph.neighbors_directed(node, direction) {
                if !std::mem::replace(&mut seen[next.index()], true) {
                    stack.push(next);
                }
            }
        }
        (0..seen.len())
            .filter(|&i| seen[i])
            .map(|i| self.task_at(NodeIndex::new(i)))
            .collect()
    }

    /// Tasks in an order where every task comes after its upstream tasks (file order breaks
    /// ties, so the order is stable).
    pub fn topological_order(&self) -> Vec<&Task> {
        let order = self.graph.order.get_or_init(|| self.sort_topologically());
        order.iter().map(|&i| &self.tasks[i]).collect()
    }

    /// Task positions in [`Dag::topological_order`].
    fn sort_topologically(&self) -> Vec<usize> {
        let graph = self.graph();
        let mut pending: Vec<usize> = graph
            .node_indices()
            .map(|n| {
                graph
                    .neighbors_directed(n, petgraph::Direction::Incoming)
                    .count()
            })
            .collect();
        let mut ready: std::collections::BTreeSet<usize> =
            (0..pending.len()).filter(|&i| pending[i] == 0).collect();
        let mut order = Vec::with_capacity(pending.len());
        while let Some(i) = ready.pop_first() {
            order.push(i);
            for next in graph.neighbors_directed(NodeIndex::new(i), petgraph::Direction::Outgoing) {
                pending[next.index()] -= 1;
                if pending[next.index()] == 0 {
                    ready.insert(next.index());
                }
            }
        }
        order
    }

    /// A stable fingerprint of what the DAG means (not of its file's formatting): runs record
    /// the version they started with.
    pub fn version_hash(&self) -> String {
        let json = serde_json::to_vec(self).expect("a Dag always serializes");
        format!("{:016x}", fnv1a(&json))
    }
}

pub(super) fn build_graph(tasks: &IndexMap<TaskId, Task>) -> DiGraph<(), ()> {
    let mut graph = DiGraph::with_capacity(tasks.len(), tasks.len());
    for _ in 0..tasks.len() {
        graph.add_node(());
    }
    for (index, task) in tasks.values().enumerate() {
        for upstream in &task.depends_on {
            if let Some(from) = tasks.get_index_of(upstream) {
                graph.add_edge(NodeIndex::new(from), NodeIndex::new(index), ());
            }
        }
    }
    graph
}

/// Durations as humantime text (`30s`, `1h 30m`) in the stored JSON.
pub(crate) mod humantime_serde_compat {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(value: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(&humantime::format_duration(*value))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(deserializer)?;
        humantime::parse_duration(&text).map_err(serde::de::Error::custom)
    }
}

pub(crate) mod humantime_opt {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(
        value: &Option<Duration>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match value {
            Some(duration) => serializer.collect_str(&humantime::format_duration(*duration)),
            None => serializer.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<Duration>, D::Error> {
        Option::<String>::deserialize(deserializer)?
            .map(|text| humantime::parse_duration(&text).map_err(serde::de::Error::custom))
            .transpose()
    }
}
