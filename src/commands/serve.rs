//! The long-running commands: `standalone`, `scheduler`, `worker` and `webserver`. Each runs until Ctrl-C or
//! SIGTERM, then stops claiming work, lets running tries finish (a worker: within its
//! `--shutdown-timeout`, then it kills them) and exits.

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use anyhow::{Context, Result, bail};
use tokio_util::sync::CancellationToken;
use updraft_core::scope::Scope;
use updraft_core::secret::SecretsConfig;
use updraft_executor::name::Name;
use updraft_executor::worker::{self, Worker};
use updraft_metadata::{Backend, Connections, Store, redact_url};
use updraft_scheduler::service::{self, Scheduler};

use crate::accounts::{STANDALONE_ADMIN, ensure_admin};
use crate::cli::{SchedulerArgs, StandaloneArgs, WebserverArgs, WorkerArgs};
use crate::config::{Config, KeyFile};
use crate::lookup::require_dags_folder;
use crate::wiring::{self, hostname, open_store, runtime, worker_settings};

pub fn standalone(config: &Config, args: StandaloneArgs) -> Result<i32> {
    let _home = lock_home(&config.home()?)?;
    // The installation's key: made now (in the home's key file) unless UPDRAFT_SECRET_KEY
    // holds one, so that secrets can be sealed from the first variable on.
    let secrets = config.secrets(KeyFile::Create)?;
    runtime()?.block_on(async {
        require_dags_folder(config)?;
        let store = open_store(config).await?;
        let listener = tokio::net::TcpListener::bind((args.host.as_str(), args.port))
            .await
            .with_context(|| format!("cannot listen on {}:{}", args.host, args.port))?;
        let address = listener.local_addr()?;
        let base_url = Some(
            config
                .base_url
                .clone()
                .unwrap_or_else(|| format!("http://{address}")),
        );
        let dags_folder = std::fs::canonicalize(&config.dags_folder)?;
        let admin_password = ensure_admin(&store).await?;
        // Its worker takes its name and settles what a previous life left running before the
        // banner says it runs (a refusal comes first) and before its scheduler starts.
        let hostname = hostname();
        let mut scheduler_settings = scheduler_settings(config, &args.scheduler, secrets.clone());
        scheduler_settings.base_url = base_url.clone();
        let notifier_settings = updraft_notifier::Settings {
            secrets: secrets.clone(),
            base_url: base_url.clone(),
        };
        let scheduler = Scheduler::new(store.clone(), scheduler_settings, hostname.clone());
        let mut settings = worker_settings(
            Name::OfHome(format!("{hostname}:standalone")),
            hostname,
            vec!["default".to_owned()],
            args.concurrency,
            secrets.clone(),
        );
        settings.inherit_env = args.inherit_env.clone();
        settings.max_log_bytes = args.max_log_size;
        settings.base_url = base_url;
        let mut worker = Worker::new(store.clone(), settings);
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
                STANDALONE_ADMIN
            );
        }

        let web = tokio::spawn(updraft_webserver::serve(
            listener,
            store.clone(),
            secrets,
            stop.clone().cancelled_owned(),
        ));
        let scheduler = tokio::spawn(scheduler.run(stop.clone().cancelled_owned()));
        let notifier = tokio::spawn(updraft_notifier::run(
            store.clone(),
            notifier_settings,
            stop.clone(),
        ));
        let worker = worker.run(stop.cancelled()).await;
        scheduler.await?;
        notifier.await?;
        web.await??;
        worker?;
        store.close().await;
        Ok(0)
    })
}

/// `updraft webserver`: the UI and the JSON API, until Ctrl-C or SIGTERM.
pub fn webserver(config: &Config, args: WebserverArgs) -> Result<i32> {
    let secrets = config.secrets(KeyFile::Read)?;
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
        updraft_webserver::serve(listener, store.clone(), secrets, stop.cancelled_owned()).await?;
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
        let secrets = config.secrets(KeyFile::Read)?;
        // Notices go out beside the scheduler, never in its loop.
        let notifier = tokio::spawn(updraft_notifier::run(
            store.clone(),
            updraft_notifier::Settings {
                secrets: secrets.clone(),
                base_url: config.base_url.clone(),
            },
            stop.clone(),
        ));
        Scheduler::new(
            store.clone(),
            scheduler_settings(config, &args, secrets),
            hostname(),
        )
        .run(stop.cancelled_owned())
        .await;
        notifier.await?;
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
    // with `updraft-bench workers`).
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
        let secrets = config.secrets(KeyFile::Read)?;
        let mut settings =
            worker_settings(name, hostname, queues.clone(), args.concurrency, secrets);
        settings.shutdown_timeout = Some(args.shutdown_timeout);
        settings.inherit_env = args.inherit_env;
        settings.max_log_bytes = args.max_log_size;
        settings.base_url = config.base_url.clone();
        let mut worker = Worker::new(store.clone(), settings);
        let id = worker.register().await?;
        eprintln!(
            "worker {id}: queues {}, concurrency {}, database {}",
            queues.join(","),
            args.concurrency,
            store.url()
        );
        worker.run(stop.cancelled_owned()).await?;
        store.close().await;
        Ok(0)
    })
}

/// The scheduler of `standalone` and `scheduler`, with their flags.
fn scheduler_settings(
    config: &Config,
    args: &SchedulerArgs,
    secrets: SecretsConfig,
) -> service::Settings {
    let mut settings = wiring::scheduler_settings(config, Scope::Everything, secrets);
    settings.zombie_threshold = args.zombie_threshold;
    settings.retention = args.retention;
    if let Some(poll_interval) = args.poll_interval {
        settings.poll_interval = poll_interval;
    }
    settings
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

/// A token cancelled on Ctrl-C or SIGTERM: every part of the command stops on it.
fn stop_signal() -> Result<CancellationToken> {
    let stop = CancellationToken::new();
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("cannot watch for SIGTERM")?;
    let token = stop.clone();
    tokio::spawn(async move {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = terminate.recv() => {}
        }
        eprintln!("stopping: waiting for running tries to finish");
        token.cancel();
    });
    Ok(stop)
}
