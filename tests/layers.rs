//! The layers of `src/` stay true without a reviewer: a module imports only the layers below
//! its own (docs/architecture.md). Read as text: every `crate::<module>` path outside test
//! code. The imports that still go up are listed, each with what removes it; one that no
//! longer happens must leave the list, so it only shrinks.

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

/// Imports that go up today, and what takes each away.
const KNOWN: &[(&str, &str, &str)] = &[
    (
        "config",
        "heal",
        "the strategies' settings move into config/",
    ),
    ("config", "notify", "the email settings move into config/"),
];

fn layer(module: &str) -> Option<usize> {
    LAYERS.iter().position(|layer| layer.contains(&module))
}

/// Every (importer, imported) pair of top-level modules whose import goes up a layer.
fn upward_imports(src: &Path) -> BTreeSet<(String, String)> {
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
        let Some(own) = layer(&importer) else {
            continue;
        };
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
            if let Some(theirs) = layer(&imported)
                && theirs < own
            {
                found.insert((importer.clone(), imported));
            }
        }
    }
    found
}

#[test]
fn every_module_imports_only_the_layers_below_its_own() {
    let found = upward_imports(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"));
    let known: BTreeSet<(String, String)> = KNOWN
        .iter()
        .map(|(from, to, _)| ((*from).to_owned(), (*to).to_owned()))
        .collect();
    let new: Vec<_> = found.difference(&known).collect();
    assert!(
        new.is_empty(),
        "imports that go up a layer (see docs/architecture.md): {new:?}"
    );
    let gone: Vec<_> = known.difference(&found).collect();
    assert!(
        gone.is_empty(),
        "no longer imported upward, take them off KNOWN: {gone:?}"
    );
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
