//! The config file as the long-running commands (`serve`, `controller`)
//! read it: loaded once at start, then read again every reload interval
//! and applied when its bytes changed. One place, so the webhook and the
//! claim controller can never disagree on what a valid file is.

use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::config::Config;

/// Reads and parses `path`: the config and the bytes it came from.
pub fn load(path: &Path) -> anyhow::Result<(Config, Vec<u8>)> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    Ok((parse(path, &bytes)?, bytes))
}

/// Parses the bytes of the file at `path` (named in the error).
pub fn parse(path: &Path, bytes: &[u8]) -> anyhow::Result<Config> {
    let text =
        std::str::from_utf8(bytes).with_context(|| format!("{} is not UTF-8", path.display()))?;
    Config::from_yaml(text).with_context(|| format!("{}", path.display()))
}

/// A config file and the bytes last seen in it.
#[derive(Debug, Clone)]
pub struct Watched {
    pub path: PathBuf,
    seen: Vec<u8>,
}

impl Watched {
    /// `seen`: the bytes [`load`] returned, so an unchanged file is not
    /// reported as a change.
    pub fn new(path: PathBuf, seen: Vec<u8>) -> Watched {
        Watched { path, seen }
    }

    /// Reads the file again: `None` when its bytes are unchanged (or it
    /// cannot be read, as a ConfigMap volume mid-update may not be), else
    /// the new config or why it is refused. A refused file is reported
    /// once, not on every call, until it changes again.
    pub fn changed(&mut self) -> Option<anyhow::Result<Config>> {
        let bytes = std::fs::read(&self.path).ok().filter(|b| *b != self.seen)?;
        let parsed = parse(&self.path, &bytes);
        self.seen = bytes;
        Some(parsed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_change_is_reported_once_and_an_invalid_file_names_itself() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.yaml");
        std::fs::write(&path, "mode: warn\n").unwrap();
        let (config, seen) = load(&path).unwrap();
        assert_eq!(config.mode, crate::config::Mode::Warn);
        let mut watched = Watched::new(path.clone(), seen);
        assert!(watched.changed().is_none(), "unchanged");
        std::fs::write(&path, "mode: audit\n").unwrap();
        let changed = watched.changed().expect("a change").unwrap();
        assert_eq!(changed.mode, crate::config::Mode::Audit);
        assert!(watched.changed().is_none(), "reported once");
        std::fs::write(&path, "mode: loud\n").unwrap();
        let refused = watched.changed().expect("a change").unwrap_err();
        assert!(
            format!("{refused:#}").contains("config.yaml"),
            "{refused:#}"
        );
        assert!(watched.changed().is_none(), "a refusal is reported once");
        std::fs::remove_file(&path).unwrap();
        assert!(
            watched.changed().is_none(),
            "an unreadable file is no change"
        );
        assert!(
            load(&path).is_err_and(|e| format!("{e:#}").contains("reading")),
            "a missing file at start is an error"
        );
    }
}
