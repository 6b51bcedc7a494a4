//! The backfill routes of the web server: the router through tower `oneshot`, on both
//! backends, each effect checked in the database.

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use chrono::{Duration, Utc};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;
use updraft_core::dag::{LoadOptions, decode};
use updraft_core::ids::BackfillId;
use updraft_core::state::RunType;
use updraft_metadata::testing::each_backend;
use updraft_metadata::{DagSync, Role, Store};
use updraft_webserver::auth::token_hash;

/// A daily DAG, and a manual-only one.
const DAILY: &str = "\
schedule: '0 0 * * *'
start_date: 2024-01-01
params:
  region: {type: string, default: eu, enum: [eu, us]}
tasks:
  extract: {run: 'echo extract'}
  load: {run: 'echo load', depends_on: extract}
";
const MANUAL: &str = "tasks:\n  only: {run: 'echo only'}\n";

struct App {
    router: Router,
    store: Store,
}

impl App {
    async fn new(store: Store) -> App {
        for (file, source) in [("daily.yaml", DAILY), ("manual.yaml", MANUAL)] {
            let dag = decode(file, source, &LoadOptions::default()).unwrap();
            let sync = DagSync {
                dag_id: dag.id.clone(),
                fileloc: dag.fileloc.clone(),
                owner: "data-eng".to_owned(),
                description: None,
                tags: Vec::new(),
                schedule: None,
                timezone: "UTC".to_owned(),
                max_active_runs: 16,
                max_active_tasks: 16,
                paused_on_creation: false,
                version_hash: dag.version_hash(),
                serialized: serde_json::to_value(&dag).unwrap(),
                source: source.to_owned(),
            };
            store.upsert_dag(&sync, Utc::now()).await.unwrap();
        }
        App {
            router: updraft_webserver::router(store.clone(), Default::default()),
            store,
        }
    }

    /// An API token of a new user.
    async fn token(&self, name: &str, role: Role) -> String {
        self.store
            .create_user(name, "not a hash", role, Utc::now())
            .await
            .unwrap();
        let token = format!("token-of-{name}");
        self.store
            .create_api_token(
                name,
                &token_hash(&token),
                &updraft_metadata::NewApiToken::default(),
                Utc::now(),
            )
            .await
            .unwrap();
        token
    }

    /// A browser session of a new admin: its cookie and CSRF token.
    async fn session(&self, name: &str) -> (String, String) {
        let user = self
            .store
            .create_user(name, "not a hash", Role::Admin, Utc::now())
            .await
            .unwrap();
        let (token, csrf) = (format!("session-of-{name}"), format!("csrf-of-{name}"));
        let now = Utc::now();
        self.store
            .create_session(
                user.id,
                &token_hash(&token),
                &csrf,
                now,
                now + Duration::hours(1),
            )
            .await
            .unwrap();
        (format!("updraft_session={token}"), csrf)
    }

    async fn send(&self, request: Request<Body>) -> (StatusCode, String, String) {
        let response = self.router.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let location = response
            .headers()
            .get(header::LOCATION)
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        (
            status,
            String::from_utf8_lossy(&bytes).into_owned(),
            location,
        )
    }

    async fn api(&self, token: &str, dag: &str, body: Value) -> (StatusCode, Value) {
        let request = Request::builder()
            .method(Method::POST)
            .uri(format!("/api/v1/dags/{dag}/backfills"))
            .header(header::AUTHORIZATION, format!("Bearer {token}"))
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body.to_string()))
            .unwrap();
        let (status, body, _) = self.send(request).await;
        let json = serde_json::from_str(&body).unwrap_or_else(|_| panic!("not JSON: {body}"));
        (status, json)
    }

    async fn form(
        &self,
        (cookie, csrf): &(String, String),
        fields: &[(&str, &str)],
        with_csrf: bool,
    ) -> (StatusCode, String, String) {
        let mut fields = fields.to_vec();
        if with_csrf {
            fields.push(("csrf_token", csrf));
        }
        let request = Request::builder()
            .method(Method::POST)
            .uri("/dags/daily/backfill")
            .header(header::COOKIE, cookie)
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Body::from(serde_urlencoded(&fields)))
            .unwrap();
        self.send(request).await
    }
}

