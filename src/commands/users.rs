//! `updraft users ...`: the users of the web UI and API, and their API tokens. Passwords are
//! read without echo (or from stdin for scripts), must be at least
//! [`crate::accounts::PASSWORD_MIN`] characters and are stored as argon2 hashes; a token is
//! shown once and stored as a hash, with an optional expiry, and is revoked one at a time.
//! Neither ever reaches a log.

use std::io::{BufRead, IsTerminal, Write};

use anyhow::{Context, Result, anyhow, bail};
use chrono::Utc;
use serde::Serialize;
use updraft_metadata::{NewApiToken, Role, Store, check_username};
use updraft_webserver::auth::{new_token, token_hash};

use crate::accounts::create_user;
use crate::cli::{TokensCommand, UsersCommand};
use crate::config::Config;
use crate::term::{print_table, rfc3339};
use crate::wiring::{open_store, runtime};

/// The most tokens `users tokens list` shows.
const TOKENS_SHOWN: i64 = 1000;

pub fn run(config: &Config, command: UsersCommand) -> Result<i32> {
    // The password is read before the database is opened, so a prompt comes first; a name
    // that cannot be a user's is refused before it.
    let password = match &command {
        UsersCommand::Create {
            username,
            password_stdin,
            ..
        } => {
            check_username(username)?;
            Some(read_password(*password_stdin)?)
        }
        _ => None,
    };
    runtime()?.block_on(async {
        let store = open_store(config).await?;
        let code = match command {
            UsersCommand::Create { username, role, .. } => {
                let role: Role = role.parse().map_err(|error| anyhow!("{error}"))?;
                let password = password.unwrap_or_default();
                create_user(&store, &username, &password, role).await?;
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
                create_token(&store, &username, NewApiToken::default()).await?;
                0
            }
            UsersCommand::Tokens(TokensCommand::List { username, json }) => {
                list_tokens(&store, username.as_deref(), json).await?;
                0
            }
            UsersCommand::Tokens(TokensCommand::Create {
                username,
                name,
                expires_in,
            }) => {
                let expires_at = match expires_in {
                    Some(after) => Some(Utc::now() + chrono::Duration::from_std(after)?),
                    None => None,
                };
                create_token(&store, &username, NewApiToken { name, expires_at }).await?;
                0
            }
            UsersCommand::Tokens(TokensCommand::Revoke { id }) => {
                let token = store.revoke_api_token(id, None, Utc::now()).await?;
                println!("revoked token {id} of {}", token.username);
                0
            }
        };
        store.close().await;
        Ok(code)
    })
}

/// Creates an API token of `username` and prints it, this once.
async fn create_token(store: &Store, username: &str, spec: NewApiToken) -> Result<()> {
    let token = new_token().map_err(|error| anyhow!("{error}"))?;
    let created = store
        .create_api_token(username, &token_hash(&token), &spec, Utc::now())
        .await?;
    println!("{token}");
    let expiry = match created.expires_at {
        Some(at) => format!("expires {}", rfc3339(at)),
        None => "never expires".to_owned(),
    };
    eprintln!(
        "API token {} of {username} ({expiry}): shown this once; send it as \
         `Authorization: Bearer TOKEN`",
        created.id
    );
    Ok(())
}

async fn list_tokens(store: &Store, username: Option<&str>, json: bool) -> Result<()> {
    let tokens = store.list_api_tokens(username, TOKENS_SHOWN).await?;
    let now = Utc::now();
    if json {
        let rows: Vec<serde_json::Value> = tokens
            .iter()
            .map(|token| {
                serde_json::json!({
                    "id": token.id,
                    "username": token.username,
                    "name": token.name,
                    "created_at": rfc3339(token.created_at),
                    "expires_at": token.expires_at.map(rfc3339),
                    "revoked_at": token.revoked_at.map(rfc3339),
                    "status": token.status(now),
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        let rows: Vec<[String; 6]> = tokens
            .iter()
            .map(|token| {
                [
                    token.id.to_string(),
                    token.username.clone(),
                    format!("{:?}", token.name),
                    rfc3339(token.created_at),
                    token.expires_at.map_or("never".to_owned(), rfc3339),
                    token.status(now).to_owned(),
                ]
            })
            .collect();
        print_table(
            ["ID", "USER", "NAME", "CREATED", "EXPIRES", "STATUS"],
            &rows,
        );
    }
    Ok(())
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
