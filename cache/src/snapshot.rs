//! The snapshotter: unpacked layer stacks, named by chain ID, read-only once committed.
//!
//! Two layouts, because overlayfs is not available everywhere:
//!
//! * [`SnapshotMode::Overlay`] — each snapshot holds only its own layer, with whiteouts
//!   already in overlay form (a 0/0 character device for a deleted path, the
//!   `trusted.overlay.opaque` xattr on a replaced directory), so a stack is mounted by
//!   listing the snapshots of its prefixes as lower dirs. A snapshot needs its parent.
//! * [`SnapshotMode::Copy`] — each snapshot holds the whole stack applied into one
//!   directory; nothing is shared and nothing depends on a parent.
//!
//! A snapshot is built in a scratch directory (see `docs/storage.md`) holding `fs/` and
//! `meta.json`, recorded in the store's journal, and renamed to `<mode>/<chain hex>`.
//! Its files are not flushed: after a crash of the machine, the next process to open the
//! store removes the snapshots the journal names (those committed shortly before the
//! crash among them), so none is used half-written. Where no journal can be kept, each
//! commit flushes the filesystem instead. A rename onto an existing snapshot fails, so
//! when two processes build the same one, the first rename wins and the other discards
//! its copy: both get the same snapshot. Within a process, steps that need the same
//! missing snapshot at once (parallel stages on one base) wait for one of them to unpack
//! it instead of each unpacking a copy. The modification time of `meta.json` is the
//! snapshot's last use.

use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::SystemTime;

use kiln_image::Digest;
use kiln_image::layer::{ApplyOptions, WhiteoutMode, apply_layer};

use crate::content::touch;
use crate::journal::{self, Journal};
use crate::scratch::{self, Swept};
use crate::{CacheError, ChainId, ContentStore};

pub(crate) const META: &str = "meta.json";
pub(crate) const FS: &str = "fs";
const SCRATCH: &str = "tmp";

/// How snapshots are laid out on disk; see the module docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SnapshotMode {
    /// One layer per snapshot, stacked by an overlay mount.
    Overlay,
    /// The whole stack copied into each snapshot.
    Copy,
}

impl SnapshotMode {
    /// Every mode, for code that looks at all snapshots (the collector, `du`).
    pub const ALL: [SnapshotMode; 2] = [SnapshotMode::Overlay, SnapshotMode::Copy];

    /// The folder under `snapshots-v1/` that holds this mode's snapshots.
    pub fn dir_name(self) -> &'static str {
        match self {
            SnapshotMode::Overlay => "overlay",
            SnapshotMode::Copy => "copy",
        }
    }
}

/// What `meta.json` holds.
#[derive(serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Meta {
    chain_id: ChainId,
    parent: Option<ChainId>,
    diff_id: Digest,
    size: u64,
}

/// A layer as the snapshotter unpacks it: the blob holding its (possibly compressed)
/// tar, and the diff ID the image config promises for the uncompressed tar.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerRef {
    /// The layer blob in the content store.
    pub blob: Digest,
    /// The digest of the uncompressed tar; checked while unpacking.
    pub diff_id: Digest,
}

/// A committed snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotInfo {
    /// Its name: the chain ID of the stack it holds.
    pub chain_id: ChainId,
    /// The stack it was built on, if any.
    pub parent: Option<ChainId>,
    /// The diff ID of its top layer.
    pub diff_id: Digest,
    /// The layout it is in.
    pub mode: SnapshotMode,
    /// Bytes it occupies on disk.
    pub size: u64,
    /// When it was last prepared or mounted.
    pub last_used: SystemTime,
    /// Its read-only file tree.
    pub fs: PathBuf,
}

/// A directory in the snapshot store's scratch area, owned by this process and removed
/// when dropped. Build a tree in it, then hand it to [`Snapshotter::commit_dir`]; being on
/// the store's filesystem is what lets the commit be a rename.
#[derive(Debug)]
pub struct ScratchDir {
    path: PathBuf,
    _claim: File,
}

impl ScratchDir {
    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        // Whatever is left after a commit (or of a failed build) is garbage; if removal
        // fails here, the collector's sweep removes it once this lock is gone.
        let _ = scratch::remove_any(&self.path);
    }
}

