//! `selfheal check`: what would fail at 3 a.m., found now, like `nginx -t`. Loads and validates
//! the config, renders every template (built-in and overrides) against a sample report, and
//! checks on this host what the config only names: the SMTP password file and each webhook's
//! URL file (owner, mode), the
//! CA file (PEM), the receiver's token file (root's, 0600, one token), each validator command
//! (exists, executable), the owners and groups of
//! `database_check`; and, when systemd answers, that each service's unit exists, each heal
//! unit loads and each hook starts it. Exit 0 when all is well (warnings on stderr), 2 when not.

use crate::exit_code::ExitCode;
use crate::report::{Renderer, Report};
use crate::{Error, UsageError};

use super::Paths;

pub(super) fn execute(paths: &Paths) -> Result<ExitCode, Error> {
    let config = paths.load_config()?;
    // A broken override would not stop a run (it falls back to the built-in template), but
    // the owner would get reports that say so: catch it here first.
    let mut problems =
        Renderer::new(config.templates_dir.as_deref()).problems(&Report::test_email(&config));
    let file = paths.config.display();
    for (index, service) in config.monitored_services.iter().enumerate() {
        problems.extend(
            crate::heal::strategy::preflight(service)
                .into_iter()
                .map(|problem| {
                    format!(
                        "{file}: monitored_services[{index}] ({}): {problem}",
                        service.name
                    )
                }),
        );
    }
    problems.extend(files_it_names(&config, &file.to_string()));
    let mut warnings = Vec::new();
    warnings.extend(names_a_resolver_must_answer(&config));
    match &config.email {
        None => warnings.push(
            "there is no `email:` section: reports are printed and logged, but nobody is mailed"
                .to_owned(),
        ),
        Some(email) => match crate::notify::email::preflight(email) {
            Ok(found) => warnings.extend(found),
            Err(problem) => problems.push(format!("{file}: email: {problem}")),
        },
    }
    let (channel_problems, channel_warnings) = crate::notify::channel::preflight(&config);
    problems.extend(
        channel_problems
            .into_iter()
            .map(|problem| format!("{file}: {problem}")),
    );
    warnings.extend(channel_warnings);
    let (found_problems, found_warnings) = heal_units(&config);
    problems.extend(found_problems);
    warnings.extend(found_warnings);
    let (window_problems, windows_line) = maintenance(&config);
    problems.extend(
        window_problems
            .into_iter()
            .map(|problem| format!("{file}: {problem}")),
    );
    let (covered, coverage_warnings) = coverage(&config);
    warnings.extend(coverage_warnings);
    // Whether selfheal's own timers run (on a host whose systemd answers).
    if let Some(states) = crate::status::timers::ask(&config) {
        let timers = crate::status::timers::look(
            &config,
            &paths.state(),
            Some(&states),
            std::time::SystemTime::now(),
        );
        warnings.extend(timers.into_iter().filter_map(|timer| timer.problem));
    }
    for warning in &warnings {
        eprintln!("selfheal: warning: {warning}");
    }
    if !problems.is_empty() {
        return Err(UsageError(problems.join("\n")).into());
    }
    if config.monitored_services.is_empty() {
        println!(
            "{}: valid, but there are no monitored services: list them under monitored_services: for selfheal to heal anything",
            paths.config.display()
        );
    } else {
        println!(
            "{}: valid, {} monitored service(s): {}",
            paths.config.display(),
            config.monitored_services.len(),
            config.service_names().join(", ")
        );
    }
    if let Some(covered) = covered {
        println!("{covered}");
    }
    for line in windows_line {
        println!("{line}");
    }
    Ok(ExitCode::Success)
}

/// What the config names on this host that would fail later: the metrics file's directory,
/// the receiver's token file.
fn files_it_names(config: &crate::config::Config, file: &str) -> Vec<String> {
    let mut problems = Vec::new();
    // The metrics file is written through its directory, which selfheal does not create (it
    // is node_exporter's): a missing one would lose every update silently.
    if let Some(metrics) = &config.metrics_file {
        let dir = metrics
            .parent()
            .filter(|dir| !dir.as_os_str().is_empty())
            .unwrap_or(std::path::Path::new("."));
        if !dir.is_dir() {
            problems.push(format!(
                "{file}: metrics_file: its directory {} does not exist (install prometheus-node-exporter, or create it for the textfile collector)",
                dir.display()
            ));
        }
    }
    // The receiver would refuse to start at Alertmanager's first post, and every alert
    // would go unheard.
    if let Some(receiver) = &config.receiver
        && let Err(problem) = crate::receiver::Token::read(&receiver.token_file)
    {
        problems.push(format!("{file}: receiver: {problem}"));
    }
    problems
}

