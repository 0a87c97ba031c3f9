//! The store root: one directory holding every versioned part of kiln's state, the
//! layout version file, and the lock that keeps the collector away from work in flight.
//!
//! Locking is one `flock` on `<root>/lock`. Every process that reads or writes the
//! store holds it shared for as long as it has a [`Store`] (so builds run side by side);
//! the collector holds it exclusive ([`Store::lock_exclusive`]), so it never sees a
//! blob that a build has written but not yet referenced from a tag or the cache index,
//! nor removes a snapshot a container is running on. The kernel releases the lock when
//! a process dies, so a crash never leaves the store locked.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::check::{self, CheckReport};
use crate::gc::{self, DiskUsage, GcOptions, GcReport, GcRoots};
use crate::journal::{self, Journal};
use crate::lock::{STEP_LOCKS_DIR, StepLocks};
use crate::scratch;
use crate::snapshot::{SnapshotMode, Snapshotter};
use crate::{CacheError, CacheIndex, ContentStore};

/// The on-disk layout version this build writes and reads.
pub const LAYOUT_VERSION: u32 = 1;

/// The layout version file, relative to the root.
pub const LAYOUT_FILE: &str = "kiln-layout";
/// The lock file, relative to the root.
pub const LOCK_FILE: &str = "lock";
/// The content store folder, relative to the root.
pub const CONTENT_DIR: &str = "content-v1";
/// The snapshot folder, relative to the root.
pub const SNAPSHOTS_DIR: &str = "snapshots-v1";
/// The build context stat caches, relative to the root.
pub const CONTEXT_HASH_DIR: &str = "contexthash-v1";
/// The cache index, relative to the root.
pub const INDEX_FILE: &str = "index-v1.redb";

#[derive(serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct Layout {
    layout_version: u32,
}

/// An open store root, held under the shared lock.
#[derive(Debug)]
pub struct Store {
    root: PathBuf,
    lock: File,
    content: ContentStore,
    /// Shared by every snapshotter of this store, so this process appends to one file.
    journal: Journal,
}

impl Store {
    /// Opens (creating if needed) the store at `root`, waiting while a collection runs.
    ///
    /// A process that finds the store unused removes what killed processes left in the
    /// scratch areas before it starts (and again when it drops the store), so a crash
    /// leaves nothing behind for longer than until the next command. That sweep is
    /// housekeeping: if it fails, the store still opens, and `kiln prune` or
    /// `kiln store check` report what is left.
    ///
    /// Such a process first settles the snapshot journals (`journal-v1/`, see
    /// `docs/storage.md`): after a restart of the machine, it removes the snapshots
    /// committed shortly before, which may be incomplete on disk. That is not
    /// housekeeping: if it fails, so does `open`, with an error naming the journal.
    pub fn open(root: &Path) -> Result<Store, CacheError> {
        Store::open_with_journal(root, Journal::new(root))
    }

