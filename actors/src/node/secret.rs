//! Where a node's cluster secret comes from — never the command line, where `ps` would show it:
//!
//! 1. the file named by `--secret-file` (or `secret_file` in the configuration);
//! 2. else the `CADRE_SECRET` environment variable;
//! 3. else a per-user secret file, `$XDG_CONFIG_HOME/cadre/secret` or
//!    `$HOME/.config/cadre/secret`, created on first use with 32 random bytes and mode 0600 (as
//!    Erlang does with its cookie), so that the nodes of one user on one machine just work.
//!
//! A secret file that others may read (any group or world permission bit) is refused.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use cadre_cluster::wire::Secret;

/// Where the secret came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    /// A file given in the configuration.
    File(PathBuf),
    /// `CADRE_SECRET`.
    Environment,
    /// The per-user file (`created`: made now).
    UserFile {
        /// Its path.
        path: PathBuf,
        /// Whether it was created by this call.
        created: bool,
    },
}

/// Why no secret could be had.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// The file cannot be read or written.
    #[error("secret file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is readable by others.
    #[error("secret file {path} is accessible to others (mode {mode:o}); run `chmod 600 {path}`", path = .path.display())]
    TooOpen {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The file or variable holds nothing.
    #[error("the cluster secret from {0} is empty")]
    Empty(String),
    /// No file given, no `CADRE_SECRET`, and neither `XDG_CONFIG_HOME` nor `HOME` is set.
    #[error("no cluster secret: give --secret-file or CADRE_SECRET (no home directory for a per-user secret file)")]
    NoHome,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SecretError + '_ {
    move |source| SecretError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn read_file(path: &Path) -> Result<Secret, SecretError> {
    let meta = fs::metadata(path).map_err(io(path))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(SecretError::TooOpen {
            path: path.to_path_buf(),
            mode,
        });
    }
    let text = fs::read(path).map_err(io(path))?;
    let trimmed = text.trim_ascii_end().to_vec();
    Secret::new(trimmed).map_err(|_| SecretError::Empty(path.display().to_string()))
}

/// The per-user secret file's path.
pub fn user_secret_path(env: &impl Fn(&str) -> Option<String>) -> Option<PathBuf> {
    let base = env("XDG_CONFIG_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            env("HOME")
                .filter(|v| !v.is_empty())
                .map(|h| PathBuf::from(h).join(".config"))
        })?;
    Some(base.join("cadre").join("secret"))
}

/// Resolves the secret as the module docs say; `env` reads the environment.
///
/// # Errors
/// [`SecretError`] naming the file or variable at fault.
pub fn resolve(
    file: Option<&Path>,
    env: impl Fn(&str) -> Option<String>,
) -> Result<(Secret, SecretSource), SecretError> {
    if let Some(path) = file {
        return Ok((read_file(path)?, SecretSource::File(path.to_path_buf())));
    }
    if let Some(value) = env("CADRE_SECRET") {
        let secret = Secret::new(value.into_bytes())
            .map_err(|_| SecretError::Empty("CADRE_SECRET".into()))?;
        return Ok((secret, SecretSource::Environment));
    }
    let path = user_secret_path(&env).ok_or(SecretError::NoHome)?;
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).map_err(io(dir))?;
    }
    let mut random = [0u8; 32];
    getrandom::fill(&mut random).map_err(|e| SecretError::Io {
        path: path.clone(),
        source: std::io::Error::other(e.to_string()),
    })?;
    let hex: String = random.iter().map(|b| format!("{b:02x}")).collect();
    // `create_new`: of two nodes starting at once, one creates it and the other reads it.
    match OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
    {
        Ok(mut f) => {
            f.write_all(hex.as_bytes()).map_err(io(&path))?;
            f.sync_all().map_err(io(&path))?;
            let secret = Secret::new(hex.into_bytes()).expect("64 hex digits");
            Ok((
                secret,
                SecretSource::UserFile {
                    path,
                    created: true,
                },
            ))
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let secret = read_file(&path)?;
            Ok((
                secret,
                SecretSource::UserFile {
                    path,
                    created: false,
                },
            ))
        }
        Err(e) => Err(io(&path)(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    struct TempDir(PathBuf);
    impl TempDir {
        fn new() -> Self {
            let p = std::env::temp_dir().join(format!(
                "cadre-secret-{}-{}",
                std::process::id(),
                fastrand::u64(..)
            ));
            fs::create_dir_all(&p).unwrap();
            TempDir(p)
        }
    }
    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn env(pairs: Vec<(&'static str, String)>) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<&str, String> = pairs.into_iter().collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn per_user_file_is_created_0600_once_and_then_reused() {
        let home = TempDir::new();
        let e = || env(vec![("HOME", home.0.display().to_string())]);
        let (first, src) = resolve(None, e()).unwrap();
        let SecretSource::UserFile {
            path,
            created: true,
        } = src
        else {
            panic!("expected a new per-user file, got {src:?}");
        };
        assert_eq!(path, home.0.join(".config/cadre/secret"));
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let (again, src) = resolve(None, e()).unwrap();
        assert!(matches!(src, SecretSource::UserFile { created: false, .. }));
        assert_eq!(format!("{first:?}"), format!("{again:?}")); // Debug hides the value...
        let text = fs::read_to_string(&path).unwrap();
        assert_eq!(text.len(), 64, "32 random bytes in hex");
    }

    #[test]
    fn an_explicit_file_beats_the_environment_and_must_be_private() {
        let dir = TempDir::new();
        let path = dir.0.join("s");
        fs::write(&path, "shh\n").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        let err = resolve(Some(&path), env(vec![("CADRE_SECRET", "x".into())])).unwrap_err();
        assert!(
            matches!(err, SecretError::TooOpen { mode: 0o644, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("chmod 600"), "{err}");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        let (_, src) = resolve(Some(&path), env(vec![("CADRE_SECRET", "x".into())])).unwrap();
        assert_eq!(src, SecretSource::File(path));
    }

    #[test]
    fn environment_then_errors_for_empty_or_missing() {
        let (_, src) = resolve(None, env(vec![("CADRE_SECRET", "s".into())])).unwrap();
        assert_eq!(src, SecretSource::Environment);
        assert!(matches!(
            resolve(None, env(vec![("CADRE_SECRET", String::new())])),
            Err(SecretError::Empty(_))
        ));
        assert!(matches!(
            resolve(None, env(vec![])),
            Err(SecretError::NoHome)
        ));
        let dir = TempDir::new();
        let path = dir.0.join("missing");
        assert!(matches!(
            resolve(Some(&path), env(vec![])),
            Err(SecretError::Io { .. })
        ));
    }
}
