//! The kernel's log (`/dev/kmsg`), read for one fact a unit's own facts may miss: that the OOM
//! killer ended a process of the unit. Where the memory controller cannot tell systemd
//! (cgroup v1, some containers), systemd says `Result=signal` and SIGKILL; the kernel's
//! `oom-kill:` line names the cgroup and the task.

use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;

use crate::host::evidence::Consumer;

/// An OOM kill the kernel logged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct OomKill {
    /// The process' name (`task=`).
    pub task: String,
    /// Its PID as the kernel saw it (`pid=`).
    pub pid: u32,
    /// The largest tasks of the cgroup the kernel listed before it chose (its "Tasks
    /// state" table, `vm.oom_dump_tasks=1`), largest first.
    pub consumers: Vec<Consumer>,
    /// Where the kernel's table was of: "in its cgroup", "in system.slice, whose limit was
    /// hit", "on the host".
    pub listed: String,
}

/// How many of the kernel's listed tasks are kept.
const CONSUMERS: usize = 3;

/// The last OOM kill in the system unit `unit`'s cgroup (or below it) logged within
/// `window` (µs of CLOCK_MONOTONIC: from the main process' start to its exit, or open-ended
/// while it has none); `None` when there is none or the log cannot be read (which is said in
/// the journal).
pub(crate) fn oom_kill_in(unit: &str, window: (u64, Option<u64>)) -> Option<OomKill> {
    // The kernel stamps its records with its scheduler clock, which drifts from
    // CLOCK_MONOTONIC (NTP slews one and not the other; a resumed VM): 13 ms after 12 hours
    // on one host, more on others, and an OOM kill comes a few ms after the start. The window
    // is moved onto the kernel's clock, with a little slack for the drift since the start;
    // where the drift cannot be measured, a second of slack.
    let (offset, slack) = match clock_offset_us() {
        Some(offset) => (offset, MEASURED_SLACK_US),
        None => (0, UNMEASURED_SLACK_US),
    };
    let since_us = window.0.saturating_add_signed(offset).saturating_sub(slack);
    let until_us = window.1.map_or(u64::MAX, |until| {
        until.saturating_add_signed(offset).saturating_add(slack)
    });
    let mut kmsg = match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NONBLOCK)
        .open("/dev/kmsg")
    {
        Ok(kmsg) => kmsg,
        Err(err) => {
            tracing::warn!(
                "the kernel's log (/dev/kmsg) cannot be read, so an OOM kill systemd saw as a SIGKILL is not named: {err} (kernel.dmesg_restrict=1 needs CAP_SYSLOG)"
            );
            return None;
        }
    };
    let mut found = None;
    let mut tasks = TaskTable::default();
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
        tasks.read(&text);
        if let Some(mut kill) = parse(&text, unit, (since_us, until_us)) {
            kill.consumers = tasks.largest();
            found = Some(kill);
        }
        // A table belongs to the one kill it precedes.
        if text
            .split_once(';')
            .is_some_and(|(_, message)| message.starts_with("oom-kill:"))
        {
            tasks.rows.clear();
        }
    }
    found
}

/// How far a window is widened when the kernel's clock cannot be measured against
/// CLOCK_MONOTONIC, and when it was (the drift since the start: NTP slews ≤ 500 ppm).
const UNMEASURED_SLACK_US: u64 = 1_000_000;
const MEASURED_SLACK_US: u64 = 20_000;

/// How far the kernel log's clock is ahead of CLOCK_MONOTONIC, in µs (negative: behind),
/// measured by logging one line and reading its stamp back; `None` when the log cannot be
/// written (a container without /dev/kmsg).
fn clock_offset_us() -> Option<i64> {
    let mut kmsg = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(nix::libc::O_NONBLOCK)
        .open("/dev/kmsg")
        .ok()?;
    // Reading starts at the record after the last one: the line written next.
    std::io::Seek::seek(&mut kmsg, std::io::SeekFrom::End(0)).ok()?;
    let marker = format!(
        "selfheal[{}]: reading the kernel's log for an OOM kill",
        std::process::id()
    );
    let before = monotonic_us()?;
    std::io::Write::write_all(&mut kmsg, format!("<14>{marker}\n").as_bytes()).ok()?;
    let after = monotonic_us()?;
    let mut record = vec![0u8; 8192];
    // Another writer's record may come first.
    for _ in 0..64 {
        let size = kmsg.read(&mut record).ok()?;
        let text = String::from_utf8_lossy(&record[..size]);
        let Some((header, message)) = text.split_once(';') else {
            continue;
        };
        if message.trim_end() == marker {
            let stamp: i64 = header.split(',').nth(2)?.parse().ok()?;
            return Some(stamp - i64::midpoint(before, after));
        }
    }
    None
}

