//! The bearer token Alertmanager must send: read once from a file only root can read or
//! change, compared in constant time, never printed.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// The longest token file read (a token is a few dozen bytes).
const MAX_TOKEN_BYTES: u64 = 4096;

/// The token. Its `Debug` hides it: it never reaches a log line.
pub(crate) struct Token(Vec<u8>);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(hidden)")
    }
}

impl Token {
    /// Reads `path`: a regular file, not reached through a link, owned by the user selfheal
    /// runs as (root) that no one else can read or write, in a directory only that user can
    /// change; it holds one token (surrounding whitespace and the final newline are not part
    /// of it). The checks are made on the file that is read.
    pub(crate) fn read(path: &Path) -> Result<Token, String> {
        use std::io::Read as _;
        use std::os::unix::fs::OpenOptionsExt as _;
        let shown = path.display();
        let me = nix::unistd::geteuid().as_raw();
        let fix = format!("chown root:root {shown} && chmod 600 {shown}");
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(path)
            .map_err(|err| match err.raw_os_error() {
                Some(libc::ELOOP) => {
                    format!("refusing the token file {shown}: it is a symbolic link")
                }
                _ => format!("cannot read the token file {shown}: {err}"),
            })?;
        let meta = file
            .metadata()
            .map_err(|err| format!("cannot read the token file {shown}: {err}"))?;
        if !meta.file_type().is_file() {
            return Err(format!("the token file {shown} is not a regular file"));
        }
        if meta.uid() != me || meta.mode() & 0o077 != 0 {
            return Err(format!(
                "refusing the token file {shown}: only root may read it ({fix})"
            ));
        }
        let parent = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let dir = std::fs::metadata(parent).map_err(|err| {
            format!(
                "cannot read the token file's directory {}: {err}",
                parent.display()
            )
        })?;
        if dir.uid() != me || dir.mode() & 0o022 != 0 {
            return Err(format!(
                "refusing the token file {shown}: others can change its directory {} (chown root {0} && chmod go-w {0})",
                parent.display()
            ));
        }
        let mut bytes = Vec::new();
        file.take(MAX_TOKEN_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(|err| format!("cannot read the token file {shown}: {err}"))?;
        if bytes.len() as u64 > MAX_TOKEN_BYTES {
            return Err(format!(
                "the token file {shown} is larger than {MAX_TOKEN_BYTES} bytes"
            ));
        }
        let token = bytes.trim_ascii();
        if token.is_empty() {
            return Err(format!("the token file {shown} is empty"));
        }
        if token.iter().any(|byte| !byte.is_ascii_graphic()) {
            return Err(format!(
                "the token in {shown} has spaces or control characters (an HTTP header cannot carry them)"
            ));
        }
        Ok(Token(token.to_vec()))
    }

    /// True when `authorization` (the header's value) is `Bearer <this token>`. The time taken
    /// does not depend on how much of the token matches.
    pub(crate) fn admits(&self, authorization: Option<&str>) -> bool {
        let Some(offered) = authorization.and_then(|value| {
            let (scheme, token) = value.trim().split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
        }) else {
            return false;
        };
        constant_time_eq(offered.as_bytes(), &self.0)
    }
}

/// Equal bytes, compared without an early exit (only the lengths are compared at once: the
/// length of a token is no secret worth a timing defence).
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let difference = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(difference) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn token_file(contents: &str, mode: u32) -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, contents).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        (dir, path)
    }

    #[test]
    fn only_bearer_with_the_exact_token_is_admitted() {
        let (_dir, path) = token_file("s3cret-token\n", 0o600);
        let token = Token::read(&path).unwrap();
        assert!(token.admits(Some("Bearer s3cret-token")));
        assert!(token.admits(Some("bearer s3cret-token")));
        for refused in [
            None,
            Some(""),
            Some("Bearer"),
            Some("Bearer s3cret-toke"),
            Some("Bearer s3cret-tokenX"),
            Some("Basic s3cret-token"),
            Some("s3cret-token"),
        ] {
            assert!(!token.admits(refused), "{refused:?}");
        }
        assert_eq!(format!("{token:?}"), "Token(hidden)");
    }

    #[test]
    fn a_token_file_others_can_read_or_an_empty_one_is_refused() {
        let (_dir, path) = token_file("s3cret", 0o644);
        let err = Token::read(&path).unwrap_err();
        assert!(err.contains("only root may read it"), "{err}");
        assert!(!err.contains("s3cret"), "{err}");
        let (_dir, path) = token_file(" \n", 0o600);
        assert!(Token::read(&path).unwrap_err().contains("is empty"));
        let (_dir, path) = token_file("two words", 0o600);
        assert!(Token::read(&path).unwrap_err().contains("spaces"));
        let (dir, path) = token_file("s3cret", 0o600);
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&path, &link).unwrap();
        assert!(Token::read(&link).unwrap_err().contains("symbolic link"));
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        assert!(
            Token::read(&path)
                .unwrap_err()
                .contains("others can change its directory")
        );
    }
}
