//! What systemd-coredump kept of a process: `coredumpctl info <PID>`, cut to the lines a report
//! can cite (signal, executable, when, where the core is, the first frames of the crashing
//! thread). Its command line is left out: a secret may be on it.

use std::time::{Duration, Instant};

/// The most lines, frames and characters per line kept of one entry.
const MAX_LINES: usize = 24;
const MAX_FRAMES: usize = 8;
const LINE_CHARS: usize = 200;

/// The fields of `coredumpctl info` a report cites.
const FIELDS: [&str; 8] = [
    "PID:",
    "UID:",
    "Signal:",
    "Timestamp:",
    "Executable:",
    "Unit:",
    "Storage:",
    "Size on Disk:",
];

/// The entry systemd-coredump made for `pid` of `unit` since `since_s` (seconds since the
/// epoch), the latest if several match (a PID comes back after a reboot), waiting up to
/// `patience` for it (it writes the core and its journal entry after the process died);
/// `None` without `coredumpctl` or when no entry came.
pub(crate) fn entry_of(
    unit: &str,
    pid: u32,
    since_s: u64,
    patience: Duration,
) -> Option<Vec<String>> {
    let coredumpctl = crate::host::process::find_executable("coredumpctl").ok()?;
    let argv = [
        coredumpctl.to_string_lossy().into_owned(),
        "--no-pager".to_owned(),
        "--quiet".to_owned(),
        "-1".to_owned(),
        format!("--since=@{since_s}"),
        "info".to_owned(),
        format!("COREDUMP_PID={pid}"),
        format!("COREDUMP_UNIT={unit}"),
    ];
    let until = Instant::now() + patience;
    loop {
        let run = crate::host::process::run_captured(&argv, Duration::from_secs(5), 256 * 1024);
        if let Ok(run) = run
            && run.status.is_some_and(|status| status.success())
        {
            let cited = cite(&run.output);
            if !cited.is_empty() {
                return Some(cited);
            }
        }
        if Instant::now() >= until {
            return None;
        }
        // systemd-coredump says nothing when it is done: its journal entry is looked for
        // again every 250 ms.
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// The lines of `coredumpctl info` output worth citing: [`FIELDS`], and the first frames of
/// the first stack trace.
fn cite(info: &str) -> Vec<String> {
    let mut cited = Vec::new();
    let mut frames = None;
    for line in info.lines() {
        let trimmed = line.trim();
        if FIELDS.iter().any(|field| trimmed.starts_with(field)) {
            cited.push(trimmed.to_owned());
        } else if trimmed.starts_with("Stack trace of thread") && frames.is_none() {
            cited.push(trimmed.to_owned());
            frames = Some(0);
        } else if let Some(count) = frames.as_mut()
            && trimmed.starts_with('#')
            && *count < MAX_FRAMES
        {
            cited.push(format!("  {trimmed}"));
            *count += 1;
        }
        if cited.len() >= MAX_LINES {
            break;
        }
    }
    cited
        .into_iter()
        .map(|line| crate::ui::terminal::cut(&crate::ui::terminal::printable(&line), LINE_CHARS))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `coredumpctl info` of systemd 252, as it prints a SIGABRT of a service.
    const INFO: &str = "           PID: 4242 (crasher)
           UID: 0 (root)
           GID: 0 (root)
        Signal: 6 (ABRT)
     Timestamp: Mon 2026-12-07 09:00:01 UTC (3s ago)
  Command Line: /usr/bin/crasher --password=hunter2
    Executable: /usr/bin/crasher
 Control Group: /system.slice/crasher.service
          Unit: crasher.service
         Slice: system.slice
       Boot ID: 0123456789abcdef0123456789abcdef
    Machine ID: fedcba9876543210fedcba9876543210
      Hostname: web1
       Storage: /var/lib/systemd/coredump/core.crasher.0.0123.4242.1765098001000000.zst (present)
  Size on Disk: 18.2K
       Message: Process 4242 (crasher) of user 0 dumped core.

                Stack trace of thread 4242:
                #0  0x00007f1c2a0a9e2c __pthread_kill_implementation (libc.so.6 + 0x8ae2c)
                #1  0x00007f1c2a05afb2 raise (libc.so.6 + 0x3bfb2)
                #2  0x00007f1c2a045472 abort (libc.so.6 + 0x26472)
                #3  0x000055d1c6f0a139 main (crasher + 0x1139)

                Stack trace of thread 4243:
                #0  0x00007f1c2a0a9e2c nanosleep (libc.so.6 + 0x8ae2c)
";

    #[test]
    fn the_entry_is_cited_without_its_command_line_and_with_the_first_frames() {
        let cited = cite(INFO);
        assert_eq!(cited[0], "PID: 4242 (crasher)");
        assert!(cited.contains(&"Signal: 6 (ABRT)".to_owned()), "{cited:#?}");
        assert!(cited.contains(&"Executable: /usr/bin/crasher".to_owned()));
        assert!(
            cited
                .iter()
                .any(|line| line.starts_with("Storage: /var/lib/systemd/coredump/"))
        );
        assert!(cited.contains(&"Stack trace of thread 4242:".to_owned()));
        assert!(
            cited
                .iter()
                .any(|line| line.contains("#2  0x00007f1c2a045472 abort"))
        );
        // Only the crashing thread's frames; no command line, no other thread.
        assert!(
            !cited.iter().any(|line| line.contains("hunter2")),
            "{cited:#?}"
        );
        assert!(
            !cited.iter().any(|line| line.contains("4243")),
            "{cited:#?}"
        );
    }
}
