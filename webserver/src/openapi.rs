//! The OpenAPI 3.0 document of `/api/v1`, served at `/api/v1/openapi.json`.
//!
//! The paths come from `api::ROUTES`, the table the router is built from, so a route cannot
//! be served without being described or described without being served (this document's own
//! route is the one the router gets beside the table). What each route takes and answers is
//! written next to it there ([`Operation`]); the schemas of the bodies
//! are written here by hand, after the types they describe (`serde` derives, no schema
//! generator).

use serde_json::{Map, Value, json};

use crate::api::ROUTES;
use crate::apidoc::{ID_PATTERN, Operation};

/// Any text but a NUL character.
const NO_NUL: &str = r"^[^\u0000]*$";

/// How a date of a backfill's range starts (a date, or the date of a date-time).
const DATE_PREFIX: &str = "^[0-9]{4}-[0-9]{2}-[0-9]{2}";

/// The names in `{...}` of a path, in order.
pub fn path_parameters(path: &str) -> Vec<&str> {
    path.split('/')
        .filter_map(|segment| segment.strip_prefix('{')?.strip_suffix('}'))
        .collect()
}

fn path_parameter(name: &str) -> Value {
    let (schema, description) = match name {
        "dag_id" => (
            json!({"type": "string", "pattern": ID_PATTERN}),
            "A DAG id.",
        ),
        "run_id" => (
            json!({"type": "string", "minLength": 1}),
            "A run id, percent-encoded (e.g. scheduled__2024-01-01T00:00:00+00:00).",
        ),
        "task_id" => (
            json!({"type": "string", "pattern": ID_PATTERN}),
            "A task id.",
        ),
        "try_number" => (
            json!({"type": "integer", "format": "int32", "minimum": 1}),
            "A try, from 1.",
        ),
        "variable_key" => (
            json!({"type": "string", "pattern": ID_PATTERN}),
            "A variable's key.",
        ),
        "connection_id" => (
            json!({"type": "string", "pattern": ID_PATTERN}),
            "A connection's id.",
        ),
        "token_id" => (
            json!({"type": "integer", "format": "int64", "minimum": 1}),
            "An API token's id (as listed).",
        ),
        _ => (json!({"type": "string"}), ""),
    };
    json!({
        "name": name,
        "in": "path",
        "required": true,
        "description": description,
        "schema": schema,
    })
}

fn reference(schema: &str) -> Value {
    json!({ "$ref": format!("#/components/schemas/{schema}") })
}

fn content(schema: &str) -> Value {
    json!({ "application/json": { "schema": reference(schema) } })
}

fn error(description: &str) -> Value {
    json!({ "description": description, "content": content("Error") })
}

fn operation(path: &str, doc: &Operation) -> Value {
    let mut parameters: Vec<Value> = path_parameters(path)
        .into_iter()
        .map(path_parameter)
        .collect();
    parameters.extend(doc.query.iter().map(|query| {
        json!({
            "name": query.name,
            "in": "query",
            "required": false,
            "description": query.description,
            "schema": query.schema(),
        })
    }));
    let mut responses = Map::new();
    responses.insert(
        doc.status.to_string(),
        json!({ "description": "Success.", "content": content(doc.response) }),
    );
    if doc.id == "createBackfill" {
        responses.insert(
            "200".to_owned(),
            json!({ "description": "The dry run: the plan, nothing changed.", "content": content(doc.response) }),
        );
    }
    responses.insert(
        "400".to_owned(),
        error("Bad input: a malformed body, query or path, or a value that does not fit."),
    );
    responses.insert(
        "401".to_owned(),
        error("Not logged in, or a bad API token."),
    );
    if doc.action {
        responses.insert(
            "403".to_owned(),
            error("A viewer, or a session's request without its CSRF token."),
        );
        responses.insert(
            "409".to_owned(),
            error("The stored state contradicts the action (e.g. already in that state)."),
        );
    }
    if !path_parameters(path).is_empty() {
        responses.insert(
            "404".to_owned(),
            error("No such DAG, run, task, try, token, variable or connection."),
        );
    }
    if doc.body.is_some() {
        responses.insert(
            "413".to_owned(),
            error("The body is larger than the server reads (2 MiB)."),
        );
        responses.insert(
            "415".to_owned(),
            error("The body is not sent as application/json."),
        );
    }
    let mut operation = json!({
        "operationId": doc.id,
        "tags": [doc.tag],
        "summary": doc.summary,
        "parameters": parameters,
        "responses": responses,
    });
    if let Some(body) = doc.body {
        operation["requestBody"] = json!({ "required": true, "content": content(body) });
    }
    operation
}

