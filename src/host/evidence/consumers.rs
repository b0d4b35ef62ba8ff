//! The largest processes by memory: on the host, for a report of an OOM kill ("what ate the
//! memory"), each with the unit it belongs to.

use serde::Serialize;

/// A process and its resident memory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct Consumer {
    pub pid: u32,
    /// Its name (`comm`), printable.
    pub name: String,
    pub rss_bytes: u64,
    /// The unit its cgroup is (`mysql.service`, `session-3.scope`), when it is one.
    pub unit: Option<String>,
}

/// The `count` processes of the host with the most resident memory, largest first.
pub(crate) fn largest_on_host(count: usize) -> Vec<Consumer> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let page = super::process::page_size();
    let mut all: Vec<(u64, u32)> = entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| {
            // statm: size resident shared … (pages); no lock of the process' memory is taken.
            let statm = std::fs::read_to_string(format!("/proc/{pid}/statm")).ok()?;
            let resident: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
            Some((resident.saturating_mul(page), pid))
        })
        .collect();
    all.sort_unstable_by(|a, b| b.cmp(a));
    all.into_iter()
        .take(count)
        .filter_map(|(rss_bytes, pid)| {
            let name = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
            Some(Consumer {
                pid,
                name: super::bounded(name.trim_end(), 64),
                rss_bytes,
                unit: unit_of(pid),
            })
        })
        .collect()
}

/// The system unit whose cgroup `pid` is in (`mysql.service`, `session-3.scope`): the first
/// part after the root and the slices, as a port's holder is attributed, so that a delegated
/// subtree naming itself `sshd.service` is not sshd's.
fn unit_of(pid: u32) -> Option<String> {
    let cgroups = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    let path = cgroups
        .lines()
        .find_map(|line| line.strip_prefix("0::"))
        .or_else(|| {
            cgroups
                .lines()
                .find_map(|line| line.split_once(":name=systemd:").map(|(_, path)| path))
        })?;
    crate::host::ports::unit_of(path).map(|unit| super::bounded(unit, 128))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_largest_processes_of_the_host_are_listed_largest_first() {
        let largest = largest_on_host(3);
        assert!(!largest.is_empty());
        assert!(largest.len() <= 3);
        assert!(
            largest
                .windows(2)
                .all(|pair| pair[0].rss_bytes >= pair[1].rss_bytes),
            "{largest:?}"
        );
        assert!(largest[0].rss_bytes > 0, "{largest:?}");
    }
}
