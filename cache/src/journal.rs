//! The write-ahead journal that lets a snapshot be committed without flushing the
//! filesystem.
//!
//! Before a snapshot is renamed into place, its committer appends a line naming it to
//! its own file in `journal-v1/` and `fdatasync`s that file; the snapshot's files are
//! left for the kernel to write back. The guarantee:
//!
//! * A killed process loses nothing: what it wrote is in the page cache, which outlives
//!   it.
//! * After a crash of the machine, the first process to open the store ([`settle`])
//!   removes every snapshot named in a journal of an earlier boot, which covers the
//!   snapshots committed in the last moments before the crash. One of those is rebuilt
//!   from its blobs when it is next needed instead of being used half-written. A
//!   snapshot that holds a layer kept as it (the layer's only copy) is instead checked:
//!   it stays if its tree still writes that layer's digest.
//!
//! A journal file is `<boot id>.<pid>.<random>`, the boot id being the kernel's
//! (`/proc/sys/kernel/random/boot_id`), which is new at every boot. Its writer holds an
//! exclusive `flock` on it for as long as it may append. A journal of the current boot
//! whose writer is gone is deleted once it is a minute old (the kernel writes dirty
//! pages back after about 30 seconds), after one `syncfs` that makes sure of it. Where
//! the boot id cannot be read there is no journal, and each commit flushes the
//! filesystem itself.

use std::collections::HashMap;
use std::fmt;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{Duration, SystemTime};

use kiln_image::Digest;

use crate::root::Store;
use crate::scratch;
use crate::snapshot::SnapshotMode;
use crate::{CacheError, ChainId};

/// The journal folder, relative to the store root.
pub(crate) const JOURNAL_DIR: &str = "journal-v1";

/// How old a journal of the current boot must be before it is trimmed.
const TRIM_AFTER: Duration = Duration::from_secs(60);

const BOOT_ID_FILE: &str = "/proc/sys/kernel/random/boot_id";

/// This boot's id, read once per process; `None` if it cannot be read (no procfs), or is
/// not something that can go into a file name.
fn current_boot_id() -> Option<&'static str> {
    static BOOT_ID: OnceLock<Option<String>> = OnceLock::new();
    BOOT_ID
        .get_or_init(|| {
            let text = fs::read_to_string(BOOT_ID_FILE).ok()?;
            let id = text.trim();
            let usable =
                !id.is_empty() && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
            usable.then(|| id.to_owned())
        })
        .as_deref()
}

/// One line of a journal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Entry {
    /// `snapshot <mode dir> <chain hex>`: a snapshot is being renamed into place whose
    /// files may not be on disk yet.
    Snapshot {
        /// Its layout.
        mode: SnapshotMode,
        /// Its directory name in the mode's folder: 64 lowercase hex digits.
        name: String,
    },
}

impl Entry {
    /// The entry for committing snapshot `chain_id` in `mode`.
    pub(crate) fn snapshot(mode: SnapshotMode, chain_id: &ChainId) -> Entry {
        Entry::Snapshot {
            mode,
            name: chain_id.digest().hex().to_owned(),
        }
    }

    /// Reads one line (without its newline); `None` if it is not a whole entry.
    fn parse(line: &[u8]) -> Option<Entry> {
        let line = std::str::from_utf8(line).ok()?;
        let mut fields = line.split(' ');
        match (fields.next(), fields.next(), fields.next(), fields.next()) {
            (Some("snapshot"), Some(mode), Some(name), None) => {
                let mode = SnapshotMode::ALL
                    .into_iter()
                    .find(|m| m.dir_name() == mode)?;
                // Checked strictly: the name becomes a path, and a torn line is shorter.
                let hex = name.len() == 64
                    && name.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
                hex.then(|| Entry::Snapshot {
                    mode,
                    name: name.to_owned(),
                })
            }
            _ => None,
        }
    }
}

impl fmt::Display for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Entry::Snapshot { mode, name } => write!(f, "snapshot {} {name}", mode.dir_name()),
        }
    }
}

