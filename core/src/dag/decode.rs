//! Decodes the YAML tree of one DAG file into a validated `Dag`, collecting every problem of
//! the file instead of stopping at the first.
//!
//! Messages are lowercase and name where the problem is (`task "load": ...`); the position of
//! each is the node it is about. This module reads no files: `load.rs` does.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::time::Duration;

use chrono::{DateTime, NaiveTime, Utc};
use chrono_tz::Tz;
use indexmap::{IndexMap, IndexSet};

use super::model::{Command, Dag, Handler, Param, ParamType, Task, defaults};
use super::yaml::{self, Node, Pos, Value};
use crate::deadline::Deadline;
use crate::ids::{ConnectionId, DagId, TaskId};
use crate::notify::{Channel, Notifier, NotifyEvent};
use crate::rate::RateLimit;
use crate::schedule::{DataIntervalMode, Jitter, Schedule, Timetable, parse_timezone};
use crate::state::TriggerRule;
use crate::suggest::did_you_mean;
use crate::template;

/// One problem in a DAG file.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Diagnostic {
    pub pos: Pos,
    pub message: String,
}

/// What the loader needs to know beyond the file.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// For DAGs whose schedule names no timezone.
    pub default_timezone: Tz,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            default_timezone: Tz::UTC,
        }
    }
}

pub const DAG_KEYS: &[&str] = &[
    "version",
    "id",
    "description",
    "owner",
    "tags",
    "schedule",
    "start_date",
    "end_date",
    "catchup",
    "max_active_runs",
    "max_active_tasks",
    "timeout",
    "params",
    "env",
    "inherit_env",
    "defaults",
    "tasks",
    "on_success",
    "on_failure",
    "deadline",
    "notify",
];

pub const TASK_KEYS: &[&str] = &[
    "run",
    "exec",
    "depends_on",
    "description",
    "env",
    "inherit_env",
    "connections",
    "working_dir",
    "retries",
    "retry_delay",
    "retry_exponential_backoff",
    "retry_jitter",
    "max_retry_delay",
    "timeout",
    "pool",
    "pool_slots",
    "rate_limit",
    "priority_weight",
    "queue",
    "trigger_rule",
    "skip_on_exit_code",
    "outputs",
    "depends_on_past",
    "kill_grace",
    "on_success",
    "on_failure",
    "on_retry",
    "deadline",
    "notify",
];

/// The keys of a `notify:` entry: its events and one channel.
pub const NOTIFY_KEYS: &[&str] = &["on", "webhook", "slack", "teams", "email", "command"];
const NOTIFY_CHANNELS: &[&str] = &["webhook", "slack", "teams", "email", "command"];

pub const DEADLINE_KEYS: &[&str] = &["after_interval_end", "after_start", "at"];

/// Airflow's names of keys we have under another name, and how to write ours.
const AIRFLOW_KEYS: &[(&str, &str)] = &[("sla", "deadline: {after_interval_end: 2h}")];

/// Task keys that make no sense for every task at once.
const NOT_DEFAULTS: &[&str] = &["run", "exec", "depends_on", "description"];

pub const SCHEDULE_KEYS: &[&str] = &[
    "cron",
    "every",
    "timezone",
    "data_interval",
    "jitter",
    "misfire_grace",
];

/// What a schedule says besides when it ticks: one per DAG, shared by the items of a list.
#[derive(Debug, Clone, Copy, PartialEq)]
struct ScheduleOptions {
    tz: Tz,
    mode: DataIntervalMode,
    jitter: Option<Duration>,
    misfire_grace: Option<Duration>,
}

impl ScheduleOptions {
    fn new(options: &LoadOptions) -> ScheduleOptions {
        ScheduleOptions {
            tz: options.default_timezone,
            mode: DataIntervalMode::Previous,
            jitter: None,
            misfire_grace: None,
        }
    }
}
pub const PARAM_KEYS: &[&str] = &[
    "type",
    "default",
    "description",
    "enum",
    "minimum",
    "maximum",
];
pub const HANDLER_KEYS: &[&str] = &["run", "exec", "env"];

/// Decodes and validates one DAG file's text. `fileloc` names the file in the `Dag`; its stem is
/// the default DAG id.
pub fn decode(fileloc: &str, text: &str, options: &LoadOptions) -> Result<Dag, Vec<Diagnostic>> {
    let root = yaml::parse(text).map_err(|error| {
        vec![Diagnostic {
            pos: error.pos,
            message: error.message,
        }]
    })?;
    let mut decoder = Decoder {
        text,
        diagnostics: Vec::new(),
        templates: Vec::new(),
    };
    let dag = decoder.dag(fileloc, &root, options);
    let mut diagnostics = decoder.diagnostics;
    match dag {
        Some(dag) if diagnostics.is_empty() => Ok(dag),
        _ => {
            diagnostics.sort();
            // A bad `defaults` key is decoded once per task: report it once.
            diagnostics.dedup();
            Err(diagnostics)
        }
    }
}

/// A templated string met while decoding, checked once the tasks and graph are known.
struct TemplateUse {
    pos: Pos,
    /// `task "load": "run"`, for messages.
    context: String,
    key: &'static str,
    text: String,
    /// The task whose command or env holds it; `None` at DAG level.
    task: Option<usize>,
}

struct Decoder<'t> {
    text: &'t str,
    diagnostics: Vec<Diagnostic>,
    templates: Vec<TemplateUse>,
}

/// The entries of a mapping, after duplicate and unknown keys were reported.
struct Fields<'n> {
    entries: Vec<(&'n Node, &'n Node)>,
}

impl<'n> Fields<'n> {
    fn get(&self, key: &str) -> Option<&'n Node> {
        self.entries
            .iter()
            .find(|(k, _)| k.as_str() == Some(key))
            .map(|(_, v)| *v)
    }

    fn key_pos(&self, key: &str) -> Option<Pos> {
        self.entries
            .iter()
            .find(|(k, _)| k.as_str() == Some(key))
            .map(|(k, _)| k.pos)
    }
}

impl<'t> Decoder<'t> {
    fn error(&mut self, pos: Pos, message: String) {
        self.diagnostics.push(Diagnostic { pos, message });
    }

