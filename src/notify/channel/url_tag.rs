//! Which URL a queued webhook message was meant for, without the URL: an HMAC-SHA256 of it
//! under a key of this host's (`<state>/outbox/.url-key`, root-only, made on first use). A
//! message queued for one URL is never sent to another: a URL file can be given a new URL
//! while messages wait (the Ansible role names its files by position in `selfheal_notify`),
//! and a report with a service's journal lines must not reach another team's hook.

use std::io::Write as _;

use ring::rand::SecureRandom as _;

use super::ChannelError;
use crate::host::file_error::FileError;
use crate::host::hex;
use crate::state::StateDir;

/// The key's file in the outbox.
const KEY_FILE: &str = ".url-key";

/// `url`'s tag: 128 bits of its HMAC under this host's key, in hex.
pub(crate) fn tag(state: &StateDir, url: &str) -> Result<String, ChannelError> {
    let key = key(state)?;
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key.as_bytes());
    Ok(hex(&ring::hmac::sign(&key, url.as_bytes()).as_ref()[..16]))
}

/// The key, made when there is none: 256 random bits, in hex, in a root-only file.
fn key(state: &StateDir) -> Result<String, ChannelError> {
    let dir = state.ensure("outbox")?;
    let path = dir.join(KEY_FILE);
    match std::fs::symlink_metadata(&path) {
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
        _ => return crate::host::secret::read_root_only(&path).map_err(ChannelError::Secret),
    }
    let mut bytes = [0_u8; 32];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| ChannelError::NoRandom)?;
    let written = tempfile::NamedTempFile::new_in(&dir).and_then(|mut file| {
        file.write_all(hex(&bytes).as_bytes())?;
        file.as_file().sync_all()?;
        Ok(file)
    });
    let made = written.map_err(FileError::of("writing the key in", &dir))?;
    // Two first users at once: the first key linked in place is the one both read back.
    match made.persist_noclobber(&path) {
        Err(err) if err.error.kind() != std::io::ErrorKind::AlreadyExists => {
            return Err(FileError::of("writing", &path)(err.error).into());
        }
        _ => {}
    }
    crate::host::secret::read_root_only(&path).map_err(ChannelError::Secret)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tag_names_its_url_under_one_key_and_does_not_show_it() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::new(dir.path().join("state"));
        let slack = "https://hooks.slack.example/services/T0/B1/s3cr3t";
        let first = tag(&state, slack).unwrap();
        assert_eq!(first.len(), 32);
        assert_eq!(
            tag(&state, slack).unwrap(),
            first,
            "one key per state directory"
        );
        assert_ne!(tag(&state, "https://ntfy.example/ops").unwrap(), first);
        let key = std::fs::read_to_string(dir.path().join("state/outbox/.url-key")).unwrap();
        assert!(!key.contains("s3cr3t") && !first.contains("s3cr3t"));
        // Another host (another key) tags the same URL otherwise.
        let other = StateDir::new(dir.path().join("other"));
        assert_ne!(tag(&other, slack).unwrap(), first);
    }
}
