//! A command module is a leaf (issue 17): no file of `src/commands/` but `mod.rs` refers to
//! `crate::commands` or reaches its siblings through `super::`. What several commands need
//! lives beside `commands/` (`term`, `args`, `lookup`, `wiring`, `embedded`, `accounts`), and
//! `main.rs` sends each command to the module that owns it.

use std::path::Path;

#[test]
fn no_command_module_refers_to_a_sibling() {
    let folder = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/commands");
    let mut files: Vec<_> = std::fs::read_dir(&folder)
        .expect("src/commands is readable")
        .map(|entry| entry.expect("a readable entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "rs"))
        .filter(|path| path.file_name().is_some_and(|name| name != "mod.rs"))
        .collect();
    files.sort();
    assert!(files.len() >= 5, "found the command modules in {folder:?}");
    let mut found = Vec::new();
    for path in &files {
        let source = std::fs::read_to_string(path).expect("a readable command module");
        let file = format!(
            "src/commands/{}",
            path.file_name().unwrap().to_string_lossy()
        );
        found.extend(sibling_references(&file, &source));
    }
    assert!(
        found.is_empty(),
        "command modules must not use each other: move what they share to a module beside \
         commands/ (src/lookup.rs, src/wiring.rs, ...):\n{}",
        found.join("\n")
    );
}

/// Each line of `source` (the file `file`) that reaches outside the file into the commands: a
/// mention of `crate::commands`, or a `super::` that climbs above the file's own module. Inside
/// an inline module (`mod tests { ... }`), `super::` is the file itself and allowed;
/// `super::super::` is not. The files are rustfmt-formatted, so an inline module ends at the
/// first `}` at its own indentation. Returns `file:line: text` for each.
fn sibling_references(file: &str, source: &str) -> Vec<String> {
    let mut found = Vec::new();
    // The indentation of each enclosing inline module's `mod ... {` line.
    let mut modules: Vec<usize> = Vec::new();
    for (number, line) in (1..).zip(source.lines()) {
        let indent = line.len() - line.trim_start().len();
        let text = line.trim();
        if modules.last() == Some(&indent) && text == "}" {
            modules.pop();
            continue;
        }
        if line.contains("crate::commands") || climbs(line) > modules.len() {
            found.push(format!("{file}:{number}: {text}"));
        }
        if is_inline_module(text) {
            modules.push(indent);
        }
    }
    found
}

/// The most modules a path of `line` climbs: 2 for `super::super::x`.
fn climbs(line: &str) -> usize {
    line.match_indices("super::")
        .map(|(at, _)| {
            let mut rest = &line[at..];
            let mut count = 0;
            while let Some(after) = rest.strip_prefix("super::") {
                rest = after;
                count += 1;
            }
            count
        })
        .max()
        .unwrap_or(0)
}

/// `mod name {` or `pub mod name {` (with any visibility).
fn is_inline_module(text: &str) -> bool {
    let text = match text.strip_prefix("pub") {
        Some(rest) if rest.starts_with(' ') => rest.trim_start(),
        Some(rest) if rest.starts_with('(') => match rest.find(')') {
            Some(end) => rest[end + 1..].trim_start(),
            None => return false,
        },
        _ => text,
    };
    text.strip_prefix("mod ")
        .and_then(|rest| rest.strip_suffix('{'))
        .is_some_and(|name| {
            let name = name.trim();
            !name.is_empty() && name.chars().all(|c| c.is_alphanumeric() || c == '_')
        })
}

#[test]
fn the_check_allows_a_test_module_its_own_file_and_nothing_else() {
    let source = "\
use super::dags::find_dag;
use crate::commands::{open_store, runtime};
use crate::term::print_table;

fn run() {
    super::local_run::test_task();
}

#[cfg(test)]
mod tests {
    use super::*;
    use super::super::runs::find_run;

    mod deeper {
        use super::super::run;
    }
}

use super::serve::hostname;
";
    assert_eq!(
        sibling_references("src/commands/x.rs", source),
        [
            "src/commands/x.rs:1: use super::dags::find_dag;",
            "src/commands/x.rs:2: use crate::commands::{open_store, runtime};",
            "src/commands/x.rs:6: super::local_run::test_task();",
            "src/commands/x.rs:12: use super::super::runs::find_run;",
            "src/commands/x.rs:19: use super::serve::hostname;",
        ]
    );
}