    /// The entries of a mapping with string keys; a repeated key is reported as a duplicate
    /// `what` and dropped (the first one counts).
    fn entries<'n>(
        &mut self,
        node: &'n Node,
        context: &str,
        key: &str,
        what: &str,
    ) -> Option<Vec<(&'n Node, &'n Node)>> {
        let Value::Map(entries) = &node.value else {
            self.wrong_type(node, context, key, "a mapping");
            return None;
        };
        let mut first_seen: HashMap<&str, Pos> = HashMap::with_capacity(entries.len());
        let mut kept = Vec::with_capacity(entries.len());
        for (k, v) in entries {
            let Some(name) = k.as_str() else {
                self.error(
                    k.pos,
                    format!("{context}keys must be strings, found {}", k.value.kind()),
                );
                continue;
            };
            if let Some(first) = first_seen.get(name) {
                self.error(
                    k.pos,
                    format!(
                        "{context}duplicate {what} \"{name}\" (first defined at line {})",
                        first.line
                    ),
                );
                continue;
            }
            first_seen.insert(name, k.pos);
            kept.push((k, v));
        }
        Some(kept)
    }

    /// A mapping whose keys must be among `allowed`.
    fn fields<'n>(
        &mut self,
        node: &'n Node,
        allowed: &[&str],
        context: &str,
        key: &str,
    ) -> Option<Fields<'n>> {
        let entries = self.entries(node, context, key, "key")?;
        for (k, _) in &entries {
            let name = k.as_str().unwrap_or_default();
            if !allowed.contains(&name) {
                let hint = match AIRFLOW_KEYS.iter().find(|(airflow, _)| *airflow == name) {
                    Some((_, ours)) => format!(" (Airflow's name; write `{ours}`)"),
                    None => did_you_mean(name, allowed.iter().copied()),
                };
                self.error(k.pos, format!("{context}unknown key \"{name}\"{hint}"));
            }
        }
        Some(Fields { entries })
    }

    fn wrong_type(&mut self, node: &Node, context: &str, key: &str, expected: &str) {
        let found = match &node.value {
            Value::Str(text) => format!("the string \"{text}\""),
            Value::Int(number) => format!("the integer {number}"),
            Value::Bool(flag) => format!("the boolean {flag}"),
            other => other.kind().to_owned(),
        };
        let subject = if key.is_empty() {
            "the file".to_owned()
        } else {
            format!("\"{key}\"")
        };
        let mut message = format!("{context}{subject} must be {expected}, found {found}");
        if matches!(node.value, Value::Map(_)) && self.starts_with_brace(node.pos) {
            message.push_str(
                "; YAML reads an unquoted {{ ... }} as a mapping: put the value in quotes",
            );
        }
        self.error(node.pos, message);
    }

    /// Whether the source text at `pos` opens a flow mapping, as `{{ ds }}` does unquoted.
    fn starts_with_brace(&self, pos: Pos) -> bool {
        self.text
            .lines()
            .nth(pos.line.saturating_sub(1) as usize)
            .and_then(|line| line.chars().nth(pos.col.saturating_sub(1) as usize))
            == Some('{')
    }

    fn string(&mut self, node: &Node, context: &str, key: &str) -> Option<String> {
        match &node.value {
            Value::Str(text) => Some(text.clone()),
            _ => {
                self.wrong_type(node, context, key, "a string");
                None
            }
        }
    }

    /// Environment values: any scalar, as its text.
    fn scalar_text(&mut self, node: &Node, context: &str, key: &str) -> Option<String> {
        match &node.value {
            Value::Str(text) => Some(text.clone()),
            Value::Int(number) => Some(number.to_string()),
            Value::Float(number) => Some(number.to_string()),
            Value::Bool(flag) => Some(flag.to_string()),
            _ => {
                self.wrong_type(node, context, key, "a string");
                None
            }
        }
    }

    fn boolean(&mut self, node: &Node, context: &str, key: &str) -> Option<bool> {
        match node.value {
            Value::Bool(flag) => Some(flag),
            _ => {
                self.wrong_type(node, context, key, "true or false");
                None
            }
        }
    }

    fn integer(&mut self, node: &Node, context: &str, key: &str, min: i64) -> Option<i64> {
        match node.value {
            Value::Int(number) if number >= min && number <= i64::from(i32::MAX) => Some(number),
            Value::Int(number) => {
                self.error(
                    node.pos,
                    format!("{context}\"{key}\" must be at least {min}, found {number}"),
                );
                None
            }
            _ => {
                let expected = match min {
                    0 => "a whole number (0 or more)",
                    1 => "a whole number (1 or more)",
                    _ => "a whole number",
                };
                self.wrong_type(node, context, key, expected);
                None
            }
        }
    }

    fn count(&mut self, node: &Node, context: &str, key: &str, min: i64) -> Option<u32> {
        self.integer(node, context, key, min).map(|n| n as u32)
    }

    fn rate_limit(&mut self, node: &Node, context: &str) -> Option<RateLimit> {
        let text = self.string(node, context, "rate_limit")?;
        match text.parse() {
            Ok(limit) => Some(limit),
            Err(message) => {
                self.error(node.pos, format!("{context}\"rate_limit\": {message}"));
                None
            }
        }
    }

    fn duration(&mut self, node: &Node, context: &str, key: &str) -> Option<Duration> {
        match &node.value {
            Value::Str(text) => match humantime::parse_duration(text) {
                Ok(duration) => Some(duration),
                Err(error) => {
                    self.error(
                        node.pos,
                        format!(
                            "{context}\"{key}\": bad duration \"{text}\" ({error}); \
                             write e.g. 30s, 5m or 1h30m"
                        ),
                    );
                    None
                }
            },
            Value::Int(number) => {
                self.error(
                    node.pos,
                    format!(
                        "{context}\"{key}\": bad duration {number}: give a unit, e.g. {}",
                        suggest_unit(*number)
                    ),
                );
                None
            }
            _ => {
                self.wrong_type(node, context, key, "a duration such as 30s or 1h30m");
                None
            }
        }
    }

    /// A string, or a list of strings.
    fn string_list(&mut self, node: &Node, context: &str, key: &str) -> Option<Vec<String>> {
        match &node.value {
            Value::Str(text) => Some(vec![text.clone()]),
            Value::Seq(items) => {
                let mut out = Vec::with_capacity(items.len());
                for item in items {
                    out.push(self.string(item, context, key)?);
                }
                Some(out)
            }
            Value::Null => Some(Vec::new()),
            _ => {
                self.wrong_type(node, context, key, "a string or a list of strings");
                None
            }
        }
    }

    fn template(&mut self, node: &Node, context: &str, key: &'static str, task: Option<usize>) {
        if let Value::Str(text) = &node.value
            && template::is_templated(text)
        {
            self.templates.push(TemplateUse {
                pos: node.pos,
                context: context.to_owned(),
                key,
                text: text.clone(),
                task,
            });
        }
    }

    /// A date or date-time in `tz`: `2024-01-01` is midnight there; an RFC 3339 value with an
    /// offset means that instant.
    fn date(&mut self, node: &Node, key: &str, tz: Tz) -> Option<DateTime<Utc>> {
        let Value::Str(text) = &node.value else {
            self.wrong_type(
                node,
                "",
                key,
                "a date (YYYY-MM-DD) or an RFC 3339 date-time",
            );
            return None;
        };
        let parsed = crate::time::parse_time(text, tz);
        if parsed.is_none() {
            self.error(
                node.pos,
                format!(
                    "\"{key}\": bad date \"{text}\"; write YYYY-MM-DD, or a date-time such as \
                     2024-01-01T06:00:00 (in the DAG's timezone) or 2024-01-01T06:00:00Z"
                ),
            );
        }
        parsed
    }

    fn dag(&mut self, fileloc: &str, root: &Node, options: &LoadOptions) -> Option<Dag> {
        if root.value == Value::Null {
            self.error(
                root.pos,
                "the file is empty; a DAG file needs at least \"tasks\"".to_owned(),
            );
            return None;
        }
        let fields = self.fields(root, DAG_KEYS, "", "")?;

        if let Some(node) = fields.get("version")
            && node.value != Value::Int(1)
        {
            self.error(
                node.pos,
                "unsupported \"version\": this updraft reads DAG format version 1".to_owned(),
            );
        }
        let id = self.dag_id(&fields, fileloc);
        let description = fields
            .get("description")
            .and_then(|n| self.string(n, "", "description"));
        let owner = fields
            .get("owner")
            .and_then(|n| self.string(n, "", "owner"));
        let tags = fields
            .get("tags")
            .and_then(|n| self.string_list(n, "", "tags"))
            .unwrap_or_default();
        // A bad schedule is reported; the rest of the file is still checked.
        let (schedule, clock) = fields
            .get("schedule")
            .and_then(|node| self.schedule(node, options))
            .unwrap_or((Schedule::Manual, ScheduleOptions::new(options)));
        let tz = clock.tz;
        let start_date = fields
            .get("start_date")
            .and_then(|n| self.date(n, "start_date", tz));
        let end_date = match fields.get("end_date") {
            Some(node) if node.value != Value::Null => self.date(node, "end_date", tz),
            _ => None,
        };
        if schedule != Schedule::Manual && fields.get("start_date").is_none() {
            let pos = fields.key_pos("schedule").unwrap_or(root.pos);
            self.error(
                pos,
                "a scheduled DAG needs \"start_date\" (the first data interval starts there)"
                    .to_owned(),
            );
        }
        if let (Some(start), Some(end)) = (start_date, end_date)
            && end < start
        {
            let pos = fields.get("end_date").map(|n| n.pos).unwrap_or_default();
            self.error(pos, "\"end_date\" is before \"start_date\"".to_owned());
        }
        let catchup = fields
            .get("catchup")
            .and_then(|n| self.boolean(n, "", "catchup"))
            .unwrap_or(false);
        let max_active_runs = fields
            .get("max_active_runs")
            .and_then(|n| self.count(n, "", "max_active_runs", 1))
            .unwrap_or(defaults::MAX_ACTIVE_RUNS);
        let max_active_tasks = fields
            .get("max_active_tasks")
            .and_then(|n| self.count(n, "", "max_active_tasks", 1))
            .unwrap_or(defaults::MAX_ACTIVE_TASKS);
        let timeout = fields
            .get("timeout")
            .and_then(|n| self.duration(n, "", "timeout"));
        let params = fields
            .get("params")
            .map(|n| self.params(n))
            .unwrap_or_default();
        let env = fields
            .get("env")
            .map(|n| self.env(n, "", None))
            .unwrap_or_default();
        let inherit_env = fields
            .get("inherit_env")
            .map(|n| self.inherit_env(n, ""))
            .unwrap_or_default();
        let defaults = fields.get("defaults").and_then(|n| self.defaults(n));
        let on_success = fields
            .get("on_success")
            .and_then(|n| self.handler(n, "", "on_success", None));
        let on_failure = fields
            .get("on_failure")
            .and_then(|n| self.handler(n, "", "on_failure", None));
        let deadline = fields.get("deadline").and_then(|n| self.deadline(n, ""));
        let notify = fields
            .get("notify")
            .map(|n| self.notify(n, "", false))
            .unwrap_or_default();
        let tasks = self.tasks(&fields, root, defaults.as_ref())?;

        let acyclic = self.check_cycles(&tasks, &fields);
        self.check_templates(&tasks, &params, acyclic);

        let id = id?;
        let mut timetable = Timetable::new(schedule, tz, clock.mode, start_date, end_date, catchup);
        timetable.jitter = clock.jitter.map(|max| Jitter::of(max, id.as_str()));
        timetable.misfire_grace = clock.misfire_grace;
        Some(Dag {
            id,
            fileloc: fileloc.to_owned(),
            description,
            owner,
            tags,
            timetable,
            max_active_runs,
            max_active_tasks,
            timeout,
            params,
            env,
            inherit_env,
            tasks,
            on_success,
            on_failure,
            deadline,
            notify,
            graph: Default::default(),
        })
    }

    /// A `notify:` list; `of_task` refuses the run's events.
    fn notify(&mut self, node: &Node, context: &str, of_task: bool) -> Vec<Notifier> {
        let Value::Seq(items) = &node.value else {
            self.wrong_type(
                node,
                context,
                "notify",
                "a list of {on: [...], <channel>: ...}",
            );
            return Vec::new();
        };
        let mut notifiers = Vec::new();
        for (index, item) in items.iter().enumerate() {
            let inner = format!("{context}notify[{index}]: ");
            let Some(fields) = self.fields(item, NOTIFY_KEYS, &inner, "notify") else {
                continue;
            };
            let on = fields
                .get("on")
                .and_then(|n| self.string_list(n, &inner, "on"))
                .unwrap_or_default();
            let on_pos = fields.get("on").map_or(item.pos, |n| n.pos);
            let mut events = Vec::new();
            for name in &on {
                match name.parse::<NotifyEvent>() {
                    Ok(event) if of_task && !event.is_of_a_task() => {
                        self.error(
                            on_pos,
                            format!(
                                "{inner}\"{event}\" is an event of the run: put it in the DAG's \
                                 notify"
                            ),
                        );
                    }
                    Ok(event) => events.push(event),
                    Err(_) => {
                        let names = NotifyEvent::ALL.map(NotifyEvent::as_str);
                        let hint = did_you_mean(name, names.iter().copied());
                        self.error(on_pos, format!("{inner}unknown event \"{name}\"{hint}"));
                    }
                }
            }
            if on.is_empty() {
                self.error(
                    item.pos,
                    format!("{inner}\"on\" names no event (e.g. on: [task_failed])"),
                );
            }
            let channels: Vec<&str> = NOTIFY_CHANNELS
                .iter()
                .copied()
                .filter(|key| fields.get(key).is_some())
                .collect();
            let [key] = channels.as_slice() else {
                self.error(
                    item.pos,
                    format!(
                        "{inner}give one channel of webhook, slack, teams, email or command, \
                         not {}",
                        match channels.len() {
                            0 => "none".to_owned(),
                            _ => channels.join(" and "),
                        }
                    ),
                );
                continue;
            };
            let value = fields.get(key).expect("present");
            if let Some(channel) = self.channel(key, value, &inner)
                && !events.is_empty()
            {
                notifiers.push(Notifier {
                    on: events,
                    channel,
                });
            }
        }
        notifiers
    }

    /// A `notify:` entry's channel under `key`.
    fn channel(&mut self, key: &str, node: &Node, context: &str) -> Option<Channel> {
        match key {
            "webhook" => {
                let (url, headers) = match &node.value {
                    Value::Str(_) => (self.url(node, context, "webhook")?, IndexMap::new()),
                    _ => {
                        let fields = self.fields(node, &["url", "headers"], context, "webhook")?;
                        let Some(url) = fields.get("url") else {
                            self.error(node.pos, format!("{context}\"webhook\" needs \"url\""));
                            return None;
                        };
                        let url = self.url(url, context, "webhook.url")?;
                        let headers = fields
                            .get("headers")
                            .map(|n| self.headers(n, context))
                            .unwrap_or_default();
                        (url, headers)
                    }
                };
                Some(Channel::Webhook { url, headers })
            }
            "slack" | "teams" => {
                let url = match &node.value {
                    Value::Str(_) => self.url(node, context, key)?,
                    _ => {
                        let fields = self.fields(node, &["webhook"], context, key)?;
                        let Some(url) = fields.get("webhook") else {
                            self.error(node.pos, format!("{context}\"{key}\" needs \"webhook\""));
                            return None;
                        };
                        self.url(url, context, key)?
                    }
                };
                Some(match key {
                    "slack" => Channel::Slack { webhook: url },
                    _ => Channel::Teams { webhook: url },
                })
            }
            "email" => {
                let to = match &node.value {
                    Value::Map(_) => {
                        let fields = self.fields(node, &["to"], context, "email")?;
                        fields
                            .get("to")
                            .and_then(|n| self.string_list(n, context, "email.to"))
                            .unwrap_or_default()
                    }
                    _ => self.string_list(node, context, "email")?,
                };
                let bad = to.iter().find(|address| {
                    let (user, host) = address.split_once('@').unwrap_or_default();
                    user.is_empty() || !host.contains('.') || address.contains(char::is_whitespace)
                });
                if to.is_empty() || bad.is_some() {
                    let which = match bad {
                        Some(address) => format!(", not \"{address}\""),
                        None => String::new(),
                    };
                    self.error(
                        node.pos,
                        format!(
                            "{context}\"email\" needs addresses to send to \
                             (to: [oncall@example.com]){which}"
                        ),
                    );
                    return None;
                }
                Some(Channel::Email { to })
            }
            _ => {
                let handler = self.handler(node, context, "command", None)?;
                let texts = match &handler.command {
                    Command::Run(line) => vec![line.as_str()],
                    Command::Exec(argv) => argv.iter().map(String::as_str).collect(),
                };
                if texts
                    .into_iter()
                    .chain(handler.env.values().map(String::as_str))
                    .any(template::is_templated)
                {
                    self.error(
                        node.pos,
                        format!(
                            "{context}a notify command is not templated: it reads the notice \
                             from $UPDRAFT_NOTICE (JSON) and $UPDRAFT_EVENT, $UPDRAFT_DAG_ID, ..."
                        ),
                    );
                    return None;
                }
                Some(Channel::Command(handler))
            }
        }
    }

    /// A webhook's HTTP headers: names of letters, digits and `-`, values any scalar (templated
    /// in the run's context).
    fn headers(&mut self, node: &Node, context: &str) -> IndexMap<String, String> {
        let mut headers = IndexMap::new();
        for (name, value) in self
            .entries(node, context, "headers", "header")
            .unwrap_or_default()
        {
            let name_text = name.as_str().unwrap_or_default();
            if name_text.is_empty()
                || !name_text
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                self.error(
                    name.pos,
                    format!("{context}\"{name_text}\" is not an HTTP header name"),
                );
                continue;
            }
            if let Some(text) = self.scalar_text(value, context, "headers") {
                self.template(value, context, "notify", None);
                headers.insert(name_text.to_owned(), text);
            }
        }
        headers
    }

    /// An http(s) URL, or a template that makes one in the run's context (a secret's,
    /// `{{ var.value.slack_webhook }}`).
    fn url(&mut self, node: &Node, context: &str, key: &str) -> Option<String> {
        let text = self.string(node, context, key)?;
        if template::is_templated(&text) {
            self.template(node, context, "notify", None);
            return Some(text);
        }
        if text.starts_with("http://") || text.starts_with("https://") {
            return Some(text);
        }
        self.error(
            node.pos,
            format!(
                "{context}\"{key}\": \"{text}\" is not an http:// or https:// URL (nor a \
                 template such as {{{{ var.value.slack_webhook }}}})"
            ),
        );
        None
    }

    /// `{after_interval_end: D}`, `{after_start: D}` or `{at: "HH:MM"}`.
    fn deadline(&mut self, node: &Node, context: &str) -> Option<Deadline> {
        let fields = self.fields(node, DEADLINE_KEYS, context, "deadline")?;
        if fields.entries.len() != 1 {
            self.error(
                node.pos,
                format!(
                    "{context}\"deadline\" takes one of after_interval_end, after_start or at, \
                     e.g. {{after_interval_end: 2h}}"
                ),
            );
            return None;
        }
        let (key, value) = fields.entries[0];
        match key.as_str()? {
            "after_interval_end" => self
                .duration(value, context, "deadline.after_interval_end")
                .map(Deadline::AfterIntervalEnd),
            "after_start" => self
                .duration(value, context, "deadline.after_start")
                .map(Deadline::AfterStart),
            // Any other key was reported as unknown.
            "at" => {
                let text = self.string(value, context, "deadline.at")?;
                match NaiveTime::parse_from_str(&text, "%H:%M")
                    .or_else(|_| NaiveTime::parse_from_str(&text, "%H:%M:%S"))
                {
                    Ok(time) => Some(Deadline::At(time)),
                    Err(_) => {
                        self.error(
                            value.pos,
                            format!(
                                "{context}\"deadline.at\": bad time of day \"{text}\"; write \
                                 HH:MM on the DAG's clock, e.g. \"07:00\""
                            ),
                        );
                        None
                    }
                }
            }
            _ => None,
        }
    }

    fn dag_id(&mut self, fields: &Fields, fileloc: &str) -> Option<DagId> {
        match fields.get("id") {
            Some(node) => {
                let text = self.string(node, "", "id")?;
                DagId::parse(&text)
                    .map_err(|error| self.error(node.pos, error.to_string()))
                    .ok()
            }
            None => {
                let stem = std::path::Path::new(fileloc)
                    .file_stem()
                    .and_then(|s| s.to_str())
                    .unwrap_or_default();
                DagId::parse(stem)
                    .map_err(|error| {
                        self.error(
                            Pos { line: 1, col: 1 },
                            format!(
                                "the file name is not a valid dag id ({error}); set \"id\" \
                                 in the file"
                            ),
                        )
                    })
                    .ok()
            }
        }
    }

    fn schedule(
        &mut self,
        node: &Node,
        options: &LoadOptions,
    ) -> Option<(Schedule, ScheduleOptions)> {
        let mut clock = ScheduleOptions::new(options);
        let schedule = match &node.value {
            Value::Null => Schedule::Manual,
            Value::Seq(items) => return self.schedules(node, items, options),
            Value::Str(expression) => self.cron(node, expression, "schedule")?,
            Value::Map(_) => {
                let fields = self.fields(node, SCHEDULE_KEYS, "schedule: ", "schedule")?;
                if let Some(zone) = fields.get("timezone")
                    && let Some(name) = self.string(zone, "schedule: ", "timezone")
                {
                    match parse_timezone(&name) {
                        Ok(parsed) => clock.tz = parsed,
                        Err(message) => self.error(zone.pos, format!("schedule: {message}")),
                    }
                }
                if let Some(interval) = fields.get("data_interval")
                    && let Some(name) = self.string(interval, "schedule: ", "data_interval")
                {
                    match name.parse::<DataIntervalMode>() {
                        Ok(parsed) => clock.mode = parsed,
                        Err(_) => self.error(
                            interval.pos,
                            format!(
                                "schedule: unknown data_interval \"{name}\"; use \"previous\" \
                                 or \"instant\""
                            ),
                        ),
                    }
                }
                if let Some(node) = fields.get("jitter") {
                    clock.jitter = self
                        .duration(node, "schedule: ", "jitter")
                        .filter(|max| !max.is_zero());
                }
                if let Some(node) = fields.get("misfire_grace") {
                    clock.misfire_grace = self.duration(node, "schedule: ", "misfire_grace");
                }
                match (fields.get("cron"), fields.get("every")) {
                    (Some(cron), None) => {
                        let expression = self.string(cron, "schedule: ", "cron")?;
                        self.cron(cron, &expression, "schedule: cron")?
                    }
                    (None, Some(every)) => {
                        let duration = self.duration(every, "schedule: ", "every")?;
                        match Schedule::every(duration) {
                            Ok(schedule) => schedule,
                            Err(message) => {
                                self.error(every.pos, format!("schedule: {message}"));
                                return None;
                            }
                        }
                    }
                    (Some(_), Some(every)) => {
                        self.error(
                            every.pos,
                            "schedule: give \"cron\" or \"every\", not both".to_owned(),
                        );
                        return None;
                    }
                    (None, None) => {
                        self.error(
                            node.pos,
                            "schedule: needs \"cron\" or \"every\" (or write `schedule: null` \
                             for manual runs only)"
                                .to_owned(),
                        );
                        return None;
                    }
                }
            }
            _ => {
                self.wrong_type(
                    node,
                    "",
                    "schedule",
                    "a cron string, a mapping, a list of them or null",
                );
                return None;
            }
        };
        Some((schedule, clock))
    }

    /// `schedule: [...]`: several cron schedules, run at the union of their ticks. Each item
    /// is a cron string or a schedule mapping with `cron`; they share one timezone,
    /// `data_interval`, `jitter` and `misfire_grace` (items that name them must name the same).
    fn schedules(
        &mut self,
        node: &Node,
        items: &[Node],
        options: &LoadOptions,
    ) -> Option<(Schedule, ScheduleOptions)> {
        if items.is_empty() {
            self.error(
                node.pos,
                "schedule: an empty list; write `schedule: null` for manual runs only".to_owned(),
            );
            return None;
        }
        let mut crons = Vec::with_capacity(items.len());
        let mut shared = None;
        let mut valid = true;
        for item in items {
            let Some((schedule, clock)) = self.schedule(item, options) else {
                valid = false;
                continue;
            };
            match schedule {
                Schedule::Cron(cron) => crons.push(cron),
                other => {
                    self.error(
                        item.pos,
                        format!("schedule: a list combines cron schedules, not \"{other}\""),
                    );
                    valid = false;
                }
            }
            match shared {
                None => shared = Some(clock),
                Some(first) if first != clock => {
                    self.error(
                        item.pos,
                        "schedule: the schedules of a list share one timezone, data_interval, \
                         jitter and misfire_grace; this one's differ from the first's"
                            .to_owned(),
                    );
                    valid = false;
                }
                Some(_) => {}
            }
        }
        let clock = shared.filter(|_| valid)?;
        let schedule = match crons.len() {
            1 => Schedule::Cron(crons.remove(0)),
            _ => Schedule::AnyOf(crons),
        };
        Some((schedule, clock))
    }

    fn cron(&mut self, node: &Node, expression: &str, context: &str) -> Option<Schedule> {
        Schedule::parse_cron(expression)
            .map_err(|message| self.error(node.pos, format!("{context}: {message}")))
            .ok()
    }

    fn params(&mut self, node: &Node) -> IndexMap<String, Param> {
        let mut params = IndexMap::new();
        let Some(entries) = self.entries(node, "", "params", "param") else {
            return params;
        };
        for (key, value) in entries {
            let name = key.as_str().unwrap_or_default();
            if !is_identifier(name) {
                self.error(
                    key.pos,
                    format!(
                        "param \"{name}\": names are letters, digits and '_', not starting \
                         with a digit (templates read them as params.{name})"
                    ),
                );
                continue;
            }
            if let Some(param) = self.param(name, value) {
                params.insert(name.to_owned(), param);
            }
        }
        params
    }

    /// `name: {type: ..., default: ...}`, or the shorthand `name: value` (the default, whose
    /// type it declares).
    fn param(&mut self, name: &str, node: &Node) -> Option<Param> {
        let context = format!("param \"{name}\": ");
        if !matches!(node.value, Value::Map(_)) {
            let default = to_json(node);
            return Some(Param {
                kind: ParamType::of(&default),
                default: (!default.is_null()).then_some(default),
                description: None,
                allowed: Vec::new(),
                minimum: None,
                maximum: None,
            });
        }
        let fields = self.fields(node, PARAM_KEYS, &context, "")?;
        let default = fields.get("default").map(to_json);
        let kind = match fields.get("type") {
            Some(type_node) => {
                let type_name = self.string(type_node, &context, "type")?;
                let Some(kind) = ParamType::parse(&type_name) else {
                    let hint = did_you_mean(&type_name, ParamType::NAMES.iter().copied());
                    self.error(
                        type_node.pos,
                        format!(
                            "{context}unknown type \"{type_name}\"{hint} (types: {})",
                            ParamType::NAMES.join(", ")
                        ),
                    );
                    return None;
                };
                kind
            }
            None => default
                .as_ref()
                .map(ParamType::of)
                .unwrap_or(ParamType::String),
        };
        let allowed = match fields.get("enum") {
            Some(node) => match &node.value {
                Value::Seq(items) => items.iter().map(to_json).collect(),
                _ => {
                    self.wrong_type(node, &context, "enum", "a list");
                    Vec::new()
                }
            },
            None => Vec::new(),
        };
        let mut number = |key: &str| {
            let node = fields.get(key)?;
            match node.value {
                Value::Int(n) => Some(n as f64),
                Value::Float(n) => Some(n),
                _ => {
                    self.wrong_type(node, &context, key, "a number");
                    None
                }
            }
        };
        let minimum = number("minimum");
        let maximum = number("maximum");
        let description = fields
            .get("description")
            .and_then(|n| self.string(n, &context, "description"));
        let param = Param {
            kind,
            default: default.filter(|d| !d.is_null()),
            description,
            allowed,
            minimum,
            maximum,
        };
        if let (Some(default), Some(node)) = (&param.default, fields.get("default"))
            && let Err(message) = param.check(default)
        {
            self.error(node.pos, format!("{context}bad default: {message}"));
        }
        Some(param)
    }

    fn env(&mut self, node: &Node, context: &str, task: Option<usize>) -> IndexMap<String, String> {
        let mut env = IndexMap::new();
        let Some(entries) = self.entries(node, context, "env", "variable") else {
            return env;
        };
        for (key, value) in entries {
            let name = key.as_str().unwrap_or_default();
            if !is_identifier(name) {
                self.error(
                    key.pos,
                    format!(
                        "{context}env: \"{name}\" is not a valid variable name (letters, \
                         digits and '_', not starting with a digit)"
                    ),
                );
                continue;
            }
            if let Some(text) = self.scalar_text(value, context, name) {
                self.template(value, context, "env", task);
                env.insert(name.to_owned(), text);
            }
        }
        env
    }

    /// Names of the worker's environment passed on to a task's processes: variable names, none
    /// of Updraft's own (`UPDRAFT_*`, among them the metadata database's URL).
    fn inherit_env(&mut self, node: &Node, context: &str) -> Vec<String> {
        let names = self
            .string_list(node, context, "inherit_env")
            .unwrap_or_default();
        for name in &names {
            if let Err(why) = crate::worker_env::check_inherited_name(name) {
                self.error(node.pos, format!("{context}inherit_env: {why}"));
            }
        }
        names
    }

    /// Ids of connections a task gets as `UPDRAFT_CONN_<ID>`.
    fn connections(&mut self, node: &Node, context: &str) -> Vec<ConnectionId> {
        let names = self
            .string_list(node, context, "connections")
            .unwrap_or_default();
        let mut ids = Vec::with_capacity(names.len());
        for name in names {
            match ConnectionId::parse(&name) {
                Ok(id) => ids.push(id),
                Err(error) => self.error(node.pos, format!("{context}connections: {error}")),
            }
        }
        ids
    }

    fn defaults<'n>(&mut self, node: &'n Node) -> Option<Fields<'n>> {
        let fields = self.fields(node, TASK_KEYS, "defaults: ", "defaults")?;
        for key in NOT_DEFAULTS {
            if let Some(pos) = fields.key_pos(key) {
                self.error(
                    pos,
                    format!("defaults: \"{key}\" cannot be a default; give it to each task"),
                );
            }
        }
        Some(Fields {
            entries: fields
                .entries
                .into_iter()
                .filter(|(k, _)| !NOT_DEFAULTS.contains(&k.as_str().unwrap_or_default()))
                .collect(),
        })
    }

    fn tasks(
        &mut self,
        fields: &Fields,
        root: &Node,
        defaults: Option<&Fields>,
    ) -> Option<IndexMap<TaskId, Task>> {
        let Some(node) = fields.get("tasks") else {
            self.error(
                root.pos,
                "missing \"tasks\": a DAG needs at least one task".to_owned(),
            );
            return None;
        };
        let entries = self.entries(node, "", "tasks", "task id")?;
        if entries.is_empty() {
            self.error(
                node.pos,
                "\"tasks\" is empty: a DAG needs at least one task".to_owned(),
            );
            return None;
        }
        let known: IndexSet<&str> = entries.iter().filter_map(|(k, _)| k.as_str()).collect();
        let mut tasks = IndexMap::with_capacity(entries.len());
        for &(key, value) in &entries {
            let name = key.as_str().unwrap_or_default();
            let id = match TaskId::parse(name) {
                Ok(id) => id,
                Err(error) => {
                    self.error(key.pos, error.to_string());
                    continue;
                }
            };
            let context = format!("task \"{name}\": ");
            let index = tasks.len();
            let Some(own) = self.fields(value, TASK_KEYS, &context, "") else {
                continue;
            };
            // A task's own key replaces the default of the same key.
            let mut merged = own;
            if let Some(defaults) = defaults {
                for (k, v) in &defaults.entries {
                    if merged.get(k.as_str().unwrap_or_default()).is_none() {
                        merged.entries.push((k, v));
                    }
                }
            }
            if let Some(task) = self.task(id.clone(), key.pos, &merged, &context, index, &known) {
                tasks.insert(id, task);
            }
        }
        Some(tasks)
    }

    fn task(
        &mut self,
        id: TaskId,
        pos: Pos,
        fields: &Fields,
        context: &str,
        index: usize,
        known: &IndexSet<&str>,
    ) -> Option<Task> {
        let command = self.command(fields, pos, context, Some(index));
        let depends_on_ids = fields
            .get("depends_on")
            .map(|node| self.depends_on(node, context, known))
            .unwrap_or_default();
        let string = |decoder: &mut Self, key: &str| {
            fields
                .get(key)
                .and_then(|n| decoder.string(n, context, key))
        };
        let description = string(self, "description");
        let working_dir = string(self, "working_dir");
        if let Some(node) = fields.get("working_dir") {
            self.template(node, context, "working_dir", Some(index));
        }
        let pool = string(self, "pool").unwrap_or_else(|| defaults::POOL.to_owned());
        let queue = string(self, "queue").unwrap_or_else(|| defaults::QUEUE.to_owned());
        let flag = |decoder: &mut Self, key: &str| {
            fields
                .get(key)
                .and_then(|n| decoder.boolean(n, context, key))
                .unwrap_or(false)
        };
        let retry_exponential_backoff = flag(self, "retry_exponential_backoff");
        let retry_jitter = flag(self, "retry_jitter");
        let depends_on_past = flag(self, "depends_on_past");
        let duration = |decoder: &mut Self, key: &str| {
            fields
                .get(key)
                .and_then(|n| decoder.duration(n, context, key))
        };
        let retry_delay = duration(self, "retry_delay").unwrap_or(defaults::RETRY_DELAY);
        let max_retry_delay = duration(self, "max_retry_delay");
        let timeout = duration(self, "timeout");
        let kill_grace = duration(self, "kill_grace").unwrap_or(defaults::KILL_GRACE);
        let retries = fields
            .get("retries")
            .and_then(|n| self.count(n, context, "retries", 0))
            .unwrap_or(0);
        let pool_slots = fields
            .get("pool_slots")
            .and_then(|n| self.count(n, context, "pool_slots", 1))
            .unwrap_or(1);
        let rate_limit = fields
            .get("rate_limit")
            .and_then(|n| self.rate_limit(n, context));
        let priority_weight = fields
            .get("priority_weight")
            .and_then(|n| self.integer(n, context, "priority_weight", i64::from(i32::MIN)))
            .map(|n| n as i32)
            .unwrap_or(defaults::PRIORITY_WEIGHT);
        // A bad value is reported and replaced, so the rest of the task is still checked.
        let trigger_rule = fields
            .get("trigger_rule")
            .and_then(|node| self.trigger_rule(node, context))
            .unwrap_or(TriggerRule::AllSuccess);
        let skip_on_exit_code = match fields.get("skip_on_exit_code") {
            None => vec![defaults::SKIP_ON_EXIT_CODE],
            Some(node) => self.exit_codes(node, context).unwrap_or_default(),
        };
        let outputs = fields
            .get("outputs")
            .and_then(|n| self.string_list(n, context, "outputs"))
            .unwrap_or_default();
        for name in &outputs {
            if !is_identifier(name) {
                let pos = fields.get("outputs").map(|n| n.pos).unwrap_or(pos);
                self.error(
                    pos,
                    format!(
                        "{context}output \"{name}\" is not a valid name (letters, digits and \
                         '_'; templates read it as outputs.{}.{name})",
                        id
                    ),
                );
            }
        }
        let env = fields
            .get("env")
            .map(|n| self.env(n, context, Some(index)))
            .unwrap_or_default();
        let inherit_env = fields
            .get("inherit_env")
            .map(|n| self.inherit_env(n, context))
            .unwrap_or_default();
        let connections = fields
            .get("connections")
            .map(|n| self.connections(n, context))
            .unwrap_or_default();
        let handler = |decoder: &mut Self, key: &'static str| {
            fields
                .get(key)
                .and_then(|n| decoder.handler(n, context, key, Some(index)))
        };
        let on_success = handler(self, "on_success");
        let on_failure = handler(self, "on_failure");
        let on_retry = handler(self, "on_retry");
        let deadline = fields
            .get("deadline")
            .and_then(|n| self.deadline(n, context));
        let notify = fields
            .get("notify")
            .map(|n| self.notify(n, context, true))
            .unwrap_or_default();
        Some(Task {
            id,
            command: command?,
            depends_on: depends_on_ids,
            description,
            env,
            inherit_env,
            connections,
            working_dir,
            retries,
            retry_delay,
            retry_exponential_backoff,
            retry_jitter,
            max_retry_delay,
            timeout,
            pool,
            pool_slots,
            rate_limit,
            priority_weight,
            queue,
            trigger_rule,
            skip_on_exit_code,
            outputs,
            depends_on_past,
            kill_grace,
            on_success,
            on_failure,
            on_retry,
            deadline,
            notify,
        })
    }

    fn trigger_rule(&mut self, node: &Node, context: &str) -> Option<TriggerRule> {
        let name = self.string(node, context, "trigger_rule")?;
        name.parse::<TriggerRule>()
            .map_err(|error| {
                let hint = did_you_mean(&name, TriggerRule::names());
                self.error(node.pos, format!("{context}{error}{hint}"));
            })
            .ok()
    }

    /// Upstream task ids: a string or a list, each naming a task of the file.
    fn depends_on(&mut self, node: &Node, context: &str, known: &IndexSet<&str>) -> Vec<TaskId> {
        let items: Vec<&Node> = match &node.value {
            Value::Seq(items) => items.iter().collect(),
            Value::Null => Vec::new(),
            _ => vec![node],
        };
        let mut ids = Vec::with_capacity(items.len());
        for item in items {
            let Some(name) = self.string(item, context, "depends_on") else {
                continue;
            };
            if !known.contains(&name.as_str()) {
                let hint = did_you_mean(&name, known.iter().copied());
                self.error(
                    item.pos,
                    format!("{context}depends on unknown task \"{name}\"{hint}"),
                );
                continue;
            }
            // An invalid id was reported where the task is defined.
            if let Ok(id) = TaskId::parse(&name) {
                ids.push(id);
            }
        }
        ids
    }

    fn exit_codes(&mut self, node: &Node, context: &str) -> Option<Vec<i32>> {
        let expected = "an exit code (0-255), a list of them, or null";
        let code = |decoder: &mut Self, item: &Node| match item.value {
            Value::Int(n) if (0..=255).contains(&n) => Some(n as i32),
            _ => {
                decoder.wrong_type(item, context, "skip_on_exit_code", expected);
                None
            }
        };
        match &node.value {
            Value::Null => Some(Vec::new()),
            Value::Seq(items) => items.iter().map(|item| code(self, item)).collect(),
            _ => code(self, node).map(|n| vec![n]),
        }
    }

    /// Exactly one of `run` (a shell command line) and `exec` (an argv list).
    fn command(
        &mut self,
        fields: &Fields,
        pos: Pos,
        context: &str,
        task: Option<usize>,
    ) -> Option<Command> {
        match (fields.get("run"), fields.get("exec")) {
            (Some(run), None) => {
                let line = self.string(run, context, "run")?;
                if line.trim().is_empty() {
                    self.error(run.pos, format!("{context}\"run\" is empty"));
                    return None;
                }
                self.template(run, context, "run", task);
                Some(Command::Run(line))
            }
            (None, Some(exec)) => {
                let Value::Seq(items) = &exec.value else {
                    self.wrong_type(
                        exec,
                        context,
                        "exec",
                        "a list (argv), e.g. [python3, job.py]",
                    );
                    return None;
                };
                if items.is_empty() {
                    self.error(exec.pos, format!("{context}\"exec\" is an empty list"));
                    return None;
                }
                let mut argv = Vec::with_capacity(items.len());
                for item in items {
                    argv.push(self.scalar_text(item, context, "exec")?);
                    self.template(item, context, "exec", task);
                }
                Some(Command::Exec(argv))
            }
            (Some(_), Some(exec)) => {
                self.error(
                    exec.pos,
                    format!("{context}has both \"run\" and \"exec\"; keep one"),
                );
                None
            }
            (None, None) => {
                self.error(
                    pos,
                    format!(
                        "{context}needs \"run\" (a shell command line) or \"exec\" (an argv list)"
                    ),
                );
                None
            }
        }
    }

    /// `{run: ..., env: ...}`, `{exec: [...]}`, or a bare string as `run`.
    fn handler(
        &mut self,
        node: &Node,
        context: &str,
        key: &'static str,
        task: Option<usize>,
    ) -> Option<Handler> {
        if let Value::Str(line) = &node.value {
            self.template(node, context, key, task);
            return Some(Handler {
                command: Command::Run(line.clone()),
                env: IndexMap::new(),
            });
        }
        let inner = format!("{context}{key}: ");
        let fields = self.fields(node, HANDLER_KEYS, &inner, key)?;
        let command = self.command(&fields, node.pos, &inner, task);
        let env = fields
            .get("env")
            .map(|n| self.env(n, &inner, task))
            .unwrap_or_default();
        Some(Handler {
            command: command?,
            env,
        })
    }

    /// Reports every cycle of the graph. Returns whether the graph is acyclic.
    fn check_cycles(&mut self, tasks: &IndexMap<TaskId, Task>, fields: &Fields) -> bool {
        let tasks_node = fields.get("tasks");
        let task_pos = |id: &str| -> Pos {
            let Some(Value::Map(entries)) = tasks_node.map(|n| &n.value) else {
                return Pos::default();
            };
            entries
                .iter()
                .find(|(k, _)| k.as_str() == Some(id))
                .map(|(k, _)| k.pos)
                .unwrap_or_default()
        };
        let mut acyclic = true;
        let graph = super::model::build_graph(tasks);
        for component in petgraph::algo::tarjan_scc(&graph) {
            let start = *component.iter().min().expect("components are not empty");
            let looped = component.len() > 1 || graph.contains_edge(start, start);
            if !looped {
                continue;
            }
            acyclic = false;
            let cycle = cycle_through(&graph, start, &component);
            let names: Vec<&str> = cycle.iter().map(|n| tasks[n.index()].id.as_str()).collect();
            let first = names[0];
            self.error(
                task_pos(first),
                format!("cycle: {} -> {first}", names.join(" -> ")),
            );
        }
        acyclic
    }

    fn check_templates(
        &mut self,
        tasks: &IndexMap<TaskId, Task>,
        params: &IndexMap<String, Param>,
        acyclic: bool,
    ) {
        let templates = std::mem::take(&mut self.templates);
        let graph = acyclic.then(|| super::model::build_graph(tasks));
        let mut ancestors_of: HashMap<usize, BTreeSet<usize>> = HashMap::new();
        for usage in templates {
            let TemplateUse {
                pos,
                context,
                key,
                text,
                task,
            } = usage;
            let variables = match template::variables(&text) {
                Ok(variables) => variables,
                Err(error) => {
                    let line = match error.line {
                        Some(line) if text.contains('\n') => format!(" (template line {line})"),
                        _ => String::new(),
                    };
                    self.error(
                        pos,
                        format!(
                            "{context}template error in \"{key}\": {}{line}",
                            error.message
                        ),
                    );
                    continue;
                }
            };
            // A task's ancestors, found once and only for the tasks whose templates read
            // outputs: a walk per template would make validation quadratic on large graphs.
            let reads_outputs = variables.iter().any(|v| v.starts_with("outputs."));
            let upstream = match (&graph, task) {
                (Some(graph), Some(index)) if reads_outputs => Some(
                    &*ancestors_of
                        .entry(index)
                        .or_insert_with(|| ancestors(graph, index)),
                ),
                _ => None,
            };
            for variable in variables {
                if let Some(message) = check_variable(&variable, tasks, params, upstream) {
                    self.error(pos, format!("{context}\"{key}\": {message}"));
                }
            }
        }
    }
}

