//! The web server's modules import each other without a circle: reads and extractors are
//! their own modules, pages do not import the API, and the OpenAPI document reads the API's
//! table without the API reading it back. Checked on the sources, by the `crate::module`
//! paths each file names.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Each module of `src/` (but the crate root) and the modules it names as `crate::name`.
fn imports() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let modules: BTreeSet<String> = std::fs::read_dir(&src)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "rs"))
        .map(|path| path.file_stem().unwrap().to_string_lossy().into_owned())
        .filter(|name| name != "lib")
        .collect();
    modules
        .iter()
        .map(|module| {
            let text = std::fs::read_to_string(src.join(format!("{module}.rs"))).unwrap();
            let named = text
                .match_indices("crate::")
                .filter_map(|(at, _)| {
                    let rest = &text[at + "crate::".len()..];
                    let name: String = rest
                        .chars()
                        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                        .collect();
                    (modules.contains(&name) && &name != module).then_some(name)
                })
                .collect();
            (module.clone(), named)
        })
        .collect()
}

/// A circle of imports through `module`, if there is one: the modules along it.
fn circle(
    graph: &BTreeMap<String, BTreeSet<String>>,
    module: &str,
    path: &mut Vec<String>,
    done: &mut BTreeSet<String>,
) -> Option<Vec<String>> {
    if let Some(start) = path.iter().position(|m| m == module) {
        let mut found = path[start..].to_vec();
        found.push(module.to_owned());
        return Some(found);
    }
    if done.contains(module) {
        return None;
    }
    path.push(module.to_owned());
    for next in &graph[module] {
        if let Some(found) = circle(graph, next, path, done) {
            return Some(found);
        }
    }
    path.pop();
    done.insert(module.to_owned());
    None
}

#[test]
fn no_module_imports_itself_through_others() {
    let graph = imports();
    assert!(graph.len() > 10, "the modules were read: {graph:?}");
    let mut done = BTreeSet::new();
    for module in graph.keys() {
        if let Some(found) = circle(&graph, module, &mut Vec::new(), &mut done) {
            panic!(
                "modules import each other in a circle: {}",
                found.join(" -> ")
            );
        }
    }
}

#[test]
fn pages_do_not_import_the_api() {
    let graph = imports();
    assert!(!graph["pages"].contains("api"), "{:?}", graph["pages"]);
    assert!(!graph["api"].contains("openapi"), "{:?}", graph["api"]);
}
