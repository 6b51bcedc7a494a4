//! The vocabulary a route of the API is described in ([`Operation`], [`Query`]): written next
//! to each route in `api::ROUTES`, and turned into the OpenAPI document by `openapi`.

use serde_json::{Value, json};

/// How the document describes one route.
#[derive(Debug, Clone, Copy)]
pub struct Operation {
    /// `operationId`.
    pub id: &'static str,
    /// Its group: meta, dags, runs, tasks, actions, system.
    pub tag: &'static str,
    pub summary: &'static str,
    pub query: &'static [Query],
    /// The schema of the JSON body, if it takes one.
    pub body: Option<&'static str>,
    /// The status and schema of success.
    pub status: u16,
    pub response: &'static str,
    /// An action: a viewer gets 403.
    pub action: bool,
}

impl Operation {
    /// A read: 200 with `response`.
    pub const fn read(
        id: &'static str,
        tag: &'static str,
        summary: &'static str,
        response: &'static str,
    ) -> Operation {
        Operation {
            id,
            tag,
            summary,
            query: &[],
            body: None,
            status: 200,
            response,
            action: false,
        }
    }

    /// An action: `status` with `response`, 403 for a viewer, 409 when the stored state
    /// contradicts it.
    pub const fn write(
        id: &'static str,
        tag: &'static str,
        summary: &'static str,
        body: Option<&'static str>,
        status: u16,
        response: &'static str,
    ) -> Operation {
        Operation {
            id,
            tag,
            summary,
            query: &[],
            body,
            status,
            response,
            action: true,
        }
    }
}

/// A query parameter.
#[derive(Debug, Clone, Copy)]
pub struct Query {
    pub name: &'static str,
    /// `string`, `integer` or `boolean`.
    pub kind: &'static str,
    pub description: &'static str,
    /// The values a string may take; empty: any.
    pub choices: &'static [&'static str],
    /// A regular expression a string must match.
    pub pattern: Option<&'static str>,
    /// The bounds of an integer.
    pub minimum: Option<i64>,
    pub maximum: Option<i64>,
}

impl Query {
    pub const fn text(name: &'static str, description: &'static str) -> Query {
        Query {
            name,
            kind: "string",
            description,
            choices: &[],
            pattern: None,
            minimum: None,
            maximum: None,
        }
    }

    /// A string of `choices`, or empty (no filter).
    pub const fn choice(
        name: &'static str,
        description: &'static str,
        choices: &'static [&'static str],
    ) -> Query {
        Query {
            choices,
            ..Query::text(name, description)
        }
    }

    /// A DAG id, or empty (no filter).
    pub const fn dag_id(name: &'static str, description: &'static str) -> Query {
        Query {
            pattern: Some(OPTIONAL_ID_PATTERN),
            ..Query::text(name, description)
        }
    }

    /// An integer from `minimum` to `maximum` (`None`: no upper bound).
    pub const fn integer(
        name: &'static str,
        description: &'static str,
        minimum: i64,
        maximum: Option<i64>,
    ) -> Query {
        Query {
            name,
            kind: "integer",
            description,
            choices: &[],
            pattern: None,
            minimum: Some(minimum),
            maximum,
        }
    }

    pub const fn boolean(name: &'static str, description: &'static str) -> Query {
        Query {
            kind: "boolean",
            ..Query::text(name, description)
        }
    }

    pub(crate) fn schema(&self) -> Value {
        let mut schema = json!({ "type": self.kind });
        if !self.choices.is_empty() {
            let mut choices = vec![""];
            choices.extend(self.choices);
            schema["enum"] = json!(choices);
        }
        if let Some(pattern) = self.pattern {
            schema["pattern"] = json!(pattern);
        }
        if let Some(minimum) = self.minimum {
            schema["minimum"] = json!(minimum);
        }
        if let Some(maximum) = self.maximum {
            schema["maximum"] = json!(maximum);
        }
        schema
    }
}

/// The ids of DAGs and tasks (`updraft_core::ids`).
pub const ID_PATTERN: &str = "^[A-Za-z0-9_.-]{1,250}$";
/// An id, or nothing.
const OPTIONAL_ID_PATTERN: &str = "^[A-Za-z0-9_.-]{0,250}$";

/// The page size and start of a list.
pub const LIMIT: Query = Query::integer(
    "limit",
    "Items per page, 1 to 500 (default 25).",
    1,
    Some(crate::model::MAX_LIMIT),
);
pub const OFFSET: Query = Query::integer(
    "offset",
    "Items to skip (next_offset of the previous page).",
    0,
    Some(i64::MAX),
);