/// This document's own route, served beside `api::ROUTES` (see [`serve`]).
const SELF: Operation = Operation::read("getOpenApi", "meta", "This document.", "OpenApi");

/// `GET /api/v1/openapi.json`.
pub async fn serve() -> axum::Json<Value> {
    axum::Json(document())
}

/// The document: this route and every route of `api::ROUTES`, and the schemas they name.
pub fn document() -> Value {
    let mut paths = Map::new();
    paths.insert(
        "/openapi.json".to_owned(),
        json!({ "get": operation("/openapi.json", &SELF) }),
    );
    for route in ROUTES {
        let method = method_name(route.method);
        let entry = paths
            .entry(route.path.to_owned())
            .or_insert_with(|| json!({}));
        entry[method] = operation(route.path, &route.doc);
    }
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "Updraft API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Everything the web UI shows, and its actions. Log in with a session \
                cookie (and its CSRF token in X-CSRF-Token for POSTs and DELETEs) or an API token \
                (`updraft users tokens create NAME`) as `Authorization: Bearer TOKEN` (the scheme in \
                any case). Errors, every rejection included, are {\"error\": \"...\"}. Bodies \
                are JSON objects whose members are never null (leave a member out for its \
                default). Lists are paged with limit and offset.",
        },
        "servers": [{"url": "/api/v1"}],
        "security": [{"bearer": []}, {"session": []}],
        "paths": paths,
        "components": {
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "description": "An API token."},
                "session": {"type": "apiKey", "in": "cookie", "name": crate::auth::SESSION_COOKIE},
            },
            "schemas": schemas(),
        },
    })
}

/// `get`, `post` or `delete`: the methods the API serves.
pub fn method_name(method: axum::routing::MethodFilter) -> &'static str {
    use axum::routing::MethodFilter;
    match method {
        MethodFilter::POST => "post",
        MethodFilter::DELETE => "delete",
        _ => "get",
    }
}

fn string() -> Value {
    json!({"type": "string"})
}

/// Text without a NUL character (which no database here stores).
fn text() -> Value {
    json!({"type": "string", "pattern": NO_NUL})
}

fn nullable(kind: &str) -> Value {
    json!({"type": kind, "nullable": true})
}

fn time() -> Value {
    json!({"type": "string", "format": "date-time"})
}

fn nullable_time() -> Value {
    json!({"type": "string", "format": "date-time", "nullable": true})
}

fn integer() -> Value {
    json!({"type": "integer"})
}

fn boolean() -> Value {
    json!({"type": "boolean"})
}

fn any_object() -> Value {
    json!({"type": "object", "additionalProperties": true})
}

fn array_of(schema: &str) -> Value {
    json!({"type": "array", "items": reference(schema)})
}

fn object(properties: Value) -> Value {
    json!({"type": "object", "properties": properties})
}

fn list(schema: &str) -> Value {
    object(json!({ "items": array_of(schema) }))
}

fn page(schema: &str) -> Value {
    object(json!({
        "items": array_of(schema),
        "limit": integer(),
        "offset": integer(),
        "next_offset": nullable("integer"),
    }))
}

fn states(names: &[&str]) -> Value {
    json!({"type": "string", "enum": names})
}

