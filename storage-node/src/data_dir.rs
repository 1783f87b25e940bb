//! The Silo data directory: claiming it, locking it against a second process, and its secrets.
//!
//! A data directory is either new (absent or empty), or carries Silo's marker file. Anything else
//! is another program's directory, and Silo refuses it without touching a single file in it.
//! One process at a time holds the directory through an exclusive `flock` on `silo.lock`. The
//! kernel drops the lock when the process dies, so a `kill -9` never blocks the next start.
//!
//! Every name inside a data directory is spelt here and nowhere else: the rest of Silo asks a
//! [`DataDir`] for its paths (docs/operations.md draws the tree).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};

/// The file whose presence marks a directory as Silo's.
pub const MARKER_FILE: &str = "SILO_DATA_DIR";
const MARKER_CONTENTS: &str = "This directory holds the data of a Silo server. format = 1\n";
const LOCK_FILE: &str = "silo.lock";
const SECRETS_DIR: &str = "secrets";
/// The chunk store's pack files (0700, see [`DataDir::private_dir`]).
pub const PACKS_DIR: &str = "packs";
const POSTGRES_DIR: &str = "postgres";
const INSTANCES_DIR: &str = "instances";
const CATALOG_BACKUPS_DIR: &str = "catalog-backups";
const TLS_DIR: &str = "tls";
/// Left by `silo catalog restore`: the next start reconciles the catalog with the packs.
pub const CATALOG_RESTORED_MARKER: &str = "catalog-restored";

/// The secret the admin token is kept in (unless `SILO_ADMIN_TOKEN` is set).
pub const ADMIN_TOKEN_SECRET: &str = "admin-token";
/// The secret every tenant's chunk key derives from (unless `SILO_SERVER_SECRET` is set).
pub const SERVER_SECRET: &str = "chunk-key-secret";
/// The secret password of the embedded Postgres superuser.
pub const POSTGRES_PASSWORD_SECRET: &str = "postgres-superuser-password";
/// This data directory's identity (not a secret, kept with them): the catalog tells two
/// directories started under one node name apart by it.
pub const DATA_DIR_IDENTITY: &str = "data-dir-identity";

/// Where the secret `name` of the data directory `root` is kept, without opening (or locking)
/// the directory: for a client that reads the admin token beside a running server.
pub fn secret_file(root: &Path, name: &str) -> PathBuf {
    root.join(SECRETS_DIR).join(name)
}

/// Why a data directory cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum DataDirError {
    #[error("cannot create the data directory {path}: {source}")]
    Create { path: PathBuf, source: io::Error },
    #[error("the data directory {path} is not writable: {source}")]
    NotWritable { path: PathBuf, source: io::Error },
    #[error("the data directory {path} is not a directory")]
    NotADirectory { path: PathBuf },
    #[error(
        "{path} is not a Silo data directory: it is not empty ({entries}) and has no {MARKER_FILE} \
         marker. Silo leaves it untouched; choose an empty or new directory"
    )]
    Foreign { path: PathBuf, entries: String },
    #[error("the data directory {path} is in use by another Silo process ({holder})")]
    InUse { path: PathBuf, holder: String },
    #[error("cannot read or write {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
}

/// An opened, claimed and locked Silo data directory.
#[derive(Debug)]
pub struct DataDir {
    root: PathBuf,
    _lock: Flock<File>,
}

