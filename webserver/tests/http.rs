//! The web server through its router (tower `oneshot`, no socket), every test on both
//! backends: the auth rules (401, 403, CSRF, roles), every page and API route, escaping of
//! DAG-supplied text, and each action's effect in the database.

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use chrono::{Duration, TimeZone, Utc};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;
use updraft_core::dag::{Dag, LoadOptions, decode};
use updraft_core::ids::{DagId, TaskId, TaskInstanceId, TryKey};
use updraft_core::seal::Keyring;
use updraft_core::secret::SecretsConfig;
use updraft_core::state::{DagRunState, HandlerName, RunType, TaskState, WorkerState};
use updraft_metadata::testing::each_backend;
use updraft_metadata::{
    CreateOutcome, DagSync, HandlerRun, NewApiToken, NewDagRun, NewTaskInstance, NewTaskTry, Role,
    Store, Worker,
};
use updraft_webserver::auth::{hash_password, token_hash};
use updraft_webserver::router;

/// extract -> transform -> load, with typed params; its description is hostile HTML.
const ETL: &str = r#"
description: "<script>alert('dag')</script>"
tags: ["<b>bold</b>", daily]
schedule: "0 2 * * *"
start_date: 2024-01-01
params:
  region: {type: string, default: "<script>alert('param')</script>", description: "<i>where</i>"}
  days: {type: integer, default: 1, minimum: 1}
tasks:
  extract: {run: "echo extract"}
  transform: {run: "echo transform", depends_on: extract}
  load: {run: "echo load", depends_on: transform, retries: 2}
"#;

/// The installation's secrets: a key of its own, the built-in sensitive names.
fn secrets() -> SecretsConfig {
    SecretsConfig {
        keyring: Some(Keyring::parse(&Keyring::new_key()).unwrap()),
        ..SecretsConfig::default()
    }
}

struct App {
    router: Router,
    store: Store,
    dag: Dag,
}

/// A logged-in browser (session cookie and its CSRF token) or a script (API token).
#[derive(Clone)]
enum Who {
    Browser { cookie: String, csrf: String },
    Script { token: String },
    Nobody,
}

impl App {
    async fn new(store: Store) -> App {
        let dag = decode("dags/etl.yaml", ETL, &LoadOptions::default()).unwrap();
        let sync = DagSync {
            dag_id: dag.id.clone(),
            fileloc: dag.fileloc.clone(),
            owner: "data-eng".to_owned(),
            description: dag.description.clone(),
            tags: dag.tags.clone(),
            schedule: Some("0 2 * * *".to_owned()),
            timezone: "UTC".to_owned(),
            max_active_runs: 16,
            max_active_tasks: 16,
            paused_on_creation: false,
            version_hash: dag.version_hash(),
            serialized: serde_json::to_value(&dag).unwrap(),
            source: ETL.to_owned(),
        };
        store.upsert_dag(&sync, Utc::now()).await.unwrap();
        App {
            router: router(store.clone(), secrets()),
            store,
            dag,
        }
    }

    /// A user with a session (as a login makes one), without paying for argon2.
    async fn browser(&self, name: &str, role: Role) -> Who {
        let user = self
            .store
            .create_user(name, "not a hash", role, Utc::now())
            .await
            .unwrap();
        let token = format!("session-of-{name}");
        let csrf = format!("csrf-of-{name}");
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
        Who::Browser {
            cookie: format!("updraft_session={token}"),
            csrf,
        }
    }

    async fn script(&self, name: &str, role: Role) -> Who {
        self.store
            .create_user(name, "not a hash", role, Utc::now())
            .await
            .unwrap();
        let token = format!("token-of-{name}");
        self.store
            .create_api_token(
                name,
                &token_hash(&token),
                &NewApiToken::default(),
                Utc::now(),
            )
            .await
            .unwrap();
        Who::Script { token }
    }

    async fn send(&self, request: Request<Body>) -> Reply {
        let response = self.router.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        Reply {
            status,
            headers,
            body: String::from_utf8_lossy(&bytes).into_owned(),
        }
    }

    async fn get(&self, who: &Who, path: &str) -> Reply {
        self.send(request(who, Method::GET, path, None)).await
    }

    /// A JSON POST (no CSRF token: scripts and the API's own callers add it as a header).
    async fn post_json(&self, who: &Who, path: &str, body: Value) -> Reply {
        let mut request = request(who, Method::POST, path, Some(body.to_string()));
        request
            .headers_mut()
            .insert(header::CONTENT_TYPE, "application/json".parse().unwrap());
        if let Who::Browser { csrf, .. } = who {
            request
                .headers_mut()
                .insert("x-csrf-token", csrf.parse().unwrap());
        }
        self.send(request).await
    }

    /// A DELETE, with the session's CSRF token in its header as the API's callers send it.
    async fn delete(&self, who: &Who, path: &str) -> Reply {
        let mut request = request(who, Method::DELETE, path, None);
        if let Who::Browser { csrf, .. } = who {
            request
                .headers_mut()
                .insert("x-csrf-token", csrf.parse().unwrap());
        }
        self.send(request).await
    }

    /// A form POST as a page sends it, with the session's CSRF token.
    async fn post_form(&self, who: &Who, path: &str, fields: &[(&str, &str)]) -> Reply {
        let mut fields: Vec<(&str, &str)> = fields.to_vec();
        if let Who::Browser { csrf, .. } = who {
            fields.push(("csrf_token", csrf));
        }
        self.post_raw_form(who, path, &fields).await
    }

    async fn post_raw_form(&self, who: &Who, path: &str, fields: &[(&str, &str)]) -> Reply {
        let body = serde_urlencoded::to_string(fields).unwrap();
        let mut request = request(who, Method::POST, path, Some(body));
        request.headers_mut().insert(
            header::CONTENT_TYPE,
            "application/x-www-form-urlencoded".parse().unwrap(),
        );
        self.send(request).await
    }

    /// A run of the DAG with its task instances, on `day` of January 2024.
    async fn run(&self, day: u32, states: [TaskState; 3]) -> (String, Vec<TaskInstanceId>) {
        let at = Utc.with_ymd_and_hms(2024, 1, day, 2, 0, 0).unwrap();
        let run = NewDagRun {
            dag_id: self.dag.id.clone(),
            run_id: format!("scheduled__2024-01-{day:02}"),
            run_type: RunType::Scheduled,
            logical_date: at,
            data_interval_start: at,
            data_interval_end: at,
            run_after: at,
            conf: json!({}),
            version_hash: self.dag.version_hash(),
            backfill_id: None,
        };
        let CreateOutcome::Created(run) = self.store.create_dag_run(&run, at).await.unwrap() else {
            panic!("run exists")
        };
        self.store
            .set_dag_run_state(run.id, DagRunState::Queued, DagRunState::Running, at)
            .await
            .unwrap();
        let tasks: Vec<NewTaskInstance> = ["extract", "transform", "load"]
            .iter()
            .map(|task| NewTaskInstance {
                task_id: TaskId::parse(task).unwrap(),
                max_tries: 0,
                pool: "default_pool".to_owned(),
                pool_slots: 1,
                queue: "default".to_owned(),
                priority_weight: 1,
                rendered_command: None,
            })
            .collect();
        let created = self
            .store
            .create_task_instances(run.id, &tasks, at)
            .await
            .unwrap();
        for (ti, state) in created.iter().zip(states) {
            // The way the scheduler and a worker take a task instance there.
            let path: &[TaskState] = match state {
                TaskState::None => &[],
                TaskState::Running => {
                    &[TaskState::Scheduled, TaskState::Queued, TaskState::Running]
                }
                other => &[other],
            };
            let mut from = TaskState::None;
            for &to in path {
                self.store
                    .set_task_state(ti.id, from, to, at)
                    .await
                    .unwrap();
                from = to;
            }
        }
        (run.run_id, created.iter().map(|ti| ti.id).collect())
    }

    async fn events(&self) -> Vec<(String, String)> {
        self.store
            .list_events(None, 100)
            .await
            .unwrap()
            .into_iter()
            .map(|e| (e.actor, e.event))
            .collect()
    }

    async fn ti_state(&self, id: TaskInstanceId) -> TaskState {
        self.store
            .get_task_instance(id)
            .await
            .unwrap()
            .unwrap()
            .state
    }
}

fn request(who: &Who, method: Method, path: &str, body: Option<String>) -> Request<Body> {
    let mut builder = Request::builder().method(method).uri(path);
    match who {
        Who::Browser { cookie, .. } => builder = builder.header(header::COOKIE, cookie),
        Who::Script { token } => {
            builder = builder.header(header::AUTHORIZATION, format!("Bearer {token}"))
        }
        Who::Nobody => {}
    }
    builder
        .body(body.map(Body::from).unwrap_or_else(Body::empty))
        .unwrap()
}

#[derive(Debug)]
struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|_| panic!("not JSON ({}): {}", self.status, self.body))
    }

    fn location(&self) -> &str {
        self.headers
            .get(header::LOCATION)
            .map(|v| v.to_str().unwrap())
            .unwrap_or("")
    }

    fn cookies(&self) -> Vec<String> {
        self.headers
            .get_all(header::SET_COOKIE)
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect()
    }

    #[track_caller]
    fn expect(&self, status: StatusCode) -> &Reply {
        assert_eq!(self.status, status, "{}", self.body);
        self
    }
}

/// The value of `name="..." value="..."` in a page.
fn hidden_field(html: &str, name: &str) -> String {
    let marker = format!("name=\"{name}\" value=\"");
    let start = html.find(&marker).expect("the field") + marker.len();
    html[start..][..html[start..].find('"').unwrap()].to_owned()
}

/// The key of task instance `id`'s first try.
fn first_try(id: TaskInstanceId) -> TryKey {
    TryKey {
        task_instance: id,
        try_number: 1,
    }
}

