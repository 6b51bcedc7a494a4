//! The dependency rule of DESIGN §1, checked on the real manifests through `cargo metadata`:
//! `core` depends on no other part, `metadata` and `process` (running one command) on `core`
//! only, `ops` (the users' actions) and `secrets` (where secrets come from) on `core` and
//! `metadata`, `scheduler`, `executor` and `notifier` on `core`, `metadata`, `process` and
//! `secrets`,
//! `webserver` on `core`, `metadata` and `ops`; the
//! scheduler, executor and webserver never on each other (they meet in the database). Only the
//! binaries, `updraft` and `updraft-bench`, wire parts together.

use std::collections::BTreeMap;
use std::process::Command;

/// For each part, the parts it may depend on (normal, dev and build dependencies alike).
const ALLOWED: &[(&str, &[&str])] = &[
    ("updraft-core", &[]),
    ("updraft-metadata", &["updraft-core"]),
    ("updraft-ops", &["updraft-core", "updraft-metadata"]),
    ("updraft-process", &["updraft-core"]),
    ("updraft-secrets", &["updraft-core", "updraft-metadata"]),
    (
        "updraft-scheduler",
        &[
            "updraft-core",
            "updraft-metadata",
            "updraft-process",
            "updraft-secrets",
        ],
    ),
    (
        "updraft-executor",
        &[
            "updraft-core",
            "updraft-metadata",
            "updraft-process",
            "updraft-secrets",
        ],
    ),
    (
        "updraft-notifier",
        &[
            "updraft-core",
            "updraft-metadata",
            "updraft-process",
            "updraft-secrets",
        ],
    ),
    (
        "updraft-webserver",
        &["updraft-core", "updraft-metadata", "updraft-ops"],
    ),
    (
        "updraft",
        &[
            "updraft-core",
            "updraft-metadata",
            "updraft-ops",
            "updraft-process",
            "updraft-secrets",
            "updraft-scheduler",
            "updraft-executor",
            "updraft-notifier",
            "updraft-webserver",
        ],
    ),
    // The benchmarks wire the parts as `updraft` does, in a binary of their own.
    (
        "updraft-bench",
        &[
            "updraft-core",
            "updraft-metadata",
            "updraft-ops",
            "updraft-process",
            "updraft-scheduler",
            "updraft-executor",
            "updraft-notifier",
            "updraft-webserver",
        ],
    ),
];

/// Each workspace package and the workspace packages it depends on.
fn workspace_dependencies() -> BTreeMap<String, Vec<String>> {
    let output = Command::new(env!("CARGO"))
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo metadata runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let metadata: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let packages = metadata["packages"].as_array().unwrap();
    let names: Vec<&str> = packages
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    packages
        .iter()
        .map(|package| {
            let name = package["name"].as_str().unwrap();
            let dependencies = package["dependencies"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d["name"].as_str().unwrap())
                // A crate's tests may use its own features (metadata's `testing` harness).
                .filter(|dependency| names.contains(dependency) && dependency != &name)
                .map(str::to_owned)
                .collect();
            (name.to_owned(), dependencies)
        })
        .collect()
}

#[test]
fn parts_depend_only_on_what_the_design_allows() {
    let actual = workspace_dependencies();
    let mut violations = Vec::new();
    for (package, dependencies) in &actual {
        let Some((_, allowed)) = ALLOWED.iter().find(|(name, _)| name == package) else {
            violations.push(format!(
                "{package} is not a part of DESIGN §1: add it to ALLOWED"
            ));
            continue;
        };
        for dependency in dependencies {
            if !allowed.contains(&dependency.as_str()) {
                violations.push(format!("{package} must not depend on {dependency}"));
            }
        }
    }
    assert!(violations.is_empty(), "{}", violations.join("\n"));
    assert_eq!(
        actual.len(),
        ALLOWED.len(),
        "every part is in the workspace"
    );
}

/// `cargo tree` of the normal dependencies, one package per line, with `args` added.
fn cargo_tree(args: &[&str]) -> String {
    let output = Command::new(env!("CARGO"))
        .args(["tree", "-e", "normal", "--prefix", "none", "--offline"])
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo tree runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn core_stays_free_of_io_crates() {
    let tree = cargo_tree(&["-p", "updraft-core"]);
    assert!(
        tree.contains("petgraph "),
        "the tree lists core's dependencies"
    );
    for forbidden in ["tokio ", "sqlx ", "axum "] {
        assert!(
            !tree.lines().any(|line| line.starts_with(forbidden)),
            "updraft-core must not depend on {forbidden}(DESIGN §1: core is pure)"
        );
    }
}

#[test]
fn the_updraft_binary_carries_no_scratch_code() {
    // Features as the binary is built alone (`cargo build -p updraft`); a build of the whole
    // workspace unifies them with updraft-bench's.
    let tree = cargo_tree(&["-p", "updraft", "--format", "{p} features: {f}"]);
    let metadata: Vec<&str> = tree
        .lines()
        .filter(|line| line.starts_with("updraft-metadata "))
        .collect();
    assert!(!metadata.is_empty(), "the tree lists updraft-metadata");
    for line in metadata {
        assert!(
            !line.contains("scratch") && !line.contains("testing"),
            "updraft must not enable updraft-metadata's scratch or testing feature: {line}"
        );
    }
}
