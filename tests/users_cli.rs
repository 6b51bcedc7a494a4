//! `updraft users create / list / delete / token` against real databases, both backends.

mod common;

use std::io::Write;
use std::process::Stdio;

use common::{run, updraft};
use updraft_metadata::Role;
use updraft_metadata::testing::each_backend;
use updraft_webserver::auth::{token_hash, verify_password};

/// `updraft --database-url URL users ARGS...`, with `stdin` written to its standard input.
fn users(home: &std::path::Path, url: &str, args: &[&str], stdin: &str) -> (i32, String, String) {
    let mut command = updraft(home);
    command
        .args(["--database-url", url, "users"])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn().expect("the updraft binary runs");
    // A command that refuses its arguments exits before it reads stdin: the pipe is closed.
    let written = child.stdin.take().unwrap().write_all(stdin.as_bytes());
    if let Err(error) = written {
        assert_eq!(error.kind(), std::io::ErrorKind::BrokenPipe, "{error}");
    }
    let output = child.wait_with_output().unwrap();
    (
        output.status.code().expect("exits"),
        String::from_utf8(output.stdout).unwrap(),
        String::from_utf8(output.stderr).unwrap(),
    )
}

#[tokio::test]
async fn users_are_created_listed_given_tokens_and_deleted() {
    each_backend(|db| async move {
        let home = tempfile::tempdir().unwrap();
        let store = db.store().await;
        let url = db.url();
        let (code, stdout, stderr) = users(
            home.path(),
            url,
            &["create", "ada", "--role", "admin", "--password-stdin"],
            "correct horse\n",
        );
        assert_eq!(code, 0, "{stderr}");
        assert_eq!(stdout, "created admin ada\n");
        let ada = store.get_user("ada").await.unwrap().unwrap();
        assert_eq!(ada.role, Role::Admin);
        assert!(verify_password("correct horse", &ada.password_hash));
        assert!(!stderr.contains("correct horse") && !stdout.contains("correct horse"));

        let (code, _, stderr) = users(
            home.path(),
            url,
            &["create", "ada", "--role", "viewer", "--password-stdin"],
            "other password\n",
        );
        assert_eq!(code, 1);
        assert!(stderr.contains("user 'ada' already exists"), "{stderr}");
        let (code, _, stderr) = users(home.path(), url, &["create", "bob", "--role", "viewer"], "");
        assert_eq!(code, 1);
        assert!(
            stderr.contains("pass the password on stdin with --password-stdin"),
            "{stderr}"
        );
        let (code, _, stderr) = users(
            home.path(),
            url,
            &["create", "bob", "--role", "root", "--password-stdin"],
            "long enough\n",
        );
        assert_eq!(code, 2, "{stderr}");
        users(
            home.path(),
            url,
            &["create", "vic", "--role", "viewer", "--password-stdin"],
            "vic's password\n",
        );

        let (code, stdout, _) = users(home.path(), url, &["list", "--json"], "");
        assert_eq!(code, 0);
        let listed: serde_json::Value = serde_json::from_str(&stdout).unwrap();
        let names: Vec<(&str, &str)> = listed
            .as_array()
            .unwrap()
            .iter()
            .map(|u| (u["username"].as_str().unwrap(), u["role"].as_str().unwrap()))
            .collect();
        assert_eq!(names, [("ada", "admin"), ("vic", "viewer")]);
        assert!(!stdout.contains("argon2"), "no hash in the listing");
        let (_, table, _) = users(home.path(), url, &["list"], "");
        assert!(table.starts_with("USERNAME  ROLE"), "{table}");

        let (code, token, stderr) = users(home.path(), url, &["token", "vic"], "");
        assert_eq!(code, 0, "{stderr}");
        let token = token.trim();
        assert_eq!(token.len(), 64);
        let owner = store
            .get_user_by_token(&token_hash(token), chrono::Utc::now())
            .await
            .unwrap();
        assert_eq!(owner.unwrap().username, "vic");
        let (code, _, stderr) = users(home.path(), url, &["token", "nobody"], "");
        assert_eq!(code, 1);
        assert!(stderr.contains("user 'nobody' not found"), "{stderr}");

        let (code, stdout, _) = users(home.path(), url, &["delete", "vic"], "");
        assert_eq!((code, stdout.as_str()), (0, "deleted vic\n"));
        assert_eq!(
            store
                .get_user_by_token(&token_hash(token), chrono::Utc::now())
                .await
                .unwrap(),
            None
        );
        let (code, _, stderr) = users(home.path(), url, &["delete", "vic"], "");
        assert_eq!(code, 1);
        assert!(stderr.contains("user 'vic' not found"), "{stderr}");
    })
    .await;
}

#[tokio::test]
async fn short_passwords_and_names_that_are_not_ids_are_refused() {
    each_backend(|db| async move {
        let home = tempfile::tempdir().unwrap();
        let store = db.store().await;
        let url = db.url();
        let (code, _, stderr) = users(
            home.path(),
            url,
            &["create", "ada", "--role", "admin", "--password-stdin"],
            "1234567\n",
        );
        assert_eq!(code, 1);
        assert!(
            stderr.contains("the password is shorter than 8 characters"),
            "{stderr}"
        );
        let long = "a".repeat(10_000);
        for (name, message) in [
            ("<script>", "may only hold letters, digits and _ . - @"),
            ("ada\x1b[31m", "\"ada\\u{1b}[31m\" may only hold"),
            (long.as_str(), "is longer than 64 characters"),
        ] {
            let (code, _, stderr) = users(
                home.path(),
                url,
                &["create", name, "--role", "admin", "--password-stdin"],
                "long enough\n",
            );
            assert_eq!(code, 1, "{stderr}");
            assert!(stderr.contains(message), "{name:.20}: {stderr}");
            assert!(
                !stderr.contains('\x1b'),
                "no raw escape reaches the terminal"
            );
        }
        assert!(store.list_users().await.unwrap().is_empty());
    })
    .await;
}