impl DataDir {
    /// Opens `root`, creating it if absent, and locks it for this process.
    ///
    /// # Errors
    /// Fails without changing anything in `root` when it is another program's directory, is
    /// held by another Silo process, or cannot be created or written.
    pub fn open(root: &Path) -> Result<Self, DataDirError> {
        match fs::metadata(root) {
            Ok(meta) if !meta.is_dir() => {
                return Err(DataDirError::NotADirectory { path: root.to_path_buf() });
            }
            Ok(_) => {}
            Err(err) if err.kind() == io::ErrorKind::NotFound => {
                fs::create_dir_all(root)
                    .map_err(|source| DataDirError::Create { path: root.to_path_buf(), source })?;
            }
            Err(source) => {
                return Err(DataDirError::Create { path: root.to_path_buf(), source });
            }
        }
        let root =
            root.canonicalize().map_err(|source| DataDirError::Io { path: root.to_path_buf(), source })?;
        refuse_foreign(&root)?;
        let lock = lock(&root)?;
        let marker = root.join(MARKER_FILE);
        if !marker.exists() {
            write_atomically(&marker, MARKER_CONTENTS.as_bytes(), 0o644)
                .map_err(|source| DataDirError::NotWritable { path: root.clone(), source })?;
        }
        let dir = DataDir { root, _lock: lock };
        dir.check_writable()?;
        // Only Silo's user may list or read what is here (an older Silo left it at the umask's
        // mode). A Postgres child running as another user gets traversal back from
        // `allow_traversal_by_others`.
        set_mode(&dir.root, 0o700).map_err(|source| dir.io_error(&dir.root, source))?;
        Ok(dir)
    }

    /// The subdirectory `name`, created if absent, readable by Silo's user only (0700).
    ///
    /// # Errors
    /// [`DataDirError::Io`] when it cannot be created or its mode set.
    pub fn private_dir(&self, name: &str) -> Result<PathBuf, DataDirError> {
        let dir = self.root.join(name);
        fs::create_dir_all(&dir).map_err(|source| self.io_error(&dir, source))?;
        set_mode(&dir, 0o700).map_err(|source| self.io_error(&dir, source))?;
        Ok(dir)
    }

    /// The absolute path of the directory.
    pub fn path(&self) -> &Path {
        &self.root
    }

    /// The chunk store's pack files.
    pub fn packs_dir(&self) -> PathBuf {
        self.root.join(PACKS_DIR)
    }

    /// The embedded catalog Postgres (its cluster, log and socket).
    pub fn postgres_dir(&self) -> PathBuf {
        self.root.join(POSTGRES_DIR)
    }

    /// This node's dedicated Postgres instances, one subdirectory each.
    pub fn instances_dir(&self) -> PathBuf {
        self.root.join(INSTANCES_DIR)
    }

    /// The offline manifests of catalog backups.
    pub fn catalog_backups_dir(&self) -> PathBuf {
        self.root.join(CATALOG_BACKUPS_DIR)
    }

    /// The CAs of servers reached with `sslmode=verify-full`, for the pg tools.
    pub fn tls_dir(&self) -> PathBuf {
        self.root.join(TLS_DIR)
    }

    /// Whether the secret `name` is kept here (without creating anything).
    pub fn has_secret(&self, name: &str) -> bool {
        secret_file(&self.root, name).is_file()
    }

    /// Proves the directory still accepts writes by creating, syncing and removing a file.
    ///
    /// # Errors
    /// [`DataDirError::NotWritable`] when the file cannot be written (read-only mount, full
    /// disk, wrong permissions).
    pub fn check_writable(&self) -> Result<(), DataDirError> {
        let probe = self.root.join(format!(".write-probe-{}", std::process::id()));
        let result = File::create(&probe)
            .and_then(|mut file| file.write_all(b"probe").and_then(|()| file.sync_all()))
            .and_then(|()| fs::remove_file(&probe));
        result.map_err(|source| {
            let _ = fs::remove_file(&probe);
            DataDirError::NotWritable { path: self.root.clone(), source }
        })
    }

    /// Lets other OS users traverse (not list) the directory, so that a Postgres child running
    /// as an unprivileged user can reach its own subdirectory.
    ///
    /// # Errors
    /// [`DataDirError::Io`] when the mode cannot be changed.
    pub fn allow_traversal_by_others(&self) -> Result<(), DataDirError> {
        let meta = fs::metadata(&self.root).map_err(|source| self.io_error(&self.root, source))?;
        let mode = meta.permissions().mode() | 0o011;
        fs::set_permissions(&self.root, fs::Permissions::from_mode(mode))
            .map_err(|source| self.io_error(&self.root, source))
    }

