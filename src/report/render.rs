//! Rendering a `Report` with minijinja. The built-in templates are compiled into the binary;
//! a file of the same name in `templates_dir:` (else /etc/selfheal/templates/) overrides one.

use std::path::{Path, PathBuf};

use minijinja::syntax::SyntaxConfig;
use minijinja::value::Serde;
use minijinja::{Environment, Value};

use super::Report;
use super::cascade::CascadeReport;
use crate::report::digest::DigestReport;
use crate::ui::size::human_bytes;
use crate::ui::when::Timestamp;

/// Where template overrides are looked for when the config names no `templates_dir`.
pub(super) const DEFAULT_TEMPLATES_DIR: &str = "/etc/selfheal/templates";

/// The built-in templates: (name, source).
const BUILT_IN: [(&str, &str); 9] = [
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
    (
        "cascade-subject.txt.j2",
        include_str!("../../templates/cascade-subject.txt.j2"),
    ),
    (
        "cascade.txt.j2",
        include_str!("../../templates/cascade.txt.j2"),
    ),
    (
        "cascade.html.j2",
        include_str!("../../templates/cascade.html.j2"),
    ),
    (
        "digest-subject.txt.j2",
        include_str!("../../templates/digest-subject.txt.j2"),
    ),
    (
        "digest.txt.j2",
        include_str!("../../templates/digest.txt.j2"),
    ),
    (
        "digest.html.j2",
        include_str!("../../templates/digest.html.j2"),
    ),
];

/// What a set of templates renders: a run's report, or a cascade's.
pub(crate) trait Templated: serde::Serialize {
    const SUBJECT: &'static str;
    const TEXT: &'static str;
    const HTML: &'static str;
    /// What the mail's headers and outbox name say about it.
    fn mail_facts(&self) -> MailFacts;
}

/// The parts of a mail that do not come from a template.
pub(crate) struct MailFacts {
    pub host: String,
    /// `X-Selfheal-Service`.
    pub service: String,
    /// `X-Selfheal-Outcome`.
    pub outcome: String,
    /// The mail's Date.
    pub started_at: Timestamp,
    /// Part of the outbox file name: `web-resolved`, `cascade-5`.
    pub label: String,
    /// The services' own recipients: in place of `email.to` for one service's report, beside
    /// it for a cascade's.
    pub recipients: Recipients,
}

/// Who a mail goes to besides (or instead of) `email.to`.
#[derive(Debug, Clone, Default)]
pub(crate) enum Recipients {
    /// `email.to` (or the owner).
    #[default]
    Default,
    /// The service's `to:` alone.
    Instead(Vec<String>),
    /// `email.to` and these.
    Also(Vec<String>),
}

impl Templated for Report {
    const SUBJECT: &'static str = "subject.txt.j2";
    const TEXT: &'static str = "report.txt.j2";
    const HTML: &'static str = "report.html.j2";
    fn mail_facts(&self) -> MailFacts {
        MailFacts {
            host: self.header.host.clone(),
            service: self.header.service.clone(),
            outcome: self.facts.outcome.to_string(),
            started_at: self.facts.started_at,
            label: format!("{}-{}", self.header.service, self.facts.outcome),
            recipients: if self.header.to.is_empty() {
                Recipients::Default
            } else {
                Recipients::Instead(self.header.to.clone())
            },
        }
    }
}

impl Templated for DigestReport {
    const SUBJECT: &'static str = "digest-subject.txt.j2";
    const TEXT: &'static str = "digest.txt.j2";
    const HTML: &'static str = "digest.html.j2";
    fn mail_facts(&self) -> MailFacts {
        let names: Vec<&str> = self
            .services
            .iter()
            .map(|row| row.stats.service.as_str())
            .collect();
        MailFacts {
            host: self.host.clone(),
            service: if names.is_empty() {
                "none".to_owned()
            } else {
                names.join(", ")
            },
            outcome: "digest".to_owned(),
            started_at: self.generated_at,
            label: "digest".to_owned(),
            recipients: Recipients::Default,
        }
    }
}

