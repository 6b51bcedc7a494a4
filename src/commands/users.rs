//! `updraft users ...`: the users of the web UI and API, and their API tokens. Passwords are
//! read without echo (or from stdin for scripts) and stored as argon2 hashes; a token is shown
//! once and stored as a hash. Neither ever reaches a log.

use std::io::{BufRead, IsTerminal, Write};

use anyhow::{Context, Result, anyhow, bail};
use chrono::Utc;
use serde::Serialize;
use updraft_metadata::{Role, Store};
use updraft_webserver::auth::{hash_password, new_token, token_hash};

use crate::cli::UsersCommand;
use crate::commands::{open_store, print_table, rfc3339, runtime};
use crate::config::Config;

/// The user `standalone` creates when there is none.
pub const STANDALONE_ADMIN: &str = "admin";

pub fn run(config: &Config, command: UsersCommand) -> Result<i32> {
    // The password is read before the database is opened, so a prompt comes first.
    let password = match &command {
        UsersCommand::Create { password_stdin, .. } => Some(read_password(*password_stdin)?),
        _ => None,
    };
    runtime()?.block_on(async {
        let store = open_store(config).await?;
        let code = match command {
            UsersCommand::Create { username, role, .. } => {
                let role: Role = role.parse().map_err(|error| anyhow!("{error}"))?;
                let password = password.unwrap_or_default();
                create(&store, &username, &password, role).await?;
                println!("created {role} {username}");
                0
            }
            UsersCommand::List { json } => list(&store, json).await?,
            UsersCommand::Delete { username } => {
                store.delete_user(&username).await?;
                println!("deleted {username}");
                0
            }
            UsersCommand::Token { username } => {
                let token = new_token().map_err(|error| anyhow!("{error}"))?;
                store
                    .create_api_token(&username, &token_hash(&token), Utc::now())
                    .await?;
                println!("{token}");
                eprintln!(
                    "an API token of {username}: shown this once; send it as \
                     `Authorization: Bearer TOKEN`"
                );
                0
            }
        };
        store.close().await;
        Ok(code)
    })
}

/// Creates a user with the argon2 hash of `password` (hashed off the async threads).
pub async fn create(store: &Store, username: &str, password: &str, role: Role) -> Result<()> {
    if password.is_empty() {
        bail!("the password is empty");
    }
    let password = password.to_owned();
    let hash = tokio::task::spawn_blocking(move || hash_password(&password))
        .await?
        .map_err(|error| anyhow!("{error}"))?;
    store.create_user(username, &hash, role, Utc::now()).await?;
    Ok(())
}

/// When there is no user yet, creates [`STANDALONE_ADMIN`] with a random password and returns
/// the password (for `standalone` to print once).
pub async fn ensure_admin(store: &Store) -> Result<Option<String>> {
    if !store.list_users().await?.is_empty() {
        return Ok(None);
    }
    let password = new_token().map_err(|error| anyhow!("{error}"))?[..20].to_owned();
    create(store, STANDALONE_ADMIN, &password, Role::Admin).await?;
    Ok(Some(password))
}

async fn list(store: &Store, json: bool) -> Result<i32> {
    let users = store.list_users().await?;
    if json {
        #[derive(Serialize)]
        struct Row<'a> {
            username: &'a str,
            role: Role,
            created_at: String,
        }
        let rows: Vec<Row> = users
            .iter()
            .map(|user| Row {
                username: &user.username,
                role: user.role,
                created_at: rfc3339(user.created_at),
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        let rows: Vec<[String; 3]> = users
            .iter()
            .map(|user| {
                [
                    user.username.clone(),
                    user.role.to_string(),
                    rfc3339(user.created_at),
                ]
            })
            .collect();
        print_table(["USERNAME", "ROLE", "CREATED"], &rows);
    }
    Ok(0)
}

/// The new user's password: the first line of stdin with `--password-stdin`, else asked twice
/// on the terminal without echo.
fn read_password(from_stdin: bool) -> Result<String> {
    let stdin = std::io::stdin();
    if from_stdin {
        let mut line = String::new();
        stdin
            .lock()
            .read_line(&mut line)
            .context("reading the password from stdin")?;
        return Ok(line.trim_end_matches(['\r', '\n']).to_owned());
    }
    if !stdin.is_terminal() {
        bail!("stdin is not a terminal: pass the password on stdin with --password-stdin");
    }
    let first = prompt_hidden("Password: ")?;
    let second = prompt_hidden("Repeat it: ")?;
    if first != second {
        bail!("the passwords differ");
    }
    Ok(first)
}

/// Reads a line from the terminal with echo off, restoring the terminal afterwards.
fn prompt_hidden(prompt: &str) -> Result<String> {
    eprint!("{prompt}");
    std::io::stderr().flush()?;
    let fd = libc::STDIN_FILENO;
    // SAFETY: tcgetattr/tcsetattr only read and write the termios value we own, on stdin,
    // which is a terminal (checked by the caller).
    let mut original: libc::termios = unsafe { std::mem::zeroed() };
    if unsafe { libc::tcgetattr(fd, &mut original) } != 0 {
        bail!("cannot read the terminal's settings");
    }
    let mut silent = original;
    silent.c_lflag &= !libc::ECHO;
    silent.c_lflag |= libc::ECHONL;
    unsafe { libc::tcsetattr(fd, libc::TCSANOW, &silent) };
    let mut line = String::new();
    let read = std::io::stdin().lock().read_line(&mut line);
    unsafe { libc::tcsetattr(fd, libc::TCSANOW, &original) };
    read.context("reading the password")?;
    Ok(line.trim_end_matches(['\r', '\n']).to_owned())
}