/// What is wrong with one template variable path, if anything.
fn check_variable(
    variable: &str,
    tasks: &IndexMap<TaskId, Task>,
    params: &IndexMap<String, Param>,
    upstream: Option<&BTreeSet<usize>>,
) -> Option<String> {
    let mut parts = variable.split('.');
    let root = parts.next().unwrap_or_default();
    if !template::CONTEXT_NAMES.contains(&root) {
        let hint = did_you_mean(root, template::CONTEXT_NAMES.iter().copied());
        return Some(format!("unknown template variable \"{root}\"{hint}"));
    }
    match root {
        "params" => {
            let name = parts.next()?;
            if params.contains_key(name) {
                return None;
            }
            let hint = did_you_mean(name, params.keys().map(String::as_str));
            Some(format!(
                "uses params.{name}, but the DAG declares no param \"{name}\"{hint}"
            ))
        }
        "outputs" => {
            let task_name = parts.next()?;
            let Some(index) = tasks.get_index_of(task_name) else {
                let hint = did_you_mean(task_name, tasks.keys().map(|k| k.as_str()));
                return Some(format!(
                    "uses outputs.{task_name}, but there is no task \"{task_name}\"{hint}"
                ));
            };
            if let Some(upstream) = upstream
                && !upstream.contains(&index)
            {
                return Some(format!(
                    "uses outputs.{task_name}, but \"{task_name}\" is not upstream of this task \
                     (add it to depends_on)"
                ));
            }
            let output = parts.next()?;
            let declared = &tasks[index].outputs;
            if declared.iter().any(|o| o == output) {
                return None;
            }
            Some(format!(
                "uses outputs.{task_name}.{output}, but task \"{task_name}\" declares no output \
                 \"{output}\" (its outputs: [{}])",
                declared.join(", ")
            ))
        }
        _ => None,
    }
}

