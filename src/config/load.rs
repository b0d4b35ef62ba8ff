//! Reading the config: one bounded read of a file only root can write, parsed under a depth
//! and size budget, every error placed at file:line:column.

use std::fmt::Write as _;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use super::locate::{self, Located, Position};
use super::{Config, ConfigError};

impl Config {
    /// Reads, parses and validates the config at `path`. The file is opened once: the
    /// ownership check and the read are of the same descriptor, a FIFO or device is refused
    /// without blocking, and the size is capped.
    pub(crate) fn load(path: &Path) -> Result<Config, ConfigError> {
        let (bytes, metadata) =
            crate::host::bounded_read::read(path, crate::host::bounded_read::MAX_FILE_BYTES)
                .map_err(|cause| ConfigError::Read {
                    path: path.to_owned(),
                    cause,
                })?;
        refuse_if_writable_by_others(path, &metadata)?;
        let text = String::from_utf8(bytes).map_err(|err| ConfigError::Invalid {
            path: path.to_owned(),
            message: format!(
                "not UTF-8 text (invalid byte at offset {})",
                err.utf8_error().valid_up_to()
            ),
        })?;
        Config::parse(&text, path)
    }

    /// Parses and validates config text; `path` is only used in messages.
    ///
    /// The YAML parser runs under a budget (nesting, nodes, aliases, and scalar bytes counted
    /// after aliases are expanded): a small file whose anchor is referenced a thousand times
    /// is refused, not expanded into gigabytes.
    pub(crate) fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let config: Config = serde_saphyr::from_str_with_options(text, yaml_options())
            .map_err(|err| syntax_error(path, text, &err))?;
        config.validate().map_err(|problem| {
            let at = Located::parse(text, yaml_options())
                .and_then(|located| located.position_of_any(&problem.keys));
            match at {
                Some(Position { line, column }) => ConfigError::Syntax {
                    path: path.to_owned(),
                    line,
                    column,
                    message: problem.message,
                },
                None => ConfigError::Invalid {
                    path: path.to_owned(),
                    message: problem.message,
                },
            }
        })?;
        Ok(config)
    }
}

/// How deeply a config may nest (the deepest real one nests 5 levels).
pub(super) const YAML_DEPTH: usize = 32;

/// The YAML parser's limits: deep enough for any real config, far below a stack or CPU
/// problem. Scalar bytes are counted as aliases expand them.
pub(super) fn yaml_options() -> serde_saphyr::Options {
    let mut budget = serde_saphyr::Budget::default();
    budget.max_depth = YAML_DEPTH;
    budget.flow_nesting_limit = YAML_DEPTH;
    budget.max_events = 500_000;
    budget.max_nodes = 250_000;
    budget.max_aliases = 1_000;
    budget.max_anchors = 1_000;
    budget.max_documents = 1;
    budget.max_total_scalar_bytes =
        usize::try_from(crate::host::bounded_read::MAX_FILE_BYTES).unwrap_or(usize::MAX);
    let mut alias_limits = serde_saphyr::options::AliasLimits::default();
    alias_limits.max_total_replayed_events = 100_000;
    serde_saphyr::options! {
        budget: Some(budget),
        alias_limits: alias_limits,
        with_snippet: false,
    }
}

pub(super) fn syntax_error(path: &Path, text: &str, err: &serde_saphyr::Error) -> ConfigError {
    let mut message = err.without_snippet().to_string();
    if message.contains("budget breached") || message.contains("recursion limit") {
        let _ = write!(
            message,
            " (selfheal refuses configs nested deeper than {YAML_DEPTH} levels or larger than {} bytes of text once aliases are expanded)",
            crate::host::bounded_read::MAX_FILE_BYTES
        );
    }
    match err.location() {
        Some(location) => {
            let at = Position {
                line: usize::try_from(location.line()).unwrap_or(0),
                column: usize::try_from(location.column()).unwrap_or(0),
            };
            // The prefix already says where; drop the parser's own " at line L, column C".
            let mut message = message.replace(
                &format!(" at line {}, column {}", location.line(), location.column()),
                "",
            );
            // A value of the wrong type: say whose value it is ("verify_timeout: invalid
            // duration …"), as the parser only knows the position.
            if let Some(key) = Located::parse(text, yaml_options())
                .and_then(|located| located.path_at(at))
                .map(|key| locate::dotted(&key))
            {
                message = format!("{key}: {message}");
            }
            ConfigError::Syntax {
                path: path.to_owned(),
                line: at.line,
                column: at.column,
                message,
            }
        }
        None => ConfigError::Invalid {
            path: path.to_owned(),
            message,
        },
    }
}

/// Refuses a config that someone other than root could have written, when we run as root.
/// `metadata` is that of the descriptor the config was read from.
pub(super) fn refuse_if_writable_by_others(
    path: &Path,
    metadata: &std::fs::Metadata,
) -> Result<(), ConfigError> {
    if !nix::unistd::geteuid().is_root() {
        return Ok(());
    }
    let insecure = |why: String| ConfigError::Insecure {
        path: path.to_owned(),
        why,
    };
    if metadata.uid() != 0 {
        return Err(insecure(format!("owned by uid {}", metadata.uid())));
    }
    if metadata.mode() & 0o022 != 0 {
        return Err(insecure(format!(
            "writable by group or others (mode {:04o})",
            metadata.mode() & 0o7777
        )));
    }
    Ok(())
}
