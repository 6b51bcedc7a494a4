//! ARCHITECTURE.md stays true to the code: its code map names every source file of the
//! workspace (a crate's `lib.rs`, `main.rs` and a module's `mod.rs` are named by its folder's
//! row), and the tuning numbers it gives are the code's constants, named beside each number
//! and checked against the constant's value.

use std::path::{Path, PathBuf};

/// The `.rs` files under `folder`, recursively.
fn sources(folder: &Path, found: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(folder).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, found);
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            found.push(path);
        }
    }
}

#[test]
fn the_code_map_names_every_source_file() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let map = std::fs::read_to_string(root.join("ARCHITECTURE.md")).unwrap();
    let mut files = Vec::new();
    sources(&root.join("src"), &mut files);
    for entry in std::fs::read_dir(root).unwrap() {
        let crate_src = entry.unwrap().path().join("src");
        if crate_src.is_dir() {
            sources(&crate_src, &mut files);
        }
    }
    assert!(
        files.len() > 50,
        "the workspace's files were found: {files:?}"
    );
    let missing: Vec<String> = files
        .iter()
        .map(|path| path.strip_prefix(root).unwrap().display().to_string())
        .filter(|path| {
            let named = |text: &str| map.contains(&format!("`{text}`"));
            let root_file = ["lib.rs", "main.rs", "mod.rs"]
                .iter()
                .any(|name| path.ends_with(&format!("/{name}")) || path == name);
            match root_file {
                // Named by its crate's row: `core/`, or `src/` for the binary.
                true => !named(&format!("{}/", path.split('/').next().unwrap())),
                false => !named(path),
            }
        })
        .collect();
    assert!(
        missing.is_empty(),
        "ARCHITECTURE.md's code map does not name: {missing:?}"
    );
}

/// The constants the workspace declares (`const NAME` or `static NAME`), with their value as
/// written.
fn constants(root: &Path) -> std::collections::HashMap<String, String> {
    let mut files = Vec::new();
    sources(&root.join("src"), &mut files);
    for entry in std::fs::read_dir(root).unwrap() {
        let crate_src = entry.unwrap().path().join("src");
        if crate_src.is_dir() {
            sources(&crate_src, &mut files);
        }
    }
    let mut found = std::collections::HashMap::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        for line in text.lines() {
            let line = line.trim_start();
            let line = line.strip_prefix("pub ").unwrap_or(line);
            let line = line.strip_prefix("pub(crate) ").unwrap_or(line);
            let Some(rest) = line
                .strip_prefix("const ")
                .or_else(|| line.strip_prefix("static "))
            else {
                continue;
            };
            let Some((name, value)) = rest.split_once(':') else {
                continue;
            };
            let value = value.split_once('=').map_or("", |(_, v)| v.trim());
            found.insert(name.trim().to_owned(), value.to_owned());
        }
    }
    found
}

/// A duration as the code writes it, in milliseconds: `Duration::from_secs(30)`.
fn millis(value: &str) -> Option<u64> {
    let number = |prefix: &str| -> Option<u64> {
        let at = value.find(prefix)? + prefix.len();
        value[at..].split(')').next()?.replace('_', "").parse().ok()
    };
    number("from_millis(")
        .or_else(|| number("from_secs(").map(|s| s * 1000))
        .or_else(|| number("seconds(").map(|s| s * 1000))
}

#[test]
fn the_constants_the_document_names_exist_with_the_values_it_gives() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let map = std::fs::read_to_string(root.join("ARCHITECTURE.md")).unwrap();
    let constants = constants(root);
    let mut checked = 0;
    let mut wrong = Vec::new();
    for (at, _) in map.match_indices('`') {
        let rest = &map[at + 1..];
        let name: String = rest
            .chars()
            .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
            .collect();
        // `UPDRAFT_*` are environment variables, not constants.
        if !(name.contains('_') && rest[name.len()..].starts_with('`'))
            || name.starts_with("UPDRAFT_")
        {
            continue;
        }
        let Some(value) = constants.get(&name) else {
            wrong.push(format!("`{name}` is no constant of the code"));
            continue;
        };
        checked += 1;
        // "30 s (`NAME`)", "200 ms (`NAME`)", "every 30 s, `NAME`": the number said before
        // the name must be the constant's.
        let before = &map[at.saturating_sub(24)..at];
        let said = before
            .rsplit_once(" ms")
            .map(|(number, _)| (number, 1))
            .or_else(|| before.rsplit_once(" s").map(|(number, _)| (number, 1000)))
            .and_then(|(number, unit)| {
                let digits: String = number
                    .chars()
                    .rev()
                    .take_while(char::is_ascii_digit)
                    .collect::<Vec<_>>()
                    .into_iter()
                    .rev()
                    .collect();
                digits.parse::<u64>().ok().map(|n| n * unit)
            });
        if let (Some(said), Some(actual)) = (said, millis(value))
            && said != actual
        {
            wrong.push(format!(
                "`{name}` is said to be {said} ms, the code has {value}"
            ));
        }
    }
    assert!(checked >= 10, "the document names constants: {checked}");
    assert!(wrong.is_empty(), "{wrong:#?}");
}
