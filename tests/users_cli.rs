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
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
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
            "other\n",
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
            "x\n",
        );
        assert_eq!(code, 2, "{stderr}");
        users(
            home.path(),
            url,
            &["create", "vic", "--role", "viewer", "--password-stdin"],
            "pw\n",
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
        let owner = store.get_user_by_token(&token_hash(token)).await.unwrap();
        assert_eq!(owner.unwrap().username, "vic");
        let (code, _, stderr) = users(home.path(), url, &["token", "nobody"], "");
        assert_eq!(code, 1);
        assert!(stderr.contains("user 'nobody' not found"), "{stderr}");

        let (code, stdout, _) = users(home.path(), url, &["delete", "vic"], "");
        assert_eq!((code, stdout.as_str()), (0, "deleted vic\n"));
        assert_eq!(
            store.get_user_by_token(&token_hash(token)).await.unwrap(),
            None
        );
        let (code, _, stderr) = users(home.path(), url, &["delete", "vic"], "");
        assert_eq!(code, 1);
        assert!(stderr.contains("user 'vic' not found"), "{stderr}");
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
