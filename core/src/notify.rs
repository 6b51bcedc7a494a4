//! Notifiers (a DAG's and a task's `notify:`): on which events to tell whom, and what to say.
//! Pure: which notifiers an event concerns, and the message of each channel; sending is the
//! notifier's (`updraft-notifier`), from the event log, so a notice never holds a state back.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use indexmap::IndexMap;
use serde::{Deserialize, Serialize};

use crate::dag::{Dag, Handler};
use crate::state::UnknownName;

/// What a notifier is told of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NotifyEvent {
    TaskFailed,
    TaskRetry,
    TaskSucceeded,
    RunFailed,
    RunSucceeded,
    DeadlineMissed,
}

impl NotifyEvent {
    pub const ALL: [NotifyEvent; 6] = [
        NotifyEvent::TaskFailed,
        NotifyEvent::TaskRetry,
        NotifyEvent::TaskSucceeded,
        NotifyEvent::RunFailed,
        NotifyEvent::RunSucceeded,
        NotifyEvent::DeadlineMissed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            NotifyEvent::TaskFailed => "task_failed",
            NotifyEvent::TaskRetry => "task_retry",
            NotifyEvent::TaskSucceeded => "task_succeeded",
            NotifyEvent::RunFailed => "run_failed",
            NotifyEvent::RunSucceeded => "run_succeeded",
            NotifyEvent::DeadlineMissed => "deadline_missed",
        }
    }

    /// Whether a task's `notify` may name it (the run's events are its DAG's).
    pub fn is_of_a_task(self) -> bool {
        !matches!(self, NotifyEvent::RunFailed | NotifyEvent::RunSucceeded)
    }

    /// The event an `event_log` row is, if any: a try's end (`try_ended` with its state), a
    /// run's end (`run_finished`), a missed deadline.
    pub fn of_logged(event: &str, details: &serde_json::Value) -> Option<NotifyEvent> {
        let state = details.get("state").and_then(|state| state.as_str());
        match (event, state) {
            ("try_ended", Some("failed")) => Some(NotifyEvent::TaskFailed),
            ("try_ended", Some("up_for_retry")) => Some(NotifyEvent::TaskRetry),
            ("try_ended", Some("success")) => Some(NotifyEvent::TaskSucceeded),
            ("run_finished", Some("failed")) => Some(NotifyEvent::RunFailed),
            ("run_finished", Some("success")) => Some(NotifyEvent::RunSucceeded),
            ("deadline_missed", _) => Some(NotifyEvent::DeadlineMissed),
            _ => None,
        }
    }
}

impl fmt::Display for NotifyEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for NotifyEvent {
    type Err = UnknownName;

    fn from_str(name: &str) -> Result<Self, UnknownName> {
        NotifyEvent::ALL
            .into_iter()
            .find(|event| event.as_str() == name)
            .ok_or_else(|| UnknownName {
                what: "notify event",
                name: name.to_owned(),
            })
    }
}

/// Where a notice goes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    /// A JSON POST of the notice ([`Notice`], documented in the README).
    Webhook {
        url: String,
        #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
        headers: IndexMap<String, String>,
    },
    /// A Slack incoming webhook: `{"text": ...}`.
    Slack { webhook: String },
    /// A Microsoft Teams incoming webhook: a MessageCard.
    Teams { webhook: String },
    /// Mail through the installation's SMTP connection (`smtp_default`).
    Email { to: Vec<String> },
    /// A command run by the scheduler, told the notice in its environment.
    Command(Handler),
}

impl Channel {
    /// Its addresses and headers: what may be templated and may hold secret references.
    pub fn texts_mut(&mut self) -> Vec<&mut String> {
        match self {
            Channel::Webhook { url, headers } => {
                std::iter::once(url).chain(headers.values_mut()).collect()
            }
            Channel::Slack { webhook } | Channel::Teams { webhook } => vec![webhook],
            Channel::Email { .. } | Channel::Command(_) => Vec::new(),
        }
    }

    /// Its kind, as the YAML key and the `notification` table name it.
    pub fn kind(&self) -> &'static str {
        match self {
            Channel::Webhook { .. } => "webhook",
            Channel::Slack { .. } => "slack",
            Channel::Teams { .. } => "teams",
            Channel::Email { .. } => "email",
            Channel::Command(_) => "command",
        }
    }
}

/// One `notify:` entry: the events it is told of and where it tells them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notifier {
    pub on: Vec<NotifyEvent>,
    pub channel: Channel,
}

/// How long a send may take, and how many times one is tried in all.
pub const SEND_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a `command` notifier may run.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);
pub const SEND_ATTEMPTS: i32 = 3;

/// When a send that failed on its `attempt`-th try (1, 2, ...) is tried again: 5 s, then 30 s.
pub fn retry_delay(attempt: i32) -> Duration {
    match attempt {
        ..=1 => Duration::from_secs(5),
        _ => Duration::from_secs(30),
    }
}

