//! The rules of `src/` (docs/architecture.md) stay true without a reviewer, read as text
//! outside test code:
//! - a top-level module imports only its own layer and the layers below (every `crate::<module>`
//!   path), and no modules import each other in a circle;
//! - within a module, no sibling files import each other in a circle (`crate::` and `super::`
//!   paths);
//! - only the modules that start a command connect to systemd (`Systemd::connect`);
//! - one module per command: `commands/mod.rs` dispatches and runs no command itself;
//! - no file holds more than 600 lines of code and no function more than 100 lines (test code
//!   aside).

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

/// Every `.rs` file under `src`, with its module path (`heal/run/mod.rs` is `heal::run`) and its
/// text outside test code.
fn sources(src: &Path) -> Vec<(String, String)> {
    let mut found = Vec::new();
    let mut files = vec![src.to_owned()];
    while let Some(path) = files.pop() {
        if path.is_dir() {
            files.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
            continue;
        }
        if path.extension().is_none_or(|e| e != "rs") {
            continue;
        }
        let relative = path.strip_prefix(src).unwrap().with_extension("");
        let mut parts: Vec<String> = relative
            .components()
            .map(|part| part.as_os_str().to_string_lossy().into_owned())
            .collect();
        if parts
            .last()
            .is_some_and(|last| last == "mod" || last == "lib" || last == "main")
        {
            parts.pop();
        }
        found.push((parts.join("::"), std::fs::read_to_string(&path).unwrap()));
    }
    // A module declared under `#[cfg(test)]` (`mod tests;`, `mod fake;`) is test code.
    let mut test_modules = Vec::new();
    for (module, text) in &found {
        let mut lines = text.lines().map(str::trim);
        while let Some(line) = lines.next() {
            if line != "#[cfg(test)]" {
                continue;
            }
            let next = lines.next().unwrap_or_default();
            if let Some(name) = next
                .trim_start_matches("pub(crate) ")
                .strip_prefix("mod ")
                .and_then(|rest| rest.strip_suffix(';'))
            {
                test_modules.push(if module.is_empty() {
                    name.to_owned()
                } else {
                    format!("{module}::{name}")
                });
            }
        }
    }
    found.retain(|(module, _)| {
        !test_modules
            .iter()
            .any(|test| module == test || module.starts_with(&format!("{test}::")))
    });
    for (_, text) in &mut found {
        *text = code_of(text).to_owned();
    }
    found.sort();
    found
}

/// The text before a file's unit tests (test code may reach anywhere).
fn code_of(text: &str) -> &str {
    text.split("#[cfg(test)]\nmod tests")
        .next()
        .unwrap_or_default()
}

/// The modules each path after `crate::` or `super::` in `code` (of module `module`) names,
/// as far as they are modules in `modules`.
fn module_paths(module: &str, code: &str, modules: &BTreeSet<String>) -> BTreeSet<String> {
    let mut named = BTreeSet::new();
    let parent = module.rsplit_once("::").map_or("", |(parent, _)| parent);
    for (prefix, base) in [("crate::", ""), ("super::", parent)] {
        for (at, _) in code.match_indices(prefix) {
            if code[..at].ends_with(|c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':') {
                continue;
            }
            let rest: String = code[at + prefix.len()..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == ':')
                .collect();
            let mut path = base.to_owned();
            let mut deepest = None;
            for part in rest.split("::").filter(|part| !part.is_empty()) {
                if !path.is_empty() {
                    path.push_str("::");
                }
                path.push_str(part);
                if modules.contains(&path) {
                    deepest = Some(path.clone());
                }
            }
            named.extend(deepest);
        }
    }
    named
}

/// Imports between sibling modules, as (parent, importer, imported): `heal::run::follow` naming
/// `heal::probe` is `heal`'s children `run` → `probe`.
fn sibling_imports(src: &Path) -> BTreeSet<(String, String, String)> {
    let sources = sources(src);
    let modules: BTreeSet<String> = sources.iter().map(|(module, _)| module.clone()).collect();
    let mut found = BTreeSet::new();
    for (module, code) in &sources {
        for named in module_paths(module, code, &modules) {
            let (ours, theirs): (Vec<&str>, Vec<&str>) =
                (module.split("::").collect(), named.split("::").collect());
            let common = ours.iter().zip(&theirs).take_while(|(a, b)| a == b).count();
            if let (Some(from), Some(to)) = (ours.get(common), theirs.get(common)) {
                found.insert((
                    ours[..common].join("::"),
                    (*from).to_owned(),
                    (*to).to_owned(),
                ));
            }
        }
    }
    found
}

