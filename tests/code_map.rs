//! ARCHITECTURE.md's code map names every source file of the workspace (a crate's `lib.rs`,
//! `main.rs` and a module's `mod.rs` are named by its folder's row), so a newcomer finds each
//! module there and a file added without a word about it fails here.

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
