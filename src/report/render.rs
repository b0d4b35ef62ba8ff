//! Rendering a `Report` with minijinja. The built-in templates are compiled into the binary;
//! a file of the same name in `templates_dir:` (else /etc/selfheal/templates/) overrides one.

use std::path::{Path, PathBuf};

use minijinja::syntax::SyntaxConfig;
use minijinja::value::Serde;
use minijinja::{Environment, Value};

use super::Report;

/// Where template overrides are looked for when the config names no `templates_dir`.
pub(super) const DEFAULT_TEMPLATES_DIR: &str = "/etc/selfheal/templates";

/// The built-in templates: (name, source).
const BUILT_IN: [(&str, &str); 3] = [
    (
        "subject.txt.j2",
        include_str!("../../templates/subject.txt.j2"),
    ),
    (
        "report.txt.j2",
        include_str!("../../templates/report.txt.j2"),
    ),
    (
        "report.html.j2",
        include_str!("../../templates/report.html.j2"),
    ),
];

/// A template that could not be loaded or rendered.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    // Causes are part of the message, not a `source`, so they are printed once.
    #[error("cannot read template override {path}: {cause}")]
    Read {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("template {name}: {cause:#}")]
    Template {
        name: String,
        cause: minijinja::Error,
    },
}

/// The template environment, with overrides applied.
pub(crate) struct Renderer {
    env: Environment<'static>,
}

impl Renderer {
    /// Loads the built-in templates, replacing each with `<dir>/<name>` when that file exists.
    pub(crate) fn new(templates_dir: Option<&Path>) -> Result<Renderer, RenderError> {
        let dir = templates_dir.unwrap_or(Path::new(DEFAULT_TEMPLATES_DIR));
        let mut env = Environment::new();
        env.set_syntax(
            SyntaxConfig::builder()
                .trim_blocks(true)
                .lstrip_blocks(true)
                .build()
                .expect("static syntax config"),
        );
        // HTML templates escape every value (journal lines are whatever a service printed);
        // the text ones must not, or "<" would arrive as "&lt;".
        env.set_auto_escape_callback(|name| {
            if name.ends_with(".html.j2") {
                minijinja::AutoEscape::Html
            } else {
                minijinja::AutoEscape::None
            }
        });
        env.add_filter("bytes", human_bytes);
        env.add_filter("clock", clock_time);
        env.add_filter("millis", human_millis);
        for (name, built_in) in BUILT_IN {
            let path = dir.join(name);
            let source = match std::fs::read_to_string(&path) {
                Ok(text) => text,
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => built_in.to_owned(),
                Err(cause) => return Err(RenderError::Read { path, cause }),
            };
            env.add_template_owned(name, source)
                .map_err(|cause| RenderError::Template {
                    name: name.to_owned(),
                    cause,
                })?;
        }
        Ok(Renderer { env })
    }

    fn render(&self, name: &str, report: &Report) -> Result<String, RenderError> {
        let error = |cause| RenderError::Template {
            name: name.to_owned(),
            cause,
        };
        self.env
            .get_template(name)
            .map_err(error)?
            .render(Value::from(Serde(report)))
            .map_err(error)
    }

    /// The mail subject: one line, whatever the template's whitespace.
    pub(crate) fn subject(&self, report: &Report) -> Result<String, RenderError> {
        let text = self.render("subject.txt.j2", report)?;
        Ok(text.split_whitespace().collect::<Vec<_>>().join(" "))
    }

    /// The plain-text report.
    pub(crate) fn text(&self, report: &Report) -> Result<String, RenderError> {
        self.render("report.txt.j2", report)
    }

    /// The HTML report (every value escaped).
    pub(crate) fn html(&self, report: &Report) -> Result<String, RenderError> {
        self.render("report.html.j2", report)
    }
}

/// 47185920 → "45.0 MiB".
fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// µs since the epoch → "21:45:23.120" (UTC).
fn clock_time(micros: u64) -> String {
    let time = std::time::UNIX_EPOCH + std::time::Duration::from_micros(micros);
    let text = humantime::format_rfc3339_millis(time).to_string();
    text.get(11..23).unwrap_or(&text).to_owned()
}

/// 1234 → "1.23 s"; 85 → "85 ms".
fn human_millis(millis: u64) -> String {
    if millis < 1000 {
        format!("{millis} ms")
    } else {
        format!("{:.2} s", millis as f64 / 1000.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_sizes_times_and_durations() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(47_185_920), "45.0 MiB");
        assert_eq!(clock_time(1_700_000_000_123_000), "22:13:20.123");
        assert_eq!(human_millis(85), "85 ms");
        assert_eq!(human_millis(1234), "1.23 s");
    }

    #[test]
    fn an_override_file_replaces_the_built_in_template() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("report.txt.j2"), "custom {{ service }}").unwrap();
        let renderer = Renderer::new(Some(dir.path())).unwrap();
        let template = renderer.env.get_template("report.txt.j2").unwrap();
        assert_eq!(
            template
                .render(minijinja::context! { service => "web" })
                .unwrap(),
            "custom web"
        );
    }
}
