//! [`IdentityFile`]: the identities kept in the data directory, and
//! [`Directory`], every identity the broker knows at one moment.
//!
//! The file is `identities.json` beside the queue store. It is small (one
//! line per identity), written whole to a temporary file that is synced and
//! renamed over the old one, under an exclusive lock on `identities.lock`, so
//! `swarmq identity add` can change it while the broker runs and a reader
//! never sees half a file. The broker does not hold the file open: it looks
//! at its length and modification time several times a second and reloads on
//! a change, which is how a new or revoked identity takes effect within a
//! second without a signal or a socket.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use super::identity::{Identity, Origin, TokenHash};

/// File name of the identities, in the data directory.
pub const FILE_NAME: &str = "identities.json";

/// Errors reading or writing the identities.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The file or its directory could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file is not what this version writes.
    #[error("{path} is not a valid identities file: {message}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The change asked for cannot be made.
    #[error("{0}")]
    Refused(String),
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct OnDisk {
    version: u32,
    identities: Vec<Identity>,
}

/// The identities file of one data directory.
#[derive(Debug, Clone)]
pub struct IdentityFile {
    path: PathBuf,
    lock: PathBuf,
}

/// Length and modification time of the file: a change in either means reload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp(Option<(u64, SystemTime)>);

impl IdentityFile {
    /// The file in `data_dir`.
    pub fn in_dir(data_dir: &Path) -> IdentityFile {
        IdentityFile {
            path: data_dir.join(FILE_NAME),
            lock: data_dir.join("identities.lock"),
        }
    }

    /// Where it is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The file's stamp now.
    pub fn stamp(&self) -> Stamp {
        Stamp(
            fs::metadata(&self.path)
                .ok()
                .and_then(|m| Some((m.len(), m.modified().ok()?))),
        )
    }

    /// Every identity in the file; none when there is no file.
    ///
    /// # Errors
    ///
    /// Fails when the file cannot be read or parsed.
    pub fn load(&self) -> Result<Vec<Identity>, RegistryError> {
        let bytes = match fs::read(&self.path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => {
                return Err(RegistryError::Io {
                    path: self.path.clone(),
                    source,
                });
            }
        };
        let on_disk: OnDisk =
            serde_json::from_slice(&bytes).map_err(|e| RegistryError::Corrupt {
                path: self.path.clone(),
                message: e.to_string(),
            })?;
        Ok(on_disk
            .identities
            .into_iter()
            .map(|mut i| {
                i.origin = Origin::Registry;
                i
            })
            .collect())
    }

    /// Applies `change` to the identities under the file lock and writes the
    /// result atomically. `change` sees every identity in the file.
    ///
    /// # Errors
    ///
    /// Fails when the file cannot be read or written, or when `change` does.
    pub fn update<T>(
        &self,
        change: impl FnOnce(&mut Vec<Identity>) -> Result<T, RegistryError>,
    ) -> Result<T, RegistryError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| RegistryError::Io { path, source }
        };
        if let Some(dir) = self.path.parent() {
            fs::create_dir_all(dir).map_err(io(dir))?;
        }
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&self.lock)
            .map_err(io(&self.lock))?;
        lock.lock().map_err(io(&self.lock))?;
        let mut identities = self.load()?;
        let out = change(&mut identities)?;
        let on_disk = OnDisk {
            version: 1,
            identities,
        };
        let mut bytes =
            serde_json::to_vec_pretty(&on_disk).map_err(|e| RegistryError::Corrupt {
                path: self.path.clone(),
                message: e.to_string(),
            })?;
        bytes.push(b'\n');
        let tmp = self.path.with_extension("json.tmp");
        {
            let mut f = create_private(&tmp).map_err(io(&tmp))?;
            f.write_all(&bytes).map_err(io(&tmp))?;
            f.sync_all().map_err(io(&tmp))?;
        }
        fs::rename(&tmp, &self.path).map_err(io(&self.path))?;
        if let Some(dir) = self.path.parent()
            && let Ok(d) = File::open(dir)
        {
            // The rename is durable once the directory is synced.
            let _ = d.sync_all();
        }
        drop(lock);
        Ok(out)
    }
}

