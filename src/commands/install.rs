//! `selfheal install` and `uninstall`: the heal units and OnFailure= drop-ins, then a reload.

use std::path::Path;

use crate::Error;
use crate::cli::{InstallArgs, UninstallArgs};
use crate::deploy::{self, Change, Invocation, UnitFile};
use crate::exit_code::ExitCode;
use crate::systemd::{Systemd, UnitControl};

use super::Paths;

pub(super) fn install(paths: &Paths, args: &InstallArgs) -> Result<ExitCode, Error> {
    let files = planned(paths, &args.unit_dir)?;
    // Every file is checked before any is written: a foreign file stops the whole install.
    let changes = deploy::plan_changes(&files, &args.unit_dir, &recorded(paths)?.masks())?;
    if args.dry_run {
        print!("{}", deploy::describe(&changes));
        return Ok(ExitCode::Success);
    }
    let changed = deploy::apply(&changes)?;
    // What uninstall must remove, wherever it was written: recorded before anything else can
    // fail. A state directory that cannot be written costs uninstall's memory, not the hooks.
    if let Err(err) = paths
        .state()
        .ensure("")
        .map_err(|err| std::io::Error::other(err.to_string()))
        .and_then(|dir| deploy::Manifest::new(&dir).record(&args.unit_dir, &changes))
    {
        eprintln!("selfheal: warning: the list of installed files is not kept: {err}");
    }
    for change in &changes {
        match change {
            Change::Create(file) => println!("wrote {}", file.path.display()),
            Change::Update { file, .. } => println!("updated {}", file.path.display()),
            Change::Remove(path) => println!("removed {} (no longer configured)", path.display()),
            Change::KeepMasked(path) => println!("left {} masked", path.display()),
            Change::Mask { path, as_masked } => println!(
                "masked {} as {} is (healing stays disabled)",
                path.display(),
                as_masked.display()
            ),
        }
    }
    if !changed {
        println!("unchanged: every unit file is already as install writes it");
        if !args.no_reload {
            restart_running_receiver(&files)?;
        }
        return Ok(ExitCode::Success);
    }
    reload_unless(args.no_reload)?;
    if !args.no_reload {
        start_and_stop_timers(&changes)?;
        start_and_stop_receiver(&changes)?;
        restart_running_receiver(&files)?;
    }
    Ok(ExitCode::Success)
}

