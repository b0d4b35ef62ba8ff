//! `selfheal run <service>`: heal, print the report, mail it, and heal again when the service
//! failed again while this run was finishing.

use crate::Error;
use crate::cli::RunArgs;
use crate::exit_code::ExitCode;
use crate::heal::run::{self, RunOptions};
use crate::host::journal::Journald;
use crate::report::{Renderer, Report, ReportHeader};
use crate::systemd::Systemd;

use super::{Paths, find_entry};

pub(super) fn execute(paths: &Paths, args: &RunArgs) -> Result<ExitCode, Error> {
    log_start();
    let config = paths.load_config()?;
    tracing::debug!("config loaded");
    let state = paths.state();
    if excluded(&config, &args.service) {
        return Ok(ExitCode::Success);
    }
    let service = &*find_entry(&config, &args.service)?;
    let manual = args.force
        || (!args.dry_run
            && at_a_terminal()
            && run::held_by_loop_protection(&config, &state, service)
                .is_some_and(|held| a_person_says_yes(&held)));
    let mut options = RunOptions {
        dry_run: args.dry_run,
        ignore_monitor_facts: false,
        manual,
        from_hook: crate::heal::diagnose::started_by_hook(),
    };
    let mails = !args.dry_run && !args.no_email && config.email.is_some();
    let flush_command = flush_command(paths);
    // Templates are compiled after healing: the service must not wait for its report.
    let mut renderer = None;
    std::thread::scope(|scope| {
        // Joining the cascade ledger writes a file: it happens beside healing, not before it.
        let mut joining = mails.then(|| {
            scope.spawn(|| crate::notify::cascade::arrive(&config, &state, &service.name))
        });
        let mut made_the_due_retry = false;
        loop {
            let facts = run::run(
                &config,
                &state,
                service,
                options,
                &run::Host {
                    connect: &Systemd::connect,
                    journal: &Journald,
                },
            )?;
            let mut report = Report::new(ReportHeader::new(&config, service), facts);
            crate::notify::tell::mark_all_clear(&state, &mut report);
            let renderer =
                renderer.get_or_insert_with(|| Renderer::new(config.templates_dir.as_deref()));
            if args.json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", renderer.text(&report)?);
            }
            // Only the first report of this process can fold into a cascade.
            let arrival = joining
                .take()
                .and_then(|thread| thread.join().ok().flatten());
            let teller = crate::notify::tell::Teller {
                config: &config,
                state: &state,
                renderer,
                flush_command: &flush_command,
                systemd: crate::systemd::Systemd::connect,
                send: !args.no_email,
            };
            teller.tell(&report, arrival.as_ref());
            if !args.dry_run {
                // After the mail, so the outbox figure is what the run left behind.
                crate::status::metrics::update(&config, &state);
            }
            // systemd merged this failure's OnFailure= start into this run: nobody else heals it.
            if !args.json
                && run::failed_again_while_finishing(&report.facts, service, Systemd::connect)?
            {
                options.ignore_monitor_facts = true;
                continue;
            }
            // The episode's retry timer fired while this run went on: systemd merged that start
            // into this run, so the retry is made now (once: a retry that cannot be recorded
            // stays due).
            if !args.dry_run
                && !args.json
                && !made_the_due_retry
                && run::retry_came_due(&state, service)
            {
                made_the_due_retry = true;
                options.ignore_monitor_facts = true;
                options.from_hook = false;
                continue;
            }
            return Ok(report.facts.outcome.exit_code());
        }
    })
}

/// With `--debug`: when the run started, on CLOCK_MONOTONIC, which is shared with systemd and
/// journald: a timeline of one restore (the restore benchmark prints one) starts from here.
fn log_start() {
    if tracing::enabled!(tracing::Level::DEBUG)
        && let Ok(now) = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
    {
        tracing::debug!(
            "run started at CLOCK_MONOTONIC {} µs",
            now.tv_sec() * 1_000_000 + now.tv_nsec() / 1_000
        );
    }
}

/// True (and said) when `all_services:` keeps `name`'s unit off: a unit installed after
/// `install` wrote the files that keep it off is armed all the same, and its run ends here.
fn excluded(config: &crate::config::Config, name: &str) -> bool {
    let excluded = config.is_excluded(name);
    if excluded {
        println!(
            "{name}: excluded by all_services: (exclude, or one of selfheal's own units); nothing done"
        );
    }
    excluded
}

/// `selfheal flush` with this run's config and state directory: what a cascade's delivery
/// timer runs.
fn flush_command(paths: &Paths) -> Vec<String> {
    // After an upgrade the running binary reads as "… (deleted)": the new one is at the
    // same path.
    let exe = std::env::current_exe().map_or_else(
        |_| "/usr/local/bin/selfheal".to_owned(),
        |exe| {
            let exe = exe.display().to_string();
            exe.strip_suffix(" (deleted)")
                .map_or(exe.clone(), str::to_owned)
        },
    );
    let absolute = |path: &std::path::Path| {
        std::path::absolute(path)
            .map_or_else(|_| path.display().to_string(), |p| p.display().to_string())
    };
    vec![
        exe,
        "--config".to_owned(),
        absolute(&paths.config),
        "--state-dir".to_owned(),
        absolute(&paths.state_dir),
        "flush".to_owned(),
    ]
}

/// Run at a terminal (stdin and stdout), not by systemd (which sets `$INVOCATION_ID` in every
/// unit it runs). A script can have a terminal too (`script(1)`, `expect`, a loop in tmux):
/// having one only earns the question, never the override.
fn at_a_terminal() -> bool {
    use std::io::IsTerminal;
    std::env::var_os("INVOCATION_ID").is_none()
        && std::io::stdin().is_terminal()
        && std::io::stdout().is_terminal()
}

/// Asks on the terminal whether to override loop protection; only a typed `y` or `yes` is a
/// yes (end of input, as from a script, or no answer within a minute, is a no).
fn a_person_says_yes(held: &str) -> bool {
    use std::io::Write as _;
    eprint!(
        "selfheal: {held}.\nHeal it anyway, end its episode and start the count afresh? [y/N] "
    );
    let _ = std::io::stderr().flush();
    // Nobody answering (a loop that never sends end of input) is a no, after a minute.
    let (answer_to, answer) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = std::io::stdin()
            .read_line(&mut line)
            .map(|_| answer_to.send(line));
    });
    let Ok(answer) = answer.recv_timeout(std::time::Duration::from_secs(60)) else {
        eprintln!();
        return false;
    };
    matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes")
}