fn serde_urlencoded(fields: &[(&str, &str)]) -> String {
    fields
        .iter()
        .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[tokio::test]
async fn the_api_plans_a_backfill_then_starts_it_as_the_user() {
    each_backend(|db| async move {
        let app = App::new(db.store().await).await;
        let admin = app.token("ada", Role::Admin).await;
        let request = json!({
            "from": "2024-01-01", "to": "2024-01-03", "conf": {"region": "us"},
            "max_active_runs": 2, "dry_run": true,
        });
        let (status, plan) = app.api(&admin, "daily", request.clone()).await;
        assert_eq!(status, StatusCode::OK, "{plan}");
        assert_eq!(plan["dry_run"], true);
        assert_eq!(plan["backfill"], Value::Null);
        assert_eq!(
            (&plan["plan"]["create"], &plan["plan"]["skip"]),
            (&json!(3), &json!(0))
        );
        let intervals = plan["plan"]["intervals"].as_array().unwrap();
        assert_eq!(intervals[0]["logical_date"], "2024-01-01T00:00:00Z");
        assert_eq!(intervals[0]["data_interval_end"], "2024-01-02T00:00:00Z");
        assert_eq!(intervals[2]["action"], "create");
        assert_eq!(intervals[2]["reason"], "no run yet");
        assert!(app.store.list_backfills(None, 10).await.unwrap().is_empty());

        // A viewer may look (a dry run changes nothing) but not start.
        let viewer = app.token("vic", Role::Viewer).await;
        let (status, _) = app.api(&viewer, "daily", request.clone()).await;
        assert_eq!(status, StatusCode::OK);
        let mut start = request.clone();
        start["dry_run"] = json!(false);
        let (status, error) = app.api(&viewer, "daily", start.clone()).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{error}");

        let (status, started) = app.api(&admin, "daily", start.clone()).await;
        assert_eq!(status, StatusCode::CREATED, "{started}");
        assert_eq!(
            (&started["created"], &started["rerun"]),
            (&json!(3), &json!(0))
        );
        assert_eq!(started["backfill"]["created_by"], "ada");
        assert_eq!(started["backfill"]["options"]["max_active_runs"], 2);
        let id = BackfillId(started["backfill"]["id"].as_i64().unwrap());
        let runs = app.store.list_backfill_runs(id).await.unwrap();
        assert_eq!(runs.len(), 3);
        assert!(runs.iter().all(|run| run.run_type == RunType::Backfill));
        assert!(runs.iter().all(|run| run.conf == json!({"region": "us"})));
        let events = app.store.list_events(None, 10).await.unwrap();
        assert!(
            events
                .iter()
                .any(|e| e.event == "backfill_create" && e.actor == "ada"),
            "{events:?}"
        );

        // Again: every date has a run now, so nothing is left to do.
        let (status, error) = app.api(&admin, "daily", start).await;
        assert_eq!(status, StatusCode::CONFLICT, "{error}");
        assert_eq!(
            error["error"],
            "nothing to backfill: every one of the 3 interval(s) is skipped (see the dry run \
             for why)"
        );
    })
    .await;
}

#[tokio::test]
async fn bad_backfill_requests_get_a_precise_400() {
    each_backend(|db| async move {
        let app = App::new(db.store().await).await;
        let admin = app.token("ada", Role::Admin).await;
        let cases = [
            (
                "daily",
                json!({"from": "2024-01-05", "to": "2024-01-01"}),
                "from 2024-01-05T00:00:00Z is after to 2024-01-01T00:00:00Z",
            ),
            (
                "daily",
                json!({"from": "yesterday", "to": "2024-01-01"}),
                "from: bad date \"yesterday\"; write a date (2024-03-01: midnight in the DAG's \
                 timezone, UTC) or an RFC 3339 date-time (2024-03-01T06:00:00Z)",
            ),
            (
                "manual",
                json!({"from": "2024-01-01", "to": "2024-01-02"}),
                "DAG \"manual\" has no schedule (manual runs only), so it has no intervals to \
                 backfill; create runs with `updraft dags trigger manual --logical-date DATE`",
            ),
            (
                "daily",
                json!({"from": "2000-01-01", "to": "2030-01-01"}),
                "the range from 2000-01-01T00:00:00Z to 2030-01-01T00:00:00Z yields \
                 more than 10000 runs of DAG \"daily\"; narrow it, or use `updraft dags \
                 backfill daily --yes` for more",
            ),
            (
                "daily",
                json!({"from": "2024-01-01T01:00:00Z", "to": "2024-01-01T02:00:00Z"}),
                "no run of DAG \"daily\" (every day at 00:00 (UTC)) has a logical date from \
                 2024-01-01T01:00:00Z to 2024-01-01T02:00:00Z: the range yields no \
                 intervals",
            ),
            (
                "daily",
                json!({"from": "2024-01-01", "to": "2024-01-02", "reprocess": "some"}),
                "reprocess: unknown reprocess mode \"some\"; use none, failed or all",
            ),
            (
                "daily",
                json!({"from": "2024-01-01", "to": "2024-01-02", "max_active_runs": 0}),
                "max_active_runs must be from 1 to 10000, not 0",
            ),
            (
                "daily",
                json!({"from": "2024-01-01", "to": "2024-01-02", "conf": [1]}),
                "conf must be a JSON object, found [1]",
            ),
            (
                "daily",
                json!({"from": "2024-01-01", "to": "2024-01-02", "conf": {"region": "mars"}}),
                "bad params for DAG \"daily\": ",
            ),
        ];
        for (dag, body, message) in cases {
            let (status, error) = app.api(&admin, dag, body.clone()).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {error}");
            let text = error["error"].as_str().unwrap();
            assert!(text.starts_with(message), "{body}:\n{text}\n{message}");
        }
        let (status, error) = app
            .api(
                &admin,
                "nope",
                json!({"from": "2024-01-01", "to": "2024-01-02"}),
            )
            .await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{error}");
        assert!(app.store.list_backfills(None, 10).await.unwrap().is_empty());
    })
    .await;
}

#[tokio::test]
async fn the_page_previews_starts_and_shows_errors_in_place() {
    each_backend(|db| async move {
        let app = App::new(db.store().await).await;
        let browser = app.session("ada").await;
        let request = Request::builder()
            .uri("/dags/daily/backfill")
            .header(header::COOKIE, &browser.0)
            .body(Body::empty())
            .unwrap();
        let (status, page, _) = app.send(request).await;
        assert_eq!(status, StatusCode::OK);
        assert!(page.contains("name=\"from\""), "{page}");
        assert!(
            page.contains("value=\"start\""),
            "an admin may start: {page}"
        );

        let fields = [
            ("from", "2024-01-01"),
            ("to", "2024-01-02"),
            ("reprocess", "failed"),
            ("max_active_runs", ""),
            ("conf", ""),
        ];
        let (status, page, _) = app
            .form(
                &browser,
                &[&fields[..], &[("intent", "preview")]].concat(),
                true,
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{page}");
        assert!(page.contains("Dry run: nothing was changed"), "{page}");
        assert!(page.contains("create 2, re-run 0, skip 0"), "{page}");
        assert!(
            page.contains("<option value=\"failed\" selected>"),
            "{page}"
        );
        assert!(app.store.list_backfills(None, 10).await.unwrap().is_empty());

        let bad = [
            ("from", "2024-01-09"),
            ("to", "2024-01-02"),
            ("intent", "preview"),
        ];
        let (status, page, _) = app.form(&browser, &bad, true).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(
            page.contains("from 2024-01-09T00:00:00Z is after to 2024-01-02T00:00:00Z"),
            "{page}"
        );
        assert!(
            page.contains("value=\"2024-01-09\""),
            "kept as entered: {page}"
        );

        // Without its CSRF token a session's POST is refused before anything happens.
        let start = [&fields[..], &[("intent", "start")]].concat();
        let (status, _, _) = app.form(&browser, &start, false).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert!(app.store.list_backfills(None, 10).await.unwrap().is_empty());

        let (status, _, location) = app.form(&browser, &start, true).await;
        assert_eq!(status, StatusCode::SEE_OTHER);
        assert_eq!(location, "/backfills?dag_id=daily");
        let backfills = app.store.list_backfills(None, 10).await.unwrap();
        assert_eq!(backfills.len(), 1);
        assert_eq!(backfills[0].created_by, "ada");
        assert_eq!(backfills[0].options["reprocess"], "failed");
    })
    .await;
}
