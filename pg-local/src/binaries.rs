//! Finding the PostgreSQL server binaries (`initdb`, `pg_ctl`, `postgres`).
//!
//! Debian and Ubuntu keep them under `/usr/lib/postgresql/<major>/bin`, outside `PATH`, so that
//! directory is searched too, newest major version first.

use std::path::{Path, PathBuf};

use super::InstanceError;

const REQUIRED: [&str; 3] = ["initdb", "pg_ctl", "postgres"];
const DEBIAN_ROOT: &str = "/usr/lib/postgresql";

/// A directory holding a complete set of PostgreSQL server binaries.
#[derive(Debug, Clone)]
pub struct PgBinaries {
    bin_dir: PathBuf,
}

impl PgBinaries {
    /// Finds the binaries: in `explicit` alone when given, otherwise on `PATH` and then under
    /// `/usr/lib/postgresql/*/bin`.
    ///
    /// # Errors
    /// [`InstanceError::BinariesNotFound`], whose message names the package to install.
    pub fn locate(explicit: Option<&Path>) -> Result<Self, InstanceError> {
        let candidates: Vec<PathBuf> = match explicit {
            Some(dir) => vec![dir.to_path_buf()],
            None => path_dirs().into_iter().chain(debian_dirs()).collect(),
        };
        candidates
            .iter()
            .find(|dir| REQUIRED.iter().all(|name| is_executable(&dir.join(name))))
            .map(|dir| PgBinaries { bin_dir: resolve(dir) })
            .ok_or_else(|| InstanceError::BinariesNotFound {
                searched: match explicit {
                    Some(dir) => dir.display().to_string(),
                    None => format!("PATH and {DEBIAN_ROOT}/*/bin"),
                },
            })
    }

    /// The full path of the binary `name` (`initdb`, `pg_ctl`, `pg_dump`, ...).
    pub fn path(&self, name: &str) -> PathBuf {
        self.bin_dir.join(name)
    }

    /// The directory the binaries were found in.
    pub fn dir(&self) -> &Path {
        &self.bin_dir
    }
}

/// Follows a symlinked `initdb` (as in `/usr/local/bin/initdb -> /usr/lib/postgresql/15/bin`)
/// back to the real bin directory, where the companion tools (`pg_dump`, ...) also live.
fn resolve(dir: &Path) -> PathBuf {
    dir.join("initdb")
        .canonicalize()
        .ok()
        .and_then(|real| real.parent().map(Path::to_path_buf))
        .filter(|real| REQUIRED.iter().all(|name| is_executable(&real.join(name))))
        .unwrap_or_else(|| dir.to_path_buf())
}

fn path_dirs() -> Vec<PathBuf> {
    std::env::var_os("PATH").map(|path| std::env::split_paths(&path).collect()).unwrap_or_default()
}

fn debian_dirs() -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(DEBIAN_ROOT) else {
        return Vec::new();
    };
    let mut versions: Vec<(u32, PathBuf)> = entries
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let major = entry.file_name().to_str()?.parse::<u32>().ok()?;
            Some((major, entry.path().join("bin")))
        })
        .collect();
    versions.sort_by_key(|(major, _)| std::cmp::Reverse(*major));
    versions.into_iter().map(|(_, dir)| dir).collect()
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0).unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_binaries_name_the_debian_package() {
        let empty = tempfile::tempdir().unwrap();
        let err = PgBinaries::locate(Some(empty.path())).unwrap_err();
        let message = err.to_string();
        assert!(message.contains("apt-get install postgresql"), "{message}");
        assert!(message.contains(&empty.path().display().to_string()), "{message}");
    }
}