/// Each maintenance window read by systemd's own calendar parser: one it cannot read, or
/// that never occurs again, is a problem; the others are said with their next beginning.
fn maintenance(config: &crate::config::Config) -> (Vec<String>, Vec<String>) {
    let now = std::time::SystemTime::now();
    let all = config
        .maintenance
        .iter()
        .map(|window| ("maintenance".to_owned(), "every service", window));
    let own = config
        .monitored_services
        .iter()
        .enumerate()
        .flat_map(|(index, service)| {
            service.maintenance.iter().map(move |window| {
                (
                    format!("monitored_services[{index}] ({}).maintenance", service.name),
                    service.name.as_str(),
                    window,
                )
            })
        });
    let (mut problems, mut lines) = (Vec::new(), Vec::new());
    for (key, whose, window) in all.chain(own) {
        match crate::heal::planned::window_now(window, now) {
            Err(said) => problems.push(format!(
                "{key}: {:?} is not a systemd calendar event ({said}); see systemd.time(7), e.g. \"Sun 03:00\"",
                window.on
            )),
            Ok(crate::heal::planned::WindowNow {
                on_until: None,
                next: None,
            }) => problems.push(format!(
                "{key}: {:?} never occurs again: selfheal would never hold back for it",
                window.on
            )),
            Ok(crate::heal::planned::WindowNow { on_until, next }) => lines.push(format!(
                "maintenance window {} ({whose}): {}",
                window.describe(),
                match (on_until, next) {
                    (Some(until), _) => format!(
                        "on now, until {}",
                        crate::ui::when::Timestamp::seconds(until).readable()
                    ),
                    (None, Some(next)) => format!(
                        "next at {}",
                        crate::ui::when::Timestamp::seconds(next).readable()
                    ),
                    (None, None) => String::new(),
                }
            )),
        }
    }
    (problems, lines)
}

/// How many of the units all_services: arms `check` names.
const SHOWN: usize = 5;

/// What `all_services:` arms on this host, in one line (how many units, a few names, how
/// many excluded), and the warnings of units a file selfheal did not write keeps it off.
fn coverage(config: &crate::config::Config) -> (Option<String>, Vec<String>) {
    if config.all_services.is_none() {
        return (None, Vec::new());
    }
    let roots: Vec<&std::path::Path> = crate::deploy::DROP_IN_ROOTS
        .iter()
        .map(std::path::Path::new)
        .collect();
    let mut warnings: Vec<String> = crate::deploy::hook_masks(&roots)
        .into_iter()
        .map(|path| {
            format!(
                "{} (not written by selfheal) keeps all_services:' hook off its unit: that unit's failures are not reported (remove it, or say so in all_services: exclude)",
                path.display()
            )
        })
        .collect();
    let units = match crate::systemd::Systemd::connect().and_then(|s| s.service_units()) {
        Ok(units) => units,
        Err(err) => {
            warnings.push(format!(
                "systemd did not list its units ({err}): what all_services: arms is not counted"
            ));
            return (None, warnings);
        }
    };
    let Some(coverage) = config.coverage(&units) else {
        return (None, warnings);
    };
    let mut names: Vec<&str> = coverage.armed.iter().take(SHOWN).copied().collect();
    if coverage.armed.len() > SHOWN {
        names.push("…");
    }
    let line = format!(
        "all_services: arms {} more service unit(s) on this host ({}), {} excluded; units installed later are armed too",
        coverage.armed.len(),
        names.join(", "),
        coverage.excluded.len(),
    );
    (Some(line), warnings)
}

/// Health URLs whose host is a name only a resolver answers (not an IP literal, `localhost`
/// or a name in /etc/hosts): during a resolver outage they are not judged (no restart, no
/// verdict), which is worth knowing before one.
fn names_a_resolver_must_answer(config: &crate::config::Config) -> Vec<String> {
    let hosts_file = std::fs::read_to_string("/etc/hosts").unwrap_or_default();
    let in_hosts = |name: &str| {
        hosts_file.lines().any(|line| {
            let line = line.split('#').next().unwrap_or_default();
            line.split_whitespace()
                .skip(1)
                .any(|alias| alias.eq_ignore_ascii_case(name))
        })
    };
    config
        .monitored_services
        .iter()
        .filter_map(|service| {
            let url = service.health_url.as_ref()?;
            let host = url.host.trim_matches(['[', ']']);
            let fixed = host.parse::<std::net::IpAddr>().is_ok()
                || host.eq_ignore_ascii_case("localhost")
                || in_hosts(host);
            (!fixed).then(|| {
                format!(
                    "{}: health_url {}: {host} is resolved by DNS at every check; while the resolver does not answer the URL is not judged (use an IP address, or add {host} to /etc/hosts)",
                    service.name, url.raw
                )
            })
        })
        .collect()
}