    /// [`Store::open`], with `journal` as the journal of this process.
    pub(crate) fn open_with_journal(root: &Path, journal: Journal) -> Result<Store, CacheError> {
        fs::create_dir_all(root).map_err(CacheError::io("create", root))?;
        let lock_path = root.join(LOCK_FILE);
        let lock = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock_path)
            .map_err(CacheError::io("open", &lock_path))?;
        let alone = match lock.try_lock() {
            Ok(()) => true,
            Err(std::fs::TryLockError::WouldBlock) => {
                lock.lock_shared()
                    .map_err(CacheError::io("lock", &lock_path))?;
                false
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(CacheError::io("lock", &lock_path)(e));
            }
        };
        let opened = Store::open_locked(root, lock, journal);
        let store = match opened {
            Ok(store) if alone => {
                journal::settle(&store)?;
                store.sweep_alone();
                store
                    .lock
                    .lock_shared()
                    .map_err(CacheError::io("lock", &lock_path))?;
                store
            }
            other => other?,
        };
        Ok(store)
    }

    fn open_locked(root: &Path, lock: File, journal: Journal) -> Result<Store, CacheError> {
        check_layout(root)?;
        let content = ContentStore::open(&root.join(CONTENT_DIR))?;
        for mode in SnapshotMode::ALL {
            Snapshotter::open(&root.join(SNAPSHOTS_DIR), mode)?;
        }
        Ok(Store {
            root: root.to_owned(),
            lock,
            content,
            journal,
        })
    }

    /// Removes what killed processes left: abandoned scratch (see [`gc`]) and the temp
    /// files of writers that rename into place beside the store (the image store, the
    /// layout file, the build context's stat caches). Only for a process holding the
    /// store alone: those writers hold no lock of their own, so a temp file is known to
    /// be abandoned only when no other process has the store open. Best effort.
    fn sweep_alone(&self) {
        let _ = gc::sweep(self, false);
        for dir in [self.root.clone(), self.root.join(CONTEXT_HASH_DIR)] {
            let Ok(entries) = fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                let name = entry.file_name();
                let name = name.to_string_lossy();
                if name.starts_with(".tmp") || name.starts_with(".kiln-layout-") {
                    let _ = fs::remove_file(entry.path());
                }
            }
        }
    }

    /// The root directory (other parts of kiln keep their own versioned files here).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The content store.
    pub fn content(&self) -> &ContentStore {
        &self.content
    }

    /// The cache index.
    pub fn index(&self) -> CacheIndex {
        CacheIndex::new(self.root.join(INDEX_FILE))
    }

    /// The snapshots of one layout.
    pub fn snapshotter(&self, mode: SnapshotMode) -> Result<Snapshotter, CacheError> {
        Snapshotter::open_with_journal(&self.root.join(SNAPSHOTS_DIR), mode, self.journal.clone())
    }

    /// The journal this process records its snapshot commits in.
    pub(crate) fn journal(&self) -> &Journal {
        &self.journal
    }

    /// The locks that let one process at a time execute a step; see [`crate::lock`].
    pub fn step_locks(&self) -> Result<StepLocks, CacheError> {
        StepLocks::open(&self.root.join(STEP_LOCKS_DIR))
    }

    /// Verifies everything the store holds and reports what is damaged; see
    /// [`crate::check`]. Read-only: repairing needs [`ExclusiveStore::repair`].
    pub fn check(&self) -> Result<CheckReport, CacheError> {
        check::run(self, false)
    }

    /// Sizes of blobs and snapshots, and what a collection would free; see the
    /// [`gc`] module. Read-only, so it does not need the exclusive lock, and its
    /// answer can be out of date as soon as it is returned.
    pub fn disk_usage(&self, roots: &GcRoots) -> Result<DiskUsage, CacheError> {
        gc::disk_usage(self, roots)
    }

    /// Waits until no other process uses the store, then holds it alone. Collect the
    /// GC roots (tags, cache index) only after this returns, so none can be added between
    /// reading them and collecting.
    pub fn lock_exclusive(self) -> Result<ExclusiveStore, CacheError> {
        // flock converts the shared lock in place; other holders of a shared lock that
        // ask for exclusive at the same time cannot deadlock with us, because Linux drops
        // the shared lock before waiting.
        self.lock
            .lock()
            .map_err(CacheError::io("lock", self.root.join(LOCK_FILE)))?;
        Ok(ExclusiveStore { store: self })
    }
}

impl Drop for Store {
    /// A process leaving a store nobody else uses sweeps it once more: scratch that a
    /// killed process's container still stood on when this one opened the store is
    /// free by now, once this process's runtime cleanup has taken that container away.
    fn drop(&mut self) {
        // A failed attempt gives up the shared lock too, which is fine on the way out.
        if self.lock.try_lock().is_ok() {
            self.sweep_alone();
        }
    }
}

/// A store no other process is using: the only place the collector runs.
#[derive(Debug)]
pub struct ExclusiveStore {
    store: Store,
}

impl ExclusiveStore {
    /// The store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Removes what `roots` do not keep; see the [`gc`] module for what
    /// is kept.
    pub fn gc(&self, roots: &GcRoots, options: &GcOptions) -> Result<GcReport, CacheError> {
        gc::collect(&self.store, roots, options)
    }

    /// Verifies the store like [`Store::check`] and removes what is damaged: corrupt
    /// blobs, incomplete snapshots, cache records that lost their blobs. Images are only
    /// reported; see [`crate::check`].
    pub fn repair(&self) -> Result<CheckReport, CacheError> {
        check::run(&self.store, true)
    }

    /// Goes back to sharing the store with other processes.
    pub fn into_shared(self) -> Result<Store, CacheError> {
        let store = self.store;
        store
            .lock
            .lock_shared()
            .map_err(CacheError::io("lock", store.root.join(LOCK_FILE)))?;
        Ok(store)
    }
}

/// Reads the layout version file, or writes it into a fresh root.
fn check_layout(root: &Path) -> Result<(), CacheError> {
    let path = root.join(LAYOUT_FILE);
    match fs::read(&path) {
        Ok(bytes) => {
            let layout: Layout =
                serde_json::from_slice(&bytes).map_err(|source| CacheError::BadMetadata {
                    path: path.clone(),
                    source,
                })?;
            if layout.layout_version > LAYOUT_VERSION {
                return Err(CacheError::UnsupportedLayout {
                    path,
                    found: layout.layout_version,
                    supported: LAYOUT_VERSION,
                });
            }
            Ok(())
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let mut temp = tempfile::Builder::new()
                .prefix(".kiln-layout-")
                .tempfile_in(root)
                .map_err(CacheError::io("create a temp file in", root))?;
            let json = serde_json::to_vec(&Layout {
                layout_version: LAYOUT_VERSION,
            })
            .expect("layout serialises");
            temp.write_all(&json)
                .and_then(|()| temp.as_file().sync_all())
                .map_err(CacheError::io("write", temp.path()))?;
            temp.persist(&path)
                .map_err(|e| CacheError::io("rename into place", &path)(e.error))?;
            scratch::sync_dir(root)
        }
        Err(e) => Err(CacheError::io("read", &path)(e)),
    }
}
