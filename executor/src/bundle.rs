//! A step's OCI bundle directory, and the lock that tells a live step from a stale one.
//!
//! Each run gets `bundles/<id>/` (config, generated `/etc` files, the rootfs mount
//! point) and `locks/<id>`, a file its process holds `flock`ed for as long as the step
//! lives. The lock is created under a temporary name, locked, and only then renamed into
//! place, and it appears before the bundle and the container and goes after them, so
//! another process finding `<id>` with a free (or missing) lock knows its owner is gone.
//!
//! Removal never recurses: the bundle holds only known files and empty directories, so
//! a rootfs that is unexpectedly still mounted makes removal fail instead of deleting
//! through the mount into a layer.

use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use rustix::fs::{FlockOperation, flock};

use crate::rootpath::is_missing;

const BUNDLES: &str = "bundles";
const LOCKS: &str = "locks";

/// A bundle directory and its held lock; removed on drop if not removed explicitly.
#[derive(Debug)]
pub(crate) struct Bundle {
    id: String,
    dir: PathBuf,
    lock_path: PathBuf,
    /// Held open: the flock lives as long as this descriptor.
    _lock: File,
    removed: bool,
}

impl Bundle {
    /// Creates a bundle with a fresh id under `state_dir`.
    pub(crate) fn create(state_dir: &Path) -> io::Result<Bundle> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let bundles = state_dir.join(BUNDLES);
        let locks = state_dir.join(LOCKS);
        fs::create_dir_all(&bundles)?;
        fs::create_dir_all(&locks)?;
        loop {
            let nanos = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos());
            let id = format!(
                "kiln-{}-{}-{nanos:08x}",
                std::process::id(),
                COUNTER.fetch_add(1, Ordering::Relaxed)
            );
            let lock_path = locks.join(&id);
            let temp = locks.join(format!(".new-{id}"));
            let lock = File::create_new(&temp)?;
            // A concurrent cleanup may take a temporary lock between its creation and
            // our flock, and delete it: then this id is simply abandoned.
            match flock(&lock, FlockOperation::NonBlockingLockExclusive) {
                Err(rustix::io::Errno::WOULDBLOCK) => continue,
                other => other?,
            }
            match fs::rename(&temp, &lock_path) {
                Err(err) if is_missing(&err) => continue,
                other => other?,
            }
            let dir = bundles.join(&id);
            match fs::create_dir(&dir) {
                Ok(()) => {
                    return Ok(Bundle {
                        id,
                        dir,
                        lock_path,
                        _lock: lock,
                        removed: false,
                    });
                }
                // Left by a crashed process that had the same pid: try the next id.
                Err(err) if err.kind() == io::ErrorKind::AlreadyExists => {
                    fs::remove_file(&lock_path)?;
                }
                Err(err) => {
                    fs::remove_file(&lock_path)?;
                    return Err(err);
                }
            }
        }
    }

    /// The container id, also the directory name.
    pub(crate) fn id(&self) -> &str {
        &self.id
    }

    /// The bundle directory.
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// A path inside the bundle.
    pub(crate) fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Writes a file into the bundle, readable by everyone (it is bind-mounted into a
    /// container that may run as any user).
    pub(crate) fn write(&self, name: &str, contents: &str) -> io::Result<PathBuf> {
        use std::os::unix::fs::PermissionsExt;
        let path = self.path(name);
        fs::write(&path, contents)?;
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644))?;
        Ok(path)
    }

    /// Creates an empty directory inside the bundle.
    pub(crate) fn create_dir(&self, name: &str) -> io::Result<PathBuf> {
        let path = self.path(name);
        fs::create_dir(&path)?;
        Ok(path)
    }

    /// Removes the bundle and then its lock.
    pub(crate) fn remove(mut self) -> io::Result<()> {
        self.removed = true;
        remove_bundle_dir(&self.dir)?;
        remove_if_present(&self.lock_path)
    }
}

impl Drop for Bundle {
    fn drop(&mut self) {
        if !self.removed {
            // Best effort on an error path; whatever stays is found by cleanup_stale.
            let _ = remove_bundle_dir(&self.dir).and_then(|()| remove_if_present(&self.lock_path));
        }
    }
}

/// Removes a bundle directory holding only files and empty directories.
pub(crate) fn remove_bundle_dir(dir: &Path) -> io::Result<()> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(err) if is_missing(&err) => return Ok(()),
        Err(err) => return Err(err),
    };
    for entry in entries {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            fs::remove_dir(entry.path())?;
        } else {
            fs::remove_file(entry.path())?;
        }
    }
    fs::remove_dir(dir)
}

