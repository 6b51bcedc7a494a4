//! The web UI in a real browser: Debian's Chromium, headless, driven through chromedriver over
//! WebDriver (fantoccini), against a real `updraft standalone` on a DAGs folder of the test's
//! own. One user's path through the UI: log in, find a DAG, trigger it with params, watch the
//! grid and a live log move without a reload, open the graph, clear a task and see it run
//! again, pause the DAG. Along the way it saves screenshots of the main pages at a desktop and
//! a phone size under `target/screenshots/` and checks that no page is wider than the phone.
//!
//! Chromium and chromedriver must be installed (Debian: `apt-get install chromium
//! chromium-driver`; `.ci/run` does it). Under `CI=true` their absence fails the test; locally
//! the test says so and stops.

mod common;

use std::future::Future;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::json;

use common::Running;

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// How long any one thing the UI should do may take before the test fails.
const PATIENCE: Duration = Duration::from_secs(30);

/// The desktop and phone viewports of the screenshots.
const DESKTOP: (u32, u32) = (1280, 800);
const PHONE: (u32, u32) = (390, 844);

/// A chromedriver of the test's own on a free port, in its own process group so that the
/// browsers it starts go with it when dropped (also when the test panics).
struct Chromedriver {
    child: Child,
    port: u16,
}

impl Chromedriver {
    /// `None` when Chromium or chromedriver is missing and the test may say so and stop (not
    /// under CI).
    fn start() -> Option<Chromedriver> {
        let missing: Vec<&str> = [CHROMIUM, CHROMEDRIVER]
            .into_iter()
            .filter(|path| !Path::new(path).exists())
            .collect();
        if !missing.is_empty() {
            let message = format!(
                "the browser tests need Chromium and chromedriver; missing: {} (Debian: \
                 apt-get install chromium chromium-driver; .ci/run installs them)",
                missing.join(", ")
            );
            if std::env::var("CI").is_ok_and(|ci| ci == "true") {
                panic!("{message}");
            }
            eprintln!("NOT RUN: {message}");
            return None;
        }
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free port")
            .port();
        let mut command = Command::new(CHROMEDRIVER);
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
        let child = command
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let driver = Chromedriver { child, port };
        common::wait_for("chromedriver to listen", PATIENCE, || {
            std::net::TcpStream::connect(("127.0.0.1", port)).ok()
        });
        Some(driver)
    }

    /// A headless Chromium session at the desktop size.
    async fn session(&self) -> Client {
        let mut capabilities = serde_json::Map::new();
        capabilities.insert("browserName".to_owned(), json!("chrome"));
        capabilities.insert(
            "goog:chromeOptions".to_owned(),
            json!({
                "binary": CHROMIUM,
                "args": [
                    "--headless=new",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-dev-shm-usage",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-sync",
                    "--no-first-run",
                    "--hide-scrollbars",
                    format!("--window-size={},{}", DESKTOP.0, DESKTOP.1),
                ],
            }),
        );
        ClientBuilder::new(HttpConnector::new())
            .capabilities(capabilities)
            .connect(&format!("http://127.0.0.1:{}", self.port))
            .await
            .expect("a Chromium session through chromedriver")
    }
}

impl Drop for Chromedriver {
    fn drop(&mut self) {
        // SAFETY: kill(2) on the process group of our own child (its pid, by process_group(0)).
        unsafe { libc::kill(-(self.child.id() as i32), libc::SIGKILL) };
        let _ = self.child.wait();
    }
}

/// Polls `check` every 100 ms until it gives `Some`, at most [`PATIENCE`]; panics with `what`.
async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            start.elapsed() < PATIENCE,
            "timed out after {PATIENCE:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The text of the first element matching `css`, "" when there is none.
async fn text(browser: &Client, css: &str) -> String {
    match browser.find(Locator::Css(css)).await {
        Ok(element) => element.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    }
}

