//! `updraft db migrate` and `db check` against real databases: a fresh SQLite file and a fresh
//! Postgres database per test (see `updraft_metadata::testing`).

mod common;

use common::{run, updraft};
use updraft_metadata::testing::each_backend;

fn db(home: &std::path::Path, url: &str, command: &str) -> (i32, String, String) {
    let mut updraft = updraft(home);
    updraft.args(["db", command, "--database-url", url]);
    run(updraft)
}

#[tokio::test]
async fn migrate_then_check_on_both_backends() {
    each_backend(|database| async move {
        let home = tempfile::tempdir().unwrap();
        let url = database.url();

        let (code, _, stderr) = db(home.path(), url, "check");
        assert_eq!(code, 1, "a new database is not migrated");
        assert!(
            stderr.contains("is not migrated (0 of ")
                && stderr.contains("run \"updraft db migrate\""),
            "{stderr}"
        );

        let (code, stdout, stderr) = db(home.path(), url, "migrate");
        assert_eq!(code, 0, "{stderr}");
        assert!(stdout.starts_with("applied migration"), "{stdout}");

        let (code, stdout, stderr) = db(home.path(), url, "check");
        assert_eq!(code, 0, "{stderr}");
        assert!(stdout.contains("(current)"), "{stdout}");

        let (code, stdout, _) = db(home.path(), url, "migrate");
        assert_eq!(code, 0);
        assert!(stdout.ends_with("is up to date\n"), "{stdout}");
    })
    .await;
}

#[tokio::test]
async fn a_newer_schema_is_refused() {
    each_backend(|database| async move {
        let home = tempfile::tempdir().unwrap();
        let (code, _, stderr) = db(home.path(), database.url(), "migrate");
        assert_eq!(code, 0, "{stderr}");
        database
            .execute(
                "INSERT INTO _sqlx_migrations (version, description, success, checksum, \
                 execution_time) VALUES (9999, 'from the future', TRUE, '', 0)",
            )
            .await;
        for command in ["check", "migrate"] {
            let (code, _, stderr) = db(home.path(), database.url(), command);
            assert_eq!(code, 1, "{command}");
            assert!(
                stderr.contains("database schema version 9999 is newer than this updraft")
                    && stderr.contains("upgrade updraft"),
                "{command}: {stderr}"
            );
        }
    })
    .await;
}

#[test]
fn the_default_database_is_sqlite_under_updraft_home() {
    let home = tempfile::tempdir().unwrap();
    let mut command = updraft(home.path());
    command.args(["db", "migrate"]);
    let (code, stdout, stderr) = run(command);
    assert_eq!(code, 0, "{stderr}");
    assert!(home.path().join("updraft.db").is_file(), "{stdout}");
}

#[test]
fn bad_urls_get_clear_errors_without_their_password() {
    let home = tempfile::tempdir().unwrap();
    let (code, _, stderr) = db(home.path(), "mysql://root@localhost/updraft", "check");
    assert_eq!(code, 1);
    assert!(stderr.starts_with("error: "), "{stderr}");
    assert!(
        stderr.contains("postgres://") && stderr.contains("sqlite:"),
        "{stderr}"
    );

    let (code, _, stderr) = db(
        home.path(),
        "postgres://ada:hunter2@127.0.0.1:1/updraft",
        "check",
    );
    assert_eq!(code, 1);
    assert!(!stderr.contains("hunter2"), "the password leaked: {stderr}");
    assert!(stderr.contains("127.0.0.1:1"), "{stderr}");
}