/// The notifiers of `dag` an event concerns, each with its name (`dag.0`, `task.load.1`: the
/// list and index it has in the DAG file): a task's own for its task's events, and the DAG's
/// for every event of the run and its tasks.
pub fn concerned<'d>(
    dag: &'d Dag,
    task_id: Option<&str>,
    event: NotifyEvent,
) -> Vec<(String, &'d Notifier)> {
    let task = task_id.and_then(|id| dag.task(id));
    let of_task = task.into_iter().flat_map(|task| {
        task.notify
            .iter()
            .enumerate()
            .map(move |(index, notifier)| (format!("task.{}.{index}", task.id), notifier))
    });
    let of_dag = dag
        .notify
        .iter()
        .enumerate()
        .map(|(index, notifier)| (format!("dag.{index}"), notifier));
    of_task
        .chain(of_dag)
        .filter(|(_, notifier)| notifier.on.contains(&event))
        .collect()
}

/// What happened, as a notifier tells it: the webhook's JSON body, and the text of the others.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Notice {
    pub event: NotifyEvent,
    pub dag_id: String,
    pub run_id: String,
    pub task_id: Option<String>,
    pub try_number: Option<i64>,
    pub exit_code: Option<i64>,
    /// For `deadline_missed`: the deadline, and when it was due.
    pub deadline: Option<String>,
    pub due: Option<DateTime<Utc>>,
    pub logical_date: DateTime<Utc>,
    /// When it happened.
    pub at: DateTime<Utc>,
    /// The run's or task instance's page in the UI, when the installation has a base URL.
    pub url: Option<String>,
    /// The end of the try's log (masked as stored).
    pub log_tail: Option<String>,
}

impl Notice {
    /// One line: what happened to what.
    pub fn title(&self) -> String {
        let what = match &self.task_id {
            Some(task) => format!("{}.{task}", self.dag_id),
            None => self.dag_id.clone(),
        };
        let how = match self.event {
            NotifyEvent::TaskFailed => "failed".to_owned(),
            NotifyEvent::TaskRetry => "failed and will be retried".to_owned(),
            NotifyEvent::TaskSucceeded | NotifyEvent::RunSucceeded => "succeeded".to_owned(),
            NotifyEvent::RunFailed => "run failed".to_owned(),
            NotifyEvent::DeadlineMissed => "missed its deadline".to_owned(),
        };
        format!("[updraft] {what} {how} ({})", self.run_id)
    }

    /// The body of a mail or a chat message: the facts, the link, the log tail.
    pub fn text(&self) -> String {
        let mut lines = vec![
            format!("DAG: {}", self.dag_id),
            format!("Run: {}", self.run_id),
        ];
        if let Some(task) = &self.task_id {
            lines.push(format!("Task: {task}"));
        }
        if let Some(number) = self.try_number {
            lines.push(format!("Try: {number}"));
        }
        if let Some(code) = self.exit_code {
            lines.push(format!("Exit code: {code}"));
        }
        if let (Some(deadline), Some(due)) = (&self.deadline, self.due) {
            lines.push(format!("Deadline: {deadline} (due {})", due.to_rfc3339()));
        }
        lines.push(format!("Logical date: {}", self.logical_date.to_rfc3339()));
        lines.push(format!("At: {}", self.at.to_rfc3339()));
        if let Some(url) = &self.url {
            lines.push(format!("Open: {url}"));
        }
        let mut text = lines.join("\n");
        if let Some(tail) = self.log_tail.as_deref().filter(|tail| !tail.is_empty()) {
            text.push_str("\n\nEnd of the log:\n");
            text.push_str(tail);
        }
        text
    }

    /// The webhook's body: the notice itself.
    pub fn webhook_body(&self) -> serde_json::Value {
        serde_json::to_value(self).expect("a notice is JSON")
    }

    /// A Slack incoming webhook's body.
    pub fn slack_body(&self) -> serde_json::Value {
        serde_json::json!({ "text": format!("*{}*\n```{}```", self.title(), self.text()) })
    }

    /// A Microsoft Teams incoming webhook's body (a MessageCard).
    pub fn teams_body(&self) -> serde_json::Value {
        serde_json::json!({
            "@type": "MessageCard",
            "@context": "https://schema.org/extensions",
            "summary": self.title(),
            "title": self.title(),
            "text": format!("<pre>{}</pre>", escape_html(&self.text())),
        })
    }

    /// What a `command` notifier gets in its environment besides the notice's JSON.
    pub fn environment(&self) -> Vec<(String, String)> {
        let mut env = vec![
            ("UPDRAFT_EVENT".to_owned(), self.event.to_string()),
            ("UPDRAFT_DAG_ID".to_owned(), self.dag_id.clone()),
            ("UPDRAFT_RUN_ID".to_owned(), self.run_id.clone()),
            ("UPDRAFT_NOTICE".to_owned(), self.webhook_body().to_string()),
        ];
        if let Some(task) = &self.task_id {
            env.push(("UPDRAFT_TASK_ID".to_owned(), task.clone()));
        }
        if let Some(url) = &self.url {
            env.push(("UPDRAFT_URL".to_owned(), url.clone()));
        }
        env
    }
}