/// Waits until the element matching `css` exists and its text contains `wanted`.
async fn wait_for_text(browser: &Client, css: &str, wanted: &str) -> String {
    eventually(&format!("\"{wanted}\" in {css}"), || async {
        let seen = text(browser, css).await;
        seen.contains(wanted).then_some(seen)
    })
    .await
}

async fn click(browser: &Client, css: &str) {
    browser
        .find(Locator::Css(css))
        .await
        .unwrap_or_else(|error| panic!("no {css}: {error}"))
        .click()
        .await
        .unwrap_or_else(|error| panic!("cannot click {css}: {error}"));
}

/// The page's path (and query) once it has become `wanted` (after a click that navigates).
async fn wait_for_path(browser: &Client, wanted: impl Fn(&str) -> bool) -> String {
    eventually("the page to change", || async {
        let url = browser.current_url().await.ok()?;
        let path = match url.query() {
            Some(query) => format!("{}?{query}", url.path()),
            None => url.path().to_owned(),
        };
        wanted(&path).then_some(path)
    })
    .await
}

/// Marks the loaded document; [`still_marked`] tells whether no navigation or reload has
/// happened since (a reload makes a new `window`).
async fn mark_document(browser: &Client) {
    browser
        .execute("window.updraftTestMark = 'same document';", vec![])
        .await
        .unwrap();
}

async fn still_marked(browser: &Client) -> bool {
    browser
        .execute("return window.updraftTestMark === 'same document';", vec![])
        .await
        .unwrap()
        == json!(true)
}

/// Where the screenshots go: `target/screenshots/` (an artefact, never committed).
fn screenshots() -> PathBuf {
    let folder = common::repo().join("target/screenshots");
    std::fs::create_dir_all(&folder).unwrap();
    folder
}

/// Saves a PNG of the viewport as `target/screenshots/{name}-{width}.png` and checks that the
/// page is not wider than the viewport (tables scroll in their own box, the page does not).
async fn screenshot(browser: &Client, name: &str) {
    let (width, overflow) = page_width(browser).await;
    let png = browser.screenshot().await.unwrap();
    std::fs::write(screenshots().join(format!("{name}-{width}.png")), png).unwrap();
    assert!(
        overflow <= 0,
        "the {name} page is {overflow} px wider than the {width} px viewport"
    );
}

/// The viewport's width and how far the page sticks out past it.
async fn page_width(browser: &Client) -> (i64, i64) {
    let answer = browser
        .execute(
            "return [window.innerWidth, document.documentElement.scrollWidth - window.innerWidth];",
            vec![],
        )
        .await
        .unwrap();
    (answer[0].as_i64().unwrap(), answer[1].as_i64().unwrap())
}

/// Resizes the window so that the viewport is `width` x `height`.
async fn viewport(browser: &Client, (width, height): (u32, u32)) {
    browser.set_window_size(width, height).await.unwrap();
    // The window may carry a frame: grow it by the difference once.
    let inner = browser
        .execute("return [window.innerWidth, window.innerHeight];", vec![])
        .await
        .unwrap();
    let (inner_width, inner_height) = (inner[0].as_u64().unwrap(), inner[1].as_u64().unwrap());
    if (inner_width, inner_height) != (width as u64, height as u64) {
        browser
            .set_window_size(
                2 * width - inner_width as u32,
                2 * height - inner_height as u32,
            )
            .await
            .unwrap();
    }
    let (seen, _) = page_width(browser).await;
    assert_eq!(seen, width as i64, "the viewport is {width} px wide");
}

/// The DAG the user works with: params that reach the log, a task that ticks until the test
/// opens its gate (so its log grows while the user watches), and a task after it.
fn etl_dag(gate: &Path) -> String {
    format!(
        r#"version: 1
id: browser_etl
description: Load the day's orders into the warehouse.
owner: data-eng
tags: [sales, browser]
params:
  region: {{type: string, default: eu, enum: [eu, us]}}
  days: {{type: integer, default: 1, minimum: 1}}
tasks:
  extract:
    run: echo "extracting {{{{ params.region }}}} for {{{{ params.days }}}} days"
  gated:
    depends_on: extract
    run: 'i=0; while [ ! -e "{gate}" ]; do i=$((i+1)); echo "tick $i"; sleep 0.2; done; echo gate opened'
  load:
    depends_on: gated
    run: echo "loaded {{{{ params.region }}}}"
"#,
        gate = gate.display()
    )
}