    /// Reads the secret `name`, or creates it with `generate` on first use.
    ///
    /// Secrets live in `secrets/`, a 0700 directory, as 0600 files written atomically, so a
    /// crash leaves either the whole secret or none. Returns the secret and whether it was
    /// created by this call.
    ///
    /// # Errors
    /// [`DataDirError::Io`] when the secret cannot be read or written.
    pub fn secret_or_create(
        &self,
        name: &str,
        generate: impl FnOnce() -> String,
    ) -> Result<(String, bool), DataDirError> {
        let path = self.secret_path(name)?;
        match read_secret(&path) {
            Ok(value) => return Ok((value, false)),
            Err(err) if err.kind() == io::ErrorKind::NotFound => {}
            Err(source) => return Err(self.io_error(&path, source)),
        }
        let value = generate();
        write_atomically(&path, value.as_bytes(), 0o600).map_err(|source| self.io_error(&path, source))?;
        Ok((value, true))
    }

    /// This data directory's identity: 32 random hex digits made at first use and kept, so
    /// that the catalog can tell this directory from another one started under the same node
    /// name (which would not hold this one's packs).
    ///
    /// # Errors
    /// [`DataDirError::Io`] when it cannot be read or written.
    pub fn identity(&self) -> Result<String, DataDirError> {
        let generate = || {
            let mut bytes = [0u8; 16];
            rand::RngCore::fill_bytes(&mut rand::rng(), &mut bytes);
            hex::encode(bytes)
        };
        self.secret_or_create(DATA_DIR_IDENTITY, generate).map(|(id, _)| id)
    }

    /// The path of the secret file `name`, creating the 0700 secrets directory if needed.
    ///
    /// # Errors
    /// [`DataDirError::Io`] when the secrets directory cannot be created.
    pub fn secret_path(&self, name: &str) -> Result<PathBuf, DataDirError> {
        let path = secret_file(&self.root, name);
        let dir = self.root.join(SECRETS_DIR);
        if !dir.is_dir() {
            fs::create_dir(&dir).map_err(|source| self.io_error(&dir, source))?;
        }
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o700))
            .map_err(|source| self.io_error(&dir, source))?;
        Ok(path)
    }

    fn io_error(&self, path: &Path, source: io::Error) -> DataDirError {
        DataDirError::Io { path: path.to_path_buf(), source }
    }
}

/// Sets `path`'s permission bits to `mode` unless they already are.
fn set_mode(path: &Path, mode: u32) -> io::Result<()> {
    if fs::metadata(path)?.permissions().mode() & 0o7777 != mode {
        fs::set_permissions(path, fs::Permissions::from_mode(mode))?;
    }
    Ok(())
}

/// Makes every regular file directly in `dir` readable by its owner only (0600), for files an
/// older Silo created at the umask's mode. Returns how many it changed.
///
/// # Errors
/// The I/O error of listing `dir` or of changing a mode.
pub fn make_files_private(dir: &Path) -> io::Result<usize> {
    let mut changed = 0;
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let meta = entry.metadata()?;
        if meta.is_file() && meta.permissions().mode() & 0o077 != 0 {
            fs::set_permissions(entry.path(), fs::Permissions::from_mode(0o600))?;
            changed += 1;
        }
    }
    Ok(changed)
}

/// Refuses a non-empty directory that has no marker, before anything in it is touched.
fn refuse_foreign(root: &Path) -> Result<(), DataDirError> {
    if root.join(MARKER_FILE).is_file() {
        return Ok(());
    }
    let entries = fs::read_dir(root)
        .map_err(|source| DataDirError::Io { path: root.to_path_buf(), source })?
        .filter_map(Result::ok)
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        // A lock file alone is a Silo process claiming a new directory at this very moment.
        .filter(|name| name != LOCK_FILE)
        .collect::<Vec<_>>();
    if entries.is_empty() {
        return Ok(());
    }
    let mut shown = entries.iter().take(3).cloned().collect::<Vec<_>>().join(", ");
    if entries.len() > 3 {
        shown.push_str(&format!(" and {} more", entries.len() - 3));
    }
    Err(DataDirError::Foreign { path: root.to_path_buf(), entries: shown })
}