#[tokio::test]
async fn everything_but_health_login_and_assets_needs_a_login() {
    each_backend(|db| async move {
        let app = App::new(db.store().await).await;
        let nobody = Who::Nobody;
        // Anonymous, and unhealthy without a scheduler (see its own test).
        app.get(&nobody, "/health")
            .await
            .expect(StatusCode::SERVICE_UNAVAILABLE);
        let css = app.get(&nobody, "/static/app.css").await;
        css.expect(StatusCode::OK);
        assert_eq!(css.headers[header::CONTENT_TYPE], "text/css; charset=utf-8");
        app.get(&nobody, "/static/app.js")
            .await
            .expect(StatusCode::OK);
        app.get(&nobody, "/static/nothing.js")
            .await
            .expect(StatusCode::NOT_FOUND);
        app.get(&nobody, "/login").await.expect(StatusCode::OK);

        let page = app.get(&nobody, "/dags/etl?tab=runs").await;
        page.expect(StatusCode::SEE_OTHER);
        assert_eq!(page.location(), "/login?next=%2Fdags%2Fetl%3Ftab%3Druns");
        for path in ["/api/v1/dags", "/api/v1/pools", "/api/v1/events"] {
            let api = app.get(&nobody, path).await;
            api.expect(StatusCode::UNAUTHORIZED);
            assert_eq!(api.json(), json!({"error": "login required"}));
        }
        let posted = app
            .post_json(&nobody, "/api/v1/dags/etl/pause", json!({}))
            .await;
        posted.expect(StatusCode::UNAUTHORIZED);
        assert!(
            !app.store
                .get_dag(&app.dag.id)
                .await
                .unwrap()
                .unwrap()
                .is_paused
        );

        let bad = Who::Script {
            token: "wrong".to_owned(),
        };
        let refused = app.get(&bad, "/api/v1/dags").await;
        refused.expect(StatusCode::UNAUTHORIZED);
        assert_eq!(
            refused.json(),
            json!({"error": "invalid, expired or revoked API token"})
        );
        let stale = Who::Browser {
            cookie: "updraft_session=expired-or-forged".to_owned(),
            csrf: String::new(),
        };
        app.get(&stale, "/dags").await.expect(StatusCode::SEE_OTHER);
    })
    .await;
}

#[tokio::test]
async fn a_login_starts_a_session_and_a_logout_ends_it() {
    each_backend(|db| async move {
        let app = App::new(db.store().await).await;
        let hash = hash_password("s3cret pass").unwrap();
        app.store
            .create_user("ada", &hash, Role::Admin, Utc::now())
            .await
            .unwrap();
        let form = app.get(&Who::Nobody, "/login?next=/pools").await;
        form.expect(StatusCode::OK);
        let csrf = hidden_field(&form.body, "csrf_token");
        assert!(form.cookies()[0].starts_with(&format!("updraft_login_csrf={csrf};")));
        assert!(!form.cookies()[0].contains("Secure"));
        // Behind a TLS-terminating proxy the cookies are Secure.
        let mut proxied = request(&Who::Nobody, Method::GET, "/login", None);
        proxied
            .headers_mut()
            .insert("x-forwarded-proto", "https".parse().unwrap());
        let proxied = app.send(proxied).await;
        assert!(proxied.cookies()[0].ends_with("; Secure"));
        let with_cookie = Who::Browser {
            cookie: format!("updraft_login_csrf={csrf}"),
            csrf: csrf.clone(),
        };
        let fields = |password: &'static str| {
            vec![
                ("username", "ada"),
                ("password", password),
                ("next", "/pools"),
            ]
        };

        // Without the cookie's token: refused before the password is looked at.
        let mut no_token = fields("s3cret pass");
        no_token.push(("csrf_token", "forged"));
        app.post_raw_form(&with_cookie, "/login", &no_token)
            .await
            .expect(StatusCode::FORBIDDEN);
        let wrong = app
            .post_form(&with_cookie, "/login", &fields("wrong"))
            .await;
        wrong.expect(StatusCode::UNAUTHORIZED);
        assert!(wrong.body.contains("wrong user name or password"));
        assert!(
            wrong
                .cookies()
                .iter()
                .all(|c| !c.starts_with("updraft_session"))
        );

        let ok = app
            .post_form(&with_cookie, "/login", &fields("s3cret pass"))
            .await;
        ok.expect(StatusCode::SEE_OTHER);
        assert_eq!(ok.location(), "/pools");
        let session = ok
            .cookies()
            .into_iter()
            .find(|c| c.starts_with("updraft_session="))
            .unwrap();
        assert!(session.contains("; HttpOnly; SameSite=Lax; Path=/; Max-Age=43200"));
        let token = session["updraft_session=".len()..]
            .split(';')
            .next()
            .unwrap();
        let cookie = format!("updraft_session={token}");
        let who = Who::Browser {
            cookie: cookie.clone(),
            csrf: String::new(),
        };
        let pools = app.get(&who, "/pools").await;
        pools.expect(StatusCode::OK);
        let page_csrf = hidden_field(&pools.body, "csrf_token");
        let who = Who::Browser {
            cookie,
            csrf: page_csrf,
        };

        app.post_form(&who, "/logout", &[])
            .await
            .expect(StatusCode::SEE_OTHER);
        app.get(&who, "/pools").await.expect(StatusCode::SEE_OTHER);
        app.get(&who, "/api/v1/pools")
            .await
            .expect(StatusCode::UNAUTHORIZED);
    })
    .await;
}

#[tokio::test]
async fn a_session_post_needs_its_csrf_token_and_a_script_does_not() {
    each_backend(|db| async move {
        let app = App::new(db.store().await).await;
        let browser = app.browser("ada", Role::Admin).await;
        let Who::Browser { cookie, .. } = &browser else {
            unreachable!()
        };
        let forged = Who::Browser {
            cookie: cookie.clone(),
            csrf: "forged".to_owned(),
        };
        app.post_form(&forged, "/dags/etl/pause", &[])
            .await
            .expect(StatusCode::FORBIDDEN);
        let no_token = app
            .post_raw_form(&browser, "/dags/etl/pause", &[("next", "/dags")])
            .await;
        no_token.expect(StatusCode::FORBIDDEN);
        assert!(no_token.body.contains("missing or wrong CSRF token"));
        let api = app
            .post_json(&forged, "/api/v1/dags/etl/pause", json!({}))
            .await;
        api.expect(StatusCode::FORBIDDEN);
        assert_eq!(api.json(), json!({"error": "missing or wrong CSRF token"}));
        assert!(
            !app.store
                .get_dag(&app.dag.id)
                .await
                .unwrap()
                .unwrap()
                .is_paused
        );

        let paused = app
            .post_form(&browser, "/dags/etl/pause", &[("next", "/dags")])
            .await;
        paused.expect(StatusCode::SEE_OTHER);
        assert_eq!(paused.location(), "/dags");
        assert!(
            app.store
                .get_dag(&app.dag.id)
                .await
                .unwrap()
                .unwrap()
                .is_paused
        );

        let script = app.script("ci", Role::Admin).await;
        app.post_json(&script, "/api/v1/dags/etl/unpause", json!({}))
            .await
            .expect(StatusCode::OK);
        assert!(
            !app.store
                .get_dag(&app.dag.id)
                .await
                .unwrap()
                .unwrap()
                .is_paused
        );
        assert_eq!(
            app.events().await,
            [
                ("ci".to_owned(), "unpause".to_owned()),
                ("ada".to_owned(), "pause".to_owned())
            ]
        );
    })
    .await;
}

#[tokio::test]
async fn a_viewer_reads_everything_and_changes_nothing() {
    each_backend(|db| async move {
        let app = App::new(db.store().await).await;
        let (run_id, ids) = app
            .run(1, [TaskState::Success, TaskState::Failed, TaskState::None])
            .await;
        let viewer = app.browser("vic", Role::Viewer).await;
        let script = app.script("reader", Role::Viewer).await;
        app.get(&viewer, "/dags").await.expect(StatusCode::OK);
        app.get(&script, "/api/v1/dags")
            .await
            .expect(StatusCode::OK);
        let run = format!("/dags/etl/runs/{run_id}");
        let task = format!("{run}/tasks/transform");
        let api_posts = [
            ("/api/v1/dags/etl/trigger".to_owned(), json!({})),
            ("/api/v1/dags/etl/pause".to_owned(), json!({})),
            ("/api/v1/dags/etl/unpause".to_owned(), json!({})),
            (format!("/api/v1{run}/state"), json!({"state": "success"})),
            (format!("/api/v1{run}/cancel"), json!({})),
            (format!("/api/v1{task}/state"), json!({"state": "success"})),
            (format!("/api/v1{task}/clear"), json!({})),
        ];
        for who in [&viewer, &script] {
            for (path, body) in &api_posts {
                let reply = app.post_json(who, path, body.clone()).await;
                reply.expect(StatusCode::FORBIDDEN);
                assert!(reply.json()["error"].as_str().unwrap().contains("viewer"));
            }
        }
        let form_posts = [
            ("/dags/etl/trigger".to_owned(), vec![]),
            ("/dags/etl/pause".to_owned(), vec![]),
            (format!("{run}/mark"), vec![("state", "failed")]),
            (format!("{run}/cancel"), vec![]),
            (format!("{task}/mark"), vec![("state", "success")]),
            (format!("{task}/clear"), vec![]),
        ];
        for (path, fields) in &form_posts {
            app.post_form(&viewer, path, fields)
                .await
                .expect(StatusCode::FORBIDDEN);
        }
        // A viewer may still look at what a clear would do.
        app.post_json(
            &viewer,
            &format!("/api/v1{task}/clear"),
            json!({"dry_run": true}),
        )
        .await
        .expect(StatusCode::OK);
        assert_eq!(app.ti_state(ids[1]).await, TaskState::Failed);
        assert!(
            !app.store
                .get_dag(&app.dag.id)
                .await
                .unwrap()
                .unwrap()
                .is_paused
        );
        assert!(app.events().await.is_empty());
        let page = app.get(&viewer, &task).await;
        assert!(!page.body.contains("Mark success"), "no action buttons");
    })
    .await;
}