fn escape_html(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dag::{LoadOptions, decode};

    fn notice(event: NotifyEvent, task: Option<&str>) -> Notice {
        let at = DateTime::parse_from_rfc3339("2025-03-01T06:05:00Z")
            .unwrap()
            .with_timezone(&Utc);
        Notice {
            event,
            dag_id: "sales".to_owned(),
            run_id: "scheduled__2025-03-01T06:00:00+00:00".to_owned(),
            task_id: task.map(str::to_owned),
            try_number: task.map(|_| 2),
            exit_code: task.map(|_| 3),
            deadline: None,
            due: None,
            logical_date: at,
            at,
            url: Some("http://updraft.example/dags/sales".to_owned()),
            log_tail: task.map(|_| "boom <3\n".to_owned()),
        }
    }

    #[test]
    fn logged_events_are_notify_events_by_their_state() {
        let state = |s: &str| serde_json::json!({ "state": s });
        assert_eq!(
            NotifyEvent::of_logged("try_ended", &state("failed")),
            Some(NotifyEvent::TaskFailed)
        );
        assert_eq!(
            NotifyEvent::of_logged("try_ended", &state("up_for_retry")),
            Some(NotifyEvent::TaskRetry)
        );
        assert_eq!(NotifyEvent::of_logged("try_ended", &state("skipped")), None);
        assert_eq!(
            NotifyEvent::of_logged("run_finished", &state("success")),
            Some(NotifyEvent::RunSucceeded)
        );
        assert_eq!(
            NotifyEvent::of_logged("deadline_missed", &serde_json::json!({})),
            Some(NotifyEvent::DeadlineMissed)
        );
        assert_eq!(NotifyEvent::of_logged("mark", &state("failed")), None);
        for event in NotifyEvent::ALL {
            assert_eq!(event.as_str().parse::<NotifyEvent>(), Ok(event));
        }
    }

    #[test]
    fn an_event_concerns_its_tasks_notifiers_and_the_dags() {
        let dag = decode(
            "dags/sales.yaml",
            "notify:\n  - {on: [run_failed, task_failed], webhook: http://a}\n\
             tasks:\n  load:\n    run: x\n    notify:\n      - {on: [task_retry], slack: {webhook: http://b}}\n\
             \x20     - {on: [task_failed], email: {to: [a@example.com]}}\n  other: {run: x}\n",
            &LoadOptions::default(),
        )
        .unwrap();
        let names = |task: Option<&str>, event| -> Vec<String> {
            concerned(&dag, task, event)
                .into_iter()
                .map(|(name, _)| name)
                .collect()
        };
        assert_eq!(
            names(Some("load"), NotifyEvent::TaskFailed),
            ["task.load.1", "dag.0"]
        );
        assert_eq!(names(Some("load"), NotifyEvent::TaskRetry), ["task.load.0"]);
        assert_eq!(names(Some("other"), NotifyEvent::TaskFailed), ["dag.0"]);
        assert_eq!(names(None, NotifyEvent::RunFailed), ["dag.0"]);
        assert!(names(None, NotifyEvent::RunSucceeded).is_empty());
    }

    #[test]
    fn each_channel_says_what_happened_with_the_link_and_the_log_tail() {
        let failed = notice(NotifyEvent::TaskFailed, Some("load"));
        assert_eq!(
            failed.title(),
            "[updraft] sales.load failed (scheduled__2025-03-01T06:00:00+00:00)"
        );
        let text = failed.text();
        for line in [
            "DAG: sales",
            "Task: load",
            "Try: 2",
            "Exit code: 3",
            "Open: http://updraft.example/dags/sales",
            "End of the log:\nboom <3",
        ] {
            assert!(text.contains(line), "{line} in {text}");
        }
        let body = failed.webhook_body();
        assert_eq!(body["event"], "task_failed");
        assert_eq!(body["task_id"], "load");
        assert_eq!(body["exit_code"], 3);
        assert!(
            failed.slack_body()["text"]
                .as_str()
                .unwrap()
                .starts_with("*[updraft] sales.load failed")
        );
        let teams = failed.teams_body();
        assert_eq!(teams["@type"], "MessageCard");
        assert!(teams["text"].as_str().unwrap().contains("boom &lt;3"));
        let run = notice(NotifyEvent::RunFailed, None);
        assert_eq!(
            run.title(),
            "[updraft] sales run failed (scheduled__2025-03-01T06:00:00+00:00)"
        );
        assert!(!run.text().contains("Task:"));
    }

    #[test]
    fn a_failed_send_is_tried_again_later_and_at_most_so_often() {
        assert_eq!(retry_delay(1), Duration::from_secs(5));
        assert_eq!(retry_delay(2), Duration::from_secs(30));
        assert_eq!(SEND_ATTEMPTS, 3);
    }
}
