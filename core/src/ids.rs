//! Identifiers. A name id (`DagId`, `TaskId`) is created only by parsing, so an invalid one
//! cannot exist past the boundary; a row id (`DagRunId`, `TaskInstanceId`, `BackfillId`) is the
//! number the metadata database gave a row, typed so that one kind cannot stand for another.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Why a string is not a valid id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {kind} \"{value}\": {reason}")]
pub struct IdError {
    pub kind: &'static str,
    pub value: String,
    pub reason: &'static str,
}

fn check(kind: &'static str, value: &str) -> Result<(), IdError> {
    let reason = if value.is_empty() {
        Some("it is empty")
    } else if value.len() > 250 {
        Some("it is longer than 250 characters")
    } else if !value
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
    {
        Some("use only letters, digits, '_', '.' and '-'")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(IdError {
            kind,
            value: value.to_owned(),
            reason,
        }),
        None => Ok(()),
    }
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $kind:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// Parses `[A-Za-z0-9_.-]{1,250}`.
            pub fn parse(value: &str) -> Result<Self, IdError> {
                check($kind, value)?;
                Ok(Self(value.to_owned()))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl std::str::FromStr for $name {
            type Err = IdError;
            fn from_str(value: &str) -> Result<Self, IdError> {
                Self::parse(value)
            }
        }

        impl TryFrom<String> for $name {
            type Error = IdError;
            fn try_from(value: String) -> Result<Self, IdError> {
                check($kind, &value)?;
                Ok(Self(value))
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        // Hash and Eq derive from the inner string, so maps keyed by an id can be searched by
        // `&str`.
        impl std::borrow::Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}

id_type!(
    /// A DAG's id: the `id` key of its file, or the file stem.
    DagId,
    "dag id"
);
id_type!(
    /// A task's id: its key under `tasks:`.
    TaskId,
    "task id"
);
id_type!(
    /// A variable's key (`updraft variables`, `{{ var.value.<key> }}`).
    VariableKey,
    "variable key"
);
id_type!(
    /// A connection's id (`updraft connections`, `{{ conn.<id>.host }}`).
    ConnectionId,
    "connection id"
);

macro_rules! row_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub i64);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl From<i64> for $name {
            fn from(id: i64) -> Self {
                Self(id)
            }
        }

        impl std::str::FromStr for $name {
            type Err = std::num::ParseIntError;
            fn from_str(text: &str) -> Result<Self, Self::Err> {
                text.parse().map(Self)
            }
        }
    };
}

row_id!(
    /// The row id of a DAG run (`dag_run.id`, `dag_run_id` elsewhere); not its text `run_id`.
    DagRunId
);
row_id!(
    /// The row id of a task instance (`task_instance.id`, `task_instance_id` elsewhere).
    TaskInstanceId
);
row_id!(
    /// The row id of a backfill (`backfill.id`, `backfill_id` elsewhere).
    BackfillId
);

/// Which try of which task instance: the key of a `task_try` row. A worker keys the tries it
/// runs by it, since a task instance cleared and claimed again is another try of the same row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TryKey {
    pub task_instance: TaskInstanceId,
    pub try_number: i32,
}

impl fmt::Display for TryKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "try {} of task instance {}",
            self.try_number, self.task_instance
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_documented_alphabet() {
        assert_eq!(
            DagId::parse("sales_daily.v2-eu").unwrap().as_str(),
            "sales_daily.v2-eu"
        );
    }

    #[test]
    fn rejects_empty_long_and_foreign_characters() {
        assert_eq!(DagId::parse("").unwrap_err().reason, "it is empty");
        assert_eq!(
            TaskId::parse(&"a".repeat(251)).unwrap_err().reason,
            "it is longer than 250 characters"
        );
        assert_eq!(
            TaskId::parse("load data").unwrap_err().to_string(),
            "invalid task id \"load data\": use only letters, digits, '_', '.' and '-'"
        );
    }

    #[test]
    fn deserializing_checks_the_alphabet() {
        assert!(serde_json::from_str::<DagId>("\"a/b\"").is_err());
        assert_eq!(
            serde_json::from_str::<DagId>("\"ab\"").unwrap().as_str(),
            "ab"
        );
    }
}