/// The whole entries of a journal file, in order; lines that do not parse are skipped.
fn entries(bytes: &[u8]) -> impl Iterator<Item = Entry> + '_ {
    bytes.split(|&b| b == b'\n').filter_map(Entry::parse)
}

/// A journal of one store root, appending to a file of its own, made on first use.
/// Clones share that file.
#[derive(Clone)]
pub(crate) struct Journal {
    inner: Arc<Inner>,
}

struct Inner {
    /// `<root>/journal-v1`.
    dir: PathBuf,
    /// `None`: no journal can be kept.
    boot_id: Option<String>,
    file: Mutex<Option<Arc<Open>>>,
}

/// A journal file being appended to, held under its `flock`.
struct Open {
    file: File,
    path: PathBuf,
}

impl fmt::Debug for Journal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Journal")
            .field("dir", &self.inner.dir)
            .field("boot_id", &self.inner.boot_id)
            .finish_non_exhaustive()
    }
}

impl Journal {
    /// The journal of the store at `root`, for this boot.
    pub(crate) fn new(root: &Path) -> Journal {
        Journal::with_boot_id(root, current_boot_id().map(str::to_owned))
    }

    /// The journal of the store at `root` as if the boot id were `boot_id` (`None`: as
    /// if it could not be read).
    pub(crate) fn with_boot_id(root: &Path, boot_id: Option<String>) -> Journal {
        Journal {
            inner: Arc::new(Inner {
                dir: root.join(JOURNAL_DIR),
                boot_id,
                file: Mutex::new(None),
            }),
        }
    }

    /// The boot this journal belongs to, if a journal can be kept.
    pub(crate) fn boot_id(&self) -> Option<&str> {
        self.inner.boot_id.as_deref()
    }

    /// Appends `entry` and returns once it is on disk: `Ok(true)`. `Ok(false)` when no
    /// journal can be kept (the boot id is unknown): then nothing was written and the
    /// caller must make its change durable itself.
    pub(crate) fn record(&self, entry: &Entry) -> Result<bool, CacheError> {
        let Some(boot_id) = self.boot_id() else {
            return Ok(false);
        };
        let line = format!("{entry}\n");
        let open = {
            let mut slot = self.slot();
            let open = match &*slot {
                Some(open) => Arc::clone(open),
                None => Arc::clone(slot.insert(Arc::new(self.create(boot_id)?))),
            };
            if let Err(e) = (&open.file).write_all(line.as_bytes()) {
                // A partly written line would run into the next one: start a new file.
                *slot = None;
                return Err(CacheError::io("append to", &open.path)(e));
            }
            open
        };
        // Outside the lock, so that threads committing at once share the waits.
        if let Err(e) = open.file.sync_data() {
            // After a failed sync, what the file holds is unknown: start a new one.
            let mut slot = self.slot();
            if slot.as_ref().is_some_and(|o| Arc::ptr_eq(o, &open)) {
                *slot = None;
            }
            return Err(CacheError::io("sync", &open.path)(e));
        }
        Ok(true)
    }

