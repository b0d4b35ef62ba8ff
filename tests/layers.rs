//! The layers of `src/` stay true without a reviewer: a module imports only its own layer and
//! the layers below (docs/architecture.md), and no modules import each other in a circle.
//! Read as text: every `crate::<module>` path outside test code.

use std::collections::BTreeSet;
use std::path::Path;

/// Top-level modules by layer, highest first; a module may import its own layer's and lower.
const LAYERS: &[&[&str]] = &[
    &["commands", "error", "fuzzing", "cli", "logging"],
    &["sandbox"],
    &["status", "deploy"],
    &["notify"],
    &["report"],
    &["heal"],
    &["state", "config"],
    &["systemd", "host"],
    &["ui"],
    &["outcome", "exit_code"],
];

fn layer(module: &str) -> Option<usize> {
    LAYERS.iter().position(|layer| layer.contains(&module))
}

/// Every (importer, imported) pair of distinct top-level modules.
fn imports(src: &Path) -> BTreeSet<(String, String)> {
    let mut found = BTreeSet::new();
    let mut files = vec![src.to_owned()];
    while let Some(path) = files.pop() {
        if path.is_dir() {
            files.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
            continue;
        }
        if path.extension().is_none_or(|e| e != "rs") {
            continue;
        }
        let relative = path.strip_prefix(src).unwrap();
        let first = relative
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy();
        let importer = first.strip_suffix(".rs").unwrap_or(&first).to_owned();
        let text = std::fs::read_to_string(&path).unwrap();
        // Test code may reach anywhere.
        let code = text
            .split("#[cfg(test)]\nmod tests")
            .next()
            .unwrap_or_default();
        for (at, _) in code.match_indices("crate::") {
            let rest = &code[at + "crate::".len()..];
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            let imported = match name.as_str() {
                "Error" | "UsageError" => "error".to_owned(),
                other => other.to_owned(),
            };
            if imported != importer && layer(&imported).is_some() {
                found.insert((importer.clone(), imported));
            }
        }
    }
    found
}

/// The pairs whose import goes up a layer.
fn upward_imports(src: &Path) -> BTreeSet<(String, String)> {
    imports(src)
        .into_iter()
        .filter(|(importer, imported)| {
            layer(importer).is_some_and(|own| layer(imported).is_some_and(|theirs| theirs < own))
        })
        .collect()
}

/// A circle of imports (the modules in it), if there is one.
fn a_cycle(edges: &BTreeSet<(String, String)>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        edges: &BTreeSet<(String, String)>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|n| n == node) {
            return Some(path[at..].to_vec());
        }
        if !done.insert(node.to_owned()) {
            return None;
        }
        path.push(node.to_owned());
        for (_, next) in edges.iter().filter(|(from, _)| from == node) {
            if let Some(cycle) = visit(next, edges, path, done) {
                return Some(cycle);
            }
        }
        path.pop();
        None
    }
    let mut done = BTreeSet::new();
    edges
        .iter()
        .find_map(|(start, _)| visit(start, edges, &mut Vec::new(), &mut done))
}

#[test]
fn every_module_imports_only_its_layer_and_those_below() {
    let found = upward_imports(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"));
    assert!(
        found.is_empty(),
        "imports that go up a layer (see docs/architecture.md): {found:?}"
    );
}

#[test]
fn no_modules_import_each_other_in_a_circle() {
    let edges = imports(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"));
    assert!(edges.len() > 20, "the imports were read: {edges:?}");
    assert_eq!(a_cycle(&edges), None);
}

#[test]
fn the_guard_sees_an_upward_import() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("ui")).unwrap();
    std::fs::write(
        dir.path().join("ui/mod.rs"),
        "use crate::heal::run;\n#[cfg(test)]\nmod tests { use crate::commands; }\n",
    )
    .unwrap();
    let found = upward_imports(dir.path());
    assert_eq!(
        found.into_iter().collect::<Vec<_>>(),
        [("ui".to_owned(), "heal".to_owned())]
    );
}

#[test]
fn the_guard_sees_a_circle_within_a_layer() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("state.rs"), "use crate::config::Config;\n").unwrap();
    std::fs::create_dir_all(dir.path().join("config")).unwrap();
    std::fs::write(
        dir.path().join("config/mod.rs"),
        "use crate::state::StateDir;\n",
    )
    .unwrap();
    assert!(upward_imports(dir.path()).is_empty(), "one layer");
    let cycle = a_cycle(&imports(dir.path())).expect("a circle");
    assert_eq!(cycle.len(), 2, "{cycle:?}");
}
