//! `selfheal man [page]`: a man page (`manual.rs` makes them), shown through man(1) at a
//! terminal, its roff on a pipe; `--dir` writes them all.

use crate::exit_code::ExitCode;
use crate::{Error, UsageError};

pub(super) fn execute(args: &crate::cli::ManArgs) -> Result<ExitCode, Error> {
    use std::io::Write as _;
    let pages = super::manual::pages()?;
    if let Some(dir) = &args.dir {
        for page in &pages {
            let section = dir.join(format!("man{}", page.section()));
            std::fs::create_dir_all(&section)?;
            let path = section.join(&page.file);
            std::fs::write(&path, &page.roff)?;
            println!("wrote {}", path.display());
        }
        return Ok(ExitCode::Success);
    }
    // `selfheal man run` is `selfheal man selfheal-run`.
    let wanted = [
        format!("{}.", args.page),
        format!("selfheal-{}.", args.page),
    ];
    let page = pages
        .iter()
        .find(|page| wanted.iter().any(|w| page.file.starts_with(w)))
        .ok_or_else(|| {
            let names: Vec<&str> = pages
                .iter()
                .filter_map(|page| page.file.rsplit_once('.').map(|(name, _)| name))
                .collect();
            UsageError(format!(
                "no man page {:?}; the pages: {}",
                args.page,
                names.join(", ")
            ))
        })?;
    // A person at a terminal reads the page, as `git help` shows one; a pipe or a file gets
    // the roff itself (to install or convert).
    if std::io::IsTerminal::is_terminal(&std::io::stdout()) && show_with_man(&page.roff) {
        return Ok(ExitCode::Success);
    }
    std::io::stdout().write_all(&page.roff)?;
    Ok(ExitCode::Success)
}

/// Shows `roff` through `man -l -` (man-db reads the page from stdin); false when there is no
/// `man` to run.
fn show_with_man(roff: &[u8]) -> bool {
    use std::io::Write as _;
    let Ok(mut man) = std::process::Command::new("man")
        .args(["-l", "-"])
        .stdin(std::process::Stdio::piped())
        .spawn()
    else {
        return false;
    };
    if let Some(mut stdin) = man.stdin.take() {
        // A pager that quits early closes the pipe: that is the reader's choice, not an error.
        let _ = stdin.write_all(roff);
    }
    man.wait().is_ok()
}