    fn slot(&self) -> MutexGuard<'_, Option<Arc<Open>>> {
        self.inner
            .file
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Creates this journal's file, locked, with its name on disk.
    fn create(&self, boot_id: &str) -> Result<Open, CacheError> {
        let dir = &self.inner.dir;
        match fs::create_dir(dir) {
            Ok(()) => {
                let root = dir.parent().filter(|r| !r.as_os_str().is_empty());
                scratch::sync_dir(root.unwrap_or(Path::new(".")))?;
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(CacheError::io("create", dir)(e)),
        }
        let (file, path) = tempfile::Builder::new()
            .prefix(&format!("{boot_id}.{}.", std::process::id()))
            .rand_bytes(8)
            .tempfile_in(dir)
            .map_err(CacheError::io("create a journal in", dir))?
            .keep()
            .map_err(|e| CacheError::io("create a journal in", dir)(e.error))?;
        file.lock().map_err(CacheError::io("lock", &path))?;
        scratch::sync_dir(dir)?;
        Ok(Open { file, path })
    }
}

/// Brings the store's journals up to date; for a process holding the store alone,
/// before anything else uses it.
///
/// A journal of another boot (the machine has restarted since, perhaps after a crash)
/// may name snapshots whose files never reached the disk: each of them still there is
/// removed, then the journal. If that fails, the error names the journal, and the store
/// must not be used. Without a boot id of its own, a process counts every journal as
/// another boot's. A journal of the current boot whose writer is gone and that is over a
/// minute old should name nothing left to write back: after one `syncfs` to make sure,
/// it is deleted, on a best-effort basis. Younger journals, and those still being
/// written, are left alone.
pub(crate) fn settle(store: &Store) -> Result<(), CacheError> {
    let journal = store.journal();
    let dir = &journal.inner.dir;
    let listing = match fs::read_dir(dir) {
        Ok(listing) => listing,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(CacheError::io("list", dir)(e)),
    };
    let now = SystemTime::now();
    let mut trimmed = Vec::new();
    for item in listing {
        let item = item.map_err(CacheError::io("list", dir))?;
        let path = item.path();
        if !item
            .file_type()
            .map_err(CacheError::io("stat", &path))?
            .is_file()
        {
            continue;
        }
        let name = item.file_name();
        let boot = name.to_string_lossy();
        let boot = boot.split('.').next();
        if journal
            .boot_id()
            .is_some_and(|current| boot == Some(current))
        {
            if let Some(held) = trimmable(&path, now) {
                trimmed.push((path, held));
            }
        } else {
            recover(store, &path).map_err(|source| CacheError::Recovery {
                journal: path.clone(),
                source: Box::new(source),
            })?;
        }
    }
    if !trimmed.is_empty() {
        let synced = File::open(store.root())
            .ok()
            .is_some_and(|root| rustix::fs::syncfs(&root).is_ok());
        if synced {
            for (path, _held) in &trimmed {
                let _ = fs::remove_file(path);
            }
            let _ = scratch::sync_dir(dir);
        }
    }
    Ok(())
}

/// Removes every snapshot a journal of another boot names, then the journal.
fn recover(store: &Store, path: &Path) -> Result<(), CacheError> {
    let handle = match File::open(path) {
        Ok(handle) => handle,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(CacheError::io("open", path)(e)),
    };
    match handle.try_lock() {
        Ok(()) => {}
        // Its writer is alive, so it is no earlier boot's journal after all (another
        // machine shares the store, or this process has no boot id): leave it be.
        Err(std::fs::TryLockError::WouldBlock) => return Ok(()),
        Err(std::fs::TryLockError::Error(e)) => return Err(CacheError::io("lock", path)(e)),
    }
    let mut bytes = Vec::new();
    (&handle)
        .read_to_end(&mut bytes)
        .map_err(CacheError::io("read", path))?;
    // Layers kept as their snapshot (see `ContentStore::keep_as_snapshot`) have no other
    // copy, so their snapshots are checked, not dropped: one whose tree still writes
    // every layer kept in it stays.
    let mut kept: HashMap<String, Vec<Digest>> = HashMap::new();
    for (digest, chain_id) in store.content().kept_layers()? {
        kept.entry(chain_id.digest().hex().to_owned())
            .or_default()
            .push(digest);
    }
    for entry in entries(&bytes) {
        match entry {
            Entry::Snapshot { mode, name } => {
                let intact = mode == SnapshotMode::Overlay
                    && kept.get(&name).is_some_and(|layers| {
                        layers.iter().all(|d| {
                            store
                                .content()
                                .hash_kept(d)
                                .is_ok_and(|actual| actual == *d)
                        })
                    });
                if !intact {
                    // Each removal syncs the mode folder before the journal can go.
                    store.snapshotter(mode)?.remove_named(&name)?;
                }
            }
        }
    }
    match fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(CacheError::io("remove", path)(e)),
    }
    scratch::sync_dir(path.parent().unwrap_or(path))
}

