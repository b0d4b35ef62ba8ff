//! `selfheal install` and `uninstall`: the heal units and OnFailure= drop-ins, then a reload.

use std::path::Path;

use crate::Error;
use crate::cli::{InstallArgs, UninstallArgs};
use crate::exit_code::ExitCode;
use crate::install::{self, Change, Invocation, UnitFile};
use crate::systemd::{Systemd, UnitControl};

use super::Paths;

pub(super) fn install(paths: &Paths, args: &InstallArgs) -> Result<ExitCode, Error> {
    let files = planned(paths, &args.unit_dir)?;
    // Every file is checked before any is written: a foreign file stops the whole install.
    let changes = install::plan_changes(&files, &args.unit_dir)?;
    if args.dry_run {
        print!("{}", install::describe(&changes));
        return Ok(ExitCode::Success);
    }
    let changed = install::apply(&changes)?;
    for change in &changes {
        match change {
            Change::Create(file) => println!("wrote {}", file.path.display()),
            Change::Update { file, .. } => println!("updated {}", file.path.display()),
            Change::Remove(path) => println!("removed {} (no longer configured)", path.display()),
            Change::KeepMasked(path) => println!("left {} masked", path.display()),
        }
    }
    if !changed {
        println!("unchanged: every unit file is already as install writes it");
        return Ok(ExitCode::Success);
    }
    reload_unless(args.no_reload)
}

pub(super) fn uninstall(paths: &Paths, args: &UninstallArgs) -> Result<ExitCode, Error> {
    for path in install::remove_files(&planned(paths, &args.unit_dir)?)? {
        println!("removed {}", path.display());
    }
    reload_unless(args.no_reload)
}

fn planned(paths: &Paths, unit_dir: &Path) -> Result<Vec<UnitFile>, Error> {
    let config = paths.load_config()?;
    Ok(install::planned_files(
        &config,
        &invocation(paths)?,
        unit_dir,
    ))
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
