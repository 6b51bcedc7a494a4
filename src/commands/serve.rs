//! The long-running commands: `standalone`, `scheduler`, `worker` and `webserver`. Each runs until Ctrl-C or
//! SIGTERM, then stops claiming work, lets running tries finish (a worker: within its
//! `--shutdown-timeout`, then it kills them) and exits.

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tokio::sync::watch;
use updraft_core::scope::Scope;
use updraft_executor::name::Name;
use updraft_executor::worker::{self, Worker};
use updraft_metadata::{Backend, Connections, Store, redact_url};
use updraft_scheduler::service::{self, Scheduler};

use crate::cli::{SchedulerArgs, StandaloneArgs, WebserverArgs, WorkerArgs};
use crate::commands::{open_store, runtime};
use crate::config::Config;

/// How often a worker heartbeats its tries (and notices kills it was not woken for).
const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(1);

pub fn standalone(config: &Config, args: StandaloneArgs) -> Result<i32> {
    let _home = lock_home(&config.home()?)?;
    runtime()?.block_on(async {
        require_dags_folder(config)?;
        let store = open_store(config).await?;
        let listener = tokio::net::TcpListener::bind((args.host.as_str(), args.port))
            .await
            .with_context(|| format!("cannot listen on {}:{}", args.host, args.port))?;
        let address = listener.local_addr()?;
        let dags_folder = std::fs::canonicalize(&config.dags_folder)?;
        let admin_password = crate::commands::users::ensure_admin(&store).await?;
        // Its worker takes its name and settles what a previous life left running before the
        // banner says it runs (a refusal comes first) and before its scheduler starts.
        let hostname = hostname();
        let scheduler = Scheduler::new(
            store.clone(),
            scheduler_settings(config, &args.scheduler),
            hostname.clone(),
        );
        let mut worker = Worker::new(
            store.clone(),
            worker_settings(
                Name::OfHome(format!("{hostname}:standalone")),
                hostname,
                vec!["default".to_owned()],
                args.concurrency,
            ),
        );
        worker.register().await?;
        // Handled before the banner says it runs, so a stop right after it is a clean one.
        let stop = stop_signal()?;
        println!("Updraft standalone is running");
        println!("  web server:   http://{address}");
        println!("  database:     {}", store.url());
        println!("  DAGs folder:  {}", dags_folder.display());
        println!("  stop with Ctrl-C");
        if let Some(password) = admin_password {
            println!(
                "  created user \"{}\" with password {password} (shown once; change users with \
                 `updraft users`)",
                crate::commands::users::STANDALONE_ADMIN
            );
        }

        let web = tokio::spawn(updraft_webserver::serve(
            listener,
            store.clone(),
            stopped(stop.clone()),
        ));
        let scheduler = tokio::spawn(scheduler.run(stopped(stop.clone())));
        let worker = worker.run(stopped(stop.clone())).await;
        scheduler.await?;
        web.await??;
        worker?;
        store.close().await;
        Ok(0)
    })
}

/// `updraft webserver`: the UI and the JSON API, until Ctrl-C or SIGTERM.
pub fn webserver(config: &Config, args: WebserverArgs) -> Result<i32> {
    runtime()?.block_on(async {
        let store = open_store(config).await?;
        let listener = tokio::net::TcpListener::bind((args.host.as_str(), args.port))
            .await
            .with_context(|| format!("cannot listen on {}:{}", args.host, args.port))?;
        println!("Updraft web server on http://{}", listener.local_addr()?);
        println!("  database:     {}", store.url());
        if store.list_users().await?.is_empty() {
            println!("  no user yet: create one with `updraft users create NAME --role admin`");
        }
        let stop = stop_signal()?;
        updraft_webserver::serve(listener, store.clone(), stopped(stop)).await?;
        store.close().await;
        Ok(0)
    })
}

pub fn scheduler(config: &Config, args: SchedulerArgs) -> Result<i32> {
    runtime()?.block_on(async {
        require_dags_folder(config)?;
        let store = open_store(config).await?;
        eprintln!(
            "scheduler: DAGs folder {}, database {}",
            config.dags_folder.display(),
            store.url()
        );
        let stop = stop_signal()?;
        Scheduler::new(store.clone(), scheduler_settings(config, &args), hostname())
            .run(stopped(stop))
            .await;
        store.close().await;
        Ok(0)
    })
}