fn lock(root: &Path) -> Result<Flock<File>, DataDirError> {
    let path = root.join(LOCK_FILE);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o644)
        .open(&path)
        .map_err(|source| DataDirError::NotWritable { path: root.to_path_buf(), source })?;
    let mut locked = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(locked) => locked,
        Err((mut file, _)) => {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            let holder = match holder.trim() {
                "" => "unknown pid".to_string(),
                pid => format!("pid {pid}"),
            };
            return Err(DataDirError::InUse { path: root.to_path_buf(), holder });
        }
    };
    let pid = std::process::id().to_string();
    locked
        .set_len(0)
        .and_then(|()| locked.write_all(pid.as_bytes()))
        .map_err(|source| DataDirError::NotWritable { path: root.to_path_buf(), source })?;
    Ok(locked)
}

fn read_secret(path: &Path) -> io::Result<String> {
    let value = fs::read_to_string(path)?;
    let value = value.trim().to_string();
    if value.is_empty() {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "the secret file is empty"));
    }
    let mode = fs::metadata(path)?.permissions().mode();
    if mode & 0o077 != 0 {
        tracing::warn!(path = %path.display(), "secret file was readable by others; resetting it to 0600");
        fs::set_permissions(path, fs::Permissions::from_mode(0o600))?;
    }
    Ok(value)
}

/// Writes `contents` to `path` through a synced temporary file and a rename, then syncs the
/// directory, so a crash leaves the old file or the new one and never a torn one.
pub fn write_atomically(path: &Path, contents: &[u8], mode: u32) -> io::Result<()> {
    let parent = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = parent.join(format!(".{name}.tmp-{}", std::process::id()));
    let mut file = OpenOptions::new().write(true).create(true).truncate(true).mode(mode).open(&tmp)?;
    file.set_permissions(fs::Permissions::from_mode(mode))?;
    file.write_all(contents)?;
    file.sync_all()?;
    fs::rename(&tmp, path)?;
    File::open(parent)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_directory_is_claimed_and_marked() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("data");
        let dir = DataDir::open(&root).unwrap();
        assert!(dir.path().join(MARKER_FILE).is_file());
        dir.check_writable().unwrap();
    }

    #[test]
    fn foreign_directory_is_refused_untouched() {
        let tmp = tempfile::tempdir().unwrap();
        fs::write(tmp.path().join("thesis.tex"), b"mine").unwrap();
        let err = DataDir::open(tmp.path()).unwrap_err();
        assert!(matches!(err, DataDirError::Foreign { .. }), "{err}");
        assert!(err.to_string().contains("thesis.tex"), "{err}");
        let names: Vec<_> = fs::read_dir(tmp.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, vec![std::ffi::OsString::from("thesis.tex")]);
    }

    #[test]
    fn second_process_is_refused_while_locked() {
        let tmp = tempfile::tempdir().unwrap();
        let _first = DataDir::open(tmp.path()).unwrap();
        let err = DataDir::open(tmp.path()).unwrap_err();
        assert!(matches!(err, DataDirError::InUse { .. }), "{err}");
        assert!(err.to_string().contains(&std::process::id().to_string()), "{err}");
    }

    #[test]
    fn secret_is_created_once_with_mode_0600() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = DataDir::open(tmp.path()).unwrap();
        let (first, created) = dir.secret_or_create("token", || "s3cret".into()).unwrap();
        assert!(created);
        let (again, created) = dir.secret_or_create("token", || "other".into()).unwrap();
        assert!(!created);
        assert_eq!(first, again);
        let mode = fs::metadata(dir.secret_path("token").unwrap()).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let dir_mode = fs::metadata(tmp.path().join(SECRETS_DIR)).unwrap().permissions().mode();
        assert_eq!(dir_mode & 0o777, 0o700);
    }

    #[test]
    fn path_that_is_a_file_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("plain");
        fs::write(&file, b"x").unwrap();
        let err = DataDir::open(&file).unwrap_err();
        assert!(matches!(err, DataDirError::NotADirectory { .. }), "{err}");
    }
}