impl Templated for CascadeReport {
    const SUBJECT: &'static str = "cascade-subject.txt.j2";
    const TEXT: &'static str = "cascade.txt.j2";
    const HTML: &'static str = "cascade.html.j2";
    fn mail_facts(&self) -> MailFacts {
        let names: Vec<&str> = self
            .services
            .iter()
            .filter_map(|s| s.get("service").and_then(serde_json::Value::as_str))
            .collect();
        MailFacts {
            host: self.host.clone(),
            service: names.join(", "),
            outcome: "cascade".to_owned(),
            started_at: self.started_at.unwrap_or_else(Timestamp::now_millis),
            label: format!("cascade-{}", self.count),
            recipients: Recipients::Also(self.recipients()),
        }
    }
}

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

/// The template environment, with overrides applied. Reporting never blocks healing: an
/// override that cannot be read, compiled or rendered is replaced by the built-in template,
/// and the report says so.
pub(crate) struct Renderer {
    /// Built-ins, replaced by the overrides that compiled.
    env: Environment<'static>,
    /// Built-ins only: the fallback.
    built_in: Environment<'static>,
    /// Templates for which an override is in use.
    overridden: Vec<&'static str>,
    /// Overrides that could not be used at all, by template name.
    load_problems: Vec<(&'static str, String)>,
    dir: PathBuf,
}

fn environment() -> Environment<'static> {
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
    // A value in a text template is whatever a service or a local user wrote (journal lines,
    // command lines, unit descriptions): its control characters are escaped, so none of them
    // reaches a terminal or a mail reader as a command ("\x1b]0;…" sets a terminal's title).
    env.set_formatter(|out, state, value| {
        if matches!(state.auto_escape(), minijinja::AutoEscape::None)
            && let Some(text) = value.as_str()
        {
            return out
                .write_str(&crate::ui::terminal::printable_text(text))
                .map_err(|_| {
                    minijinja::Error::new(minijinja::ErrorKind::WriteFailure, "writing a value")
                });
        }
        minijinja::escape_formatter(out, state, value)
    });
    env.add_filter("bytes", human_bytes);
    env.add_filter("clock", clock_time);
    env.add_filter("millis", human_millis);
    // Columns of the text digest.
    env.add_filter("ljust", |value: Value, width: usize| {
        format!("{:<width$}", value.to_string())
    });
    env.add_filter("rjust", |value: Value, width: usize| {
        format!("{:>width$}", value.to_string())
    });
    env
}