/// A circle among the children of one module (the parent and the children in it), if any.
fn a_sibling_cycle(src: &Path) -> Option<(String, Vec<String>)> {
    let imports = sibling_imports(src);
    let parents: BTreeSet<&String> = imports.iter().map(|(parent, _, _)| parent).collect();
    parents.into_iter().find_map(|parent| {
        let edges: BTreeSet<(String, String)> = imports
            .iter()
            .filter(|(p, _, _)| p == parent)
            .map(|(_, from, to)| (from.clone(), to.clone()))
            .collect();
        a_cycle(&edges).map(|cycle| (parent.clone(), cycle))
    })
}

/// The modules that start a command, and so may connect to systemd; everything below takes
/// the connection (or a `UnitControl`) it is given, so a fake can stand in for it.
const CONNECTING: &[&str] = &["commands", "status", "systemd", "sandbox"];

/// The modules outside `CONNECTING` that call `Systemd::connect`.
fn connecting_elsewhere(src: &Path) -> Vec<String> {
    sources(src)
        .into_iter()
        .filter(|(module, code)| {
            let top = module.split("::").next().unwrap_or_default();
            !CONNECTING.contains(&top) && code.contains("Systemd::connect")
        })
        .map(|(module, _)| module)
        .collect()
}

/// Most lines of code a file may hold (tests, comments and blank lines aside).
const FILE_LINES: usize = 600;
/// Most lines a function may take, from its `fn` line to its closing brace.
const FUNCTION_LINES: usize = 100;

/// The modules whose code is longer than `FILE_LINES`.
fn large_files(src: &Path) -> Vec<String> {
    sources(src)
        .into_iter()
        .filter(|(_, code)| {
            code.lines()
                .map(str::trim)
                .filter(|line| !line.is_empty() && !line.starts_with("//"))
                .count()
                > FILE_LINES
        })
        .map(|(module, _)| module)
        .collect()
}

/// The functions longer than `FUNCTION_LINES`, as `module::function`.
fn long_functions(src: &Path) -> Vec<String> {
    let mut found = Vec::new();
    for (module, code) in sources(src) {
        let lines: Vec<&str> = code.lines().collect();
        for (at, line) in lines.iter().enumerate() {
            let trimmed = line.trim_start();
            let Some(signature) = [
                "fn ",
                "pub fn ",
                "pub(crate) fn ",
                "pub(super) fn ",
                "const fn ",
                "async fn ",
            ]
            .iter()
            .find_map(|prefix| trimmed.strip_prefix(prefix)) else {
                continue;
            };
            let name: String = signature
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            let closing = format!("{}}}", &line[..line.len() - trimmed.len()]);
            if let Some(length) = lines[at..].iter().position(|l| *l == closing)
                && length + 1 > FUNCTION_LINES
            {
                found.push(format!("{module}::{name}"));
            }
        }
    }
    found
}

/// The functions of `commands/mod.rs` that run a command themselves (return an exit code)
/// beside `execute`, the dispatch.
fn commands_run_in_the_dispatch(src: &Path) -> Vec<String> {
    let code = std::fs::read_to_string(src.join("commands/mod.rs")).unwrap_or_default();
    code_of(&code)
        .lines()
        .filter(|line| line.contains("fn ") && line.contains("ExitCode"))
        .filter_map(|line| line.split("fn ").nth(1)?.split('(').next())
        .filter(|name| *name != "execute")
        .map(str::to_owned)
        .collect()
}