/// What systemd says of the hooks: a heal unit that is installed but cannot load is a problem
/// (healing would fail at the next crash); a hook that does not start the heal unit yet is a
/// warning (`install` has not run since the config changed). Nothing is checked when systemd
/// does not answer (a build host, a container): that is said, not counted.
fn heal_units(config: &crate::config::Config) -> (Vec<String>, Vec<String>) {
    let units: Vec<String> = config
        .monitored_services
        .iter()
        .map(crate::config::ServiceConfig::unit_name)
        .collect();
    let heal_units: Vec<String> = config
        .monitored_services
        .iter()
        .map(crate::config::ServiceConfig::heal_unit_name)
        .collect();
    if units.is_empty() {
        return (Vec::new(), Vec::new());
    }
    // The first names of the heal units too: drop-ins of their family reach them.
    let legacy: Vec<String> = config
        .monitored_services
        .iter()
        .map(crate::config::ServiceConfig::legacy_heal_unit_name)
        .collect();
    let listed: Vec<String> = heal_units.iter().chain(&legacy).cloned().collect();
    let answer = crate::systemd::Systemd::connect().and_then(|systemd| {
        systemd.overview(
            &borrowed(&units),
            &borrowed(&listed),
            std::time::Duration::from_secs(5),
        )
    });
    let overviews = match answer {
        Ok(overviews) => overviews,
        Err(err) => {
            return (
                Vec::new(),
                vec![format!(
                    "systemd did not answer ({err}): whether each service's unit exists, and its heal unit and hook, is not checked"
                )],
            );
        }
    };
    let (unit_rows, listed_rows) = overviews.split_at(units.len());
    let (heal_rows, legacy_rows) = listed_rows.split_at(heal_units.len().min(listed_rows.len()));
    let mut problems = Vec::new();
    let mut warnings = Vec::new();
    for (legacy, row) in legacy.iter().zip(legacy_rows) {
        if !matches!(row.load_state.as_str(), "loaded" | "masked" | "not-found") {
            warnings.push(format!(
                "{legacy} (the first name of a heal unit) does not load ({}): a drop-in of its family ({}) reaches it; start the heal unit by its own name (selfheal@…), which no other unit's drop-in reaches",
                row.load_state,
                crate::deploy::family_drop_in_dirs(legacy).join(", ")
            ));
        }
    }
    for ((unit, heal_unit), (unit_row, heal_row)) in units
        .iter()
        .zip(&heal_units)
        .zip(unit_rows.iter().zip(heal_rows))
    {
        if unit_row.load_state == "not-found" {
            problems.push(format!(
                "{unit} is not known to systemd (LoadState=not-found): a typo in `name:`, or its package is not installed (`systemctl list-unit-files '{}*'` lists what there is)",
                unit.trim_end_matches(".service")
            ));
            continue;
        }
        match heal_row.load_state.as_str() {
            "loaded" | "masked" => {}
            "not-found" => {
                warnings.push(format!(
                    "{heal_unit} is not installed: run `selfheal install`"
                ));
                continue;
            }
            other => problems.push(format!(
                "{heal_unit} does not load ({other}): `systemctl status {heal_unit}` says why; a drop-in in /etc/systemd/system/{heal_unit}.d or /etc/systemd/system/selfheal@.service.d is the usual cause"
            )),
        }
        if unit_row.load_state == "loaded" && !unit_row.on_failure.contains(heal_unit) {
            warnings.push(format!(
                "OnFailure= of {unit} does not start {heal_unit} (it starts: {}): run `selfheal install`",
                if unit_row.on_failure.is_empty() {
                    "nothing".to_owned()
                } else {
                    unit_row.on_failure.join(" ")
                }
            ));
        }
    }
    (problems, warnings)
}

fn borrowed(names: &[String]) -> Vec<&str> {
    names.iter().map(String::as_str).collect()
}
