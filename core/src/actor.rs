//! [`Actor`]: who did something, as the event log names them.

use std::fmt;

/// Who made a change: the actor of its `event_log` row.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Actor {
    /// A user of the web UI or the API, by user name.
    User(String),
    /// The command line, by the name of the user of the terminal.
    Cli(String),
    /// A scheduler.
    Scheduler,
    /// A worker, by its name.
    Worker(String),
}

impl fmt::Display for Actor {
    /// The name the event log stores: the user's name for a user or the command line,
    /// `scheduler`, `worker <name>`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Actor::User(name) | Actor::Cli(name) => f.write_str(name),
            Actor::Scheduler => f.write_str("scheduler"),
            Actor::Worker(name) => write!(f, "worker {name}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_event_log_names_people_by_name_and_parts_by_what_they_are() {
        assert_eq!(Actor::User("ada".to_owned()).to_string(), "ada");
        assert_eq!(Actor::Cli("root".to_owned()).to_string(), "root");
        assert_eq!(Actor::Scheduler.to_string(), "scheduler");
        assert_eq!(
            Actor::Worker("host:1".to_owned()).to_string(),
            "worker host:1"
        );
    }
}