impl Renderer {
    /// Loads the built-in templates, replacing each with `<dir>/<name>` when that file exists
    /// and compiles.
    pub(crate) fn new(templates_dir: Option<&Path>) -> Renderer {
        let dir = templates_dir.unwrap_or(Path::new(DEFAULT_TEMPLATES_DIR));
        let mut env = environment();
        let mut built_in = environment();
        let mut overridden = Vec::new();
        let mut load_problems = Vec::new();
        for (name, source) in BUILT_IN {
            built_in
                .add_template(name, source)
                .expect("the built-in templates compile (a unit test renders them)");
            let path = dir.join(name);
            let loaded = match std::fs::read_to_string(&path) {
                Ok(text) => env
                    .add_template_owned(name, text)
                    .map_err(|cause| format!("{cause:#}")),
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                    env.add_template(name, source).expect("built-in template");
                    continue;
                }
                Err(err) => Err(format!("cannot read it: {err}")),
            };
            match loaded {
                Ok(()) => overridden.push(name),
                Err(why) => {
                    env.add_template(name, source).expect("built-in template");
                    load_problems.push((name, why));
                }
            }
        }
        Renderer {
            env,
            built_in,
            overridden,
            load_problems,
            dir: dir.to_owned(),
        }
    }

    fn problem(&self, name: &str, why: &str) -> String {
        format!(
            "template {name} in {} failed: {why}; built-in template used",
            self.dir.display()
        )
    }

    /// Renders `name` with its override, falling back to the built-in template on any error;
    /// returns the output and, when the override could not be used, why.
    fn render(
        &self,
        name: &str,
        data: &impl serde::Serialize,
    ) -> Result<(String, Option<String>), RenderError> {
        let value = Value::from(Serde(data));
        let built_in = || {
            self.built_in
                .get_template(name)
                .and_then(|template| template.render(value.clone()))
                .map_err(|cause| RenderError::Template {
                    name: name.to_owned(),
                    cause,
                })
        };
        if let Some((_, why)) = self.load_problems.iter().find(|(n, _)| *n == name) {
            return Ok((built_in()?, Some(self.problem(name, why))));
        }
        let rendered = self
            .env
            .get_template(name)
            .and_then(|template| template.render(value.clone()));
        match rendered {
            Ok(text) => Ok((text, None)),
            Err(cause) if self.overridden.contains(&name) => {
                Ok((built_in()?, Some(self.problem(name, &format!("{cause:#}")))))
            }
            Err(cause) => Err(RenderError::Template {
                name: name.to_owned(),
                cause,
            }),
        }
    }

    /// What is wrong with the overrides, found by rendering every template for `sample`
    /// (what `selfheal check` reports).
    pub(crate) fn problems(&self, sample: &Report) -> Vec<String> {
        let cascade = CascadeReport::new(
            sample.header.system_name.clone(),
            sample.header.host.clone(),
            "60s".into(),
            vec![serde_json::to_value(sample).unwrap_or_default()],
            vec!["another".into()],
        );
        let digest = DigestReport::sample(sample);
        BUILT_IN
            .iter()
            .filter_map(|(name, _)| {
                let rendered = if name.starts_with("cascade") {
                    self.render(name, &cascade)
                } else if name.starts_with("digest") {
                    self.render(name, &digest)
                } else {
                    self.render(name, sample)
                };
                match rendered {
                    Ok((_, problem)) => problem,
                    Err(err) => Some(err.to_string()),
                }
            })
            .collect()
    }

    /// The mail subject: one line, whatever the template's whitespace.
    pub(crate) fn subject<T: Templated>(&self, report: &T) -> Result<String, RenderError> {
        let (text, problem) = self.render(T::SUBJECT, report)?;
        log(problem.as_deref());
        Ok(text.split_whitespace().collect::<Vec<_>>().join(" "))
    }

    /// The plain-text report; a template problem is its first line.
    pub(crate) fn text<T: Templated>(&self, report: &T) -> Result<String, RenderError> {
        let (text, problem) = self.render(T::TEXT, report)?;
        log(problem.as_deref());
        // A text file ends with a newline, whatever the template's last line does.
        let text = format!("{}\n", text.trim_end_matches('\n'));
        Ok(match problem {
            Some(problem) => format!("⚠ {problem}\n\n{text}"),
            None => text,
        })
    }

    /// The HTML report (every value escaped); a template problem is its first paragraph.
    pub(crate) fn html<T: Templated>(&self, report: &T) -> Result<String, RenderError> {
        let (html, problem) = self.render(T::HTML, report)?;
        log(problem.as_deref());
        let Some(problem) = problem else {
            return Ok(html);
        };
        let note = format!(
            "<p style=\"color:#92400e;background:#fef3c7;padding:8px\">⚠ {}</p>",
            escape_html(&problem)
        );
        // Right after <body ...> when there is one, else first.
        let at = html
            .find("<body")
            .and_then(|start| html[start..].find('>').map(|end| start + end + 1))
            .unwrap_or(0);
        Ok(format!("{}{note}{}", &html[..at], &html[at..]))
    }
}

fn log(problem: Option<&str>) {
    if let Some(problem) = problem {
        tracing::warn!("{problem}");
    }
}

