//! The OS user that Postgres children run as.
//!
//! `initdb` and `postgres` refuse to run as root. When Silo itself runs as root (as in CI or on a
//! bare host), it runs them as an unprivileged user (by default `postgres`, which Debian's package
//! creates) and hands that user the cluster's directory. As any other user, Silo runs them as
//! itself and nothing is switched.

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;

use nix::unistd::{Gid, Uid, User, chown};

use super::InstanceError;

/// Whom Postgres processes run as.
#[derive(Debug, Clone)]
pub struct RunAs {
    switch_to: Option<(String, Uid, Gid)>,
}

impl RunAs {
    /// Decides for this process: switch to `unprivileged_user` when running as root, else run as
    /// ourselves.
    ///
    /// # Errors
    /// [`InstanceError::OsUser`] when running as root and the user does not exist or is root.
    pub fn for_this_process(unprivileged_user: &str) -> Result<Self, InstanceError> {
        if !Uid::effective().is_root() {
            return Ok(RunAs { switch_to: None });
        }
        let user = User::from_name(unprivileged_user)
            .map_err(|err| InstanceError::OsUser(format!("cannot look up user {unprivileged_user}: {err}")))?
            .ok_or_else(|| {
                InstanceError::OsUser(format!(
                    "Silo runs as root, and Postgres refuses to; it needs the unprivileged OS user \
                     '{unprivileged_user}', which does not exist (create it, or name another with \
                     --postgres-os-user)"
                ))
            })?;
        if user.uid.is_root() {
            return Err(InstanceError::OsUser(format!("the OS user '{unprivileged_user}' is root")));
        }
        tracing::info!(os_user = unprivileged_user, "running as root: Postgres children run as this OS user");
        Ok(RunAs { switch_to: Some((user.name, user.uid, user.gid)) })
    }

    /// The name of the user Postgres runs as, when it is not this process's own user.
    pub fn switched_user(&self) -> Option<&str> {
        self.switch_to.as_ref().map(|(name, _, _)| name.as_str())
    }

    /// Makes `command` run as the Postgres user.
    pub fn apply(&self, command: &mut Command) {
        if let Some((_, uid, gid)) = &self.switch_to {
            // std drops supplementary groups itself when a root process sets the uid.
            command.uid(uid.as_raw()).gid(gid.as_raw());
        }
    }

    /// Hands `path` to the Postgres user (a no-op when nothing is switched).
    ///
    /// # Errors
    /// [`InstanceError::Io`] when the owner cannot be changed.
    pub fn give(&self, path: &Path) -> Result<(), InstanceError> {
        if let Some((_, uid, gid)) = &self.switch_to {
            chown(path, Some(*uid), Some(*gid)).map_err(|err| InstanceError::Io {
                path: path.to_path_buf(),
                source: std::io::Error::from(err),
            })?;
        }
        Ok(())
    }

    /// Checks that the Postgres user can reach `path`: every ancestor must be searchable by it.
    ///
    /// # Errors
    /// [`InstanceError::OsUser`] naming the first ancestor that blocks the way.
    pub fn check_reachable(&self, path: &Path) -> Result<(), InstanceError> {
        use std::os::unix::fs::MetadataExt;
        let Some((name, uid, gid)) = &self.switch_to else {
            return Ok(());
        };
        for ancestor in path.ancestors().skip(1) {
            let Ok(meta) = std::fs::metadata(ancestor) else {
                continue;
            };
            let searchable = if meta.uid() == uid.as_raw() {
                meta.mode() & 0o100 != 0
            } else if meta.gid() == gid.as_raw() {
                meta.mode() & 0o010 != 0
            } else {
                meta.mode() & 0o001 != 0
            };
            if !searchable {
                return Err(InstanceError::OsUser(format!(
                    "Postgres runs as the OS user '{name}', which cannot reach {}: {} (mode {:o}) \
                     is not searchable by it. Choose a data directory elsewhere or run \
                     `chmod o+x {}`",
                    path.display(),
                    ancestor.display(),
                    meta.mode() & 0o7777,
                    ancestor.display()
                )));
            }
        }
        Ok(())
    }
}