/// The snapshots being unpacked by this process, and a wake-up for steps waiting on one.
struct Unpacking {
    dirs: Mutex<Vec<PathBuf>>,
    done: Condvar,
}

/// The right to unpack one snapshot in this process; given back when dropped.
struct Claim<'u> {
    unpacking: &'u Unpacking,
    dir: PathBuf,
}

impl Unpacking {
    const fn new() -> Unpacking {
        Unpacking {
            dirs: Mutex::new(Vec::new()),
            done: Condvar::new(),
        }
    }

    fn dirs(&self) -> MutexGuard<'_, Vec<PathBuf>> {
        self.dirs.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits while another thread unpacks the snapshot at `dir`, then claims it.
    fn claim(&self, dir: PathBuf) -> Claim<'_> {
        let mut dirs = self.dirs();
        while dirs.contains(&dir) {
            dirs = self.done.wait(dirs).unwrap_or_else(|e| e.into_inner());
        }
        dirs.push(dir.clone());
        Claim {
            unpacking: self,
            dir,
        }
    }
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        self.unpacking.dirs().retain(|d| *d != self.dir);
        self.unpacking.done.notify_all();
    }
}

static UNPACKING: Unpacking = Unpacking::new();

/// Snapshots of one mode under a `snapshots-v1/` directory.
#[derive(Debug, Clone)]
pub struct Snapshotter {
    root: PathBuf,
    mode: SnapshotMode,
    journal: Journal,
}

impl Snapshotter {
    /// Opens the snapshots of `mode` in `dir`, creating folders as needed. `dir` is the
    /// `snapshots-v1` folder of a store root: commits are journaled in that root.
    pub fn open(dir: &Path, mode: SnapshotMode) -> Result<Snapshotter, CacheError> {
        let journal = Journal::new(dir.parent().unwrap_or(dir));
        Snapshotter::open_with_journal(dir, mode, journal)
    }

    /// [`Snapshotter::open`], recording commits in `journal`.
    pub(crate) fn open_with_journal(
        dir: &Path,
        mode: SnapshotMode,
        journal: Journal,
    ) -> Result<Snapshotter, CacheError> {
        let s = Snapshotter {
            root: dir.to_owned(),
            mode,
            journal,
        };
        for d in [s.mode_dir(), s.root.join(SCRATCH)] {
            fs::create_dir_all(&d).map_err(CacheError::io("create", &d))?;
        }
        Ok(s)
    }

    /// The layout this snapshotter builds.
    pub fn mode(&self) -> SnapshotMode {
        self.mode
    }

    /// A fresh scratch directory on the store's filesystem (for an overlay upper and
    /// work dir, or a tree being unpacked).
    pub fn scratch(&self) -> Result<ScratchDir, CacheError> {
        let dir = self.root.join(SCRATCH);
        let path = tempfile::Builder::new()
            .prefix("snap-")
            .tempdir_in(&dir)
            .map_err(CacheError::io("create a scratch dir in", &dir))?
            .keep();
        let claim = scratch::claim(&path)?;
        Ok(ScratchDir {
            path,
            _claim: claim,
        })
    }

    /// The committed snapshot `chain_id`, if there is one.
    pub fn get(&self, chain_id: &ChainId) -> Result<Option<SnapshotInfo>, CacheError> {
        match self.read(&self.dir_of(chain_id))? {
            Entry::Valid(info) => Ok(Some(info)),
            Entry::Absent | Entry::Broken(_) => Ok(None),
        }
    }

    /// Every committed snapshot of this mode.
    pub fn list(&self) -> Result<Vec<SnapshotInfo>, CacheError> {
        Ok(self
            .entries()?
            .into_iter()
            .filter_map(|(_, entry)| match entry {
                Entry::Valid(info) => Some(info),
                Entry::Absent | Entry::Broken(_) => None,
            })
            .collect())
    }

