//! Where the job file and the state (catalog, locks) live.
//!
//! - job file: `--config FILE`, else `$COFFER_CONFIG`, else `$XDG_CONFIG_HOME/coffer/jobs.toml`,
//!   else `$HOME/.config/coffer/jobs.toml`;
//! - state folder: `--state-dir DIR`, else `$COFFER_STATE_DIR`, else
//!   `$XDG_STATE_HOME/coffer`, else `$HOME/.local/state/coffer`.
//!
//! As the XDG base directory spec says, an XDG variable that is empty or not an absolute
//! path is ignored. The environment is passed in as a function so tests never read the
//! real one.

use std::ffi::OsString;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use super::error::{JobError, JobResult};

/// Looks up an environment variable.
pub type Env<'a> = &'a dyn Fn(&str) -> Option<OsString>;

/// The process environment, for [`config_path`] and [`StateDir::resolve`].
pub fn process_env(name: &str) -> Option<OsString> {
    std::env::var_os(name)
}

fn non_empty(env: Env<'_>, name: &str) -> Option<PathBuf> {
    env(name).filter(|v| !v.is_empty()).map(PathBuf::from)
}

fn xdg(env: Env<'_>, name: &str) -> Option<PathBuf> {
    non_empty(env, name).filter(|p| p.is_absolute())
}

/// The job file to read.
pub fn config_path(flag: Option<&Path>, env: Env<'_>) -> JobResult<PathBuf> {
    if let Some(p) = flag {
        return Ok(p.to_path_buf());
    }
    if let Some(p) = non_empty(env, "COFFER_CONFIG") {
        return Ok(p);
    }
    if let Some(base) = xdg(env, "XDG_CONFIG_HOME") {
        return Ok(base.join("coffer").join("jobs.toml"));
    }
    match non_empty(env, "HOME") {
        Some(home) => Ok(home.join(".config").join("coffer").join("jobs.toml")),
        None => Err(JobError::NoHome {
            what: "job file",
            var: "XDG_CONFIG_HOME",
        }),
    }
}

/// The file name of the incremental chains' state, next to `catalog.sqlite` in the state
/// folder (FORMAT.md v2.8.4).
pub const CHAINS_FILE: &str = "chains.sqlite";

/// The state folder: the session catalog, the chains' state and the lock files.
#[derive(Clone, Debug)]
pub struct StateDir {
    root: PathBuf,
}

impl StateDir {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        StateDir { root: root.into() }
    }

    /// Resolve the state folder from the flag and the environment (see the module docs).
    pub fn resolve(flag: Option<&Path>, env: Env<'_>) -> JobResult<Self> {
        if let Some(p) = flag {
            return Ok(StateDir::new(p));
        }
        if let Some(p) = non_empty(env, "COFFER_STATE_DIR") {
            return Ok(StateDir::new(p));
        }
        if let Some(base) = xdg(env, "XDG_STATE_HOME") {
            return Ok(StateDir::new(base.join("coffer")));
        }
        match non_empty(env, "HOME") {
            Some(home) => Ok(StateDir::new(
                home.join(".local").join("state").join("coffer"),
            )),
            None => Err(JobError::NoHome {
                what: "state folder",
                var: "XDG_STATE_HOME",
            }),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The SQLite session catalog.
    pub fn catalog_path(&self) -> PathBuf {
        self.root.join("catalog.sqlite")
    }

    /// The incremental chains' state (FORMAT.md v2.8.4), beside the catalog.
    pub fn chains_path(&self) -> PathBuf {
        self.root.join(CHAINS_FILE)
    }

    /// Lock files, one per job plus one for the daemon.
    pub fn locks_dir(&self) -> PathBuf {
        self.root.join("locks")
    }

    /// Create the folder (mode 0700: the catalog names files and archives) if missing.
    pub fn create(&self) -> JobResult<()> {
        for dir in [self.root.clone(), self.locks_dir()] {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&dir)
                .map_err(|e| JobError::io(&dir, e))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<OsString> {
        let map: HashMap<String, OsString> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), OsString::from(v)))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn config_path_order_flag_env_xdg_home() {
        let all = env_of(&[
            ("COFFER_CONFIG", "/c/jobs.toml"),
            ("XDG_CONFIG_HOME", "/xdg"),
            ("HOME", "/home/u"),
        ]);
        assert_eq!(
            config_path(Some(Path::new("/flag.toml")), &all).unwrap(),
            PathBuf::from("/flag.toml")
        );
        assert_eq!(
            config_path(None, &all).unwrap(),
            PathBuf::from("/c/jobs.toml")
        );
        let xdg = env_of(&[("XDG_CONFIG_HOME", "/xdg"), ("HOME", "/home/u")]);
        assert_eq!(
            config_path(None, &xdg).unwrap(),
            PathBuf::from("/xdg/coffer/jobs.toml")
        );
        // Relative or empty XDG values are ignored, as the spec says.
        let rel = env_of(&[("XDG_CONFIG_HOME", "rel"), ("HOME", "/home/u")]);
        assert_eq!(
            config_path(None, &rel).unwrap(),
            PathBuf::from("/home/u/.config/coffer/jobs.toml")
        );
        assert!(matches!(
            config_path(None, &env_of(&[])),
            Err(JobError::NoHome { .. })
        ));
    }

    #[test]
    fn state_dir_order_flag_env_xdg_home() {
        let all = env_of(&[
            ("COFFER_STATE_DIR", "/s"),
            ("XDG_STATE_HOME", "/xdg"),
            ("HOME", "/home/u"),
        ]);
        assert_eq!(
            StateDir::resolve(Some(Path::new("/f")), &all)
                .unwrap()
                .root(),
            Path::new("/f")
        );
        assert_eq!(
            StateDir::resolve(None, &all).unwrap().root(),
            Path::new("/s")
        );
        let xdg = env_of(&[("XDG_STATE_HOME", "/xdg"), ("HOME", "/home/u")]);
        assert_eq!(
            StateDir::resolve(None, &xdg).unwrap().root(),
            Path::new("/xdg/coffer")
        );
        let home = env_of(&[("XDG_STATE_HOME", ""), ("HOME", "/home/u")]);
        assert_eq!(
            StateDir::resolve(None, &home).unwrap().root(),
            Path::new("/home/u/.local/state/coffer")
        );
        assert!(StateDir::resolve(None, &env_of(&[])).is_err());
    }
}