#[tokio::test]
async fn tokens_are_created_with_an_expiry_listed_and_revoked_one_at_a_time() {
    each_backend(|db| async move {
        let home = tempfile::tempdir().unwrap();
        let store = db.store().await;
        let url = db.url();
        users(
            home.path(),
            url,
            &["create", "ada", "--role", "admin", "--password-stdin"],
            "correct horse\n",
        );
        let (code, ci, stderr) = users(
            home.path(),
            url,
            &[
                "tokens",
                "create",
                "ada",
                "--name",
                "ci",
                "--expires-in",
                "30d",
            ],
            "",
        );
        assert_eq!(code, 0, "{stderr}");
        assert!(stderr.contains("expires 20"), "{stderr}");
        let (_, forever, _) = users(home.path(), url, &["token", "ada"], "");
        let now = chrono::Utc::now();
        for token in [&ci, &forever] {
            let owner = store
                .get_user_by_token(&token_hash(token.trim()), now)
                .await;
            assert_eq!(owner.unwrap().unwrap().username, "ada");
        }
        let later = now + chrono::Duration::days(31);
        assert_eq!(
            store
                .get_user_by_token(&token_hash(ci.trim()), later)
                .await
                .unwrap(),
            None,
            "expired after 30 days"
        );

        let (code, stdout, _) = users(home.path(), url, &["tokens", "list", "--json"], "");
        assert_eq!(code, 0);
        let listed: serde_json::Value = serde_json::from_str(&stdout).unwrap();
        let rows = listed.as_array().unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[1]["name"], "ci");
        assert!(rows[1]["expires_at"].is_string());
        assert!(rows[0]["expires_at"].is_null());
        assert!(
            !stdout.contains(ci.trim()),
            "the token itself is never listed"
        );
        let (_, table, _) = users(home.path(), url, &["tokens", "list", "ada"], "");
        assert!(table.starts_with("ID  USER  NAME"), "{table}");

        let id = rows[1]["id"].as_i64().unwrap().to_string();
        let (code, stdout, stderr) = users(home.path(), url, &["tokens", "revoke", &id], "");
        assert_eq!(code, 0, "{stderr}");
        assert_eq!(stdout, format!("revoked token {id} of ada\n"));
        assert_eq!(
            store
                .get_user_by_token(&token_hash(ci.trim()), now)
                .await
                .unwrap(),
            None
        );
        assert!(
            store
                .get_user_by_token(&token_hash(forever.trim()), now)
                .await
                .unwrap()
                .is_some(),
            "the other token still works"
        );
        let (code, _, stderr) = users(home.path(), url, &["tokens", "revoke", &id], "");
        assert_eq!(code, 1);
        assert!(stderr.contains("is revoked already"), "{stderr}");
        let (_, stdout, _) = users(home.path(), url, &["tokens", "list", "--json"], "");
        assert!(stdout.contains("\"revoked\""), "{stdout}");
    })
    .await;
}

#[test]
fn webserver_help_names_its_defaults() {
    let home = tempfile::tempdir().unwrap();
    let mut command = updraft(home.path());
    command.args(["webserver", "--help"]);
    let (code, stdout, _) = run(command);
    assert_eq!(code, 0);
    assert!(stdout.contains("[default: 127.0.0.1]"), "{stdout}");
    assert!(stdout.contains("[default: 8080]"), "{stdout}");
}

#[test]
fn standalone_creates_an_admin_once_and_prints_its_password() {
    let home = tempfile::tempdir().unwrap();
    let dags = tempfile::tempdir().unwrap();
    let start = |lines| {
        let mut command = updraft(home.path());
        command
            .arg("--dags-folder")
            .arg(dags.path())
            .args(["standalone", "--port", "0"]);
        common::Running::start(command, &home.path().join("standalone.stderr"), lines)
    };
    let mut first = start(6);
    let line = first
        .banner
        .lines()
        .find(|line| line.contains("created user \"admin\""))
        .unwrap_or_else(|| panic!("{}", first.banner))
        .to_owned();
    let password = line.split_whitespace().nth(5).unwrap().to_owned();
    assert_eq!(first.terminate(std::time::Duration::from_secs(30)), Some(0));
    assert!(
        !std::fs::read_to_string(&first.stderr_path)
            .unwrap()
            .contains(&password)
    );

    let mut second = start(5);
    assert_eq!(
        second.terminate(std::time::Duration::from_secs(30)),
        Some(0)
    );
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let url = format!("sqlite:{}", home.path().join("updraft.db").display());
        let store = updraft_metadata::Store::open(&url).await.unwrap();
        let users = store.list_users().await.unwrap();
        assert_eq!(users.len(), 1, "a restart creates no other admin");
        assert_eq!(users[0].username, "admin");
        assert_eq!(users[0].role, Role::Admin);
        assert!(verify_password(&password, &users[0].password_hash));
    });
}
