//! What the benchmarks share: how many runs (`BENCH_RUNS`), which systemd the sandbox boots
//! (`SELFHEAL_TEST_ROOT`, as the tests), and the median/min/max of a sample in a table row.

#![allow(dead_code, unreachable_pub)] // each benchmark uses its part

use std::path::{Path, PathBuf};
use std::time::Duration;

use selfheal::sandbox::SandboxSystemd;

/// Runs per measurement: `BENCH_RUNS`, else 9.
pub fn runs() -> usize {
    std::env::var("BENCH_RUNS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(9)
}

/// The host's systemd, or with `SELFHEAL_TEST_ROOT=<a Debian tree>` that tree's (the
/// directories of `binaries` appear inside at the same paths).
pub fn sandbox_systemd(binaries: &[&Path]) -> SandboxSystemd {
    match std::env::var_os("SELFHEAL_TEST_ROOT") {
        None => SandboxSystemd::Host,
        Some(root) => SandboxSystemd::Tree {
            root: root.into(),
            binds: binaries
                .iter()
                .map(|binary| binary.parent().unwrap_or(Path::new("/")).to_owned())
                .collect::<Vec<PathBuf>>(),
        },
    }
}

/// The median, fastest and slowest of a sample.
#[derive(Debug, Clone, Copy)]
pub struct Spread {
    pub median: Duration,
    pub min: Duration,
    pub max: Duration,
}

impl Spread {
    pub fn of(samples: &[Duration]) -> Spread {
        let mut sorted = samples.to_vec();
        sorted.sort();
        Spread {
            median: sorted[sorted.len() / 2],
            min: sorted[0],
            max: sorted[sorted.len() - 1],
        }
    }

    /// `| metric | median | min | max |` (and `extra` cells after).
    pub fn row(&self, metric: &str, extra: &[&str]) -> String {
        let mut row = format!(
            "| {metric} | {} | {} | {} |",
            ms(self.median),
            ms(self.min),
            ms(self.max)
        );
        for cell in extra {
            row.push(' ');
            row.push_str(cell);
            row.push_str(" |");
        }
        row
    }
}

/// `23.5 ms`.
pub fn ms(duration: Duration) -> String {
    format!("{:.1} ms", duration.as_secs_f64() * 1000.0)
}

/// `BENCH_DEBUG=1`: runs `command` once more at debug level and returns selfheal's last
/// `lines` journal lines (where its time went).
pub fn debug_timings(
    sandbox: &selfheal::sandbox::Sandbox,
    mut command: std::process::Command,
    lines: usize,
) -> anyhow::Result<String> {
    command.env("SELFHEAL_LOG", "debug").output()?;
    let journal = sandbox
        .command("journalctl")
        .args(["--no-pager", "-o", "cat", "-n"])
        .arg(lines.to_string())
        .arg("SYSLOG_IDENTIFIER=selfheal")
        .output()?;
    Ok(String::from_utf8_lossy(&journal.stdout).into_owned())
}
