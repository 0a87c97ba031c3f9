//! Where a step makes its changes, with or without overlayfs.
//!
//! With overlayfs (the default), a step's root is an overlay of its base's snapshots
//! with a fresh upper dir, and the upper dir is the step's change set. Where overlayfs
//! cannot be mounted (some kernels, some filesystems, some containers), the copying
//! snapshotter is used instead: the step runs on a plain copy of its base, and its
//! change set is the difference between the two trees, written in overlay form by
//! [`diff_trees`]. Both end the same way: the change set becomes the step's layer, and
//! the result becomes the snapshot the next step starts from.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use kiln_cache::{LayerRecord, ScratchDir, SnapshotMode};
use kiln_executor::file::{self as files, CopyEntry, CopyRequest};
use kiln_executor::{LinuxMounter, Mounter, OverlayMount, Rootfs};
use kiln_image::layer::{Source as LayerSource, diff_trees};

use super::worker::{StateRef, WorkerParts};

/// A step's working tree.
pub enum Workspace {
    /// An overlay of `lowers` (top first) receiving changes in `upper`.
    Overlay {
        /// The base's snapshot dirs, top first.
        lowers: Vec<PathBuf>,
        /// The change set.
        upper: PathBuf,
        /// Overlayfs's work dir.
        work: PathBuf,
    },
    /// A plain copy of the base (`tree`), changed in place.
    Copy {
        /// The base's snapshot tree (none for an empty base).
        base: Option<PathBuf>,
        /// The working copy.
        tree: PathBuf,
    },
}

impl Workspace {
    /// Prepares a workspace over `base` in `scratch`.
    pub fn prepare(
        parts: &WorkerParts,
        base: &[LayerRecord],
        scratch: &ScratchDir,
    ) -> anyhow::Result<Workspace> {
        let lowers = parts.lowerdirs(base)?;
        match parts.snapshots.mode() {
            SnapshotMode::Overlay => {
                let upper = scratch.path().join("upper");
                let work = scratch.path().join("work");
                fs::create_dir(&upper)?;
                fs::create_dir(&work)?;
                Ok(Workspace::Overlay {
                    lowers,
                    upper,
                    work,
                })
            }
            SnapshotMode::Copy => {
                let tree = scratch.path().join("tree");
                let base = lowers.into_iter().next();
                match &base {
                    Some(base) => copy_tree(base, &tree)?,
                    None => fs::create_dir(&tree)?,
                }
                Ok(Workspace::Copy { base, tree })
            }
        }
    }

    /// The root filesystem a RUN step gets.
    pub fn rootfs(&self) -> Rootfs {
        match self {
            Workspace::Overlay {
                lowers,
                upper,
                work,
            } => Rootfs::Overlay {
                lowers: lowers.clone(),
                upper: upper.clone(),
                work: work.clone(),
            },
            Workspace::Copy { tree, .. } => Rootfs::Dir(tree.clone()),
        }
    }

    /// The directories to look up `/etc/passwd` in, top first, without mounting.
    pub fn lookup_dirs(&self) -> Vec<PathBuf> {
        match self {
            Workspace::Overlay { lowers, .. } => lowers.clone(),
            Workspace::Copy { tree, .. } => vec![tree.clone()],
        }
    }

    /// The tree mounted for file actions, as `f` sees it; unmounted afterwards.
    pub fn with_root<T>(
        &self,
        scratch: &ScratchDir,
        f: impl FnOnce(&Path) -> anyhow::Result<T>,
    ) -> anyhow::Result<T> {
        match self {
            // Over an empty base the upper dir is the whole tree: no overlay needed.
            Workspace::Overlay { lowers, upper, .. } if lowers.is_empty() => f(upper),
            Workspace::Overlay { lowers, upper, .. } => {
                let overlay = Overlay::mount(scratch, lowers.clone(), upper)?;
                f(&overlay.target)
            }
            Workspace::Copy { tree, .. } => f(tree),
        }
    }

    /// Commits the step's changes over `base`: a layer, and a snapshot.
    pub fn commit(
        self,
        parts: &WorkerParts,
        base: &[LayerRecord],
        scratch: &ScratchDir,
    ) -> anyhow::Result<StateRef> {
        match self {
            Workspace::Overlay { upper, .. } => {
                parts.commit_tree(base, &upper, LayerSource::OverlayUpper, &upper)
            }
            Workspace::Copy { base: lower, tree } => {
                let changes = scratch.path().join("changes");
                fs::create_dir(&changes)?;
                diff_trees(lower.as_deref(), &tree, &changes)?;
                parts.commit_tree(base, &changes, LayerSource::OverlayUpper, &tree)
            }
        }
    }
}

/// Copies the tree `from` to a new directory `to`, keeping every entry's metadata.
pub fn copy_tree(from: &Path, to: &Path) -> anyhow::Result<()> {
    fs::create_dir(to)?;
    let mut entries = Vec::new();
    for entry in walkdir::WalkDir::new(from).min_depth(1).sort_by_file_name() {
        let entry = entry?;
        entries.push(CopyEntry {
            source: entry.path().to_owned(),
            target: entry.path().strip_prefix(from)?.to_owned(),
        });
    }
    let request = CopyRequest {
        root: to.to_owned(),
        dest: "/".to_owned(),
        entries,
        owner: None,
        chmod: None,
        create_parents: true,
    };
    files::copy(&request)
        .with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
    let meta = fs::metadata(from)?;
    fs::set_permissions(to, meta.permissions())?;
    Ok(())
}

/// Whether overlayfs can be mounted in the snapshot store's scratch area.
pub fn overlay_works(parts_scratch: &ScratchDir) -> bool {
    let dir = parts_scratch.path();
    let (lower, upper, work, target) = (dir.join("l"), dir.join("u"), dir.join("w"), dir.join("m"));
    for d in [&lower, &upper, &work, &target] {
        if fs::create_dir(d).is_err() {
            return false;
        }
    }
    let overlay = OverlayMount {
        lowers: vec![lower],
        upper,
        work,
    };
    match LinuxMounter.mount_overlay(&overlay, &target) {
        Ok(()) => LinuxMounter.unmount(&target).is_ok(),
        Err(_) => false,
    }
}

/// An overlay mounted for the length of a step, unmounted when dropped.
pub struct Overlay {
    /// Where it is mounted.
    pub target: PathBuf,
}

impl Overlay {
    /// Mounts `lowers` (top first) over `upper` in a `merged` dir of `scratch`.
    pub fn mount(
        scratch: &ScratchDir,
        lowers: Vec<PathBuf>,
        upper: &Path,
    ) -> anyhow::Result<Overlay> {
        let work = scratch.path().join("work");
        let target = scratch.path().join("merged");
        fs::create_dir_all(&work)?;
        fs::create_dir_all(&target)?;
        let overlay = OverlayMount {
            lowers,
            upper: upper.to_owned(),
            work,
        };
        LinuxMounter.mount_overlay(&overlay, &target)?;
        Ok(Overlay { target })
    }
}

impl Drop for Overlay {
    fn drop(&mut self) {
        let _ = LinuxMounter.unmount(&self.target);
    }
}