/// A new identity, before it is stored.
#[derive(Debug, Clone)]
pub struct NewIdentity {
    /// Its name.
    pub name: String,
    /// Its role.
    pub role: super::IdentityRole,
    /// Queues it may use; empty means all.
    pub queues: Vec<String>,
    /// A password for a person, instead of a machine token.
    pub password: Option<String>,
    /// Most connections at once.
    pub max_connections: Option<u32>,
    /// Most messages published per second.
    pub publish_rate: Option<f64>,
}

impl IdentityFile {
    /// Adds an identity (or replaces a revoked one of the same name) and
    /// returns its new machine token, which is not stored anywhere: the
    /// caller shows it once. With a password, the token is still made, so
    /// the identity can also be used by a program.
    ///
    /// # Errors
    ///
    /// Refused for an invalid name, role or queue pattern, or a name in use;
    /// fails when the file cannot be written.
    pub fn add(&self, new: NewIdentity, now_us: u64) -> Result<String, RegistryError> {
        use super::identity;
        if !identity::is_valid_name(&new.name) {
            return Err(RegistryError::Refused(format!(
                "invalid name `{}`: 1 to 64 of A-Z a-z 0-9 _ . -",
                new.name
            )));
        }
        if let Some(q) = new
            .queues
            .iter()
            .find(|q| !identity::is_valid_queue_pattern(q))
        {
            return Err(RegistryError::Refused(format!(
                "`{q}` is not a queue name or a `prefix*` pattern"
            )));
        }
        if new
            .publish_rate
            .is_some_and(|r| !(r.is_finite() && r > 0.0))
        {
            return Err(RegistryError::Refused(
                "publish_rate must be a positive number of messages per second".into(),
            ));
        }
        let token = identity::new_token().map_err(random_failed)?;
        let token_hash = Some(TokenHash::new(&token).map_err(random_failed)?);
        let password_hash = match &new.password {
            Some(p) if p.is_empty() => {
                return Err(RegistryError::Refused("the password is empty".into()));
            }
            Some(p) => Some(identity::hash_password(p).map_err(RegistryError::Refused)?),
            None => None,
        };
        self.update(|ids| {
            if let Some(pos) = ids.iter().position(|i| i.name == new.name) {
                if !ids[pos].is_revoked() {
                    return Err(RegistryError::Refused(format!(
                        "identity `{}` exists: rotate its token or revoke it first",
                        new.name
                    )));
                }
                ids.remove(pos);
            }
            ids.push(Identity {
                name: new.name.clone(),
                role: new.role,
                queues: new.queues.clone(),
                token_hash,
                password_hash,
                created_at_us: now_us,
                revoked_at_us: None,
                max_connections: new.max_connections,
                publish_rate: new.publish_rate,
                origin: Origin::Registry,
            });
            Ok(())
        })?;
        Ok(token)
    }

    /// Gives `name` a new machine token (the old one stops working, and its
    /// live connections are closed) and returns it.
    ///
    /// # Errors
    ///
    /// Refused for an unknown or revoked identity.
    pub fn rotate(&self, name: &str) -> Result<String, RegistryError> {
        let token = super::identity::new_token().map_err(random_failed)?;
        let hash = TokenHash::new(&token).map_err(random_failed)?;
        self.update(|ids| {
            let identity = find_live(ids, name)?;
            identity.token_hash = Some(hash);
            Ok(())
        })?;
        Ok(token)
    }

    /// Revokes `name`: it can no longer connect and its live connections
    /// are closed. Its record stays, for the dashboard and the audit trail.
    ///
    /// # Errors
    ///
    /// Refused for an unknown or already revoked identity.
    pub fn revoke(&self, name: &str, now_us: u64) -> Result<(), RegistryError> {
        self.update(|ids| {
            let identity = find_live(ids, name)?;
            identity.revoked_at_us = Some(now_us);
            identity.token_hash = None;
            identity.password_hash = None;
            Ok(())
        })
    }
}