    /// Makes sure the snapshot of the whole stack `layers` (bottom first) exists,
    /// unpacking from the content store what is missing, and returns it. For overlay,
    /// that is one snapshot per missing prefix, each built on its parent; for copy, one
    /// tree with every layer applied in order. A layer whose unpacked tar does not hash
    /// to its diff ID fails the call, and no snapshot holding it is committed. The
    /// snapshots and blobs used are marked used. An overlay snapshot whose ancestor is
    /// missing gets that ancestor rebuilt.
    pub fn prepare(
        &self,
        content: &ContentStore,
        layers: &[LayerRef],
    ) -> Result<SnapshotInfo, CacheError> {
        let chain = ChainId::prefixes(layers.iter().map(|l| &l.diff_id));
        let (top, top_layer) = chain
            .last()
            .zip(layers.last())
            .ok_or(CacheError::NoLayers)?;
        match self.mode {
            // Every prefix is looked at, not only the top: a snapshot whose ancestor
            // was lost (removed by hand, damaged) cannot be mounted until it is rebuilt.
            SnapshotMode::Overlay => {
                let mut parent = None;
                for (layer, id) in layers.iter().zip(&chain) {
                    if self.get(id)?.is_some() {
                        self.mark_used(id)?;
                        parent = Some(id);
                        continue;
                    }
                    let _unpacking = UNPACKING.claim(self.dir_of(id));
                    // Another step of this process may have made it while this one waited.
                    if self.get(id)?.is_some() {
                        self.mark_used(id)?;
                    } else {
                        let staging = self.scratch()?;
                        self.unpack(content, &staging, layer, id, WhiteoutMode::Overlay)?;
                        self.install(staging, parent, &layer.diff_id)?;
                    }
                    parent = Some(id);
                }
            }
            SnapshotMode::Copy if self.get(top)?.is_none() => {
                let _unpacking = UNPACKING.claim(self.dir_of(top));
                if self.get(top)?.is_none() {
                    let staging = self.scratch()?;
                    for layer in layers {
                        self.unpack(content, &staging, layer, top, WhiteoutMode::Remove)?;
                    }
                    let parent = chain.len().checked_sub(2).map(|p| &chain[p]);
                    self.install(staging, parent, &top_layer.diff_id)?;
                }
            }
            SnapshotMode::Copy => {}
        }
        self.mark_used(top)?;
        self.get(top)?
            .ok_or_else(|| CacheError::SnapshotNotFound(top.clone()))
    }

    /// The directories to stack for `chain_id`, top first: for overlay, the snapshot and
    /// its ancestors (the `lowerdir=` list of an overlay mount); for copy, its one tree.
    /// Marks them used.
    pub fn lowerdirs(&self, chain_id: &ChainId) -> Result<Vec<PathBuf>, CacheError> {
        let mut dirs = Vec::new();
        let mut next = Some(chain_id.clone());
        while let Some(id) = next {
            let info = self.get(&id)?.ok_or(CacheError::SnapshotNotFound(id))?;
            self.mark_used(&info.chain_id)?;
            dirs.push(info.fs);
            next = match self.mode {
                SnapshotMode::Overlay => info.parent,
                SnapshotMode::Copy => None,
            };
        }
        Ok(dirs)
    }

    /// Commits an unpacked tree as the snapshot of `diff_id` over `parent`, by renaming
    /// `dir` into the store: for overlay, `dir` holds the layer alone in overlay form
    /// (an overlay upper dir); for copy, the whole stack. `dir` must be on the store's
    /// filesystem, which a directory under [`Snapshotter::scratch`] is. `dir` is consumed:
    /// on success it has been moved into the store, or removed because the snapshot
    /// existed already (then the existing one is returned).
    pub fn commit_dir(
        &self,
        parent: Option<&ChainId>,
        diff_id: &Digest,
        dir: &Path,
    ) -> Result<SnapshotInfo, CacheError> {
        let chain_id = ChainId::of(parent, diff_id);
        if let Some(info) = self.get(&chain_id)? {
            self.mark_used(&chain_id)?;
            scratch::remove_any(dir)?;
            return Ok(info);
        }
        if let Some(parent) = parent
            && self.mode == SnapshotMode::Overlay
            && self.get(parent)?.is_none()
        {
            return Err(CacheError::SnapshotNotFound(parent.clone()));
        }
        let staging = self.scratch()?;
        let fs_dir = staging.path().join(FS);
        fs::rename(dir, &fs_dir).map_err(|e| {
            if e.kind() == io::ErrorKind::CrossesDevices {
                CacheError::CrossDevice {
                    path: dir.to_owned(),
                }
            } else {
                CacheError::io("move into a snapshot", dir)(e)
            }
        })?;
        self.install(staging, parent, diff_id)
    }