/// If the journal at `path` can be trimmed (its writer is gone and it is old enough),
/// the open file holding its lock.
fn trimmable(path: &Path, now: SystemTime) -> Option<File> {
    let handle = File::open(path).ok()?;
    handle.try_lock().ok()?;
    let written = handle.metadata().ok()?.modified().ok()?;
    let age = now.duration_since(written).ok()?;
    (age > TRIM_AFTER).then_some(handle)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use kiln_image::Digest;

    use super::*;
    use crate::SnapshotInfo;
    use crate::snapshot::Snapshotter;
    use crate::test_support::one_file_layer;

    const THIS_BOOT: &str = "11111111-2222-3333-4444-555555555555";
    const NEXT_BOOT: &str = "66666666-7777-8888-9999-000000000000";

    fn open_at(root: &Path, boot_id: Option<&str>) -> Store {
        Store::open_with_journal(
            root,
            Journal::with_boot_id(root, boot_id.map(str::to_owned)),
        )
        .unwrap()
    }

    /// Commits a one-file snapshot of `diff_id` over `parent` from a directory.
    fn commit(snaps: &Snapshotter, parent: Option<&ChainId>, diff_id: &Digest) -> SnapshotInfo {
        let scratch = snaps.scratch().unwrap();
        let tree = scratch.path().join("tree");
        fs::create_dir(&tree).unwrap();
        fs::write(tree.join("f"), diff_id.hex()).unwrap();
        snaps.commit_dir(parent, diff_id, &tree).unwrap()
    }

    /// The journal files of the store at `root`, and what each holds.
    fn journals(root: &Path) -> Vec<(PathBuf, String)> {
        let mut out: Vec<_> = match fs::read_dir(root.join(JOURNAL_DIR)) {
            Ok(listing) => listing
                .map(|e| {
                    let path = e.unwrap().path();
                    let text = fs::read_to_string(&path).unwrap();
                    (path, text)
                })
                .collect(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(e) => panic!("{e}"),
        };
        out.sort();
        out
    }

    fn age(path: &Path, by: Duration) {
        File::options()
            .write(true)
            .open(path)
            .unwrap()
            .set_modified(SystemTime::now() - by)
            .unwrap();
    }

    #[test]
    fn a_commit_is_in_the_journal_when_it_returns() {
        let dir = tempfile::tempdir().unwrap();
        let store = open_at(dir.path(), Some(THIS_BOOT));
        let snaps = store.snapshotter(SnapshotMode::Overlay).unwrap();
        let base = commit(&snaps, None, &Digest::of(b"base"));
        let files = journals(dir.path());
        assert_eq!(files.len(), 1, "{files:?}");
        let (path, text) = &files[0];
        let name = path.file_name().unwrap().to_string_lossy();
        assert!(
            name.starts_with(&format!("{THIS_BOOT}.{}.", std::process::id())),
            "{name}"
        );
        assert_eq!(
            *text,
            format!("snapshot overlay {}\n", base.chain_id.digest().hex())
        );

        // Every snapshotter of the store shares its file; copy snapshots are journaled too.
        let copy = store.snapshotter(SnapshotMode::Copy).unwrap();
        let other = commit(&copy, None, &Digest::of(b"other"));
        let files = journals(dir.path());
        assert_eq!(files.len(), 1);
        assert_eq!(
            files[0].1,
            format!(
                "snapshot overlay {}\nsnapshot copy {}\n",
                base.chain_id.digest().hex(),
                other.chain_id.digest().hex()
            )
        );
    }

    #[test]
    fn without_a_boot_id_commits_are_synced_and_nothing_is_journaled() {
        let dir = tempfile::tempdir().unwrap();
        let store = open_at(dir.path(), None);
        let snaps = store.snapshotter(SnapshotMode::Overlay).unwrap();
        let base = commit(&snaps, None, &Digest::of(b"base"));
        assert!(snaps.get(&base.chain_id).unwrap().is_some());
        assert!(!dir.path().join(JOURNAL_DIR).exists());
    }

    /// Replaces the store's journals with one of `boot` holding `entries`.
    fn journal_of(root: &Path, boot: &str, entries: &[Entry]) {
        let _ = fs::remove_dir_all(root.join(JOURNAL_DIR));
        fs::create_dir(root.join(JOURNAL_DIR)).unwrap();
        let text: String = entries.iter().map(|e| format!("{e}\n")).collect();
        fs::write(root.join(JOURNAL_DIR).join(format!("{boot}.1.x")), text).unwrap();
    }

    #[test]
    fn after_a_restart_journaled_snapshots_are_removed_and_rebuilt_from_their_blobs() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        // Committed before journals existed (or after its journal was trimmed).
        let kept = {
            let store = open_at(root, Some(THIS_BOOT));
            let snaps = store.snapshotter(SnapshotMode::Overlay).unwrap();
            commit(&snaps, None, &Digest::of(b"kept"))
        };
        fs::remove_dir_all(root.join(JOURNAL_DIR)).unwrap();
        let (layers, top) = {
            let store = open_at(root, Some(THIS_BOOT));
            let snaps = store.snapshotter(SnapshotMode::Overlay).unwrap();
            let layers = vec![one_file_layer(&store, "a"), one_file_layer(&store, "b")];
            let top = snaps.prepare(store.content(), &layers).unwrap();
            (layers, top)
        };
        assert_eq!(journals(root).len(), 1);

        let store = open_at(root, Some(NEXT_BOOT));
        let snaps = store.snapshotter(SnapshotMode::Overlay).unwrap();
        assert!(snaps.get(&top.chain_id).unwrap().is_none());
        assert!(
            snaps
                .get(&ChainId::base(&layers[0].diff_id))
                .unwrap()
                .is_none()
        );
        assert!(snaps.get(&kept.chain_id).unwrap().is_some());
        assert!(
            journals(root).is_empty(),
            "the journal is gone once settled"
        );
        assert_eq!(
            fs::read_dir(snaps.scratch_dir()).unwrap().count(),
            0,
            "removed snapshots leave no scratch"
        );

        let rebuilt = snaps.prepare(store.content(), &layers).unwrap();
        assert_eq!(rebuilt.chain_id, top.chain_id);
        let dirs = snaps.lowerdirs(&top.chain_id).unwrap();
        assert!(dirs[0].join("b").is_file() && dirs[1].join("a").is_file());
    }

    /// Commits a snapshot whose tree writes a plain layer, kept as that snapshot.
    fn kept_snapshot(store: &Store, content: &str) -> (Digest, SnapshotInfo) {
        use kiln_image::layer::{Compression, WriteOptions, write_layer};
        let snaps = store.snapshotter(SnapshotMode::Overlay).unwrap();
        let scratch = snaps.scratch().unwrap();
        let tree = scratch.path().join("tree");
        fs::create_dir(&tree).unwrap();
        fs::write(tree.join("f"), content).unwrap();
        let options = WriteOptions {
            compression: Compression::None,
            ..WriteOptions::default()
        };
        let layer = write_layer(&tree, &mut io::sink(), &options).unwrap();
        let info = snaps.commit_dir(None, &layer.diff_id, &tree).unwrap();
        let record = crate::content::SnapshotLayer {
            chain_id: info.chain_id.clone(),
            size: layer.size,
            overlay_upper: false,
            source_date_epoch: None,
        };
        store
            .content()
            .keep_as_snapshot(&layer.digest, &record)
            .unwrap();
        (layer.digest, info)
    }

    #[test]
    fn after_a_restart_a_snapshot_holding_a_kept_layer_is_checked_not_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let (intact, changed) = {
            let store = open_at(root, Some(THIS_BOOT));
            (
                kept_snapshot(&store, "intact"),
                kept_snapshot(&store, "changed"),
            )
        };
        // The crash lost a write of the second one.
        fs::write(changed.1.fs.join("f"), "").unwrap();

        let store = open_at(root, Some(NEXT_BOOT));
        let snaps = store.snapshotter(SnapshotMode::Overlay).unwrap();
        assert!(snaps.get(&intact.1.chain_id).unwrap().is_some());
        assert!(store.content().contains(&intact.0));
        assert!(snaps.get(&changed.1.chain_id).unwrap().is_none());
        assert!(!store.content().contains(&changed.0));
        assert!(journals(root).is_empty());
    }

    #[test]
    fn an_overlay_child_outlives_its_removed_parent_until_prepare_rebuilds_it() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let layers = {
            let store = open_at(root, Some(THIS_BOOT));
            let snaps = store.snapshotter(SnapshotMode::Overlay).unwrap();
            let layers = vec![one_file_layer(&store, "a"), one_file_layer(&store, "b")];
            snaps.prepare(store.content(), &layers).unwrap();
            layers
        };
        let chain = ChainId::prefixes([&layers[0].diff_id, &layers[1].diff_id]);
        // Only the parent is journaled: the child was written back long before the crash.
        journal_of(
            root,
            NEXT_BOOT,
            &[Entry::snapshot(SnapshotMode::Overlay, &chain[0])],
        );
        let store = open_at(root, Some(THIS_BOOT));
        let snaps = store.snapshotter(SnapshotMode::Overlay).unwrap();
        assert!(snaps.get(&chain[0]).unwrap().is_none());
        assert!(snaps.get(&chain[1]).unwrap().is_some());
        assert!(snaps.lowerdirs(&chain[1]).is_err());
        assert!(journals(root).is_empty());
        snaps.prepare(store.content(), &layers).unwrap();
        assert_eq!(snaps.lowerdirs(&chain[1]).unwrap().len(), 2);
        let rebuilt = journals(root);
        assert_eq!(rebuilt.len(), 1);
        assert_eq!(
            rebuilt[0].1,
            format!("{}\n", Entry::snapshot(SnapshotMode::Overlay, &chain[0]))
        );
    }

    /// Commits one snapshot in a store at `root` opened in this boot, and closes it.
    fn committed_base(root: &Path) -> SnapshotInfo {
        let store = open_at(root, Some(THIS_BOOT));
        let snaps = store.snapshotter(SnapshotMode::Overlay).unwrap();
        commit(&snaps, None, &Digest::of(b"base"))
    }

    #[test]
    fn a_recent_journal_of_this_boot_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let base = committed_base(root);
        let before = journals(root);
        let store = open_at(root, Some(THIS_BOOT));
        let snaps = store.snapshotter(SnapshotMode::Overlay).unwrap();
        assert!(snaps.get(&base.chain_id).unwrap().is_some());
        assert_eq!(journals(root), before);
        assert_eq!(before.len(), 1);
    }

    #[test]
    fn an_old_journal_of_this_boot_is_trimmed_and_its_snapshots_kept() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let base = committed_base(root);
        let files = journals(root);
        assert_eq!(files.len(), 1);
        age(&files[0].0, Duration::from_secs(120));
        let store = open_at(root, Some(THIS_BOOT));
        let snaps = store.snapshotter(SnapshotMode::Overlay).unwrap();
        assert!(snaps.get(&base.chain_id).unwrap().is_some());
        assert!(journals(root).is_empty());
    }

    #[test]
    fn a_journal_still_being_written_is_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        Store::open(root).unwrap();
        // A writer outside any store handle, as if of another process still running.
        let writer = Snapshotter::open_with_journal(
            &root.join(crate::root::SNAPSHOTS_DIR),
            SnapshotMode::Copy,
            Journal::with_boot_id(root, Some(THIS_BOOT.into())),
        )
        .unwrap();
        let base = commit(&writer, None, &Digest::of(b"base"));
        let files = journals(root);
        age(&files[0].0, Duration::from_secs(120));
        for boot in [THIS_BOOT, NEXT_BOOT] {
            let store = open_at(root, Some(boot));
            let snaps = store.snapshotter(SnapshotMode::Copy).unwrap();
            assert!(snaps.get(&base.chain_id).unwrap().is_some());
            assert_eq!(journals(root), files);
        }
        drop(writer);
        open_at(root, Some(THIS_BOOT));
        assert!(journals(root).is_empty());
    }

    #[test]
    fn lines_that_do_not_parse_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let (a, b) = {
            let store = open_at(root, Some(THIS_BOOT));
            let snaps = store.snapshotter(SnapshotMode::Overlay).unwrap();
            let a = commit(&snaps, None, &Digest::of(b"a"));
            let b = commit(&snaps, None, &Digest::of(b"b"));
            (a, b)
        };
        let (a_hex, b_hex) = (a.chain_id.digest().hex(), b.chain_id.digest().hex());
        let text = format!(
            "garbage\n\u{0}\u{0}\u{0}\nsnapshot overlay ../../content-v1\n\
             snapshot floppy {b_hex}\nsnapshot overlay {a_hex}\nsnapshot overlay {}",
            &b_hex[..20]
        );
        journal_of(root, NEXT_BOOT, &[]);
        fs::write(
            root.join(JOURNAL_DIR).join(format!("{NEXT_BOOT}.1.x")),
            text,
        )
        .unwrap();
        fs::write(
            root.join(JOURNAL_DIR).join("no-boot-id"),
            [0xff, 0xfe, b'\n'],
        )
        .unwrap();

        let store = open_at(root, Some(THIS_BOOT));
        let snaps = store.snapshotter(SnapshotMode::Overlay).unwrap();
        assert!(snaps.get(&a.chain_id).unwrap().is_none());
        assert!(snaps.get(&b.chain_id).unwrap().is_some());
        assert!(root.join(crate::root::CONTENT_DIR).is_dir());
        assert!(journals(root).is_empty());
    }

    /// Detaches a mount when dropped.
    struct Mounted(PathBuf);

    impl Drop for Mounted {
        fn drop(&mut self) {
            let _ = rustix::mount::unmount(&self.0, rustix::mount::UnmountFlags::DETACH);
        }
    }

    #[test]
    fn a_recovery_that_fails_fails_open_naming_the_journal() {
        assert!(
            rustix::process::geteuid().is_root(),
            "this test mounts tmpfs: run it as root"
        );
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let base = {
            let store = open_at(root, Some(THIS_BOOT));
            let snaps = store.snapshotter(SnapshotMode::Overlay).unwrap();
            commit(&snaps, None, &Digest::of(b"base"))
        };
        journal_of(
            root,
            NEXT_BOOT,
            &[Entry::snapshot(SnapshotMode::Overlay, &base.chain_id)],
        );
        // A mount point cannot be renamed, so the snapshot cannot be moved aside.
        let snapshot_dir = base.fs.parent().unwrap().to_owned();
        rustix::mount::mount(
            "tmpfs",
            &snapshot_dir,
            "tmpfs",
            rustix::mount::MountFlags::empty(),
            None,
        )
        .unwrap();
        let mounted = Mounted(snapshot_dir);
        let journal = Journal::with_boot_id(root, Some(THIS_BOOT.into()));
        let err = Store::open_with_journal(root, journal).unwrap_err();
        drop(mounted);
        let CacheError::Recovery { journal, .. } = &err else {
            panic!("{err:?}");
        };
        assert!(journal.ends_with(format!("{NEXT_BOOT}.1.x")), "{err}");
        assert!(
            err.to_string().contains(&format!("{NEXT_BOOT}.1.x")),
            "{err}"
        );

        // Once it can be removed, the store opens without it.
        let store = open_at(root, Some(THIS_BOOT));
        let snaps = store.snapshotter(SnapshotMode::Overlay).unwrap();
        assert!(snaps.get(&base.chain_id).unwrap().is_none());
        assert!(journals(root).is_empty());
    }

    #[test]
    fn entries_round_trip_and_torn_ones_do_not_parse() {
        let chain = ChainId::base(&Digest::of(b"x"));
        let entry = Entry::snapshot(SnapshotMode::Copy, &chain);
        let line = entry.to_string();
        assert_eq!(line, format!("snapshot copy {}", chain.digest().hex()));
        assert_eq!(Entry::parse(line.as_bytes()), Some(entry.clone()));
        for cut in 0..line.len() {
            assert_eq!(Entry::parse(&line.as_bytes()[..cut]), None, "{cut}");
        }
        let upper = line
            .to_uppercase()
            .replace("SNAPSHOT COPY", "snapshot copy");
        assert_eq!(Entry::parse(upper.as_bytes()), None);
        let text = format!("{line}\n{}\n{line}", &line[..30]);
        assert_eq!(entries(text.as_bytes()).count(), 2);
    }
}