/// CLOCK_MONOTONIC in µs.
fn monotonic_us() -> Option<i64> {
    let now = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).ok()?;
    Some(now.tv_sec() * 1_000_000 + now.tv_nsec() / 1_000)
}

/// One `/dev/kmsg` record (`prio,seq,µs,flags;message`), if it is an `oom-kill:` line for
/// `unit` stamped within `window` (on the kernel's clock).
fn parse(record: &str, unit: &str, window: (u64, u64)) -> Option<OomKill> {
    let (header, message) = record.split_once(';')?;
    let stamp: u64 = header.split(',').nth(2)?.parse().ok()?;
    let fields = message.lines().next()?.strip_prefix("oom-kill:")?;
    if stamp < window.0 || stamp > window.1 {
        return None;
    }
    let field = |name: &str| {
        fields
            .split(',')
            .find_map(|pair| pair.strip_prefix(name)?.strip_prefix('='))
    };
    let in_unit = memcg_within(field("task_memcg")?, unit);
    // The kernel's table lists the tasks of the cgroup whose limit was hit, or of the whole
    // host when the host ran out.
    let listed = match (field("constraint"), field("oom_memcg")) {
        (Some("CONSTRAINT_MEMCG"), Some(memcg)) if memcg_within(memcg, unit) => {
            "in its cgroup".to_owned()
        }
        (Some("CONSTRAINT_MEMCG"), Some(memcg)) => format!(
            "in {}, whose limit was hit",
            crate::ui::terminal::printable(memcg.rsplit('/').next().unwrap_or(memcg))
        ),
        _ => "on the host".to_owned(),
    };
    in_unit.then(|| OomKill {
        task: field("task").unwrap_or_default().to_owned(),
        pid: field("pid").and_then(|pid| pid.parse().ok()).unwrap_or(0),
        consumers: Vec::new(),
        listed,
    })
}

/// The kernel's last "Tasks state" table: a header record (`[  pid  ]   uid  tgid total_vm
/// rss … name`; its columns differ between kernels) and one record per task.
#[derive(Default)]
struct TaskTable {
    /// The indexes of `pid`, `rss` (pages) and `name`, once the header was read.
    columns: Option<(usize, usize, usize)>,
    rows: Vec<Consumer>,
}

impl TaskTable {
    /// Takes in one record: a new table starts at its header.
    fn read(&mut self, record: &str) {
        let Some(message) = record.split_once(';').and_then(|(_, m)| m.lines().next()) else {
            return;
        };
        if !message.starts_with('[') {
            return;
        }
        let cells: Vec<&str> = message
            .split(|c: char| c == '[' || c == ']' || c.is_whitespace())
            .filter(|cell| !cell.is_empty())
            .collect();
        if cells.first() == Some(&"pid") {
            let at = |name: &str| cells.iter().position(|cell| *cell == name);
            self.columns = at("pid")
                .zip(at("rss"))
                .zip(at("name"))
                .map(|((p, r), n)| (p, r, n));
            self.rows.clear();
            return;
        }
        let Some((pid, rss, name)) = self.columns else {
            return;
        };
        let row = || {
            Some(Consumer {
                pid: cells.get(pid)?.parse().ok()?,
                name: crate::ui::terminal::printable(cells.get(name)?).into_owned(),
                rss_bytes: cells
                    .get(rss)?
                    .parse::<u64>()
                    .ok()?
                    .saturating_mul(crate::host::evidence::page_size()),
                unit: None,
            })
        };
        if self.rows.len() < 100_000
            && let Some(row) = row()
        {
            self.rows.push(row);
        }
    }

    /// The largest rows, largest first.
    fn largest(&self) -> Vec<Consumer> {
        let mut rows = self.rows.clone();
        rows.sort_by_key(|row| std::cmp::Reverse(row.rss_bytes));
        rows.truncate(CONSUMERS);
        rows
    }
}