/// Every (importer, imported) pair of distinct top-level modules.
fn imports(src: &Path) -> BTreeSet<(String, String)> {
    let mut found = BTreeSet::new();
    for (module, code) in sources(src) {
        let importer = module.split("::").next().unwrap_or_default().to_owned();
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

#[test]
fn no_sibling_files_import_each_other_in_a_circle() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    assert!(
        sibling_imports(&src).len() > 50,
        "the imports were read: {:?}",
        sibling_imports(&src)
    );
    assert_eq!(a_sibling_cycle(&src), None);
}

#[test]
fn the_guard_sees_a_circle_between_sibling_files() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("notify/channel")).unwrap();
    std::fs::write(
        dir.path().join("notify/channel/mod.rs"),
        "mod alerts;\nmod payload;\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("notify/channel/alerts.rs"),
        "use super::payload::alert;\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("notify/channel/payload.rs"),
        "use crate::notify::channel::alerts::Alert;\n",
    )
    .unwrap();
    assert_eq!(
        a_sibling_cycle(dir.path()),
        Some((
            "notify::channel".to_owned(),
            vec!["alerts".to_owned(), "payload".to_owned()]
        ))
    );
    std::fs::write(
        dir.path().join("notify/channel/payload.rs"),
        "use super::Alert;\n",
    )
    .unwrap();
    assert_eq!(
        a_sibling_cycle(dir.path()),
        None,
        "the parent is no sibling"
    );
}

#[test]
fn only_the_modules_that_start_a_command_connect_to_systemd() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let calls = sources(&src)
        .iter()
        .filter(|(_, code)| code.contains("Systemd::connect"))
        .count();
    assert!(calls > 3, "the calls were read");
    assert_eq!(connecting_elsewhere(&src), Vec::<String>::new());
}

#[test]
fn the_guard_sees_a_connection_below_the_commands() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("heal")).unwrap();
    std::fs::create_dir_all(dir.path().join("commands")).unwrap();
    std::fs::write(
        dir.path().join("heal/probe.rs"),
        "fn round() { let systemd = Systemd::connect()?; }\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("commands/probe.rs"),
        "fn execute() { let systemd = crate::systemd::Systemd::connect()?; }\n#[cfg(test)]\nmod tests {}\n",
    )
    .unwrap();
    assert_eq!(connecting_elsewhere(dir.path()), ["heal::probe"]);
}

#[test]
fn no_file_is_over_600_lines_of_code_and_no_function_over_100_lines() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    assert_eq!(large_files(&src), Vec::<String>::new());
    assert_eq!(long_functions(&src), Vec::<String>::new());
}

#[test]
fn the_guard_sees_a_long_function_and_a_large_file() {
    let dir = tempfile::tempdir().unwrap();
    // 100 lines: the `fn` line, 98 of body, the closing brace; then one line more.
    let short = format!(
        "fn short() {{\n{}}}\n",
        "    let x = 1;\n".repeat(FUNCTION_LINES - 2)
    );
    let body = "        let x = 1;\n".repeat(FUNCTION_LINES - 1);
    let long = format!("impl A {{\n    pub(crate) fn long() {{\n{body}    }}\n}}\n");
    std::fs::write(dir.path().join("short.rs"), &short).unwrap();
    std::fs::write(dir.path().join("long.rs"), &long).unwrap();
    assert_eq!(long_functions(dir.path()), ["long::long"]);
    let comments = "// a comment\n\n".repeat(FILE_LINES);
    std::fs::write(dir.path().join("commented.rs"), comments + &short).unwrap();
    let code = "const A: u8 = 1;\n".repeat(FILE_LINES + 1);
    std::fs::write(dir.path().join("large.rs"), code).unwrap();
    assert_eq!(large_files(dir.path()), ["large"]);
}

#[test]
fn one_module_per_command() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    assert_eq!(commands_run_in_the_dispatch(&src), Vec::<String>::new());
}

#[test]
fn the_guard_sees_a_command_run_in_the_dispatch() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("commands")).unwrap();
    std::fs::write(
        dir.path().join("commands/mod.rs"),
        "pub(crate) fn execute(cli: Cli) -> Result<ExitCode, Error> {}\nfn demo() -> Result<ExitCode, Error> {}\n",
    )
    .unwrap();
    assert_eq!(commands_run_in_the_dispatch(dir.path()), ["demo"]);
}
