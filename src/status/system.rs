//! The host at a glance, for the dashboard: uptime, load, memory, and the disks of `/` and
//! of the state directory. Read from /proc and statvfs; nothing here can block.

use std::path::Path;

use serde::Serialize;

/// The host's vital signs.
#[derive(Debug, Clone, Serialize, Default)]
pub(crate) struct SystemOverview {
    pub uptime_seconds: Option<u64>,
    /// 1, 5 and 15 minute load averages.
    pub load: Option<[f64; 3]>,
    pub memory: Option<Usage>,
    /// `/` first, then the state directory's filesystem when it is another one.
    pub disks: Vec<DiskUsage>,
}

/// Used and total bytes.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
pub(crate) struct Usage {
    pub used_bytes: u64,
    pub total_bytes: u64,
    pub percent: u8,
}

impl Usage {
    fn new(used_bytes: u64, total_bytes: u64) -> Usage {
        let percent = (used_bytes * 100)
            .checked_div(total_bytes)
            .map_or(0, |p| u8::try_from(p.min(100)).unwrap_or(100));
        Usage {
            used_bytes,
            total_bytes,
            percent,
        }
    }
}

/// One filesystem's usage, by a path on it.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct DiskUsage {
    pub path: String,
    #[serde(flatten)]
    pub usage: Usage,
}

impl SystemOverview {
    /// Reads it now; a figure that cannot be read is left out, never guessed.
    pub(crate) fn read(state_dir: &Path) -> SystemOverview {
        let uptime_seconds = std::fs::read_to_string("/proc/uptime")
            .ok()
            .and_then(|text| parse_uptime(&text));
        let load = std::fs::read_to_string("/proc/loadavg")
            .ok()
            .and_then(|text| parse_loadavg(&text));
        let memory = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|text| parse_meminfo(&text));
        let mut disks = Vec::new();
        let root = disk("/");
        if let Some(root) = root.clone() {
            disks.push(root);
        }
        // The state directory may not exist yet; its nearest existing parent tells the same.
        let state = state_dir
            .ancestors()
            .find(|dir| dir.exists())
            .and_then(|dir| disk(&dir.to_string_lossy()).map(|usage| (dir, usage)));
        if let Some((dir, usage)) = state {
            let same_fs = root.as_ref().is_some_and(|root| {
                device_of(Path::new("/")) == device_of(dir) && root.usage == usage.usage
            });
            if !same_fs {
                disks.push(DiskUsage {
                    path: state_dir.display().to_string(),
                    usage: usage.usage,
                });
            }
        }
        SystemOverview {
            uptime_seconds,
            load,
            memory,
            disks,
        }
    }
}

fn device_of(path: &Path) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| m.dev())
}

/// A disk's use by the one rule the reports use too (`host::disk`), which is df's: used is
/// what is not free, and Use% is used of what a writer can have (used + available), so a disk
/// whose reserve is all that is left reads 100 %.
fn disk(path: &str) -> Option<DiskUsage> {
    let usage = crate::host::disk::usage(Path::new(path))?;
    Some(DiskUsage {
        path: path.to_owned(),
        usage: Usage {
            used_bytes: usage.used_bytes,
            total_bytes: usage.size_bytes,
            percent: u8::try_from(usage.percent_used().min(100)).unwrap_or(100),
        },
    })
}

fn parse_uptime(text: &str) -> Option<u64> {
    let seconds: f64 = text.split_whitespace().next()?.parse().ok()?;
    // Whole seconds of a non-negative uptime: the truncation is the point.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    Some(seconds.max(0.0) as u64)
}

fn parse_loadavg(text: &str) -> Option<[f64; 3]> {
    let mut fields = text.split_whitespace().map(str::parse::<f64>);
    Some([
        fields.next()?.ok()?,
        fields.next()?.ok()?,
        fields.next()?.ok()?,
    ])
}

/// Used memory as `free` counts it: total minus available.
fn parse_meminfo(text: &str) -> Option<Usage> {
    let kib = |key: &str| {
        text.lines()
            .find_map(|line| line.strip_prefix(key))
            .and_then(|rest| {
                rest.trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse::<u64>()
                    .ok()
            })
            .map(|kib| kib * 1024)
    };
    let total = kib("MemTotal:")?;
    let available = kib("MemAvailable:")?;
    Some(Usage::new(total.saturating_sub(available), total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_procs_formats() {
        assert_eq!(parse_uptime("445231.52 880123.10\n"), Some(445_231));
        assert_eq!(
            parse_loadavg("0.15 0.23 0.31 1/523 12345\n"),
            Some([0.15, 0.23, 0.31])
        );
        let meminfo = "MemTotal:       32000000 kB\nMemFree:         1000000 kB\nMemAvailable:   24000000 kB\n";
        let memory = parse_meminfo(meminfo).unwrap();
        assert_eq!(memory.total_bytes, 32_000_000 * 1024);
        assert_eq!(memory.used_bytes, 8_000_000 * 1024);
        assert_eq!(memory.percent, 25);
    }

    #[test]
    fn reads_this_host() {
        let overview = SystemOverview::read(Path::new("/var/lib/selfheal-nonexistent"));
        assert!(overview.uptime_seconds.is_some_and(|s| s > 0));
        assert!(overview.memory.is_some_and(|m| m.total_bytes > 0));
        assert_eq!(overview.disks[0].path, "/");
    }

    /// One disk-usage rule, df's: the dashboard's Use% of / is what `df` prints (which counts
    /// root's reserve out of what a writer can have), and what a report says of a full disk.
    #[test]
    fn the_dashboards_disk_use_is_dfs() {
        let df = std::process::Command::new("df")
            .args(["--output=pcent", "/"])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&df.stdout);
        let df_percent: u8 = text
            .lines()
            .nth(1)
            .unwrap()
            .trim()
            .trim_end_matches('%')
            .parse()
            .unwrap();
        let ours = disk("/").unwrap().usage.percent;
        // (A write between the two looks may move it by one.)
        assert!(
            ours.abs_diff(df_percent) <= 1,
            "df {df_percent} %, ours {ours} %"
        );
        let report_rule = crate::host::disk::usage(Path::new("/"))
            .unwrap()
            .percent_used();
        assert_eq!(u64::from(ours), report_rule);
    }
}