    /// Removes a snapshot (not its descendants) and returns the bytes it held. It is
    /// first renamed into the scratch area, so a crash mid-removal leaves no half
    /// snapshot behind, only scratch for the next sweep.
    pub fn remove(&self, chain_id: &ChainId) -> Result<u64, CacheError> {
        let dir = self.dir_of(chain_id);
        let size = match self.read(&dir)? {
            Entry::Valid(info) => info.size,
            Entry::Broken(_) => scratch::disk_usage(&dir)?,
            Entry::Absent => return Err(CacheError::SnapshotNotFound(chain_id.clone())),
        };
        self.discard(&dir)?;
        Ok(size)
    }

    /// Every directory in this mode's folder: the snapshot it holds, or why it is not
    /// one.
    pub(crate) fn inspect(&self) -> Result<Vec<(PathBuf, Inspected)>, CacheError> {
        Ok(self
            .entries()?
            .into_iter()
            .filter_map(|(dir, entry)| match entry {
                Entry::Valid(info) => Some((dir, Ok(info))),
                Entry::Broken(damage) => Some((dir, Err(damage))),
                Entry::Absent => None,
            })
            .collect())
    }

    /// Removes a directory of this mode's folder, whatever it holds (the way
    /// [`Snapshotter::remove`] does: moved into scratch first).
    pub(crate) fn remove_dir(&self, dir: &Path) -> Result<(), CacheError> {
        self.discard(dir)
    }

    /// Removes the entry `name` of this mode's folder, if there is one, like
    /// [`Snapshotter::remove_dir`]. `name` must be a plain file name.
    pub(crate) fn remove_named(&self, name: &str) -> Result<(), CacheError> {
        let dir = self.mode_dir().join(name);
        match fs::symlink_metadata(&dir) {
            Ok(_) => self.discard(&dir),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(CacheError::io("stat", &dir)(e)),
        }
    }

    /// Removes mode directory entries that are not valid snapshots (a missing or
    /// unreadable `meta.json`), returning what they held.
    pub(crate) fn remove_broken(&self, dry_run: bool) -> Result<Swept, CacheError> {
        let mut swept = Swept::default();
        for (dir, entry) in self.entries()? {
            if matches!(entry, Entry::Broken(_)) {
                swept.entries += 1;
                swept.bytes += scratch::disk_usage(&dir)?;
                if !dry_run {
                    self.discard(&dir)?;
                }
            }
        }
        Ok(swept)
    }

    /// Finds (and unless `dry_run`, removes) scratch directories of dead processes.
    pub(crate) fn sweep_scratch(&self, dry_run: bool) -> Result<Swept, CacheError> {
        scratch::sweep(&self.scratch_dir(), dry_run)
    }

    /// The scratch area (shared by both modes).
    pub(crate) fn scratch_dir(&self) -> PathBuf {
        self.root.join(SCRATCH)
    }

    /// Applies one layer blob onto `staging/fs` and checks its diff ID.
    fn unpack(
        &self,
        content: &ContentStore,
        staging: &ScratchDir,
        layer: &LayerRef,
        chain_id: &ChainId,
        whiteouts: WhiteoutMode,
    ) -> Result<(), CacheError> {
        let fs_dir = staging.path().join(FS);
        fs::create_dir_all(&fs_dir).map_err(CacheError::io("create", &fs_dir))?;
        let blob = io::BufReader::with_capacity(1 << 16, content.open_blob(&layer.blob)?);
        let options = ApplyOptions::default().with_whiteouts(whiteouts);
        let applied =
            apply_layer(blob, &fs_dir, &options).map_err(|source| CacheError::Unpack {
                blob: layer.blob.clone(),
                chain_id: chain_id.clone(),
                source: Box::new(source),
            })?;
        if applied.diff_id != layer.diff_id {
            return Err(CacheError::DiffIdMismatch {
                blob: layer.blob.clone(),
                expected: layer.diff_id.clone(),
                actual: applied.diff_id,
            });
        }
        content.touch(&layer.blob)
    }