/// Whether the kernel's `task_memcg` is the system unit's cgroup or below it: a component is
/// `unit`, and none before it is another unit (`.service`, `.scope`), only slices and the
/// root of a cgroup namespace (a container, the tests' sandbox: the kernel names cgroups from
/// the host's root). A user's delegated tree (`…/user@65534.service/app.slice/web.service`) or
/// a container's (`…/machine-x.scope/…`) is not the system's `web.service`. (The unit's own
/// `ControlGroup` is empty once it is dead, when this is asked.)
fn memcg_within(task_memcg: &str, unit: &str) -> bool {
    let mut parts = task_memcg.split('/');
    !unit.is_empty()
        && parts
            .by_ref()
            .take_while(|part| *part != unit)
            .all(|part| !matches!(part.rsplit_once('.'), Some((_, "service" | "scope"))))
        && task_memcg.split('/').any(|part| part == unit)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LINE: &str = "6,1234,12683911571,-;oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=/,mems_allowed=0,oom_memcg=/ns/system.slice/hog.service,task_memcg=/ns/system.slice/hog.service,task=tail,pid=5375,uid=0\n";

    #[test]
    fn reads_the_kernels_oom_kill_line_for_the_unit() {
        assert_eq!(
            parse(LINE, "hog.service", (12_000_000_000, u64::MAX)),
            Some(OomKill {
                task: "tail".into(),
                pid: 5375,
                consumers: Vec::new(),
                listed: "in its cgroup".into(),
            })
        );
    }

    #[test]
    fn another_unit_an_older_kill_and_other_lines_are_not_it() {
        assert_eq!(
            parse(LINE, "og.service", (0, u64::MAX)),
            None,
            "whole components only"
        );
        assert_eq!(
            parse(LINE, "hog.service", (12_683_911_572, u64::MAX)),
            None,
            "before the run"
        );
        assert_eq!(
            parse(LINE, "hog.service", (0, 12_683_911_570)),
            None,
            "after its exit (the next instance's)"
        );
        assert_eq!(
            parse(
                "6,1,5,-;Killed process 5 (x)\n",
                "/system.slice/hog.service",
                (0, u64::MAX)
            ),
            None
        );
    }

    /// The kernel's table before the kill, in two kernels' columns, gives the largest tasks.
    #[test]
    fn the_tasks_the_kernel_listed_are_read_largest_first() {
        for header in [
            "[  pid  ]   uid  tgid total_vm      rss pgtables_bytes swapents oom_score_adj name",
            "[  pid  ]   uid  tgid total_vm      rss rss_anon rss_file rss_shmem pgtables_bytes swapents oom_score_adj name",
        ] {
            let extra = if header.contains("rss_anon") {
                " 0 0 0"
            } else {
                ""
            };
            let mut table = TaskTable::default();
            table.read("6,1,5,-;Tasks state (memory values in pages):\n");
            table.read(&format!("6,2,5,-;{header}\n"));
            table.read(&format!("6,3,5,-;[    801]     0   801     9000      100{extra}    57344        0             0 sh\n"));
            table.read(&format!("6,4,5,-;[    802]     0   802    90000     4000{extra}    57344        0             0 leaky\n"));
            let largest = table.largest();
            assert_eq!(largest.len(), 2, "{header}");
            assert_eq!((largest[0].pid, largest[0].name.as_str()), (802, "leaky"));
            assert_eq!(
                largest[0].rss_bytes,
                4000 * crate::host::evidence::page_size()
            );
            assert_eq!(largest[1].name, "sh");
        }
    }

    /// M9: a nobody user's OOM kill in a cgroup named like the unit is not the unit's.
    #[test]
    fn only_the_units_own_cgroup_counts() {
        let unit = "web.service";
        assert!(memcg_within("/system.slice/web.service", unit));
        assert!(memcg_within("/system.slice/web.service/worker", unit));
        assert!(memcg_within("/sandbox-7/system.slice/web.service", unit));
        assert!(!memcg_within(
            "/user.slice/user-65534.slice/user@65534.service/app.slice/web.service",
            unit
        ));
        assert!(!memcg_within(
            "/user.slice/user-1000.slice/user@1000.service/system.slice/web.service",
            unit
        ));
        assert!(!memcg_within("/system.slice/web.service2", unit));
        assert!(!memcg_within(
            "/machine.slice/machine-c1.scope/system.slice/web.service",
            unit
        ));
        assert!(!memcg_within("/system.slice/web.service", ""));
    }
}