fn escape_html(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// µs since the epoch → "21:45:23.120" (UTC).
fn clock_time(micros: u64) -> String {
    let time = std::time::UNIX_EPOCH + std::time::Duration::from_micros(micros);
    let text = Timestamp::millis(time).to_string();
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

    fn overriding(name: &str, source: &str) -> (tempfile::TempDir, Renderer) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(name), source).unwrap();
        let renderer = Renderer::new(Some(dir.path()));
        (dir, renderer)
    }

    fn sample() -> Report {
        super::super::fixture::report(crate::outcome::Outcome::Failed)
    }

    #[test]
    fn an_override_that_does_not_compile_falls_back_to_the_built_in_and_says_so() {
        let (_dir, renderer) = overriding("report.txt.j2", "{% if %}broken");
        let text = renderer.text(&sample()).unwrap();
        assert!(text.starts_with("⚠ template report.txt.j2 in "), "{text}");
        assert!(text.contains("built-in template used"), "{text}");
        assert!(
            text.contains("End of report"),
            "the built-in report follows: {text}"
        );
        let problems = renderer.problems(&sample());
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].contains("report.txt.j2"), "{problems:?}");
    }

    #[test]
    fn an_override_that_fails_while_rendering_falls_back_too() {
        let (_dir, renderer) = overriding("report.html.j2", "<body>{{ nosuchvar.field }}</body>");
        let html = renderer.html(&sample()).unwrap();
        assert!(html.contains("⚠ template report.html.j2 in "), "{html}");
        assert!(
            html.contains("MiracleMax"),
            "the built-in was rendered: {html}"
        );
        // A working override is used as it is.
        let (_dir, renderer) = overriding("subject.txt.j2", "custom {{ service }}");
        assert_eq!(renderer.subject(&sample()).unwrap(), "custom story-stages");
        assert!(renderer.problems(&sample()).is_empty());
    }

    /// A hung service's report: its stopped processes, each a row, with what the service
    /// wrote (its command line) escaped in HTML and shown in text.
    #[test]
    fn the_evidence_section_shows_each_process_and_the_cgroup() {
        use crate::host::evidence::{CgroupMemory, Evidence, Pressure, ProcessEvidence};
        let mut report = sample();
        let process = |pid: u32, command: &str| ProcessEvidence {
            pid,
            name: "nginx".into(),
            command: command.into(),
            state: "T (stopped)".into(),
            wchan: Some("do_signal_stop".into()),
            threads: 3,
            thread_states: [("S".to_owned(), 2), ("T".to_owned(), 1)].into(),
            rss_bytes: 5 << 20,
            cpu_ms: 30,
            open_files: Some(9),
            kernel_stack: vec!["do_signal_stop".into(), "get_signal".into()],
        };
        report.facts.evidence = Some(Evidence {
            took_ms: 4,
            main_pid: 812,
            processes: vec![
                process(812, "nginx: master process <b>x</b>"),
                process(813, "nginx: worker process"),
            ],
            more_processes: 2,
            memory: Some(CgroupMemory {
                current_bytes: 12 << 20,
                peak_bytes: Some(14 << 20),
                max_bytes: None,
                anon_bytes: Some(8 << 20),
                file_bytes: Some(4 << 20),
                kernel_bytes: None,
                shmem_bytes: Some(0),
            }),
            pressure: vec![Pressure {
                resource: "cpu".into(),
                scope: "cgroup".into(),
                some_avg10: 1.5,
                some_avg60: 0.5,
                full_avg10: None,
            }],
            gaps: Vec::new(),
            left: Some(crate::host::evidence::LeftBehind {
                signal: "SIGQUIT".into(),
                pid: 812,
                exited_after_ms: Some(140),
                exit: "it exited after 140 ms".into(),
                printed: vec!["goroutine 1 [running]: <main.serve>".into()],
                read_all: "journalctl _SYSTEMD_INVOCATION_ID=0f1e --since @1765098001".into(),
                core: Vec::new(),
                sent_at_us: 0,
                invocation_id: String::new(),
            }),
            summary: String::new(),
        });
        let renderer = Renderer::new(Some(Path::new("/nonexistent")));
        let text = renderer.text(&report).unwrap();
        for expected in [
            "EVIDENCE (its processes before the restart, taken in 4 ms)",
            "  • PID 812 nginx: T (stopped), waiting in do_signal_stop, 3 threads (2 S, 1 T), RSS 5.0 MiB, CPU 30 ms, 9 open files\n    nginx: master process <b>x</b>\n    kernel stack: do_signal_stop < get_signal\n",
            "  • 2 more process(es), not described",
            "  • Memory of its cgroup: 12.0 MiB, peak 14.0 MiB (anon 8.0 MiB, file 4.0 MiB)\n",
            "spent waiting: cpu 1.5 % (its cgroup)\n",
            "  • SIGQUIT sent to its main process (PID 812) for its own evidence: it exited after 140 ms.\n    What it wrote after the signal, its last 1 line (all of it: journalctl _SYSTEMD_INVOCATION_ID=0f1e --since @1765098001):\n      goroutine 1 [running]: <main.serve>\n",
        ] {
            assert!(text.contains(expected), "{expected}\n---\n{text}");
        }
        let html = renderer.html(&report).unwrap();
        assert!(
            html.contains("nginx: master process &lt;b&gt;x&lt;&#x2f;b&gt;"),
            "{html}"
        );
        assert!(html.contains("<strong>T (stopped)</strong>"), "{html}");
        assert!(!html.contains("<b>x</b>"), "{html}");
        assert!(
            html.contains("goroutine 1 [running]: &lt;main.serve&gt;"),
            "{html}"
        );
    }

    /// A run an alert started names it: its words escaped in HTML, its link only when it is
    /// one to a web page.
    #[test]
    fn the_alert_that_started_a_run_is_named() {
        let mut report = sample();
        report.facts.alert = Some(crate::state::alerts::FiringAlert {
            alertname: "HighErrorRate".into(),
            summary: Some("5xx <above> 5%".into()),
            generator_url: Some("javascript:alert(1)".into()),
            starts_at: "2026-12-07T10:00:00Z".into(),
            fingerprint: "a1".into(),
            received_at: Timestamp::seconds(std::time::UNIX_EPOCH),
            taken: false,
        });
        let renderer = Renderer::new(Some(Path::new("/nonexistent")));
        let text = renderer.text(&report).unwrap();
        let line = "Alert:     HighErrorRate (Alertmanager), firing since 2026-12-07T10:00:00Z: 5xx <above> 5%\n           javascript:alert(1)\n";
        assert!(text.contains(line), "{text}");
        let html = renderer.html(&report).unwrap();
        assert!(html.contains("5xx &lt;above&gt; 5%"), "{html}");
        assert!(!html.contains("href=\"javascript"), "{html}");
        report.facts.alert.as_mut().unwrap().generator_url = Some("http://prom:9090/graph".into());
        let html = renderer.html(&report).unwrap();
        assert!(
            html.contains("<a href=\"http:&#x2f;&#x2f;prom:9090&#x2f;graph\">"),
            "{html}"
        );
    }

    #[test]
    fn formats_sizes_times_and_durations() {
        assert_eq!(clock_time(1_700_000_000_123_000), "22:13:20.123");
        assert_eq!(human_millis(85), "85 ms");
        assert_eq!(human_millis(1234), "1.23 s");
    }

    #[test]
    fn an_override_file_replaces_the_built_in_template() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("report.txt.j2"), "custom {{ service }}").unwrap();
        let renderer = Renderer::new(Some(dir.path()));
        let template = renderer.env.get_template("report.txt.j2").unwrap();
        assert_eq!(
            template
                .render(minijinja::context! { service => "web" })
                .unwrap(),
            "custom web"
        );
    }
}