#[tokio::test]
async fn every_page_renders_for_an_admin() {
    each_backend(|db| async move {
        let app = App::new(db.store().await).await;
        let (run_id, ids) = app
            .run(2, [TaskState::Running, TaskState::None, TaskState::None])
            .await;
        app.store
            .insert_task_try(&NewTaskTry {
                key: first_try(ids[0]),
                worker_id: Some("w1".to_owned()),
                hostname: Some("host".to_owned()),
                pid: None,
                start_date: Utc::now(),
            })
            .await
            .unwrap();
        let admin = app.browser("ada", Role::Admin).await;
        let run = format!("/dags/etl/runs/{run_id}");
        for path in [
            "/".to_owned(),
            "/dags".to_owned(),
            "/dags?search=et&tag=daily&paused=false".to_owned(),
            "/dags/etl".to_owned(),
            "/dags/etl?tab=graph".to_owned(),
            "/dags/etl?tab=runs&state=running&run_type=scheduled".to_owned(),
            "/dags/etl?tab=code".to_owned(),
            "/dags/etl?tab=details".to_owned(),
            "/dags/etl/trigger".to_owned(),
            run.clone(),
            format!("{run}/tasks/extract"),
            format!("{run}/tasks/extract?try=1"),
            format!("{run}/tasks/load/clear?downstream=on&past=on"),
            "/pools".to_owned(),
            "/workers".to_owned(),
            "/backfills".to_owned(),
            "/events".to_owned(),
            "/events?dag_id=etl".to_owned(),
            "/variables".to_owned(),
            "/variables?limit=10&offset=0".to_owned(),
            "/connections".to_owned(),
        ] {
            let reply = app.get(&admin, &path).await;
            match path.as_str() {
                "/" => reply.expect(StatusCode::SEE_OTHER),
                _ => reply.expect(StatusCode::OK),
            };
        }
        let grid = app.get(&admin, "/dags/etl").await;
        assert!(grid.body.contains("class=\"cell running\""));
        assert!(
            grid.body
                .contains(&format!("href=\"/dags/etl/runs/{}/tasks/extract\"", run_id))
        );
        // The graph is coloured by the latest run, its boxes open that run's task instances.
        let graph = app.get(&admin, "/dags/etl?tab=graph").await;
        assert!(graph.body.contains(r#"<svg class="graph""#));
        assert!(
            graph
                .body
                .contains(r#"data-task="extract" data-state="running""#)
        );
        assert!(graph.body.contains(r#"data-task="load" data-state="none""#));
        assert!(graph.body.contains(&format!(
            r#"<a href="/dags/etl/runs/{run_id}/tasks/extract">"#
        )));
        let picked = app
            .get(&admin, &format!("/dags/etl?tab=graph&run={run_id}"))
            .await;
        assert!(
            picked
                .body
                .contains(&format!("<option selected>{run_id}</option>"))
        );
        app.get(&admin, "/dags/etl?tab=graph&run=nope")
            .await
            .expect(StatusCode::NOT_FOUND);
        // The run's gantt: a bar per try, linking to it.
        let gantt = app.get(&admin, &run).await;
        assert!(gantt.body.contains(r#"<svg class="gantt""#));
        assert!(
            gantt
                .body
                .contains(r#"data-task="extract" data-try="1" data-state="running""#)
        );
        assert!(gantt.body.contains(&format!(
            r#"<a href="/dags/etl/runs/{run_id}/tasks/extract?try=1">"#
        )));
        let task = app.get(&admin, &format!("{run}/tasks/extract")).await;
        assert!(task.body.contains("/tries/1/log"));
        // Airflow's max_tries counts retries: no retry means one try at most.
        assert!(task.body.contains("of at most 1 ·"), "{}", task.body);
        // Workers: their status and load (the running task instance above claimed by none).
        let now = Utc::now();
        for (id, heartbeat_at) in [("w1", now), ("w2", now - Duration::seconds(60))] {
            let worker = Worker {
                id: id.to_owned(),
                hostname: "host".to_owned(),
                queues: vec!["default".to_owned()],
                concurrency: 4,
                state: WorkerState::Running,
                started_at: now - Duration::seconds(120),
                heartbeat_at,
                pid: None,
            };
            assert!(app.store.claim_worker_name(&worker, None).await.unwrap());
        }
        let workers = app.get(&admin, "/workers").await;
        assert!(
            workers.body.contains("<td>w1</td><td>running</td>"),
            "{}",
            workers.body
        );
        assert!(workers.body.contains("<td>w2</td><td>lost</td>"));
        assert!(workers.body.contains("<td>0 / 4</td>"));
        assert!(task.body.contains("Mark success"));
        let clear = app
            .get(&admin, &format!("{run}/tasks/extract/clear?downstream=on"))
            .await;
        assert!(
            clear
                .body
                .contains("These 3 task instance(s) will be cleared")
        );

        for (path, status) in [
            ("/dags/nope", StatusCode::NOT_FOUND),
            ("/dags/etl?tab=nope", StatusCode::NOT_FOUND),
            ("/dags/etl/runs/nope", StatusCode::NOT_FOUND),
            ("/dags?paused=maybe", StatusCode::BAD_REQUEST),
            ("/dags/bad%20id", StatusCode::BAD_REQUEST),
            ("/no/such/page", StatusCode::NOT_FOUND),
        ] {
            app.get(&admin, path).await.expect(status);
        }
    })
    .await;
}

#[tokio::test]
async fn dag_and_param_text_is_escaped_everywhere() {
    each_backend(|db| async move {
        let app = App::new(db.store().await).await;
        let admin = app.browser("ada", Role::Admin).await;
        for path in [
            "/dags",
            "/dags/etl",
            "/dags/etl?tab=details",
            "/dags/etl?tab=code",
            "/dags/etl/trigger",
        ] {
            let page = app.get(&admin, path).await;
            page.expect(StatusCode::OK);
            assert!(
                !page.body.contains("<script>alert"),
                "{path}: {}",
                page.body
            );
            assert!(!page.body.contains("<b>bold"), "{path}");
            assert!(!page.body.contains("<i>where"), "{path}");
        }
        // As text: askama's escapes, never the markup.
        let list = app.get(&admin, "/dags").await;
        assert!(
            list.body
                .contains("&#60;script&#62;alert(&#39;dag&#39;)&#60;/script&#62;")
        );
        assert!(list.body.contains("&#60;b&#62;bold&#60;/b&#62;"));
        let form = app.get(&admin, "/dags/etl/trigger").await;
        assert!(
            form.body
                .contains("value=\"&#60;script&#62;alert(&#39;param&#39;)&#60;/script&#62;\"")
        );
        assert!(form.body.contains("&#60;i&#62;where&#60;/i&#62;"));
    })
    .await;
}

#[tokio::test]
async fn the_api_answers_every_read_route_with_json() {
    each_backend(|db| async move {
        let app = App::new(db.store().await).await;
        let (run_id, ids) = app
            .run(3, [TaskState::Running, TaskState::None, TaskState::None])
            .await;
        app.store
            .insert_task_try(&NewTaskTry {
                key: first_try(ids[0]),
                worker_id: None,
                hostname: None,
                pid: None,
                start_date: Utc::now(),
            })
            .await
            .unwrap();
        for part in ["hello ", "world\n"] {
            app.store
                .append_task_log(first_try(ids[0]), part.as_bytes())
                .await
                .unwrap();
        }
        let script = app.script("ci", Role::Viewer).await;
        let get = |path: String| {
            let app = &app;
            let script = script.clone();
            async move {
                let reply = app.get(&script, &path).await;
                reply.expect(StatusCode::OK);
                reply.json()
            }
        };
        let dags = get("/api/v1/dags?search=ET&tag=daily".to_owned()).await;
        assert_eq!(dags["items"][0]["dag_id"], "etl");
        assert_eq!(dags["items"][0]["recent_runs"][0]["state"], "running");
        assert_eq!(dags["next_offset"], Value::Null);
        let none = get("/api/v1/dags?tag=nope".to_owned()).await;
        assert_eq!(none["items"], json!([]));
        let dag = get("/api/v1/dags/etl".to_owned()).await;
        assert_eq!(dag["params"]["days"]["type"], "integer");
        assert_eq!(dag["next_runs"].as_array().unwrap().len(), 5);
        let load = dag["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|task| task["task_id"] == "load")
            .unwrap();
        assert_eq!(load["depends_on"], json!(["transform"]));
        let source = get("/api/v1/dags/etl/source".to_owned()).await;
        assert_eq!(source["source"], ETL);
        let grid = get("/api/v1/dags/etl/grid".to_owned()).await;
        assert_eq!(grid["rows"][0]["cells"][0]["state"], "running");
        let runs = get("/api/v1/dags/etl/runs?state=running&limit=1".to_owned()).await;
        assert_eq!(runs["items"][0]["run_id"], run_id.as_str());
        assert_eq!(runs["limit"], 1);
        let run = format!("/api/v1/dags/etl/runs/{run_id}");
        assert_eq!(get(run.clone()).await["state"], "running");
        assert_eq!(
            get(format!("{run}/tasks")).await["items"]
                .as_array()
                .unwrap()
                .len(),
            3
        );
        assert_eq!(get(format!("{run}/tasks/extract")).await["try_number"], 0);
        assert_eq!(
            get(format!("{run}/tasks/extract/tries")).await["items"][0]["state"],
            "running"
        );
        let log = get(format!("{run}/tasks/extract/tries/1/log")).await;
        assert_eq!(log["text"], "hello world\n");
        assert_eq!(log["next_offset"], 2);
        assert_eq!(
            (log["running"].clone(), log["complete"].clone()),
            (json!(true), json!(false))
        );
        let rest = get(format!("{run}/tasks/extract/tries/1/log?offset=1&limit=5")).await;
        assert_eq!(rest["text"], "world\n");
        let first = get(format!("{run}/tasks/extract/tries/1/log?offset=0&limit=1")).await;
        assert_eq!(
            (first["text"].clone(), first["next_offset"].clone()),
            (json!("hello "), json!(1))
        );
        assert_eq!(
            get("/api/v1/pools".to_owned()).await["items"][0]["name"],
            "default_pool"
        );
        assert_eq!(get("/api/v1/workers".to_owned()).await["items"], json!([]));
        assert_eq!(
            get("/api/v1/backfills?dag_id=etl".to_owned()).await["items"],
            json!([])
        );
        assert_eq!(get("/api/v1/events".to_owned()).await["items"], json!([]));
        assert_eq!(
            get("/api/v1/import-errors".to_owned()).await["items"],
            json!([])
        );
        assert_eq!(
            get("/api/v1/me".to_owned()).await,
            json!({"username": "ci", "role": "viewer"})
        );

        for (path, status) in [
            ("/api/v1/dags/nope".to_owned(), StatusCode::NOT_FOUND),
            (format!("{run}/tasks/nope"), StatusCode::NOT_FOUND),
            (
                format!("{run}/tasks/extract/tries/9/log"),
                StatusCode::NOT_FOUND,
            ),
            (
                "/api/v1/dags/etl/runs?state=bogus".to_owned(),
                StatusCode::BAD_REQUEST,
            ),
            ("/api/v1/dags?limit=x".to_owned(), StatusCode::BAD_REQUEST),
            ("/api/v1/nothing".to_owned(), StatusCode::NOT_FOUND),
        ] {
            let reply = app.get(&script, &path).await;
            reply.expect(status);
            assert!(reply.json()["error"].is_string(), "{path}: {}", reply.body);
        }
    })
    .await;
}

#[tokio::test]
async fn trigger_checks_the_conf_against_the_params_and_records_who() {
    each_backend(|db| async move {
        let app = App::new(db.store().await).await;
        let script = app.script("ci", Role::Admin).await;
        let bad = app
            .post_json(
                &script,
                "/api/v1/dags/etl/trigger",
                json!({"conf": {"days": 0, "region": 3}}),
            )
            .await;
        bad.expect(StatusCode::BAD_REQUEST);
        let message = bad.json()["error"].as_str().unwrap().to_owned();
        assert!(
            message.contains("param \"region\": expected string"),
            "{message}"
        );
        assert!(message.contains("less than the minimum"), "{message}");
        app.post_json(&script, "/api/v1/dags/etl/trigger", json!({"conf": [1]}))
            .await
            .expect(StatusCode::BAD_REQUEST);
        app.post_json(&script, "/api/v1/dags/etl/trigger", json!({"bogus": 1}))
            .await
            .expect(StatusCode::BAD_REQUEST);
        app.post_json(&script, "/api/v1/dags/nope/trigger", json!({}))
            .await
            .expect(StatusCode::NOT_FOUND);

        let created = app
            .post_json(
                &script,
                "/api/v1/dags/etl/trigger",
                json!({"conf": {"days": 3}, "logical_date": "2024-05-01T00:00:00Z"}),
            )
            .await;
        created.expect(StatusCode::CREATED);
        let run_id = created.json()["run_id"].as_str().unwrap().to_owned();
        assert_eq!(run_id, "manual__2024-05-01T00:00:00+00:00");
        let run = app
            .store
            .get_dag_run_by_run_id(&app.dag.id, &run_id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (run.run_type, run.conf.clone()),
            (RunType::Manual, json!({"days": 3}))
        );
        app.post_json(
            &script,
            "/api/v1/dags/etl/trigger",
            json!({"logical_date": "2024-05-01T00:00:00Z"}),
        )
        .await
        .expect(StatusCode::CONFLICT);

        // The form: typed fields, errors shown in place, then a redirect to the new run.
        let browser = app.browser("ada", Role::Admin).await;
        let refused = app
            .post_form(
                &browser,
                "/dags/etl/trigger",
                &[("param.days", "many"), ("param.region", "eu")],
            )
            .await;
        refused.expect(StatusCode::BAD_REQUEST);
        assert!(
            refused
                .body
                .contains("param &#34;days&#34;: &#34;many&#34; is not a valid integer")
        );
        assert!(refused.body.contains("value=\"many\""));
        let ok = app
            .post_form(
                &browser,
                "/dags/etl/trigger",
                &[
                    ("param.days", "2"),
                    ("param.region", "us"),
                    ("logical_date", "2024-06-01"),
                ],
            )
            .await;
        ok.expect(StatusCode::SEE_OTHER);
        assert_eq!(
            ok.location(),
            "/dags/etl/runs/manual__2024-06-01T00%3A00%3A00%2B00%3A00"
        );
        let run = app
            .store
            .get_dag_run_by_run_id(&app.dag.id, "manual__2024-06-01T00:00:00+00:00")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(run.conf, json!({"days": 2, "region": "us"}));
        let page = app.get(&browser, ok.location()).await;
        page.expect(StatusCode::OK);
        assert_eq!(
            app.events().await,
            [
                ("ada".to_owned(), "trigger".to_owned()),
                ("ci".to_owned(), "trigger".to_owned())
            ]
        );
    })
    .await;
}

#[tokio::test]
async fn clear_lists_first_then_resets_the_selection_and_requeues_the_run() {
    each_backend(|db| async move {
        let app = App::new(db.store().await).await;
        let (first, first_ids) = app
            .run(
                1,
                [
                    TaskState::Success,
                    TaskState::Failed,
                    TaskState::UpstreamFailed,
                ],
            )
            .await;
        let (second, second_ids) = app
            .run(
                2,
                [TaskState::Success, TaskState::Success, TaskState::Success],
            )
            .await;
        let first_run = app
            .store
            .get_dag_run_by_run_id(&app.dag.id, &first)
            .await
            .unwrap()
            .unwrap();
        app.store
            .set_dag_run_state(
                first_run.id,
                DagRunState::Running,
                DagRunState::Failed,
                Utc::now(),
            )
            .await
            .unwrap();
        let admin = app.script("ci", Role::Admin).await;
        let clear = format!("/api/v1/dags/etl/runs/{first}/tasks/transform/clear");

        let dry = app
            .post_json(
                &admin,
                &clear,
                json!({"downstream": true, "future": true, "dry_run": true}),
            )
            .await;
        dry.expect(StatusCode::OK);
        let listed: Vec<(String, String)> = dry.json()["task_instances"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| {
                (
                    c["run_id"].as_str().unwrap().to_owned(),
                    c["task_id"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        assert_eq!(
            listed,
            [
                (second.clone(), "transform".to_owned()),
                (second.clone(), "load".to_owned()),
                (first.clone(), "transform".to_owned()),
                (first.clone(), "load".to_owned()),
            ]
        );
        assert_eq!(app.ti_state(first_ids[1]).await, TaskState::Failed);
        assert!(app.events().await.is_empty());

        let only = app
            .post_json(
                &admin,
                &clear,
                json!({"downstream": true, "only_failed": true}),
            )
            .await;
        only.expect(StatusCode::OK);
        assert_eq!(only.json()["task_instances"].as_array().unwrap().len(), 2);
        assert_eq!(only.json()["runs_requeued"], 1);
        assert_eq!(app.ti_state(first_ids[0]).await, TaskState::Success);
        assert_eq!(app.ti_state(first_ids[1]).await, TaskState::None);
        assert_eq!(app.ti_state(first_ids[2]).await, TaskState::None);
        assert_eq!(app.ti_state(second_ids[1]).await, TaskState::Success);
        let requeued = app.store.get_dag_run(first_run.id).await.unwrap().unwrap();
        assert_eq!(requeued.state, DagRunState::Queued);
        let load = app
            .store
            .get_task_instance(first_ids[2])
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            load.max_tries,
            load.try_number + 2,
            "a fresh budget of its retries"
        );

        // The page's confirmation, then its form.
        let browser = app.browser("ada", Role::Admin).await;
        let second_clear = format!("/dags/etl/runs/{second}/tasks/extract/clear");
        let confirm = app
            .get(&browser, &format!("{second_clear}?upstream=on"))
            .await;
        assert!(
            confirm
                .body
                .contains("These 1 task instance(s) will be cleared")
        );
        let done = app
            .post_form(&browser, &second_clear, &[("downstream", "on")])
            .await;
        done.expect(StatusCode::SEE_OTHER);
        for id in &second_ids {
            assert_eq!(app.ti_state(*id).await, TaskState::None);
        }
        assert_eq!(
            app.events().await,
            [
                ("ada".to_owned(), "clear".to_owned()),
                ("ci".to_owned(), "clear".to_owned())
            ]
        );
        app.post_json(
            &admin,
            &format!("/api/v1/dags/etl/runs/{first}/tasks/nope/clear"),
            json!({}),
        )
        .await
        .expect(StatusCode::NOT_FOUND);
        app.post_json(
            &admin,
            &format!("/api/v1/dags/etl/runs/{first}/tasks/extract/clear"),
            json!({"sideways": true}),
        )
        .await
        .expect(StatusCode::BAD_REQUEST);
    })
    .await;
}

#[tokio::test]
async fn marking_and_cancelling_move_states_and_are_logged() {
    each_backend(|db| async move {
        let app = App::new(db.store().await).await;
        let (run_id, ids) = app
            .run(1, [TaskState::Success, TaskState::Running, TaskState::None])
            .await;
        let admin = app.script("ci", Role::Admin).await;
        let run = format!("/api/v1/dags/etl/runs/{run_id}");
        let marked = app
            .post_json(
                &admin,
                &format!("{run}/tasks/extract/state"),
                json!({"state": "failed"}),
            )
            .await;
        marked.expect(StatusCode::OK);
        assert_eq!(marked.json()["state"], "failed");
        assert_eq!(app.ti_state(ids[0]).await, TaskState::Failed);
        app.post_json(
            &admin,
            &format!("{run}/tasks/extract/state"),
            json!({"state": "failed"}),
        )
        .await
        .expect(StatusCode::CONFLICT);
        app.post_json(
            &admin,
            &format!("{run}/tasks/extract/state"),
            json!({"state": "running"}),
        )
        .await
        .expect(StatusCode::BAD_REQUEST);

        let cancelled = app
            .post_json(&admin, &format!("{run}/cancel"), json!({}))
            .await;
        cancelled.expect(StatusCode::OK);
        // As Airflow marks a run failed: the running task instance fails (its worker kills
        // its try, whose log says failed), the unfinished one is skipped.
        assert_eq!(cancelled.json()["task_instances_failed"], 1);
        assert_eq!(cancelled.json()["task_instances_skipped"], 1);
        assert_eq!(app.ti_state(ids[1]).await, TaskState::Failed);
        assert_eq!(app.ti_state(ids[2]).await, TaskState::Skipped);
        let stored = app
            .store
            .get_dag_run_by_run_id(&app.dag.id, &run_id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(stored.state, DagRunState::Failed);
        app.post_json(&admin, &format!("{run}/cancel"), json!({}))
            .await
            .expect(StatusCode::CONFLICT);

        let browser = app.browser("ada", Role::Admin).await;
        let page_run = format!("/dags/etl/runs/{run_id}");
        app.post_form(
            &browser,
            &format!("{page_run}/mark"),
            &[("state", "success")],
        )
        .await
        .expect(StatusCode::SEE_OTHER);
        let stored = app
            .store
            .get_dag_run_by_run_id(&app.dag.id, &run_id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(stored.state, DagRunState::Success);
        // Marked success, the run's failed and skipped task instances are success too.
        for id in &ids {
            assert_eq!(app.ti_state(*id).await, TaskState::Success);
        }
        app.post_form(
            &browser,
            &format!("{page_run}/tasks/load/mark"),
            &[("state", "failed")],
        )
        .await
        .expect(StatusCode::SEE_OTHER);
        assert_eq!(app.ti_state(ids[2]).await, TaskState::Failed);
        app.post_form(
            &browser,
            &format!("{page_run}/mark"),
            &[("state", "sideways")],
        )
        .await
        .expect(StatusCode::UNPROCESSABLE_ENTITY);

        let events = app.store.list_events(None, 10).await.unwrap();
        let seen: Vec<(&str, &str, Option<&str>)> = events
            .iter()
            .map(|e| {
                (
                    e.actor.as_str(),
                    e.event.as_str(),
                    e.task_id.as_ref().map(TaskId::as_str),
                )
            })
            .collect();
        assert_eq!(
            seen,
            [
                ("ada", "mark_failed", Some("load")),
                ("ada", "mark_success", None),
                ("ci", "cancel", None),
                ("ci", "mark_failed", Some("extract")),
            ]
        );
        assert_eq!(
            events[1].details["task_instances"],
            json!({"success": 3, "failed": 0, "skipped": 0})
        );
        assert!(
            events
                .iter()
                .all(|e| e.dag_id == Some(DagId::parse("etl").unwrap()))
        );
        assert!(
            events
                .iter()
                .all(|e| e.run_id.as_deref() == Some(run_id.as_str()))
        );
    })
    .await;
}

/// A path of the OpenAPI document with its parameters filled in.
fn concrete(path: &str, run_id: &str) -> String {
    let run = run_id.replace(':', "%3A").replace('+', "%2B");
    format!("/api/v1{path}")
        .replace("{dag_id}", "etl")
        .replace("{run_id}", &run)
        .replace("{task_id}", "extract")
        .replace("{try_number}", "1")
        .replace("{variable_key}", "region")
        .replace("{connection_id}", "warehouse")
}

#[tokio::test]
async fn the_openapi_document_describes_exactly_the_routes_served() {
    each_backend(|db| async move {
        let app = App::new(db.store().await).await;
        let (run_id, _) = app
            .run(1, [TaskState::Success, TaskState::None, TaskState::None])
            .await;
        // A viewer: every action answers 403 (or 400 for a body that does not fit) and
        // changes nothing, so every route can be called.
        let viewer = app.script("vic", Role::Viewer).await;
        let reply = app.get(&viewer, "/api/v1/openapi.json").await;
        reply.expect(StatusCode::OK);
        let document = reply.json();
        assert_eq!(document["openapi"], "3.0.3");
        assert_eq!(document["servers"][0]["url"], "/api/v1");
        let paths = document["paths"].as_object().unwrap();
        let mut operations = 0;
        for (path, item) in paths {
            for (method, operation) in item.as_object().unwrap() {
                operations += 1;
                let uri = concrete(path, &run_id);
                let reply = match method.as_str() {
                    "get" => app.get(&viewer, &uri).await,
                    "post" => app.post_json(&viewer, &uri, json!({})).await,
                    "delete" => app.delete(&viewer, &uri).await,
                    other => panic!("{path}: method {other}"),
                };
                // Served: neither the fallback's 404 nor 405 (another method's route).
                assert_ne!(
                    reply.status,
                    StatusCode::METHOD_NOT_ALLOWED,
                    "{method} {uri}"
                );
                assert!(
                    !reply.body.contains("no such page"),
                    "{method} {uri} is documented but not served"
                );
                assert!(reply.json().is_object(), "{method} {uri}: {}", reply.body);
                let id = operation["operationId"].as_str().unwrap();
                assert!(
                    operation["responses"].get("401").is_some(),
                    "{id} documents its errors"
                );
                if method != "get" {
                    assert!(
                        [StatusCode::FORBIDDEN, StatusCode::BAD_REQUEST].contains(&reply.status),
                        "{method} {uri}: {} {}",
                        reply.status,
                        reply.body
                    );
                    assert!(operation["responses"].get("403").is_some(), "{id}");
                }
            }
        }
        assert_eq!(operations, 36, "{:?}", paths.keys().collect::<Vec<_>>());
        // The backfill route is documented with its body.
        let backfill = &document["paths"]["/dags/{dag_id}/backfills"]["post"];
        assert_eq!(
            backfill["requestBody"]["content"]["application/json"]["schema"]["$ref"],
            "#/components/schemas/BackfillRequest"
        );
        assert_eq!(
            document["components"]["schemas"]["BackfillRequest"]["properties"]["reprocess"]["enum"],
            json!(["none", "failed", "all"])
        );
        // And what is not in it is not served.
        app.get(&viewer, "/api/v1/dags/etl/nothing")
            .await
            .expect(StatusCode::NOT_FOUND);
        assert!(!paths.contains_key("/dags/{dag_id}/nothing"));
        // The document needs a login, as every route but /health and /login.
        app.get(&Who::Nobody, "/api/v1/openapi.json")
            .await
            .expect(StatusCode::UNAUTHORIZED);
        // Nothing was changed by the calls.
        assert!(app.events().await.is_empty(), "{:?}", app.events().await);
    })
    .await;
}

/// The value of the sample `line_start` (name and labels) in an exposition.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .map(|value| value.parse().unwrap())
}

#[tokio::test]
async fn metrics_count_runs_and_task_instances_the_queue_and_durations() {
    each_backend(|db| async move {
        let app = App::new(db.store().await).await;
        let (_, first) = app
            .run(1, [TaskState::Success, TaskState::Running, TaskState::None])
            .await;
        let (second_run, second) = app
            .run(2, [TaskState::Failed, TaskState::None, TaskState::None])
            .await;
        // One queued task instance, the way the scheduler queues it.
        let at = Utc.with_ymd_and_hms(2024, 1, 2, 2, 0, 0).unwrap();
        for (from, to) in [
            (TaskState::None, TaskState::Scheduled),
            (TaskState::Scheduled, TaskState::Queued),
        ] {
            assert!(
                app.store
                    .set_task_state(second[1], from, to, at)
                    .await
                    .unwrap()
            );
        }
        let run = app
            .store
            .get_dag_run_by_run_id(&app.dag.id, &second_run)
            .await
            .unwrap()
            .unwrap();
        app.store
            .set_dag_run_state(run.id, DagRunState::Running, DagRunState::Failed, at)
            .await
            .unwrap();
        // Two finished tries (2.5 s success, 40 s failed) and a running one, which is left out.
        let start = Utc.with_ymd_and_hms(2024, 1, 1, 2, 0, 0).unwrap();
        for (ti, state, seconds) in [
            (first[0], TaskState::Success, 2_500),
            (second[0], TaskState::Failed, 40_000),
            (first[1], TaskState::Running, 0),
        ] {
            app.store
                .insert_task_try(&NewTaskTry {
                    key: first_try(ti),
                    worker_id: Some("w1".to_owned()),
                    hostname: Some("host".to_owned()),
                    pid: None,
                    start_date: start,
                })
                .await
                .unwrap();
            if state != TaskState::Running {
                let end = start + Duration::milliseconds(seconds);
                app.store
                    .finish_task_try(first_try(ti), state, Some(0), end)
                    .await
                    .unwrap();
            }
        }
        // A scheduler that heartbeat with its loop's duration.
        let now = Utc::now();
        app.store
            .heartbeat_scheduler("host:1:1", "host", now, now)
            .await
            .unwrap();
        app.store
            .record_scheduler_loop("host:1:1", std::time::Duration::from_micros(12_345))
            .await
            .unwrap();

        // Without a login, the login page (as every page); a scraper sends an API token.
        let anonymous = app.get(&Who::Nobody, "/metrics").await;
        anonymous.expect(StatusCode::SEE_OTHER);
        assert!(anonymous.location().starts_with("/login"), "{anonymous:?}");
        let viewer = app.script("vic", Role::Viewer).await;
        let reply = app.get(&viewer, "/metrics").await;
        reply.expect(StatusCode::OK);
        assert_eq!(
            reply.headers[header::CONTENT_TYPE],
            "text/plain; version=0.0.4; charset=utf-8"
        );
        let text = &reply.body;
        let expect = |series: &str, value: f64| {
            assert_eq!(sample(text, series), Some(value), "{series} in\n{text}");
        };
        expect("updraft_dag_runs{state=\"running\"}", 1.0);
        expect("updraft_dag_runs{state=\"failed\"}", 1.0);
        expect("updraft_dag_runs{state=\"success\"}", 0.0);
        expect("updraft_task_instances{state=\"success\"}", 1.0);
        expect("updraft_task_instances{state=\"running\"}", 1.0);
        expect("updraft_task_instances{state=\"failed\"}", 1.0);
        expect("updraft_task_instances{state=\"queued\"}", 1.0);
        expect("updraft_task_instances{state=\"none\"}", 2.0);
        expect("updraft_queue_depth{queue=\"default\"}", 1.0);
        expect(
            "updraft_scheduler_loop_duration_seconds{scheduler=\"host:1:1\",hostname=\"host\"}",
            0.012345,
        );
        let age = sample(
            text,
            "updraft_scheduler_heartbeat_age_seconds{scheduler=\"host:1:1\",hostname=\"host\"}",
        )
        .unwrap();
        assert!((0.0..10.0).contains(&age), "{age}");
        expect(
            "updraft_task_duration_seconds_bucket{state=\"success\",le=\"1\"}",
            0.0,
        );
        expect(
            "updraft_task_duration_seconds_bucket{state=\"success\",le=\"5\"}",
            1.0,
        );
        expect("updraft_task_duration_seconds_sum{state=\"success\"}", 2.5);
        expect(
            "updraft_task_duration_seconds_bucket{state=\"failed\",le=\"30\"}",
            0.0,
        );
        expect(
            "updraft_task_duration_seconds_bucket{state=\"failed\",le=\"60\"}",
            1.0,
        );
        expect("updraft_task_duration_seconds_count{state=\"failed\"}", 1.0);
        assert!(!text.contains("state=\"running\",le="), "{text}");
        // The same counts as the database's own.
        let counted = app.store.count_task_instances_by_state().await.unwrap();
        let total: i64 = counted.iter().map(|(_, n)| n).sum();
        assert_eq!(total, 6);
    })
    .await;
}

#[tokio::test]
async fn a_viewer_cannot_start_a_backfill() {
    each_backend(|db| async move {
        let app = App::new(db.store().await).await;
        let viewer = app.script("vic", Role::Viewer).await;
        let request = json!({"from": "2024-01-01", "to": "2024-01-03"});
        let reply = app
            .post_json(&viewer, "/api/v1/dags/etl/backfills", request)
            .await;
        reply.expect(StatusCode::FORBIDDEN);
        assert_eq!(
            reply.json()["error"],
            "user 'vic' is a viewer: only admins may do this"
        );
        // A body that is not a backfill request is refused before anything else, in JSON.
        let reply = app
            .post_json(&viewer, "/api/v1/dags/etl/backfills", json!({"form": 1}))
            .await;
        reply.expect(StatusCode::BAD_REQUEST);
        assert!(
            reply.json()["error"]
                .as_str()
                .unwrap()
                .contains("unknown field `form`")
        );
        assert!(app.store.list_backfills(None, 10).await.unwrap().is_empty());
    })
    .await;
}

#[tokio::test]
async fn health_is_ok_only_while_a_scheduler_heartbeat_is_fresh() {
    each_backend(|db| async move {
        let app = App::new(db.store().await).await;
        let health = app.get(&Who::Nobody, "/health").await;
        health.expect(StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(health.json()["status"], "unhealthy");
        assert_eq!(health.json()["database"], "ok");
        assert!(
            health.json()["scheduler"]
                .as_str()
                .unwrap()
                .contains("no scheduler has ever heartbeaten"),
            "{}",
            health.body
        );

        let now = Utc::now();
        let stale = now - Duration::seconds(600);
        app.store
            .heartbeat_scheduler("s1", "host", stale, stale)
            .await
            .unwrap();
        let health = app.get(&Who::Nobody, "/health").await;
        health.expect(StatusCode::SERVICE_UNAVAILABLE);
        assert!(
            health.json()["scheduler"]
                .as_str()
                .unwrap()
                .starts_with("the newest scheduler heartbeat is 600 s old"),
            "{}",
            health.body
        );

        app.store
            .heartbeat_scheduler("s1", "host", stale, now)
            .await
            .unwrap();
        let health = app.get(&Who::Nobody, "/health").await;
        health.expect(StatusCode::OK);
        assert_eq!(health.json()["status"], "ok");
        assert_eq!(health.json()["scheduler"], "ok");

        // A database that does not answer.
        app.store.close().await;
        let health = app.get(&Who::Nobody, "/health").await;
        health.expect(StatusCode::SERVICE_UNAVAILABLE);
        assert_ne!(health.json()["database"], "ok", "{}", health.body);
    })
    .await;
}

#[tokio::test]
async fn every_answer_carries_the_security_headers() {
    each_backend(|db| async move {
        let app = App::new(db.store().await).await;
        let admin = app.browser("ada", Role::Admin).await;
        let script = app.script("sam", Role::Admin).await;
        let answers = [
            ("page", app.get(&admin, "/dags").await),
            ("api", app.get(&script, "/api/v1/dags").await),
            ("api error", app.get(&script, "/api/v1/dags/nope").await),
            ("login", app.get(&Who::Nobody, "/login").await),
            ("redirect", app.get(&Who::Nobody, "/dags").await),
            ("health", app.get(&Who::Nobody, "/health").await),
            ("not found", app.get(&admin, "/nothing").await),
            ("static", app.get(&Who::Nobody, "/static/app.js").await),
        ];
        for (what, reply) in &answers {
            let header = |name: &str| {
                reply
                    .headers
                    .get(name)
                    .map(|value| value.to_str().unwrap().to_owned())
                    .unwrap_or_else(|| panic!("{what}: no {name}"))
            };
            assert_eq!(header("x-frame-options"), "DENY", "{what}");
            assert_eq!(header("x-content-type-options"), "nosniff", "{what}");
            assert_eq!(header("referrer-policy"), "same-origin", "{what}");
            let policy = header("content-security-policy");
            for part in [
                "frame-ancestors 'none'",
                "script-src 'self'",
                "style-src 'self'",
            ] {
                assert!(policy.contains(part), "{what}: {policy}");
            }
            assert!(!policy.contains("unsafe-inline"), "{what}: {policy}");
            let cache = header("cache-control");
            match *what {
                "static" => assert_eq!(cache, "public, max-age=3600"),
                _ => assert_eq!(cache, "no-store", "{what}"),
            }
        }
        // No page carries an inline script, handler or style, which the policy would block.
        let run = app
            .run(1, [TaskState::Success, TaskState::Running, TaskState::None])
            .await
            .0;
        for path in [
            "/dags".to_owned(),
            "/dags/etl?tab=graph".to_owned(),
            "/dags/etl?tab=grid".to_owned(),
            format!("/dags/etl/runs/{run}?tab=gantt"),
            format!("/dags/etl/runs/{run}"),
            "/tokens".to_owned(),
            "/login".to_owned(),
        ] {
            let page = app.get(&admin, &path).await;
            assert!(page.status.is_success(), "{path}: {}", page.status);
            let html = page.body.to_lowercase();
            for inline in [
                "<script>",
                "style=",
                " onchange=",
                " onclick=",
                " onsubmit=",
                "<style",
            ] {
                assert!(!html.contains(inline), "{path} holds {inline}");
            }
        }
    })
    .await;
}

/// A login form post from `address`, with a fresh CSRF token.
async fn login_from(app: &App, address: [u8; 4], username: &str, password: &str) -> Reply {
    let form = app.get(&Who::Nobody, "/login").await;
    let csrf = hidden_field(&form.body, "csrf_token");
    let body = serde_urlencoded::to_string([
        ("username", username),
        ("password", password),
        ("csrf_token", &csrf),
        ("next", "/dags"),
    ])
    .unwrap();
    let mut request = request(&Who::Nobody, Method::POST, "/login", Some(body));
    let headers = request.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        "application/x-www-form-urlencoded".parse().unwrap(),
    );
    headers.insert(
        header::COOKIE,
        format!("updraft_login_csrf={csrf}").parse().unwrap(),
    );
    request
        .extensions_mut()
        .insert(axum::extract::ConnectInfo(std::net::SocketAddr::from((
            address, 40000,
        ))));
    app.send(request).await
}

#[tokio::test]
async fn failed_logins_are_throttled_per_user_and_address_and_logged() {
    each_backend(|db| async move {
        let app = App::new(db.store().await).await;
        let hash = hash_password("right password").unwrap();
        app.store
            .create_user("ada", &hash, Role::Admin, Utc::now())
            .await
            .unwrap();
        let attacker = [203, 0, 113, 7];
        for _ in 0..3 {
            login_from(&app, attacker, "ada", "guess")
                .await
                .expect(StatusCode::UNAUTHORIZED);
        }
        // The fourth guess comes too soon: refused without looking at the password, even
        // the right one.
        for password in ["guess", "right password"] {
            let refused = login_from(&app, attacker, "ada", password).await;
            refused.expect(StatusCode::TOO_MANY_REQUESTS);
            assert_eq!(refused.headers[header::RETRY_AFTER], "1");
            assert!(
                refused.body.contains("too many failed logins"),
                "{}",
                refused.body
            );
            assert!(
                refused
                    .cookies()
                    .iter()
                    .all(|c| !c.starts_with("updraft_session="))
            );
        }
        // From elsewhere too: the user name is throttled, not only the address.
        login_from(&app, [198, 51, 100, 1], "ada", "right password")
            .await
            .expect(StatusCode::TOO_MANY_REQUESTS);
        // One address guessing many names is throttled after ten failures.
        for n in 0..7 {
            login_from(&app, attacker, &format!("user{n}"), "guess")
                .await
                .expect(StatusCode::UNAUTHORIZED);
        }
        login_from(&app, attacker, "someone", "guess")
            .await
            .expect(StatusCode::TOO_MANY_REQUESTS);

        // Once the wait is over, the right password logs in and starts the name again.
        tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
        let welcome = login_from(&app, [198, 51, 100, 1], "ada", "right password").await;
        welcome.expect(StatusCode::SEE_OTHER);

        // Each failure is in the event log, with the name and address, never the password.
        let events = app.store.list_events(None, 100).await.unwrap();
        let failed: Vec<_> = events
            .iter()
            .filter(|e| e.event == "login_failed")
            .collect();
        assert_eq!(failed.len(), 10, "{events:?}");
        assert!(failed.iter().all(|e| e.actor == "anonymous"));
        assert_eq!(failed.last().unwrap().details["username"], "ada");
        assert_eq!(failed.last().unwrap().details["address"], "203.0.113.7");
        assert!(!format!("{events:?}").contains("guess"), "{events:?}");
    })
    .await;
}

#[tokio::test]
async fn api_tokens_expire_and_are_listed_and_revoked_one_at_a_time() {
    each_backend(|db| async move {
        let app = App::new(db.store().await).await;
        let admin = app.script("ada", Role::Admin).await;
        let viewer = app.script("vic", Role::Viewer).await;
        // `bearer` in any case.
        let Who::Script { token } = &viewer else {
            unreachable!()
        };
        for scheme in ["bearer", "BEARER", "Bearer"] {
            let request = Request::builder()
                .uri("/api/v1/me")
                .header(header::AUTHORIZATION, format!("{scheme} {token}"))
                .body(Body::empty())
                .unwrap();
            let me = app.send(request).await;
            me.expect(StatusCode::OK);
            assert_eq!(me.json()["username"], "vic", "{scheme}");
        }

        // An expiring token works until its expiry, then gets a JSON 401.
        let now = Utc::now();
        let soon = NewApiToken {
            name: "ci".to_owned(),
            expires_at: Some(now + Duration::milliseconds(300)),
        };
        app.store
            .create_api_token("vic", &token_hash("soon"), &soon, now)
            .await
            .unwrap();
        let soon = Who::Script {
            token: "soon".to_owned(),
        };
        app.get(&soon, "/api/v1/me").await.expect(StatusCode::OK);
        tokio::time::sleep(std::time::Duration::from_millis(400)).await;
        let expired = app.get(&soon, "/api/v1/me").await;
        expired.expect(StatusCode::UNAUTHORIZED);
        assert_eq!(
            expired.json(),
            json!({"error": "invalid, expired or revoked API token"})
        );

        // A viewer lists and revokes their own tokens only; an admin everyone's.
        let listed = app.get(&viewer, "/api/v1/tokens").await;
        listed.expect(StatusCode::OK);
        let items = listed.json()["items"].as_array().unwrap().clone();
        let statuses: Vec<(&str, &str)> = items
            .iter()
            .map(|t| (t["name"].as_str().unwrap(), t["status"].as_str().unwrap()))
            .collect();
        assert_eq!(statuses, [("ci", "expired"), ("", "active")]);
        assert!(!listed.body.contains("hash"), "{}", listed.body);
        let all = app.get(&admin, "/api/v1/tokens").await;
        assert_eq!(all.json()["items"].as_array().unwrap().len(), 3);
        let admins = all.json()["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["username"] == "ada")
            .unwrap()["id"]
            .as_i64()
            .unwrap();
        let vics = items[1]["id"].as_i64().unwrap();
        app.post_json(
            &viewer,
            &format!("/api/v1/tokens/{admins}/revoke"),
            json!({}),
        )
        .await
        .expect(StatusCode::NOT_FOUND);
        app.get(&admin, "/api/v1/me").await.expect(StatusCode::OK);
        let revoked = app
            .post_json(&admin, &format!("/api/v1/tokens/{vics}/revoke"), json!({}))
            .await;
        revoked.expect(StatusCode::OK);
        assert_eq!(revoked.json()["status"], "revoked");
        let refused = app.get(&viewer, "/api/v1/me").await;
        refused.expect(StatusCode::UNAUTHORIZED);
        assert!(refused.json()["error"].is_string());
        app.post_json(&admin, &format!("/api/v1/tokens/{vics}/revoke"), json!({}))
            .await
            .expect(StatusCode::CONFLICT);
        let kinds: Vec<(String, String)> = app.events().await;
        assert!(kinds.contains(&("ada".to_owned(), "token_revoked".to_owned())));

        // The page: a browser creates a token, sees it once, and revokes it.
        let browser = app.browser("bea", Role::Viewer).await;
        let page = app
            .post_form(
                &browser,
                "/tokens",
                &[("name", "laptop"), ("expires_in_days", "30")],
            )
            .await;
        page.expect(StatusCode::OK);
        let shown = page.body.split("<code class=\"mono\">").nth(1).unwrap();
        let secret = &shown[..64];
        let bea = Who::Script {
            token: secret.to_owned(),
        };
        let me = app.get(&bea, "/api/v1/me").await;
        me.expect(StatusCode::OK);
        let listed = app.get(&bea, "/api/v1/tokens").await;
        let token = &listed.json()["items"][0];
        assert_eq!(token["name"], "laptop");
        assert!(token["expires_at"].is_string());
        let id = token["id"].as_i64().unwrap();
        let list = app.get(&browser, "/tokens").await;
        assert!(list.body.contains("laptop") && !list.body.contains(secret));
        // A token cannot mint another.
        app.post_form(&bea, "/tokens", &[("name", "x"), ("expires_in_days", "0")])
            .await
            .expect(StatusCode::FORBIDDEN);
        app.post_form(&browser, &format!("/tokens/{id}/revoke"), &[])
            .await
            .expect(StatusCode::SEE_OTHER);
        app.get(&bea, "/api/v1/me")
            .await
            .expect(StatusCode::UNAUTHORIZED);
    })
    .await;
}

#[tokio::test]
async fn every_rejection_of_the_api_is_json() {
    each_backend(|db| async move {
        let app = App::new(db.store().await).await;
        let (run_id, _) = app
            .run(1, [TaskState::Success, TaskState::None, TaskState::None])
            .await;
        let admin = app.script("ada", Role::Admin).await;
        let bad = |reply: Reply, status: StatusCode| {
            assert_eq!(reply.status, status, "{}", reply.body);
            assert_eq!(
                reply.headers[header::CONTENT_TYPE],
                "application/json",
                "{}",
                reply.body
            );
            reply.json()["error"].as_str().unwrap().to_owned()
        };
        let log = format!("/api/v1/dags/etl/runs/{run_id}/tasks/extract/tries/x/log");
        bad(app.get(&admin, &log).await, StatusCode::BAD_REQUEST);
        for query in ["limit=0", "limit=1001", "offset=-1"] {
            let log = format!("/api/v1/dags/etl/runs/{run_id}/tasks/extract/tries/1/log?{query}");
            bad(app.get(&admin, &log).await, StatusCode::BAD_REQUEST);
        }
        for query in ["limit=0", "limit=501", "offset=-1", "limit=x"] {
            let path = format!("/api/v1/dags?{query}");
            bad(app.get(&admin, &path).await, StatusCode::BAD_REQUEST);
        }
        let wrong_method = app.get(&admin, "/api/v1/tokens/1/revoke").await;
        assert_eq!(wrong_method.headers[header::ALLOW], "POST");
        bad(wrong_method, StatusCode::METHOD_NOT_ALLOWED);
        // Bodies: `null` members and non-objects are refused; nothing is triggered.
        for body in [
            json!({"conf": null}),
            json!({"logical_date": null}),
            json!([]),
            json!("text"),
            json!(null),
        ] {
            let error = bad(
                app.post_json(&admin, "/api/v1/dags/etl/trigger", body.clone()).await,
                StatusCode::BAD_REQUEST,
            );
            assert!(error.contains("null") || error.contains("object"), "{body}: {error}");
        }
        assert!(
            app.store
                .list_dag_runs(&app.dag.id, None, 10, 0)
                .await
                .unwrap()
                .len()
                == 1
        );
        // Too large: 413; not JSON: 415; malformed: 400.
        let huge = json!({"conf": {"x": "a".repeat(3 << 20)}});
        bad(
            app.post_json(&admin, "/api/v1/dags/etl/trigger", huge).await,
            StatusCode::PAYLOAD_TOO_LARGE,
        );
        let mut plain = request(
            &admin,
            Method::POST,
            "/api/v1/dags/etl/trigger",
            Some("{}".to_owned()),
        );
        plain
            .headers_mut()
            .insert(header::CONTENT_TYPE, "text/plain".parse().unwrap());
        bad(app.send(plain).await, StatusCode::UNSUPPORTED_MEDIA_TYPE);
        let mut broken = request(
            &admin,
            Method::POST,
            "/api/v1/dags/etl/trigger",
            Some("{".to_owned()),
        );
        broken
            .headers_mut()
            .insert(header::CONTENT_TYPE, "application/json".parse().unwrap());
        bad(app.send(broken).await, StatusCode::BAD_REQUEST);
        // The document says what these answers are.
        let document = app.get(&admin, "/api/v1/openapi.json").await.json();
        let trigger = &document["paths"]["/dags/{dag_id}/trigger"]["post"];
        assert!(trigger["responses"].get("413").is_some());
        let ti = &document["components"]["schemas"]["TaskInstance"]["properties"];
        assert_eq!(ti["rendered_command"]["nullable"], true);
        let log = &document["paths"]
            ["/dags/{dag_id}/runs/{run_id}/tasks/{task_id}/tries/{try_number}/log"]["get"];
        let try_number = &log["parameters"][3]["schema"];
        assert_eq!(try_number["minimum"], 1);
        assert_eq!(log["parameters"][0]["schema"]["pattern"], "^[A-Za-z0-9_.-]{1,250}$");
        let dags = &document["paths"]["/dags"]["get"]["parameters"];
        let limit = dags
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == "limit")
            .unwrap();
        assert_eq!((limit["schema"]["minimum"].clone(), limit["schema"]["maximum"].clone()), (json!(1), json!(500)));
    })
    .await;
}

#[tokio::test]
async fn a_bad_id_in_a_path_is_refused_as_a_page_or_as_json_by_where_it_was_asked() {
    each_backend(|db| async move {
        let app = App::new(db.store().await).await;
        let admin = app.browser("ada", Role::Admin).await;
        // `!` is no character of an id: the extractor refuses it before any handler runs.
        let page = app.get(&admin, "/dags/no!such").await;
        page.expect(StatusCode::BAD_REQUEST);
        assert!(
            page.headers[header::CONTENT_TYPE]
                .to_str()
                .unwrap()
                .starts_with("text/html"),
            "{}",
            page.body
        );
        assert!(page.body.contains("no!such"), "{}", page.body);
        let api = app.get(&admin, "/api/v1/dags/no!such/runs").await;
        api.expect(StatusCode::BAD_REQUEST);
        assert_eq!(api.headers[header::CONTENT_TYPE], "application/json");
        assert!(api.json()["error"].as_str().unwrap().contains("no!such"));
        let task = app.get(&admin, "/dags/etl/runs/r/tasks/no!such").await;
        task.expect(StatusCode::BAD_REQUEST);
    })
    .await;
}

#[tokio::test]
async fn admins_set_and_delete_variables_everyone_lists_them_and_secrets_stay_masked() {
    each_backend(|db| async move {
        let app = App::new(db.store().await).await;
        let admin = app.script("ada", Role::Admin).await;
        let viewer = app.script("vic", Role::Viewer).await;
        let set = |key: &str, value: &str, extra: Value| {
            let mut body = json!({"key": key, "value": value});
            body.as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            body
        };
        // A secret by its name, one asked to be secret, and a plain one.
        for body in [
            set("api_token", "tok-123456", json!({})),
            set("region", "eu-west-1", json!({"description": "where"})),
            set("db_dsn", "postgres://x", json!({"is_secret": true})),
        ] {
            app.post_json(&admin, "/api/v1/variables", body)
                .await
                .expect(StatusCode::OK);
        }
        let list = app.get(&viewer, "/api/v1/variables").await;
        list.expect(StatusCode::OK);
        let items = &list.json()["items"];
        let shown: Vec<(&str, &str, bool)> = items
            .as_array()
            .unwrap()
            .iter()
            .map(|v| {
                (
                    v["key"].as_str().unwrap(),
                    v["value"].as_str().unwrap(),
                    v["is_secret"].as_bool().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            shown,
            [
                ("api_token", "***", true),
                ("db_dsn", "***", true),
                ("region", "eu-west-1", false)
            ]
        );
        // Paged, by key.
        let second = app.get(&admin, "/api/v1/variables?limit=2&offset=2").await;
        assert_eq!(second.json()["items"][0]["key"], "region");
        assert_eq!(second.json()["next_offset"], Value::Null);
        // An admin reads a secret in clear; a viewer never.
        let clear = app.get(&admin, "/api/v1/variables/api_token").await.json();
        assert_eq!(clear["value"], "tok-123456");
        let masked = app.get(&viewer, "/api/v1/variables/api_token").await.json();
        assert_eq!(masked["value"], "***");
        // Sealed in the database.
        let stored = app
            .store
            .get_variable(&"api_token".parse().unwrap())
            .await
            .unwrap()
            .unwrap();
        assert!(stored.value.starts_with("v1:"), "{}", stored.value);
        assert!(!stored.value.contains("tok-123456"));
        // A viewer changes nothing; bad input is refused with the reason.
        app.post_json(&viewer, "/api/v1/variables", set("x", "y", json!({})))
            .await
            .expect(StatusCode::FORBIDDEN);
        app.delete(&viewer, "/api/v1/variables/region")
            .await
            .expect(StatusCode::FORBIDDEN);
        for (body, wanted) in [
            (set("bad key", "v", json!({})), "bad key"),
            (set("nul", "a\u{0}b", json!({})), "NUL character"),
            (json!({"key": "k"}), "value"),
            (set("k", "v", json!({"colour": "red"})), "colour"),
        ] {
            let reply = app.post_json(&admin, "/api/v1/variables", body).await;
            reply.expect(StatusCode::BAD_REQUEST);
            assert!(reply.body.contains(wanted), "{wanted}: {}", reply.body);
        }
        // Deleting: gone, then 404.
        app.delete(&admin, "/api/v1/variables/region")
            .await
            .expect(StatusCode::OK);
        app.get(&admin, "/api/v1/variables/region")
            .await
            .expect(StatusCode::NOT_FOUND);
        app.delete(&admin, "/api/v1/variables/region")
            .await
            .expect(StatusCode::NOT_FOUND);

        // The page: everyone sees the list, secrets masked; only admins get the forms.
        let ada = app.browser("ada-web", Role::Admin).await;
        let vera = app.browser("vera-web", Role::Viewer).await;
        let page = app.get(&ada, "/variables").await;
        page.expect(StatusCode::OK);
        assert!(page.body.contains("api_token") && page.body.contains("***"));
        assert!(!page.body.contains("tok-123456"), "no secret on the page");
        assert!(page.body.contains("id=\"set-variable\""));
        let seen = app.get(&vera, "/variables").await;
        assert!(seen.body.contains("api_token"));
        assert!(!seen.body.contains("id=\"set-variable\"") && !seen.body.contains("Delete"));
        let fields = [
            ("key", "greeting"),
            ("value", "<b>hello</b>\r\nworld"),
            ("description", "a <i>test</i>"),
            ("secret", "auto"),
        ];
        app.post_form(&vera, "/variables", &fields)
            .await
            .expect(StatusCode::FORBIDDEN);
        app.post_raw_form(&ada, "/variables", &fields)
            .await
            .expect(StatusCode::FORBIDDEN);
        let done = app.post_form(&ada, "/variables", &fields).await;
        done.expect(StatusCode::SEE_OTHER);
        assert_eq!(done.location(), "/variables");
        let page = app.get(&ada, "/variables").await;
        assert!(
            page.body.contains("&#60;b&#62;hello&#60;/b&#62;")
                || page.body.contains("&lt;b&gt;hello")
        );
        assert!(!page.body.contains("<b>hello"), "escaped");
        let stored = app
            .store
            .get_variable(&"greeting".parse().unwrap())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(stored.value, "<b>hello</b>\nworld");
        assert!(!stored.is_secret);
        app.post_form(&ada, "/variables/greeting/delete", &[])
            .await
            .expect(StatusCode::SEE_OTHER);
        assert!(
            app.store
                .get_variable(&"greeting".parse().unwrap())
                .await
                .unwrap()
                .is_none()
        );
        // Every change is in the audit log, by who made it, never with a value.
        let events = app.events().await;
        let changes: Vec<&(String, String)> = events
            .iter()
            .filter(|(_, event)| event.starts_with("variable"))
            .collect();
        assert_eq!(changes.len(), 6, "{events:?}");
        assert!(
            changes
                .iter()
                .any(|(actor, e)| actor == "ada-web" && e == "variable_deleted")
        );
        let logged = app.store.list_events(None, 100).await.unwrap();
        assert!(
            logged
                .iter()
                .all(|e| !e.details.to_string().contains("tok-123456"))
        );
    })
    .await;
}

#[tokio::test]
async fn connections_never_show_a_password_and_mask_their_extra() {
    each_backend(|db| async move {
        let app = App::new(db.store().await).await;
        let admin = app.script("ada", Role::Admin).await;
        let viewer = app.script("vic", Role::Viewer).await;
        let warehouse = json!({
            "connection_id": "warehouse",
            "conn_type": "postgres",
            "host": "db.internal",
            "port": 5432,
            "login": "etl",
            "password": "pa55-w0rd!",
            "schema": "analytics",
            "extra": {"sslmode": "require", "api_token": "xyz-123456"},
            "description": "the warehouse",
        });
        let reply = app
            .post_json(&admin, "/api/v1/connections", warehouse)
            .await;
        reply.expect(StatusCode::OK);
        assert!(!reply.body.contains("pa55-w0rd!"), "{}", reply.body);
        assert_eq!(reply.json()["has_password"], true);
        let list = app.get(&viewer, "/api/v1/connections").await;
        list.expect(StatusCode::OK);
        let first = &list.json()["items"][0];
        assert_eq!(first["connection_id"], "warehouse");
        assert_eq!(first["host"], "db.internal");
        assert_eq!(first["port"], 5432);
        assert!(first.get("extra").is_none() && first.get("password").is_none());
        // A read: the extra, masked by name for an admin and whole for a viewer.
        let read = app.get(&admin, "/api/v1/connections/warehouse").await;
        read.expect(StatusCode::OK);
        assert_eq!(
            read.json()["extra"],
            json!({"sslmode": "require", "api_token": "***"})
        );
        assert!(!read.body.contains("pa55-w0rd!") && !read.body.contains("xyz-123456"));
        let viewed = app.get(&viewer, "/api/v1/connections/warehouse").await;
        assert_eq!(
            viewed.json()["extra"],
            json!({"sslmode": "***", "api_token": "***"})
        );
        // Sealed in the database.
        let stored = app
            .store
            .get_connection(&"warehouse".parse().unwrap())
            .await
            .unwrap()
            .unwrap();
        assert!(!stored.password.unwrap().contains("pa55"));
        assert!(!stored.extra.unwrap().contains("xyz-123456"));
        // Refusals, with the reason; a viewer changes nothing.
        for (body, status, wanted) in [
            (
                json!({"connection_id": "c", "conn_type": " "}),
                StatusCode::BAD_REQUEST,
                "needs a type",
            ),
            (
                json!({"connection_id": "c"}),
                StatusCode::BAD_REQUEST,
                "conn_type",
            ),
            (
                json!({"connection_id": "c", "conn_type": "http", "port": 70000}),
                StatusCode::BAD_REQUEST,
                "70000",
            ),
            (
                json!({"connection_id": "c", "conn_type": "http", "host": "a\u{0}"}),
                StatusCode::BAD_REQUEST,
                "NUL character",
            ),
            (
                json!({"connection_id": "c", "conn_type": "http"}),
                StatusCode::OK,
                "",
            ),
        ] {
            let reply = app.post_json(&admin, "/api/v1/connections", body).await;
            reply.expect(status);
            assert!(reply.body.contains(wanted), "{wanted}: {}", reply.body);
        }
        app.post_json(
            &viewer,
            "/api/v1/connections",
            json!({"connection_id": "v", "conn_type": "http"}),
        )
        .await
        .expect(StatusCode::FORBIDDEN);
        app.delete(&viewer, "/api/v1/connections/c")
            .await
            .expect(StatusCode::FORBIDDEN);
        app.delete(&admin, "/api/v1/connections/c")
            .await
            .expect(StatusCode::OK);
        app.get(&admin, "/api/v1/connections/c")
            .await
            .expect(StatusCode::NOT_FOUND);

        // The page: set from a URI, listed without its password, deleted.
        let ada = app.browser("ada-web", Role::Admin).await;
        let vera = app.browser("vera-web", Role::Viewer).await;
        let fields = [
            ("connection_id", "api"),
            ("uri", "https://bot:s3cr3t-pass@api.example.com:8443/v1"),
        ];
        app.post_form(&vera, "/connections", &fields)
            .await
            .expect(StatusCode::FORBIDDEN);
        app.post_form(&ada, "/connections", &fields)
            .await
            .expect(StatusCode::SEE_OTHER);
        let refused = app
            .post_form(
                &ada,
                "/connections",
                &[("connection_id", "x"), ("uri", "http://h"), ("host", "h")],
            )
            .await;
        refused.expect(StatusCode::BAD_REQUEST);
        assert!(refused.body.contains("not both"), "{}", refused.body);
        let page = app.get(&ada, "/connections").await;
        page.expect(StatusCode::OK);
        assert!(page.body.contains("api.example.com") && page.body.contains("8443"));
        assert!(!page.body.contains("s3cr3t-pass") && !page.body.contains("pa55-w0rd!"));
        assert!(page.body.contains("id=\"set-connection\""));
        let seen = app.get(&vera, "/connections").await;
        assert!(seen.body.contains("warehouse") && !seen.body.contains("id=\"set-connection\""));
        app.post_form(&ada, "/connections/api/delete", &[])
            .await
            .expect(StatusCode::SEE_OTHER);
        assert!(
            app.store
                .get_connection(&"api".parse().unwrap())
                .await
                .unwrap()
                .is_none()
        );
        let events = app.events().await;
        assert!(events.contains(&("ada-web".to_owned(), "connection_set".to_owned())));
        assert!(events.contains(&("ada-web".to_owned(), "connection_deleted".to_owned())));
        assert!(
            !events.iter().any(|(actor, _)| actor.starts_with("v")),
            "{events:?}"
        );
    })
    .await;
}

#[tokio::test]
async fn without_a_key_a_secret_is_refused_with_the_reason_and_nothing_is_stored() {
    each_backend(|db| async move {
        let mut app = App::new(db.store().await).await;
        app.router = router(app.store.clone(), SecretsConfig::default());
        let admin = app.script("ada", Role::Admin).await;
        for body in [
            json!({"key": "api_token", "value": "tok-123456"}),
            json!({"key": "plain", "value": "v", "is_secret": true}),
        ] {
            let reply = app.post_json(&admin, "/api/v1/variables", body).await;
            reply.expect(StatusCode::INTERNAL_SERVER_ERROR);
            assert!(
                reply.json()["error"]
                    .as_str()
                    .unwrap()
                    .contains("no secret key: set UPDRAFT_SECRET_KEY"),
                "{}",
                reply.body
            );
        }
        let password = json!({"connection_id": "db", "conn_type": "postgres", "password": "pw"});
        app.post_json(&admin, "/api/v1/connections", password)
            .await
            .expect(StatusCode::INTERNAL_SERVER_ERROR);
        assert!(app.store.list_variables().await.unwrap().is_empty());
        assert!(app.store.list_connections().await.unwrap().is_empty());
        assert!(app.events().await.is_empty());
        // What holds no secret needs no key.
        app.post_json(
            &admin,
            "/api/v1/variables",
            json!({"key": "region", "value": "eu"}),
        )
        .await
        .expect(StatusCode::OK);
        app.post_json(
            &admin,
            "/api/v1/connections",
            json!({"connection_id": "api", "conn_type": "http", "host": "h"}),
        )
        .await
        .expect(StatusCode::OK);
    })
    .await;
}

#[tokio::test]
async fn what_handlers_did_shows_beside_the_try_and_the_run() {
    each_backend(|db| async move {
        let app = App::new(db.store().await).await;
        let (run_id, ids) = app
            .run(3, [TaskState::Running, TaskState::None, TaskState::None])
            .await;
        let now = Utc::now();
        app.store
            .insert_task_try(&NewTaskTry {
                key: first_try(ids[0]),
                worker_id: Some("w1".to_owned()),
                hostname: Some("host".to_owned()),
                pid: None,
                start_date: now,
            })
            .await
            .unwrap();
        let run = app
            .store
            .get_dag_run_by_run_id(&app.dag.id, &run_id)
            .await
            .unwrap()
            .unwrap();
        for (key, handler, log) in [
            (
                Some(first_try(ids[0])),
                HandlerName::OnFailure,
                "paged <b>on-call</b>",
            ),
            (None, HandlerName::OnSuccess, "run handler said hi"),
        ] {
            app.store
                .record_handler_run(&HandlerRun {
                    dag_run_id: run.id,
                    try_key: key,
                    handler,
                    start_date: now,
                    end_date: now + Duration::milliseconds(1500),
                    ending: "exited with code 0".to_owned(),
                    log: log.as_bytes().to_vec(),
                })
                .await
                .unwrap();
        }
        let admin = app.browser("ada", Role::Admin).await;
        let task = app
            .get(&admin, &format!("/dags/etl/runs/{run_id}/tasks/extract"))
            .await;
        task.expect(StatusCode::OK);
        assert!(task.body.contains("on_failure handler"), "{}", task.body);
        assert!(
            task.body.contains("paged &#60;b&#62;on-call&#60;/b&#62;")
                || task.body.contains("paged &lt;b&gt;on-call")
        );
        assert!(!task.body.contains("run handler said hi"));
        let page = app.get(&admin, &format!("/dags/etl/runs/{run_id}")).await;
        assert!(
            page.body.contains("on_success handler") && page.body.contains("run handler said hi")
        );
        let tries = app
            .get(
                &admin,
                &format!("/api/v1/dags/etl/runs/{run_id}/tasks/extract/tries"),
            )
            .await
            .json();
        let handlers = &tries["items"][0]["handlers"];
        assert_eq!(handlers[0]["handler"], "on_failure");
        assert_eq!(handlers[0]["ending"], "exited with code 0");
        assert_eq!(handlers[0]["log"], "paged <b>on-call</b>");
        assert_eq!(handlers[0]["try_number"], 1);
        assert_eq!(handlers.as_array().unwrap().len(), 1);
    })
    .await;
}