    /// Writes `meta.json` into a staged snapshot (its `fs/` filled), records it in the
    /// journal and renames it into place; a snapshot that appeared meanwhile wins and the
    /// staged one is dropped.
    fn install(
        &self,
        staging: ScratchDir,
        parent: Option<&ChainId>,
        diff_id: &Digest,
    ) -> Result<SnapshotInfo, CacheError> {
        let chain_id = ChainId::of(parent, diff_id);
        let meta = Meta {
            chain_id: chain_id.clone(),
            parent: parent.cloned(),
            diff_id: diff_id.clone(),
            size: scratch::disk_usage(&staging.path().join(FS))?,
        };
        let meta_path = staging.path().join(META);
        let json = serde_json::to_vec_pretty(&meta).expect("snapshot metadata serialises");
        fs::write(&meta_path, json).map_err(CacheError::io("write", &meta_path))?;
        // The journal entry reaches the disk before the rename can, so after a crash the
        // snapshot is removed rather than used with files that were never written back.
        // Without a journal, one syncfs flushes the unpacked files and the metadata
        // before the rename makes them visible, and the rename itself is synced.
        let journaled = self
            .journal
            .record(&journal::Entry::snapshot(self.mode, &chain_id))?;
        if !journaled {
            let handle =
                File::open(staging.path()).map_err(CacheError::io("open", staging.path()))?;
            rustix::fs::syncfs(&handle)
                .map_err(|e| CacheError::io("sync", staging.path())(e.into()))?;
        }

        let target = self.dir_of(&chain_id);
        for _ in 0..2 {
            match fs::rename(staging.path(), &target) {
                Ok(()) => {
                    if !journaled {
                        scratch::sync_dir(&self.mode_dir())?;
                    }
                    return self
                        .get(&chain_id)?
                        .ok_or(CacheError::SnapshotNotFound(chain_id));
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::DirectoryNotEmpty | io::ErrorKind::AlreadyExists
                    ) =>
                {
                    match self.read(&target)? {
                        Entry::Valid(info) => {
                            self.mark_used(&chain_id)?;
                            return Ok(info);
                        }
                        // Not a snapshot (made by hand or damaged): move it aside and retry.
                        Entry::Broken(_) => self.discard(&target)?,
                        Entry::Absent => {}
                    }
                }
                Err(e) => return Err(CacheError::io("rename into place", &target)(e)),
            }
        }
        Err(CacheError::Io {
            op: "rename into place",
            path: target,
            source: io::Error::from(io::ErrorKind::AlreadyExists),
        })
    }

