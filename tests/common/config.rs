//! One way for every test and benchmark to write selfheal's config: a builder of typed values,
//! written as block YAML. (Tests of the YAML itself — syntax errors, unknown keys, the seed's
//! shape — keep their text.)

use std::fmt::Write as _;

use serde::Serialize;
use serde_json::Value;

/// Keys and their values, in the order they were given (a later one replaces an earlier).
#[derive(Debug, Clone, Default)]
struct Entries(Vec<(String, Value)>);

impl Entries {
    fn set(&mut self, key: &str, of: impl Serialize) {
        let of = serde_json::to_value(of).expect("a config value serialises");
        match self.0.iter_mut().find(|(k, _)| k == key) {
            Some(entry) => entry.1 = of,
            None => self.0.push((key.to_owned(), of)),
        }
    }
}

/// A config: `system_name: TestHost` and what a test adds, then `monitored_services`.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    top: Entries,
    services: Vec<Service>,
}

/// One entry of `monitored_services`.
#[derive(Debug, Clone)]
pub(crate) struct Service(Entries);

impl Config {
    pub(crate) fn new() -> Config {
        Config {
            top: Entries::default(),
            services: Vec::new(),
        }
        .with("system_name", "TestHost")
    }

    /// A top-level key (`failure_threshold`, `probe`, `crash_loop`, …); a second `with` of
    /// the same key replaces the first.
    pub(crate) fn with(mut self, key: &str, of: impl Serialize) -> Config {
        self.top.set(key, of);
        self
    }

    pub(crate) fn service(mut self, service: Service) -> Config {
        self.services.push(service);
        self
    }

    /// The config as block YAML.
    pub(crate) fn yaml(&self) -> String {
        let mut out = String::new();
        entries(&self.top, 0, &mut out);
        out.push_str("monitored_services:");
        if self.services.is_empty() {
            out.push_str(" []\n");
        } else {
            out.push('\n');
        }
        for service in &self.services {
            let mut entry = String::new();
            entries(&service.0, 4, &mut entry);
            out.push_str("  - ");
            out.push_str(entry.trim_start());
        }
        out
    }
}

impl Service {
    /// A service with a quick verification (`verify_timeout: 5s`, `stable_for: 300ms`).
    pub(crate) fn new(name: &str) -> Service {
        Service(Entries::default())
            .with("name", name)
            .with("verify_timeout", "5s")
            .with("stable_for", "300ms")
    }

    /// A service with its name alone (selfheal's defaults for everything else).
    pub(crate) fn named(name: &str) -> Service {
        Service(Entries::default()).with("name", name)
    }

    /// Any key of the entry (`critical`, `runbook`, a strategy's settings, `probe`, …).
    pub(crate) fn with(mut self, key: &str, of: impl Serialize) -> Service {
        self.0.set(key, of);
        self
    }

    pub(crate) fn port(self, port: u16) -> Service {
        self.with("port", port)
    }

    /// `http://127.0.0.1:<port>/health`.
    pub(crate) fn health_url(self, port: u16) -> Service {
        self.with("health_url", format!("http://127.0.0.1:{port}/health"))
    }

    pub(crate) fn verify_timeout(self, timeout: &str) -> Service {
        self.with("verify_timeout", timeout)
    }

    pub(crate) fn stable_for(self, window: &str) -> Service {
        self.with("stable_for", window)
    }

    pub(crate) fn strategies(self, strategies: &[&str]) -> Service {
        self.with("healing_strategies", strategies)
    }
}

/// Ordered entries as block YAML at `indent`.
fn entries(of: &Entries, indent: usize, out: &mut String) {
    for (key, item) in &of.0 {
        let _ = write!(out, "{}{key}:", " ".repeat(indent));
        nested(item, indent + 2, out);
    }
}

/// `value` as block YAML at `indent`: maps and lists as blocks, scalars as JSON writes them
/// (a JSON string is a YAML double-quoted scalar).
fn block(of: &Value, indent: usize, out: &mut String) {
    let pad = " ".repeat(indent);
    match of {
        Value::Object(map) => {
            for (key, item) in map {
                let _ = write!(out, "{pad}{key}:");
                nested(item, indent + 2, out);
            }
        }
        Value::Array(items) => {
            for item in items {
                let _ = write!(out, "{pad}-");
                match item {
                    Value::Object(map) if !map.is_empty() => {
                        // The first key on the dash's line, the others below it.
                        let mut first = String::new();
                        block(item, indent + 2, &mut first);
                        out.push(' ');
                        out.push_str(first.trim_start());
                    }
                    _ => nested(item, indent + 2, out),
                }
            }
        }
        scalar => {
            let _ = writeln!(out, "{pad}{scalar}");
        }
    }
}

/// What follows `key:` or `-`: a scalar or an empty collection on the same line, else a block.
fn nested(of: &Value, indent: usize, out: &mut String) {
    match of {
        Value::Object(map) if !map.is_empty() => {
            out.push('\n');
            block(of, indent, out);
        }
        Value::Array(items) if !items.is_empty() => {
            out.push('\n');
            block(of, indent, out);
        }
        Value::Object(_) => out.push_str(" {}\n"),
        Value::Array(_) => out.push_str(" []\n"),
        scalar => {
            let _ = writeln!(out, " {scalar}");
        }
    }
}