/// A shortest cycle from `start` back to itself inside one strongly connected component.
fn cycle_through(
    graph: &petgraph::graph::DiGraph<(), ()>,
    start: petgraph::graph::NodeIndex,
    component: &[petgraph::graph::NodeIndex],
) -> Vec<petgraph::graph::NodeIndex> {
    use std::collections::VecDeque;
    let component: HashSet<_> = component.iter().copied().collect();
    let mut previous = HashMap::new();
    let mut queue = VecDeque::from([start]);
    while let Some(node) = queue.pop_front() {
        let mut next: Vec<_> = graph.neighbors(node).collect();
        next.sort();
        for neighbor in next {
            if neighbor == start {
                let mut path = vec![node];
                while let Some(&before) = previous.get(path.last().expect("path starts non-empty"))
                {
                    path.push(before);
                }
                path.reverse();
                return path;
            }
            if component.contains(&neighbor) && !previous.contains_key(&neighbor) {
                previous.insert(neighbor, node);
                queue.push_back(neighbor);
            }
        }
    }
    vec![start]
}

fn ancestors(graph: &petgraph::graph::DiGraph<(), ()>, index: usize) -> BTreeSet<usize> {
    let mut seen = BTreeSet::new();
    let mut stack = vec![petgraph::graph::NodeIndex::new(index)];
    while let Some(node) = stack.pop() {
        for upstream in graph.neighbors_directed(node, petgraph::Direction::Incoming) {
            if seen.insert(upstream.index()) {
                stack.push(upstream);
            }
        }
    }
    seen
}

/// `300s or 5m` for 300, `45s` for 45: the same duration with units.
fn suggest_unit(seconds: i64) -> String {
    if seconds != 0 && seconds % 60 == 0 {
        format!("{seconds}s or {}m", seconds / 60)
    } else {
        format!("{seconds}s")
    }
}

fn is_identifier(name: &str) -> bool {
    let mut bytes = name.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

fn to_json(node: &Node) -> serde_json::Value {
    use serde_json::Value as J;
    match &node.value {
        Value::Null => J::Null,
        Value::Bool(flag) => J::Bool(*flag),
        Value::Int(number) => J::from(*number),
        Value::Float(number) => serde_json::Number::from_f64(*number)
            .map(J::Number)
            .unwrap_or(J::Null),
        Value::Str(text) => J::String(text.clone()),
        Value::Seq(items) => J::Array(items.iter().map(to_json).collect()),
        Value::Map(entries) => J::Object(
            entries
                .iter()
                .map(|(k, v)| {
                    let key = match &k.value {
                        Value::Str(text) => text.clone(),
                        other => to_json(&Node {
                            pos: k.pos,
                            value: other.clone(),
                        })
                        .to_string(),
                    };
                    (key, to_json(v))
                })
                .collect(),
        ),
    }
}
