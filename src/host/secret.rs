//! Secrets kept in files (the SMTP password, a webhook's URL): readable by root alone, read
//! whole, never echoed. An error names the file and what is wrong with it, never its content.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// Reads the secret in `path`: a file owned by the user selfheal runs as, that neither group
/// nor others can read, not empty. Trailing newlines are not part of the secret.
pub(crate) fn read_root_only(path: &Path) -> Result<String, String> {
    // The checks are of the descriptor that was read: no swap between check and read.
    let (bytes, metadata) = crate::host::bounded_read::read(path, MAX_SECRET_BYTES)
        .map_err(|err| format!("cannot read {}: {err}", path.display()))?;
    let euid = nix::unistd::geteuid().as_raw();
    if metadata.uid() != euid {
        return Err(format!(
            "refusing {}: it is owned by uid {}, not by uid {euid} that selfheal runs as (chown root {0})",
            path.display(),
            metadata.uid()
        ));
    }
    if metadata.mode() & 0o077 != 0 {
        return Err(format!(
            "refusing {}: its mode {:04o} lets group or others read it (chmod 600 {0})",
            path.display(),
            metadata.mode() & 0o7777
        ));
    }
    secret_text(path, bytes)
}

/// Reads a secret without the ownership check (a systemd credential, which systemd made
/// private to the unit).
pub(crate) fn read(path: &Path) -> Result<String, String> {
    let (bytes, _) = crate::host::bounded_read::read(path, MAX_SECRET_BYTES)
        .map_err(|err| format!("cannot read {}: {err}", path.display()))?;
    secret_text(path, bytes)
}

fn secret_text(path: &Path, bytes: Vec<u8>) -> Result<String, String> {
    let text =
        String::from_utf8(bytes).map_err(|_| format!("{} is not UTF-8 text", path.display()))?;
    let secret = text.trim_end_matches(['\n', '\r']).to_owned();
    if secret.is_empty() {
        return Err(format!("{} is empty", path.display()));
    }
    Ok(secret)
}

/// A password or a URL with a token is far below this.
const MAX_SECRET_BYTES: u64 = 64 * 1024;

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_readable_or_empty_file_is_refused_without_showing_its_content() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("url");
        std::fs::write(&path, "https://hooks.example/T0/SECRET\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let refused = read_root_only(&path).unwrap_err();
        assert!(refused.contains("mode 0644"), "{refused}");
        assert!(!refused.contains("SECRET"), "{refused}");

        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(
            read_root_only(&path).unwrap(),
            "https://hooks.example/T0/SECRET"
        );
        std::fs::write(&path, "\n").unwrap();
        assert!(read_root_only(&path).unwrap_err().ends_with("is empty"));
    }
}