const RUN_STATES: &[&str] = &["queued", "running", "success", "failed"];
const TASK_STATES: &[&str] = &[
    "none",
    "scheduled",
    "queued",
    "running",
    "success",
    "failed",
    "skipped",
    "upstream_failed",
    "up_for_retry",
    "up_for_reschedule",
    "removed",
];

fn schemas() -> Value {
    let dag_run = object(json!({
        "id": integer(), "dag_id": string(), "run_id": string(),
        "run_type": states(&["scheduled", "manual", "backfill"]),
        "logical_date": time(), "data_interval_start": time(), "data_interval_end": time(),
        "run_after": time(), "state": states(RUN_STATES), "conf": any_object(),
        "version_hash": string(), "queued_at": nullable_time(), "start_date": nullable_time(),
        "end_date": nullable_time(), "backfill_id": nullable("integer"),
        "deadline_missed_at": {"type": "string", "format": "date-time", "nullable": true,
            "description": "When the run missed its DAG's deadline (recorded once); null if it has not."},
    }));
    let task_instance = object(json!({
        "id": integer(), "dag_run_id": integer(), "dag_id": string(), "run_id": string(),
        "task_id": string(), "state": states(TASK_STATES), "try_number": integer(),
        "max_tries": integer(), "pool": string(), "pool_slots": integer(), "queue": string(),
        "priority_weight": integer(), "queued_at": nullable_time(), "start_date": nullable_time(),
        "end_date": nullable_time(), "next_retry_at": nullable_time(),
        "first_start_date": {"type": "string", "format": "date-time", "nullable": true,
            "description": "When its first try since it was created or cleared started (start_date is its last try's)."},
        "deadline_missed_at": {"type": "string", "format": "date-time", "nullable": true,
            "description": "When it missed its task's deadline (recorded once); null if it has not."},
        "worker_id": nullable("string"), "hostname": nullable("string"),
        "heartbeat_at": nullable_time(),
        "rendered_command": {"type": "object", "nullable": true, "additionalProperties": true,
            "description": "The command as rendered when the task instance was queued; null before."},
        "updated_at": time(),
    }));
    let dag_row = object(json!({
        "dag_id": string(), "fileloc": string(), "is_paused": boolean(), "is_active": boolean(),
        "version_hash": string(), "last_parsed_at": time(), "owner": string(),
        "description": nullable("string"), "tags": {"type": "array", "items": string()},
        "schedule": nullable("string"), "timezone": string(), "max_active_runs": integer(),
        "max_active_tasks": integer(), "next_run": {"type": "object", "nullable": true},
    }));
    let backfill = object(json!({
        "id": integer(), "dag_id": string(), "from_date": time(), "to_date": time(),
        "options": any_object(),
        "state": states(&["running", "paused", "completed", "cancelled"]),
        "created_by": string(), "created_at": time(), "completed_at": nullable_time(),
    }));
    let mut summary = dag_row.clone();
    summary["properties"]["schedule_description"] = string();
    summary["properties"]["recent_runs"] = json!({"type": "array", "items": object(json!({
        "run_id": string(), "state": states(RUN_STATES), "logical_date": time(),
    }))});
    let mut backfill_view = backfill.clone();
    backfill_view["properties"]["progress"] = reference("BackfillProgress");
    let mut all = json!({
        "Error": {
            "type": "object",
            "required": ["error"],
            "properties": {"error": {"type": "string", "description": "What went wrong, and what to do."}},
        },
        "OpenApi": {"type": "object", "description": "An OpenAPI 3.0 document."},
        "Me": object(json!({"username": string(), "role": states(&["admin", "viewer"])})),
        "DagRow": dag_row,
        "DagSummary": summary,
        "DagSummaryPage": page("DagSummary"),
        "DagDetail": object(json!({
            "dag": reference("DagRow"),
            "schedule_description": string(),
            "params": any_object(),
            "tasks": {"type": "array", "items": object(json!({
                "task_id": string(), "depends_on": {"type": "array", "items": string()},
                "trigger_rule": string(), "retries": integer(), "pool": string(), "queue": string(),
            }))},
            "next_runs": {"type": "array", "items": object(json!({
                "logical_date": time(), "data_interval_start": time(),
                "data_interval_end": time(), "run_after": time(),
            }))},
        })),
        "DagSource": object(json!({
            "dag_id": string(), "fileloc": string(), "version_hash": string(), "source": string(),
        })),
        "Grid": object(json!({
            "runs": {"type": "array", "items": object(json!({
                "run_id": string(), "state": states(RUN_STATES), "logical_date": time(),
            }))},
            "rows": {"type": "array", "items": object(json!({
                "task_id": string(),
                "cells": {"type": "array", "items": {
                    "type": "object", "nullable": true,
                    "properties": {"state": states(TASK_STATES), "try_number": integer()},
                }},
            }))},
        })),
    });
    let runs = json!({
        "DagRun": dag_run,
        "DagRunPage": page("DagRun"),
        "TaskInstance": task_instance,
        "TaskInstanceList": list("TaskInstance"),
        "TaskTry": object(json!({
            "task_instance_id": integer(), "try_number": integer(), "state": states(TASK_STATES),
            "worker_id": nullable("string"), "hostname": nullable("string"),
            "pid": nullable("integer"), "start_date": time(), "end_date": nullable_time(),
            "exit_code": nullable("integer"),
            "handlers": {"type": "array", "items": reference("HandlerRun"),
                "description": "What the try's handler (on_success, on_retry or on_failure) did: it runs after the try's end is recorded."},
        })),
        "HandlerRun": object(json!({
            "handler": states(&["on_success", "on_retry", "on_failure"]),
            "start_date": time(), "end_date": time(),
            "ending": {"type": "string", "description": "How its process ended, e.g. exited with code 0."},
            "log": {"type": "string", "description": "Its output, masked, cut at 64 KiB."},
            "try_number": nullable("integer"),
        })),
        "TaskTryList": list("TaskTry"),
        "LogPiece": object(json!({
            "text": string(), "next_offset": integer(),
            "running": {"type": "boolean", "description": "The try is still running: more may come."},
            "complete": {"type": "boolean", "description": "The try ended and this read reached the end of its log."},
        })),
        "TriggerRequest": {
            "type": "object",
            "additionalProperties": false,
            "properties": {
                "conf": {"type": "object", "description": "Overrides of the DAG's params."},
                "logical_date": {"type": "string", "format": "date-time", "description": "Default: now."},
            },
        },
        "Paused": object(json!({"dag_id": string(), "is_paused": boolean()})),
        "MarkRequest": {
            "type": "object",
            "additionalProperties": false,
            "required": ["state"],
            "properties": {"state": states(&["success", "failed"])},
        },
        "Marked": object(json!({"run_id": string(), "task_id": string(), "state": string()})),
        "Cancelled": object(json!({
            "task_instances_failed": integer(),
            "task_instances_skipped": integer(),
        })),
        "ClearRequest": {
            "type": "object",
            "additionalProperties": false,
            "properties": {
                "downstream": boolean(), "upstream": boolean(), "past": boolean(),
                "future": boolean(), "only_failed": boolean(),
                "dry_run": {"type": "boolean", "description": "Only list what would be cleared."},
            },
        },
        "ClearOutcome": object(json!({
            "dry_run": boolean(),
            "task_instances": {"type": "array", "items": object(json!({
                "run_id": string(), "task_id": string(), "state": states(TASK_STATES),
            }))},
            "runs_requeued": integer(),
        })),
    });
    let rest = json!({
        "BackfillRequest": {
            "type": "object",
            "additionalProperties": false,
            "required": ["from", "to"],
            "properties": {
                "from": {"type": "string", "pattern": DATE_PREFIX, "description": "First logical date: YYYY-MM-DD (midnight in the DAG's timezone), a date-time without offset (in the DAG's timezone) or RFC 3339.", "example": "2024-03-01"},
                "to": {"type": "string", "pattern": DATE_PREFIX, "description": "Last logical date, included; the same forms.", "example": "2024-03-31"},
                "reprocess": {"type": "string", "enum": ["none", "failed", "all"], "default": "none", "description": "Dates with a finished run: none skips them, failed re-runs the failed ones, all every one."},
                "max_active_runs": {"type": "integer", "minimum": 1, "maximum": 10000, "description": "Runs of the backfill at once; default the DAG's."},
                "run_backwards": {"type": "boolean", "default": false, "description": "Newest date first."},
                "conf": {"type": "object", "description": "Every run's conf: overrides of the DAG's params."},
                "dry_run": {"type": "boolean", "default": false, "description": "Only plan: change nothing (any role)."},
            },
        },
        "BackfillPlan": object(json!({
            "dag_id": string(), "from": time(), "to": time(), "timezone": string(),
            "schedule": string(), "create": integer(), "rerun": integer(), "skip": integer(),
            "warnings": {"type": "array", "items": string()},
            "intervals": {"type": "array", "items": object(json!({
                "logical_date": time(), "data_interval_start": time(), "data_interval_end": time(),
                "action": states(&["create", "re-run", "skip"]), "reason": string(),
                "run_id": nullable("string"),
            }))},
        })),
        "BackfillOutcome": object(json!({
            "dry_run": boolean(),
            "backfill": {"allOf": [reference("Backfill")], "nullable": true},
            "created": integer(), "rerun": integer(),
            "taken": {"type": "array", "items": time(), "description": "Dates another run took meanwhile: skipped."},
            "plan": reference("BackfillPlan"),
        })),
        "Backfill": backfill,
        "BackfillProgress": object(json!({
            "queued": integer(), "running": integer(), "success": integer(), "failed": integer(),
            "task_instances": integer(), "tasks_done": integer(),
        })),
        "BackfillView": backfill_view,
        "BackfillPage": page("BackfillView"),
        "Pool": object(json!({
            "name": string(), "slots": integer(), "description": string(),
            "rate_limit": {
                "type": "string", "nullable": true,
                "description": "At most so many tries start per period (10/m, 2/s, 100/h, 5/30s)",
            },
            "running_slots": integer(), "queued_slots": integer(),
        })),
        "PoolList": list("Pool"),
        "Notification": object(json!({
            "event": states(&["task_failed", "task_retry", "task_succeeded", "run_failed", "run_succeeded", "deadline_missed"]),
            "target": {"type": "string", "description": "Which notifier of the DAG file: dag.0, task.load.1."},
            "channel": states(&["webhook", "slack", "teams", "email", "command"]),
            "state": states(&["pending", "sending", "sent", "failed"]),
            "attempts": integer(), "next_attempt_at": nullable_time(), "sent_at": nullable_time(),
            "last_error": {"type": "string", "nullable": true, "description": "Why the last attempt failed."},
            "created_at": time(),
        })),
        "NotificationList": list("Notification"),
        "Worker": object(json!({
            "id": string(), "hostname": string(), "queues": {"type": "array", "items": string()},
            "concurrency": integer(), "state": string(), "started_at": time(), "heartbeat_at": time(),
            "running": integer(),
        })),
        "WorkerList": list("Worker"),
        "Event": object(json!({
            "id": integer(), "at": time(), "actor": string(), "dag_id": nullable("string"),
            "run_id": nullable("string"), "task_id": nullable("string"), "event": string(),
            "details": any_object(),
        })),
        "EventPage": page("Event"),
        "ImportError": object(json!({"filename": string(), "message": string(), "at": time()})),
        "ImportErrorList": list("ImportError"),
        "Token": object(json!({
            "id": integer(), "username": string(), "name": string(), "created_at": time(),
            "expires_at": {"type": "string", "format": "date-time", "nullable": true, "description": "null: never expires."},
            "revoked_at": nullable_time(),
            "status": states(&["active", "expired", "revoked"]),
        })),
        "TokenList": list("Token"),
    });
    let connection = object(json!({
        "connection_id": string(), "conn_type": string(), "host": nullable("string"),
        "port": nullable("integer"), "login": nullable("string"), "schema": nullable("string"),
        "has_password": {"type": "boolean", "description": "Whether it has a password, which is never shown."},
        "has_extra": boolean(), "description": string(), "updated_at": time(),
    }));
    let mut connection_detail = connection.clone();
    connection_detail["properties"]["extra"] = json!({
        "type": "object", "nullable": true, "additionalProperties": true,
        "description": "The extra: values of sensitive names are *** for an admin, every value for a viewer.",
    });
    let secrets = json!({
        "Variable": object(json!({
            "key": string(),
            "value": {"type": "string", "description": "*** for a secret one, but in an admin's read of it."},
            "is_secret": boolean(), "description": string(), "updated_at": time(),
        })),
        "VariablePage": page("Variable"),
        "SetVariableRequest": {
            "type": "object",
            "additionalProperties": false,
            "required": ["key", "value"],
            "properties": {
                "key": {"type": "string", "pattern": ID_PATTERN},
                "value": text(),
                "description": text(),
                "is_secret": {"type": "boolean", "description": "Default: secret when the key is a sensitive name (password, token, api_key, ...)."},
            },
        },
        "VariableDeleted": object(json!({"key": string(), "deleted": boolean()})),
        "Connection": connection,
        "ConnectionDetail": connection_detail,
        "ConnectionPage": page("Connection"),
        "SetConnectionRequest": {
            "type": "object",
            "additionalProperties": false,
            "required": ["connection_id", "conn_type"],
            "properties": {
                "connection_id": {"type": "string", "pattern": ID_PATTERN},
                "conn_type": {"type": "string", "pattern": r"^[^\u0000]*[^\s\u0000][^\u0000]*$", "description": "postgres, http, ..."},
                "host": text(),
                "port": {"type": "integer", "minimum": 0, "maximum": 65535},
                "login": text(),
                "password": {"type": "string", "pattern": NO_NUL, "writeOnly": true},
                "schema": text(),
                "extra": {"type": "object", "additionalProperties": true},
                "description": text(),
            },
        },
        "ConnectionDeleted": object(json!({"connection_id": string(), "deleted": boolean()})),
    });
    for part in [runs, rest, secrets] {
        if let (Some(all), Value::Object(part)) = (all.as_object_mut(), part) {
            all.extend(part);
        }
    }
    all
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every `$ref` in `value`.
    fn references<'a>(value: &'a Value, found: &mut Vec<&'a str>) {
        match value {
            Value::Object(map) => {
                for (key, value) in map {
                    match (key.as_str(), value) {
                        ("$ref", Value::String(target)) => found.push(target),
                        _ => references(value, found),
                    }
                }
            }
            Value::Array(items) => items.iter().for_each(|item| references(item, found)),
            _ => {}
        }
    }

    #[test]
    fn every_reference_names_a_schema_of_the_document() {
        let document = document();
        let mut found = Vec::new();
        references(&document, &mut found);
        assert!(found.len() > 40, "{}", found.len());
        for target in found {
            let name = target.strip_prefix("#/components/schemas/").unwrap();
            assert!(
                document["components"]["schemas"].get(name).is_some(),
                "{target} is not defined"
            );
        }
    }

    #[test]
    fn each_route_is_one_operation_with_its_path_parameters() {
        let document = document();
        let operations: usize = document["paths"]
            .as_object()
            .unwrap()
            .values()
            .map(|item| item.as_object().unwrap().len())
            .sum();
        // The table's routes and this document's own.
        assert_eq!(operations, ROUTES.len() + 1);
        let log = &document["paths"]["/dags/{dag_id}/runs/{run_id}/tasks/{task_id}/tries/{try_number}/log"]
            ["get"];
        let names: Vec<&str> = log["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            names,
            [
                "dag_id",
                "run_id",
                "task_id",
                "try_number",
                "offset",
                "limit"
            ]
        );
        let mut ids: Vec<&str> = ROUTES.iter().map(|route| route.doc.id).collect();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), ROUTES.len(), "operation ids are unique");
    }
}
