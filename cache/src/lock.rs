//! Step locks: one build at a time executes a given cache key.
//!
//! Builds on one root run side by side, and overlapping Dockerfiles share steps. Without
//! coordination, every build that misses the cache for a key runs that step itself. A
//! step lock is an exclusive `flock` on `<root>/steplocks-v1/<key hex>`: a build takes
//! it before executing a miss and, once it holds it, looks in the cache index again, so
//! a build that waited for another to finish the same step reuses its result.
//!
//! The kernel releases a lock when its process dies, so a killed build never blocks the
//! others. Lock files are empty and are only removed under the store's exclusive lock
//! (by the collector), when no process can hold or wait for one: removing a lock file
//! someone waits on would let a third process lock a new file of the same name.

use std::fs::{self, File, TryLockError};
use std::path::{Path, PathBuf};
use std::thread;
use std::time::Duration;

use kiln_image::Digest;

use crate::CacheError;
use crate::scratch::{self, Swept};

/// The step lock folder, relative to the root.
pub const STEP_LOCKS_DIR: &str = "steplocks-v1";

/// The longest pause between two attempts to take a lock someone else holds.
const MAX_PAUSE: Duration = Duration::from_millis(50);

/// The step locks of one root.
#[derive(Debug, Clone)]
pub struct StepLocks {
    dir: PathBuf,
}

/// A held step lock; released when dropped.
#[derive(Debug)]
pub struct StepLock {
    _file: File,
}

impl StepLocks {
    /// The locks kept in `dir`, creating it if needed.
    pub fn open(dir: &Path) -> Result<StepLocks, CacheError> {
        fs::create_dir_all(dir).map_err(CacheError::io("create", dir))?;
        Ok(StepLocks {
            dir: dir.to_owned(),
        })
    }

    /// Waits for the lock of `key`. `keep_waiting` is asked between attempts; when it
    /// says no (the build was cancelled), this returns `None` without the lock. Waiting
    /// polls rather than blocks so that a cancelled build is never stuck in `flock`.
    pub fn lock(
        &self,
        key: &Digest,
        mut keep_waiting: impl FnMut() -> bool,
    ) -> Result<Option<StepLock>, CacheError> {
        let path = self.dir.join(key.hex());
        let file = File::options()
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(CacheError::io("open", &path))?;
        let mut pause = Duration::from_millis(2);
        loop {
            match file.try_lock() {
                Ok(()) => return Ok(Some(StepLock { _file: file })),
                Err(TryLockError::WouldBlock) => {}
                Err(TryLockError::Error(e)) => return Err(CacheError::io("lock", &path)(e)),
            }
            if !keep_waiting() {
                return Ok(None);
            }
            thread::sleep(pause);
            pause = (pause * 2).min(MAX_PAUSE);
        }
    }

    /// Removes every lock file. Only for a process holding the store alone.
    pub(crate) fn clear(&self, dry_run: bool) -> Result<Swept, CacheError> {
        let mut swept = Swept::default();
        let entries = match fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(swept),
            Err(e) => return Err(CacheError::io("list", &self.dir)(e)),
        };
        for entry in entries {
            let path = entry.map_err(CacheError::io("list", &self.dir))?.path();
            swept.entries += 1;
            swept.bytes += scratch::disk_usage(&path)?;
            if !dry_run {
                scratch::remove_any(&path)?;
            }
        }
        Ok(swept)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Barrier};

    use super::*;

    #[test]
    fn one_holder_at_a_time_and_the_others_wait() {
        let dir = tempfile::tempdir().unwrap();
        let locks = StepLocks::open(dir.path()).unwrap();
        let key = Digest::of(b"step");
        let inside = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let start = Arc::new(Barrier::new(4));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let (locks, key) = (locks.clone(), key.clone());
                let (inside, most, start) = (inside.clone(), most.clone(), start.clone());
                thread::spawn(move || {
                    start.wait();
                    for _ in 0..5 {
                        let held = locks.lock(&key, || true).unwrap().unwrap();
                        let now = inside.fetch_add(1, Ordering::SeqCst) + 1;
                        most.fetch_max(now, Ordering::SeqCst);
                        thread::sleep(Duration::from_millis(2));
                        inside.fetch_sub(1, Ordering::SeqCst);
                        drop(held);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(most.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn a_cancelled_waiter_gives_up_and_other_keys_are_free() {
        let dir = tempfile::tempdir().unwrap();
        let locks = StepLocks::open(dir.path()).unwrap();
        let (a, b) = (Digest::of(b"a"), Digest::of(b"b"));
        let _held = locks.lock(&a, || true).unwrap().unwrap();
        let mut asked = 0;
        let gave_up = locks
            .lock(&a, || {
                asked += 1;
                asked < 3
            })
            .unwrap();
        assert!(gave_up.is_none());
        assert_eq!(asked, 3);
        assert!(locks.lock(&b, || false).unwrap().is_some());
        assert_eq!(locks.clear(false).unwrap().entries, 2);
    }
}