/// Starts the digest, watch, probe and flush timers install has just written, and stops a timer
/// (digest, watch, probe or flush) whose file it has just removed: `timers.target` is already active, so a new
/// Wants= takes effect only at the next boot, and a removed timer that still runs would go on
/// firing a unit that is gone.
fn start_and_stop_timers(changes: &[Change]) -> Result<(), Error> {
    let named = |path: &Path, name: &str| path.file_name().is_some_and(|n| n == name);
    for change in changes {
        match change {
            Change::Create(file) | Change::Update { file, .. }
                if named(&file.path, deploy::DIGEST_TIMER)
                    || named(&file.path, deploy::WATCH_TIMER)
                    || named(&file.path, deploy::PROBE_TIMER)
                    || named(&file.path, deploy::FLUSH_TIMER) =>
            {
                let timer = file.path.file_name().unwrap_or_default().to_string_lossy();
                Systemd::connect()?.start(&timer, std::time::Duration::from_secs(10))?;
                println!("started {timer}");
            }
            Change::Remove(path) => {
                for timer in [
                    deploy::DIGEST_TIMER,
                    deploy::FLUSH_TIMER,
                    deploy::WATCH_TIMER,
                    deploy::PROBE_TIMER,
                ] {
                    if named(path, timer) {
                        Systemd::connect()?.stop(timer)?;
                        println!("stopped {timer}");
                    }
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// A receiver that runs now read the config when it started: it is stopped, and the next post
/// starts it with the config as it is now (the unit files did not change).
fn restart_running_receiver(files: &[UnitFile]) -> Result<(), Error> {
    let receives = files.iter().any(|file| {
        file.path
            .file_name()
            .is_some_and(|n| n == deploy::RECEIVER_SERVICE)
    });
    if receives {
        Systemd::connect()?.stop(deploy::RECEIVER_SERVICE)?;
    }
    Ok(())
}

/// Starts the receiver's socket once install wrote it (a running receiver is stopped first:
/// the next connection starts it as written now, and a socket whose address changed must be
/// bound anew), and stops both when install removed them.
fn start_and_stop_receiver(changes: &[Change]) -> Result<(), Error> {
    let named = |path: &Path| {
        path.file_name()
            .is_some_and(|n| n == deploy::RECEIVER_SOCKET || n == deploy::RECEIVER_SERVICE)
    };
    let written = changes.iter().any(|change| {
        matches!(change, Change::Create(file) | Change::Update { file, .. } if named(&file.path))
    });
    let removed = changes
        .iter()
        .any(|change| matches!(change, Change::Remove(path) if named(path)));
    if !written && !removed {
        return Ok(());
    }
    let systemd = Systemd::connect()?;
    systemd.stop(deploy::RECEIVER_SERVICE)?;
    systemd.stop(deploy::RECEIVER_SOCKET)?;
    if written {
        let job = systemd.start(deploy::RECEIVER_SOCKET, std::time::Duration::from_secs(10))?;
        if job.is_done() {
            println!("started {}", deploy::RECEIVER_SOCKET);
        } else {
            // Installed all the same: a listen address in use is the person's to free.
            eprintln!(
                "selfheal: warning: {} did not start ({}): is receiver.listen in use? journalctl -u {}",
                deploy::RECEIVER_SOCKET,
                job.0,
                deploy::RECEIVER_SOCKET
            );
        }
    } else {
        println!("stopped {}", deploy::RECEIVER_SOCKET);
    }
    Ok(())
}

pub(super) fn uninstall(paths: &Paths, args: &UninstallArgs) -> Result<ExitCode, Error> {
    // What this config plans, what any install left in this unit directory, and what the
    // manifest says installs wrote anywhere.
    let manifest = recorded(paths)?;
    let mut candidates: Vec<std::path::PathBuf> = planned(paths, &args.unit_dir)?
        .into_iter()
        .map(|file| file.path)
        .chain(deploy::our_files(&args.unit_dir))
        .chain(manifest.files())
        .collect();
    candidates.sort();
    candidates.dedup();
    let mut removed = deploy::remove_files(&candidates, &manifest.masks())?;
    // `systemctl enable selfheal-flush.timer` (a step the README once asked for) left a link to it.
    removed.extend(deploy::remove_enablement(
        &args.unit_dir,
        deploy::FLUSH_TIMER,
    )?);
    for path in &removed {
        println!("removed {}", path.display());
    }
    reload_unless(args.no_reload)?;
    if !args.no_reload {
        // A removed timer that is still running would go on firing a unit that is gone.
        let removed: Vec<Change> = removed.into_iter().map(Change::Remove).collect();
        start_and_stop_timers(&removed)?;
        start_and_stop_receiver(&removed)?;
        stop_transient_timers(paths)?;
    }
    if let Err(err) = manifest.remove() {
        eprintln!("selfheal: warning: the list of installed files stays behind: {err}");
    }
    Ok(ExitCode::Success)
}

/// Stops the retry and cascade timers runs started (transient: stopped, they are gone), so
/// none fires a heal unit that uninstall removed.
fn stop_transient_timers(paths: &Paths) -> Result<(), Error> {
    let systemd = Systemd::connect()?;
    // The retry timers' first name, of the services configured now.
    let legacy: Vec<String> = paths
        .load_config()?
        .monitored_services
        .iter()
        .map(|service| service.retry_timer_name(true))
        .collect();
    let mut patterns = vec!["selfheal@*.timer", "selfheal-cascade-*.timer"];
    patterns.extend(legacy.iter().map(String::as_str));
    for timer in systemd.units_matching(&patterns)? {
        systemd.stop(&timer)?;
        println!("stopped {timer}");
    }
    Ok(())
}

/// The manifest of what installs wrote, believed only in a state directory nobody else can
/// write (an empty one when there is no state directory yet).
fn recorded(paths: &Paths) -> Result<deploy::Manifest, Error> {
    if paths.state_dir.exists() {
        paths.state().ensure("")?;
    }
    Ok(deploy::Manifest::new(&paths.state_dir))
}

fn planned(paths: &Paths, unit_dir: &Path) -> Result<Vec<UnitFile>, Error> {
    let config = paths.load_config()?;
    let invocation = invocation(paths)?;
    let mut files = deploy::planned_files(&config, &invocation, unit_dir);
    files.extend(deploy::receiver_files(&config, &invocation, unit_dir));
    if config.all_services.is_some() {
        // The excluded units that exist now get a file that keeps the hook off; without
        // systemd's list (a build host) the excluded ones are left to their runs, which end
        // at once.
        let known = Systemd::connect()
            .and_then(|systemd| systemd.service_units())
            .unwrap_or_else(|err| {
                eprintln!("selfheal: warning: systemd did not list its units ({err}): an excluded unit is armed, and its run ends at once");
                Vec::new()
            });
        files.extend(deploy::all_services_files(
            &config,
            &invocation,
            unit_dir,
            &known,
        ));
    }
    Ok(files)
}

fn reload_unless(no_reload: bool) -> Result<ExitCode, Error> {
    if !no_reload {
        Systemd::connect()?.reload()?;
        println!("reloaded systemd");
    }
    Ok(ExitCode::Success)
}

/// The ExecStart= of heal units: this binary, plus the paths only when they are not defaults.
fn invocation(paths: &Paths) -> Result<Invocation, Error> {
    let absolute = |path: &Path| std::path::absolute(path).map_err(Error::Output);
    let config = Some(paths.config.as_path())
        .filter(|p| *p != Path::new(crate::config::DEFAULT_CONFIG_PATH));
    let state_dir = Some(paths.state_dir.as_path())
        .filter(|p| *p != Path::new(crate::state::DEFAULT_STATE_DIR));
    Ok(Invocation {
        executable: std::env::current_exe().map_err(Error::Output)?,
        config: config.map(absolute).transpose()?,
        state_dir: state_dir.map(absolute).transpose()?,
    })
}