    fn mark_used(&self, chain_id: &ChainId) -> Result<(), CacheError> {
        let meta = self.dir_of(chain_id).join(META);
        touch(&meta).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => CacheError::SnapshotNotFound(chain_id.clone()),
            _ => CacheError::io("touch", &meta)(e),
        })
    }

    /// Moves `dir` into the scratch area and removes it there.
    fn discard(&self, dir: &Path) -> Result<(), CacheError> {
        let trash = self.scratch()?;
        let dest = trash.path().join("removed");
        match fs::rename(dir, &dest) {
            Ok(()) => scratch::sync_dir(&self.mode_dir()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(CacheError::io("move aside", dir)(e)),
        }?;
        scratch::remove_any(trash.path())
    }

    fn entries(&self) -> Result<Vec<(PathBuf, Entry)>, CacheError> {
        let dir = self.mode_dir();
        let mut out = Vec::new();
        for entry in fs::read_dir(&dir).map_err(CacheError::io("list", &dir))? {
            let path = entry.map_err(CacheError::io("list", &dir))?.path();
            let read = self.read(&path)?;
            if !matches!(read, Entry::Absent) {
                out.push((path, read));
            }
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    fn read(&self, dir: &Path) -> Result<Entry, CacheError> {
        let meta_path = dir.join(META);
        let (bytes, stat) =
            match fs::read(&meta_path).and_then(|b| Ok((b, fs::metadata(&meta_path)?))) {
                Ok(read) => read,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    return Ok(if dir.exists() {
                        Entry::Broken(SnapshotDamage::NoMetadata)
                    } else {
                        Entry::Absent
                    });
                }
                Err(e) => return Err(CacheError::io("read", &meta_path)(e)),
            };
        let Ok(meta) = serde_json::from_slice::<Meta>(&bytes) else {
            return Ok(Entry::Broken(SnapshotDamage::BadMetadata));
        };
        if dir.file_name().and_then(|n| n.to_str()) != Some(meta.chain_id.digest().hex())
            || ChainId::of(meta.parent.as_ref(), &meta.diff_id) != meta.chain_id
        {
            return Ok(Entry::Broken(SnapshotDamage::WrongName));
        }
        let fs_dir = dir.join(FS);
        match fs::symlink_metadata(&fs_dir) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => return Ok(Entry::Broken(SnapshotDamage::NoTree)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Ok(Entry::Broken(SnapshotDamage::NoTree));
            }
            Err(e) => return Err(CacheError::io("stat", &fs_dir)(e)),
        }
        Ok(Entry::Valid(SnapshotInfo {
            chain_id: meta.chain_id,
            parent: meta.parent,
            diff_id: meta.diff_id,
            mode: self.mode,
            size: meta.size,
            last_used: stat
                .modified()
                .map_err(CacheError::io("stat", &meta_path))?,
            fs: fs_dir,
        }))
    }

    fn mode_dir(&self) -> PathBuf {
        self.root.join(self.mode.dir_name())
    }

    fn dir_of(&self, chain_id: &ChainId) -> PathBuf {
        self.mode_dir().join(chain_id.digest().hex())
    }
}

/// What is at a snapshot's place on disk.
enum Entry {
    Absent,
    /// Something that is not a complete snapshot.
    Broken(SnapshotDamage),
    Valid(SnapshotInfo),
}

/// A directory of a snapshot folder: the snapshot, or why it is not one.
pub(crate) type Inspected = Result<SnapshotInfo, SnapshotDamage>;

/// Why a directory in a snapshot folder is not a usable snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SnapshotDamage {
    /// It has no `meta.json`.
    NoMetadata,
    /// Its `meta.json` is not valid snapshot metadata.
    BadMetadata,
    /// Its name is not the chain ID its metadata gives, or that chain ID does not
    /// follow from the recorded parent and diff ID.
    WrongName,
    /// It has no `fs/` directory.
    NoTree,
}

impl std::fmt::Display for SnapshotDamage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SnapshotDamage::NoMetadata => "it has no meta.json",
            SnapshotDamage::BadMetadata => "its meta.json cannot be parsed",
            SnapshotDamage::WrongName => {
                "its name does not match the chain ID of its parent and diff ID"
            }
            SnapshotDamage::NoTree => "it has no fs/ directory",
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::thread;
    use std::time::Duration;

    use super::*;

    #[test]
    fn one_thread_at_a_time_unpacks_a_snapshot_and_others_are_not_held_up() {
        let unpacking = Unpacking::new();
        let (inside, most) = (AtomicUsize::new(0), AtomicUsize::new(0));
        let others = AtomicUsize::new(0);
        thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    let _claim = unpacking.claim(PathBuf::from("a"));
                    let now = inside.fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(now, Ordering::SeqCst);
                    thread::sleep(Duration::from_millis(30));
                    inside.fetch_sub(1, Ordering::SeqCst);
                });
            }
            // A different snapshot is claimed at once, while "a" is busy.
            s.spawn(|| {
                thread::sleep(Duration::from_millis(10));
                let _claim = unpacking.claim(PathBuf::from("b"));
                others.fetch_add(inside.load(Ordering::SeqCst), Ordering::SeqCst);
            });
        });
        assert_eq!(most.into_inner(), 1);
        assert_eq!(others.into_inner(), 1, "b was claimed while a was held");
        assert!(unpacking.dirs().is_empty(), "every claim was given back");
    }
}