fn find_live<'a>(ids: &'a mut [Identity], name: &str) -> Result<&'a mut Identity, RegistryError> {
    match ids.iter_mut().find(|i| i.name == name) {
        Some(i) if i.is_revoked() => Err(RegistryError::Refused(format!(
            "identity `{name}` is revoked"
        ))),
        Some(i) => Ok(i),
        None => Err(RegistryError::Refused(format!(
            "no identity `{name}` in the data directory"
        ))),
    }
}

fn random_failed(e: getrandom::Error) -> RegistryError {
    RegistryError::Refused(format!("the system's random source failed: {e}"))
}

/// Opens a new file readable by its owner only: it holds hashes, not
/// secrets, but nobody else needs to read them.
fn create_private(path: &Path) -> std::io::Result<File> {
    let mut options = OpenOptions::new();
    options.create(true).truncate(true).write(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    options.open(path)
}

/// Every identity known at one moment: the configuration's and the file's,
/// by name. The configuration wins a name both declare.
#[derive(Debug, Default)]
pub struct Directory {
    by_name: BTreeMap<String, Arc<Identity>>,
}

impl Directory {
    /// Builds the directory from the configuration's identities and the file's.
    pub fn new(config: &[Identity], file: Vec<Identity>) -> Directory {
        let mut by_name = BTreeMap::new();
        for i in file {
            by_name.insert(i.name.clone(), Arc::new(i));
        }
        for i in config {
            by_name.insert(i.name.clone(), Arc::new(i.clone()));
        }
        Directory { by_name }
    }

    /// The identity called `name`.
    pub fn get(&self, name: &str) -> Option<&Arc<Identity>> {
        self.by_name.get(name)
    }

    /// Every identity, by name.
    pub fn all(&self) -> impl Iterator<Item = &Arc<Identity>> {
        self.by_name.values()
    }

    /// True when there is no identity at all (revoked ones count).
    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access::identity::IdentityRole;

    fn identity(name: &str) -> Identity {
        Identity {
            name: name.into(),
            role: IdentityRole::Device,
            queues: vec![],
            token_hash: None,
            password_hash: None,
            created_at_us: 1,
            revoked_at_us: None,
            max_connections: None,
            publish_rate: None,
            origin: Origin::Registry,
        }
    }

    #[test]
    fn updates_are_atomic_and_change_the_stamp() {
        let dir = tempfile::tempdir().unwrap();
        let file = IdentityFile::in_dir(&dir.path().join("data"));
        assert!(file.load().unwrap().is_empty());
        let before = file.stamp();
        file.update(|ids| {
            ids.push(identity("dev1"));
            Ok(())
        })
        .unwrap();
        assert_ne!(file.stamp(), before);
        let loaded = file.load().unwrap();
        assert_eq!(loaded, vec![identity("dev1")]);
        let refused =
            file.update(|_| -> Result<(), _> { Err(RegistryError::Refused("no".into())) });
        assert!(refused.is_err());
        assert_eq!(file.load().unwrap().len(), 1);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = fs::metadata(file.path()).unwrap().permissions().mode();
            assert_eq!(mode & 0o077, 0, "identities.json is private");
        }
    }

    #[test]
    fn a_corrupt_file_is_an_error_not_an_empty_registry() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(FILE_NAME), b"{not json").unwrap();
        let file = IdentityFile::in_dir(dir.path());
        assert!(matches!(file.load(), Err(RegistryError::Corrupt { .. })));
    }

    #[test]
    fn the_configuration_wins_a_shared_name() {
        let mut from_config = identity("w");
        from_config.role = IdentityRole::Worker;
        from_config.origin = Origin::Config;
        let d = Directory::new(&[from_config], vec![identity("w"), identity("d")]);
        assert_eq!(d.get("w").unwrap().role, IdentityRole::Worker);
        assert_eq!(d.all().count(), 2);
    }
}