pub fn worker(config: &Config, args: WorkerArgs) -> Result<i32> {
    let url = config.database_url()?;
    if Backend::of_url(&url) == Some(Backend::Sqlite) {
        bail!(
            "updraft worker needs the Postgres database its scheduler uses (--database-url \
             postgres://USER@HOST:PORT/DATABASE, or UPDRAFT_DATABASE_URL), found {}: a SQLite \
             file is not shared between machines. On one machine, `updraft standalone` runs the \
             scheduler and its workers in one process",
            redact_url(&url)
        );
    }
    let mut queues: Vec<String> = Vec::with_capacity(args.queues.len());
    for queue in args.queues {
        if !queues.contains(&queue) {
            queues.push(queue);
        }
    }
    // One thread: a worker waits on processes and the database, and on two cores a second
    // runtime thread costs it a fifth more CPU per try in wake-ups between threads (measured
    // with `updraft bench workers`).
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        let url = config.database_url()?;
        let store = Store::open_with(&url, Connections::Kept(worker::CONNECTIONS)).await?;
        let hostname = hostname();
        let name = match args.name {
            Some(name) => Name::Given(name),
            None => Name::FirstFree(hostname.clone()),
        };
        let stop = stop_signal()?;
        let mut settings = worker_settings(name, hostname, queues.clone(), args.concurrency);
        settings.shutdown_timeout = Some(args.shutdown_timeout);
        let mut worker = Worker::new(store.clone(), settings);
        let id = worker.register().await?;
        eprintln!(
            "worker {id}: queues {}, concurrency {}, database {}",
            queues.join(","),
            args.concurrency,
            store.url()
        );
        worker.run(stopped(stop)).await?;
        store.close().await;
        Ok(0)
    })
}

pub fn scheduler_settings(config: &Config, args: &SchedulerArgs) -> service::Settings {
    let mut settings = service::Settings::new(config.dags_folder.clone(), config.load.clone());
    settings.zombie_threshold = args.zombie_threshold;
    settings.poll_interval = args.poll_interval.unwrap_or(POLL_INTERVAL);
    settings
}

pub fn worker_settings(
    name: Name,
    hostname: String,
    queues: Vec<String>,
    concurrency: u32,
) -> worker::Settings {
    worker::Settings {
        name,
        hostname,
        queues,
        concurrency: concurrency as usize,
        poll_interval: POLL_INTERVAL,
        heartbeat_interval: HEARTBEAT_INTERVAL,
        echo: false,
        scope: Scope::Everything,
        shutdown_timeout: None,
    }
}

/// Holds the lock that keeps a second `standalone` off the same home (two would share one
/// SQLite file, one doorbell and one worker name) until the returned file is dropped. The lock
/// (flock(2)) goes with the process however it ends; the file keeps the pid of its holder, for
/// the message that refuses the second.
fn lock_home(home: &Path) -> Result<File> {
    std::fs::create_dir_all(home)
        .with_context(|| format!("cannot create the Updraft home {}", home.display()))?;
    let path = home.join("standalone.pid");
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    // SAFETY: flock(2) on a file descriptor this function owns.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let mut holder = String::new();
        let _ = file.read_to_string(&mut holder);
        let holder = match holder.trim().parse::<u32>() {
            Ok(pid) => format!("process {pid}"),
            Err(_) => "another process".to_owned(),
        };
        bail!(
            "an updraft standalone ({holder}) already runs on the home {}: stop it first, or give \
             this one a home of its own (--home or UPDRAFT_HOME)",
            home.display()
        );
    }
    file.set_len(0)?;
    file.rewind()?;
    writeln!(file, "{}", std::process::id())?;
    Ok(file)
}

/// How long a loop waits for a wake-up before it looks anyway: 1 s. Wake-ups reach every
/// process (LISTEN/NOTIFY on Postgres, the doorbell on a SQLite file) and say what changed, so
/// a look that nothing woke finds nothing new; it is the fallback for a lost wake-up.
const POLL_INTERVAL: Duration = Duration::from_secs(1);

fn require_dags_folder(config: &Config) -> Result<()> {
    if !config.dags_folder.is_dir() {
        bail!(
            "the DAGs folder {} does not exist: pass --dags-folder or set UPDRAFT_DAGS_FOLDER",
            config.dags_folder.display()
        );
    }
    Ok(())
}

/// Flips to true on Ctrl-C or SIGTERM.
fn stop_signal() -> Result<watch::Receiver<bool>> {
    let (stop, stopped) = watch::channel(false);
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("cannot watch for SIGTERM")?;
    tokio::spawn(async move {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = terminate.recv() => {}
        }
        eprintln!("stopping: waiting for running tries to finish");
        stop.send_replace(true);
    });
    Ok(stopped)
}

/// Completes when `stop` flips to true.
pub async fn stopped(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|stop| *stop).await;
}

/// This machine's name, as workers and schedulers record it.
pub fn hostname() -> String {
    let mut buffer = [0u8; 256];
    // SAFETY: the buffer is valid for its whole length, and gethostname writes at most that.
    let result = unsafe { libc::gethostname(buffer.as_mut_ptr().cast(), buffer.len()) };
    let end = buffer.iter().position(|&b| b == 0).unwrap_or(buffer.len());
    match result {
        0 if end > 0 => String::from_utf8_lossy(&buffer[..end]).into_owned(),
        _ => "localhost".to_owned(),
    }
}
