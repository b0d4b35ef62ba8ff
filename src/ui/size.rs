//! Sizes as people read them: `45.0 MiB` in reports, `40M` where systemd's own spelling of a
//! setting is quoted (`MemoryMax=40M`).

/// A byte count as people read it: 47185920 → `45.0 MiB`.
pub(crate) fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// A size as a unit file writes it: 41943040 → `40M`, 1073741824 → `1G`; a size that is no
/// whole number of K is written in bytes.
pub(crate) fn systemd_size(bytes: u64) -> String {
    for (shift, suffix) in [(40, "T"), (30, "G"), (20, "M"), (10, "K")] {
        let unit = 1u64 << shift;
        if bytes >= unit && bytes.is_multiple_of(unit) {
            return format!("{}{suffix}", bytes / unit);
        }
    }
    bytes.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_read_in_binary_units() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(47_185_920), "45.0 MiB");
    }

    #[test]
    fn limits_read_as_a_unit_file_writes_them() {
        assert_eq!(systemd_size(40 << 20), "40M");
        assert_eq!(systemd_size(1 << 30), "1G");
        assert_eq!(systemd_size(1536 << 10), "1536K");
        assert_eq!(systemd_size(1000), "1000");
    }
}