const OTHER_DAG: &str = "version: 1\nid: nightly_report\ntags: [reports]\n\
                         schedule: \"0 3 * * *\"\nstart_date: 2024-01-01\n\
                         tasks:\n  render: {run: \"true\"}\n";

#[tokio::test(flavor = "multi_thread")]
async fn a_user_triggers_watches_clears_and_pauses_a_dag_in_a_browser() {
    let Some(driver) = Chromedriver::start() else {
        return;
    };
    let home = tempfile::tempdir().unwrap();
    let dags = tempfile::tempdir().unwrap();
    let gate = home.path().join("gate");
    std::fs::write(dags.path().join("browser_etl.yaml"), etl_dag(&gate)).unwrap();
    std::fs::write(dags.path().join("nightly_report.yaml"), OTHER_DAG).unwrap();
    let mut command = common::updraft(home.path());
    command
        .arg("--dags-folder")
        .arg(dags.path())
        .args(["standalone", "--port", "0"]);
    // The banner and the line with the first admin's password.
    let standalone = Running::start(command, &home.path().join("standalone.stderr"), 6);
    let password = standalone
        .banner
        .lines()
        .find(|line| line.contains("created user \"admin\""))
        .and_then(|line| line.split_whitespace().nth(5))
        .unwrap_or_else(|| panic!("no admin password in {}", standalone.banner))
        .to_owned();
    let site = standalone.url();
    let browser = driver.session().await;
    viewport(&browser, DESKTOP).await;

    // Logging in: any page leads to the login form, which leads back to it.
    browser.goto(&format!("{site}/dags")).await.unwrap();
    wait_for_path(&browser, |path| path.starts_with("/login")).await;
    let form = browser.form(Locator::Css("form.login")).await.unwrap();
    form.set_by_name("username", "admin").await.unwrap();
    form.set_by_name("password", &password).await.unwrap();
    click(&browser, "form.login button[type=submit]").await;
    wait_for_path(&browser, |path| path == "/dags").await;
    wait_for_text(&browser, "#dag-list", "nightly_report").await;
    wait_for_text(&browser, "#dag-list", "browser_etl").await;
    wait_for_text(&browser, "header .who", "admin").await;

    // Searching the DAG list.
    browser
        .find(Locator::Css("input[name=search]"))
        .await
        .unwrap()
        .send_keys("etl")
        .await
        .unwrap();
    click(&browser, "form.filters button[type=submit]").await;
    wait_for_path(&browser, |path| path.contains("search=etl")).await;
    let list = wait_for_text(&browser, "#dag-list", "browser_etl").await;
    assert!(!list.contains("nightly_report"), "{list}");
    screenshot(&browser, "dags").await;

    // Triggering with params through the form.
    click(&browser, "#dag-list a[href='/dags/browser_etl']").await;
    wait_for_path(&browser, |path| path == "/dags/browser_etl").await;
    click(&browser, "a.button[href$='/trigger']").await;
    wait_for_path(&browser, |path| path.ends_with("/trigger")).await;
    browser
        .find(Locator::Css("select[name='param.region']"))
        .await
        .unwrap()
        .select_by_label("us")
        .await
        .unwrap();
    let days = browser
        .find(Locator::Css("input[name='param.days']"))
        .await
        .unwrap();
    days.clear().await.unwrap();
    days.send_keys("3").await.unwrap();
    click(&browser, "form.card button[type=submit]").await;
    let run_path = wait_for_path(&browser, |path| path.contains("/runs/manual__")).await;
    assert!(
        run_path.starts_with("/dags/browser_etl/runs/"),
        "{run_path}"
    );

    // The grid while `gated` waits: extract green, gated running.
    browser
        .goto(&format!("{site}/dags/browser_etl?tab=grid"))
        .await
        .unwrap();
    eventually("extract to succeed and gated to run", || async {
        // The grid refreshes itself; a reload here would hide a broken refresh, so look only.
        let success = browser
            .find(Locator::Css("#grid a.cell.success[title^='extract ·']"))
            .await
            .is_ok();
        let running = browser
            .find(Locator::Css("#grid a.cell.running[title^='gated ·']"))
            .await
            .is_ok();
        (success && running).then_some(())
    })
    .await;
    screenshot(&browser, "grid").await;

    // The live log of the running task: its lines keep arriving without a reload.
    click(&browser, "#grid a.cell.running[title^='gated ·']").await;
    wait_for_path(&browser, |path| path.ends_with("/tasks/gated")).await;
    mark_document(&browser).await;
    wait_for_text(&browser, "#log-status", "Running").await;
    let ticks = |log: &str| log.matches("tick ").count();
    let first = ticks(&wait_for_text(&browser, "#log", "tick 1").await);
    eventually("more log lines to arrive", || async {
        (ticks(&text(&browser, "#log").await) > first + 2).then_some(())
    })
    .await;
    screenshot(&browser, "log").await;
    assert!(still_marked(&browser).await, "the log page was reloaded");

    // Opening the gate: the grid turns green by itself.
    browser
        .goto(&format!("{site}/dags/browser_etl?tab=grid"))
        .await
        .unwrap();
    mark_document(&browser).await;
    assert!(
        browser
            .find(Locator::Css("#grid a.cell.running[title^='gated ·']"))
            .await
            .is_ok(),
        "gated runs until the gate opens"
    );
    std::fs::write(&gate, "").unwrap();
    eventually("every cell and the run to turn green", || async {
        let cells = browser.find_all(Locator::Css("#grid a.cell")).await.ok()?;
        let green = browser
            .find_all(Locator::Css("#grid a.cell.success"))
            .await
            .ok()?;
        let run = browser
            .find(Locator::Css("#grid thead a.dot.success"))
            .await
            .is_ok();
        (cells.len() == 3 && green.len() == 3 && run).then_some(())
    })
    .await;
    assert!(still_marked(&browser).await, "the grid was reloaded");

    // The params reached the tasks.
    click(&browser, "#grid a.cell[title^='extract ·']").await;
    wait_for_path(&browser, |path| path.ends_with("/tasks/extract")).await;
    wait_for_text(&browser, "#log", "extracting us for 3 days").await;

    // The graph tab shows every task.
    browser
        .goto(&format!("{site}/dags/browser_etl"))
        .await
        .unwrap();
    click(&browser, "nav.tabs a[href='?tab=graph']").await;
    wait_for_path(&browser, |path| path.ends_with("tab=graph")).await;
    for task in ["extract", "gated", "load"] {
        eventually(&format!("the graph's node of {task}, green"), || async {
            let node = format!("#graph svg g.node[data-task='{task}'][data-state='success']");
            browser.find(Locator::Css(&node)).await.ok()
        })
        .await;
    }
    let edges = browser
        .find_all(Locator::Css("#graph svg path.edge"))
        .await
        .unwrap();
    assert_eq!(edges.len(), 2, "extract -> gated -> load");
    // The Content-Security-Policy allows no inline style: the boxes are coloured by app.css.
    let fill = browser
        .execute(
            "return getComputedStyle(document.querySelector(\"#graph g.node[data-task='load'] rect\")).fill;",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(fill, json!("rgb(46, 158, 68)"), "the success colour");
    screenshot(&browser, "graph").await;

    // Clearing `load`: it runs again, a second try, and succeeds.
    browser
        .goto(&format!("{site}{run_path}/tasks/load"))
        .await
        .unwrap();
    wait_for_text(&browser, "#ti", "success").await;
    click(&browser, "a.button[href$='/clear']").await;
    wait_for_path(&browser, |path| path.ends_with("/tasks/load/clear")).await;
    wait_for_text(&browser, "main", "will be cleared and run again").await;
    click(&browser, "button.danger").await;
    wait_for_path(&browser, |path| path == run_path).await;
    browser
        .goto(&format!("{site}{run_path}/tasks/load"))
        .await
        .unwrap();
    mark_document(&browser).await;
    eventually("load to succeed in a second try", || async {
        let ti = text(&browser, "#ti").await;
        (ti.contains("success") && ti.contains("try 2")).then_some(())
    })
    .await;
    assert!(still_marked(&browser).await, "the task page was reloaded");
    browser
        .goto(&format!("{site}{run_path}/tasks/load"))
        .await
        .unwrap();
    wait_for_text(&browser, "nav.tabs", "Try 2").await;
    wait_for_text(&browser, "#log", "loaded us").await;

    // Pausing the DAG from its page; the DAG list's paused filter finds it.
    browser
        .goto(&format!("{site}/dags/browser_etl"))
        .await
        .unwrap();
    click(&browser, ".title-row button.toggle.on").await;
    wait_for_text(&browser, ".title-row button.toggle.off", "Paused").await;
    browser
        .goto(&format!("{site}/dags?paused=true"))
        .await
        .unwrap();
    let paused = wait_for_text(&browser, "#dag-list", "browser_etl").await;
    assert!(!paused.contains("nightly_report"), "{paused}");

    // Variables and connections: set through the admin's forms, secrets shown as ***, a
    // delete asks first.
    browser.goto(&format!("{site}/variables")).await.unwrap();
    let type_into = |css: &'static str, keys: &'static str| {
        let browser = &browser;
        async move {
            browser
                .find(Locator::Css(css))
                .await
                .unwrap_or_else(|error| panic!("no {css}: {error}"))
                .send_keys(keys)
                .await
                .unwrap();
        }
    };
    type_into("#set-variable input[name=key]", "api_token").await;
    type_into("#set-variable textarea[name=value]", "browser-s3cret").await;
    click(&browser, "#set-variable button[type=submit]").await;
    let listed = wait_for_text(&browser, "#variables", "api_token").await;
    assert!(
        listed.contains("***") && !listed.contains("browser-s3cret"),
        "{listed}"
    );
    screenshot(&browser, "variables").await;
    click(
        &browser,
        "#variables form[action='/variables/api_token/delete'] button",
    )
    .await;
    browser.accept_alert().await.unwrap();
    wait_for_text(&browser, "#variables", "No variable").await;
    browser.goto(&format!("{site}/connections")).await.unwrap();
    type_into("#set-connection input[name=connection_id]", "warehouse").await;
    type_into(
        "#set-connection input[name=uri]",
        "postgres://etl:pa55word@db.internal:5432/analytics",
    )
    .await;
    click(&browser, "#set-connection button[type=submit]").await;
    let listed = wait_for_text(&browser, "#connections", "db.internal").await;
    assert!(
        listed.contains("warehouse") && !listed.contains("pa55word"),
        "{listed}"
    );

    // The same pages on a phone.
    viewport(&browser, PHONE).await;
    for (name, path, part, wanted) in [
        ("dags", "/dags".to_owned(), "#dag-list", "browser_etl"),
        (
            "grid",
            "/dags/browser_etl?tab=grid".to_owned(),
            "#grid",
            "gated",
        ),
        (
            "graph",
            "/dags/browser_etl?tab=graph".to_owned(),
            "#graph",
            "gated",
        ),
        (
            "log",
            format!("{run_path}/tasks/gated"),
            "#log",
            "gate opened",
        ),
    ] {
        browser.goto(&format!("{site}{path}")).await.unwrap();
        wait_for_text(&browser, part, wanted).await;
        screenshot(&browser, name).await;
    }
    browser.close().await.unwrap();
}
