//! ui-grid: the web UI's DAG list, grid and run page over a long history (a million task
//! instances, bulk-seeded), answered by the real router in this process.

use std::path::Path;
use std::time::Instant;

use anyhow::{Result, bail, ensure};
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use chrono::Utc;
use http_body_util::BodyExt;
use tower::ServiceExt;
use updraft_metadata::{Role, seeded_run_id};

use crate::floors::Floor;
use crate::harness::{Databases, History};
use crate::report::Figure;

/// Tasks of the ui-grid workload's DAG.
const UI_TASKS: usize = 100;

/// The web UI over a long history: `runs` finished hourly runs of one DAG of 100 tasks
/// (10,000 runs: a million task instances, bulk-seeded), then the DAG list, the DAG's grid
/// (its latest 25 runs by its 100 tasks) and one run's page, each answered by the real router
/// (`updraft_webserver::router`, called in-process with tower's `oneshot`, logged in with a
/// session): the server's time, from request to the whole body, median of 21 after one
/// warm-up. Each answer is checked: status 200 and the run ids it must show.
pub async fn ui_grid(
    databases: &Databases,
    scratch: &Path,
    runs: usize,
    floor: &Floor,
) -> Result<Vec<Figure>> {
    let history = History::seed(
        databases,
        &scratch.join(format!("ui-grid-{runs}")),
        "bench_ui",
        runs,
        UI_TASKS,
    )
    .await?;
    let (store, dag) = (&history.store, &history.dag);
    let task_ids: Vec<_> = dag.tasks.keys().cloned().collect();
    let seeded = history.seeded_in.as_secs_f64();
    let instances = runs * UI_TASKS;

    let now = Utc::now();
    let user = store
        .create_user(
            "bench",
            "no password: a session is made directly",
            Role::Viewer,
            now,
        )
        .await?;
    let token = "bench-session";
    store
        .create_session(
            user.id,
            &updraft_webserver::auth::token_hash(token),
            "bench-csrf",
            now,
            now + chrono::Duration::hours(1),
        )
        .await?;
    let cookie = format!("{}={token}", updraft_webserver::auth::SESSION_COOKIE);
    let router = updraft_webserver::router(store.clone(), Default::default());

    let newest = runs as i64;
    let middle = seeded_run_id(newest / 2 + 1);
    let grid_ids: Vec<String> = (newest - 24..=newest).map(seeded_run_id).collect();
    let task_names: Vec<String> = task_ids.iter().map(|t| format!(">{t}<")).collect();
    let pages = [
        (
            "DAG list",
            "/dags".to_owned(),
            vec![seeded_run_id(newest)],
            seeded_run_id(newest - 10),
        ),
        (
            "grid 25x100",
            "/dags/bench_ui?tab=grid".to_owned(),
            grid_ids,
            seeded_run_id(newest - 25),
        ),
        (
            "run page",
            format!("/dags/bench_ui/runs/{middle}"),
            [vec![middle.clone()], task_names].concat(),
            seeded_run_id(newest),
        ),
    ];
    let mut figures = Vec::new();
    for (page, path, expected, absent) in pages {
        let mut times = Vec::with_capacity(21);
        for round in 0..22 {
            let request = Request::builder()
                .uri(path.as_str())
                .header(header::COOKIE, &cookie)
                .header(header::ACCEPT, "text/html")
                .body(Body::empty())?;
            let start = Instant::now();
            let response = router.clone().oneshot(request).await?;
            let status = response.status();
            let body = response.into_body().collect().await?.to_bytes();
            let took = start.elapsed();
            let body = String::from_utf8_lossy(&body);
            ensure!(
                status == StatusCode::OK,
                "{path} answered {status}: {}",
                body.chars().take(300).collect::<String>()
            );
            if let Some(missing) = expected.iter().find(|id| !body.contains(id.as_str())) {
                bail!("{path} does not show {missing}");
            }
            ensure!(
                !body.contains(absent.as_str()),
                "{path} shows {absent}, which it should not"
            );
            // The first round warms the connection pool and the page's queries.
            if round > 0 {
                times.push(took);
            }
        }
        times.sort();
        let seconds = times[times.len() / 2].as_secs_f64();
        figures.push(Figure {
            workload: format!("ui-grid-{runs}"),
            metric: page,
            value: seconds * 1000.0,
            unit: "ms",
            floor: floor.name,
            ratio: seconds / floor.value,
            checked: format!(
                "200, the {} run and task ids expected shown, {absent} not; {runs} runs and \
                 {instances} task instances in the database (seeded in {seeded:.1} s); median of 21",
                expected.len()
            ),
        });
    }
    store.close().await;
    Ok(figures)
}