fn remove_if_present(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(err) if is_missing(&err) => Ok(()),
        other => other,
    }
}

/// A step found in a state directory whose owner is gone; holds its lock (if the lock
/// file exists) while it is cleaned.
#[derive(Debug)]
pub(crate) struct StaleStep {
    id: String,
    _lock: Option<File>,
}

impl StaleStep {
    /// The container id.
    pub(crate) fn id(&self) -> &str {
        &self.id
    }

    /// The step's bundle directory.
    pub(crate) fn dir(&self, state_dir: &Path) -> PathBuf {
        state_dir.join(BUNDLES).join(&self.id)
    }

    /// Removes the bundle dir and the lock.
    pub(crate) fn remove(self, state_dir: &Path) -> io::Result<()> {
        remove_bundle_dir(&self.dir(state_dir))?;
        remove_if_present(&state_dir.join(LOCKS).join(&self.id))
    }
}

/// `id` if no live process holds its lock.
pub(crate) fn stale(state_dir: &Path, id: &str) -> io::Result<Option<StaleStep>> {
    let lock = match File::open(state_dir.join(LOCKS).join(id)) {
        Ok(lock) => lock,
        Err(err) if is_missing(&err) => {
            return Ok(Some(StaleStep {
                id: id.to_owned(),
                _lock: None,
            }));
        }
        Err(err) => return Err(err),
    };
    match flock(&lock, FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(Some(StaleStep {
            id: id.to_owned(),
            _lock: Some(lock),
        })),
        Err(rustix::io::Errno::WOULDBLOCK) => Ok(None),
        Err(errno) => Err(errno.into()),
    }
}

/// Ids that have a bundle dir or a lock file (finished temporary lock names included).
pub(crate) fn known_ids(state_dir: &Path) -> io::Result<Vec<String>> {
    let mut ids = Vec::new();
    for sub in [BUNDLES, LOCKS] {
        let entries = match fs::read_dir(state_dir.join(sub)) {
            Ok(entries) => entries,
            Err(err) if is_missing(&err) => continue,
            Err(err) => return Err(err),
        };
        for entry in entries {
            let name = entry?.file_name().to_string_lossy().into_owned();
            if !ids.contains(&name) {
                ids.push(name);
            }
        }
    }
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_live_bundle_is_not_stale_and_a_dropped_one_is_gone() {
        let state = tempfile::tempdir().unwrap();
        let bundle = Bundle::create(state.path()).unwrap();
        bundle.write("hosts", "x").unwrap();
        bundle.create_dir("rootfs").unwrap();
        assert!(stale(state.path(), bundle.id()).unwrap().is_none());
        let id = bundle.id().to_owned();
        drop(bundle);
        assert!(!state.path().join(BUNDLES).join(&id).exists());
        assert!(!state.path().join(LOCKS).join(&id).exists());
    }

    #[test]
    fn ids_are_unique() {
        let state = tempfile::tempdir().unwrap();
        let a = Bundle::create(state.path()).unwrap();
        let b = Bundle::create(state.path()).unwrap();
        assert_ne!(a.id(), b.id());
        assert_eq!(known_ids(state.path()).unwrap().len(), 2);
        a.remove().unwrap();
        b.remove().unwrap();
        assert!(known_ids(state.path()).unwrap().is_empty());
    }

    #[test]
    fn a_bundle_whose_lock_is_free_is_stale() {
        let state = tempfile::tempdir().unwrap();
        let dir = state.path().join(BUNDLES).join("kiln-1-0-0");
        fs::create_dir_all(dir.join("rootfs")).unwrap();
        fs::write(dir.join("config.json"), "{}").unwrap();
        fs::create_dir_all(state.path().join(LOCKS)).unwrap();
        fs::write(state.path().join(LOCKS).join("kiln-1-0-0"), "").unwrap();
        let found = stale(state.path(), "kiln-1-0-0").unwrap().unwrap();
        found.remove(state.path()).unwrap();
        assert!(!dir.exists());
        assert!(known_ids(state.path()).unwrap().is_empty());
    }

    #[test]
    fn removal_refuses_to_recurse() {
        let state = tempfile::tempdir().unwrap();
        let bundle = Bundle::create(state.path()).unwrap();
        let rootfs = bundle.create_dir("rootfs").unwrap();
        fs::write(rootfs.join("layer-file"), "precious").unwrap();
        let dir = bundle.dir().to_owned();
        assert!(bundle.remove().is_err());
        assert!(dir.join("rootfs/layer-file").exists());
    }
}
