//! The kernel's log (`/dev/kmsg`), read for one fact a unit's own facts may miss: that the OOM
//! killer ended a process of the unit. Where the memory controller cannot tell systemd
//! (cgroup v1, some containers), systemd says `Result=signal` and SIGKILL; the kernel's
//! `oom-kill:` line names the cgroup and the task.

use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;

/// An OOM kill the kernel logged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct OomKill {
    /// The process' name (`task=`).
    pub task: String,
    /// Its PID as the kernel saw it (`pid=`).
    pub pid: u32,
}

/// The last OOM kill in `unit`'s cgroup (a component of `task_memcg` is `unit`) logged at or
/// after `since_us` (µs of CLOCK_MONOTONIC, as the kernel stamps its records); `None` when
/// there is none or the log cannot be read.
pub(crate) fn oom_kill_in(unit: &str, since_us: u64) -> Option<OomKill> {
    let mut kmsg = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NONBLOCK)
        .open("/dev/kmsg")
        .ok()?;
    let mut found = None;
    let mut record = vec![0u8; 8192];
    // One record per read; EAGAIN at the end, EPIPE when the reader fell behind a wrap.
    for _ in 0..100_000 {
        let size = match kmsg.read(&mut record) {
            Ok(0) => break,
            Ok(size) => size,
            Err(err) if err.raw_os_error() == Some(nix::libc::EPIPE) => continue,
            Err(_) => break,
        };
        let text = String::from_utf8_lossy(&record[..size]);
        if let Some(kill) = parse(&text, unit, since_us) {
            found = Some(kill);
        }
    }
    found
}

/// One `/dev/kmsg` record (`prio,seq,µs,flags;message`), if it is an `oom-kill:` line for
/// `unit` at or after `since_us`.
fn parse(record: &str, unit: &str, since_us: u64) -> Option<OomKill> {
    let (header, message) = record.split_once(';')?;
    let stamp: u64 = header.split(',').nth(2)?.parse().ok()?;
    let fields = message.lines().next()?.strip_prefix("oom-kill:")?;
    if stamp < since_us {
        return None;
    }
    let field = |name: &str| {
        fields
            .split(',')
            .find_map(|pair| pair.strip_prefix(name)?.strip_prefix('='))
    };
    let in_unit = field("task_memcg")?.split('/').any(|part| part == unit);
    in_unit.then(|| OomKill {
        task: field("task").unwrap_or_default().to_owned(),
        pid: field("pid").and_then(|pid| pid.parse().ok()).unwrap_or(0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const LINE: &str = "6,1234,12683911571,-;oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=/,mems_allowed=0,oom_memcg=/ns/system.slice/hog.service,task_memcg=/ns/system.slice/hog.service,task=tail,pid=5375,uid=0\n";

    #[test]
    fn reads_the_kernels_oom_kill_line_for_the_unit() {
        assert_eq!(
            parse(LINE, "hog.service", 12_000_000_000),
            Some(OomKill {
                task: "tail".into(),
                pid: 5375
            })
        );
    }

    #[test]
    fn another_unit_an_older_kill_and_other_lines_are_not_it() {
        assert_eq!(parse(LINE, "og.service", 0), None, "whole components only");
        assert_eq!(
            parse(LINE, "hog.service", 12_683_911_572),
            None,
            "before the run"
        );
        assert_eq!(
            parse("6,1,5,-;Killed process 5 (x)\n", "hog.service", 0),
            None
        );
    }
}
