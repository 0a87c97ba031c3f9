//! File steps (COPY, ADD, WORKDIR, heredoc files) on a mounted view of the stage.
//!
//! The destination stage is mounted as an overlay with a fresh upper dir; the actions
//! run against the merged view, exactly as a container would see the tree (symlinks
//! resolved inside it, `/etc/passwd` of the stage for `--chown` names); the upper dir
//! is then the step's layer. The files a COPY reads are chosen by the same walk that
//! computed the step's cache key, so what is hashed is what is copied.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use kiln_cache::LayerRecord;
use kiln_cache::context::{ContextTree, IgnoreMatcher, Selection};
use kiln_cache::{ScratchDir, SnapshotMode};
use kiln_executor::User;
use kiln_executor::file::{self as files, CopyEntry, CopyRequest};
use kiln_solver::op::{Chmod, CopyAction, FileAction, FileOp, Owner, Principal};

use super::worker::{HashedLayer, StateRef, WorkerParts};
use super::workspace::{Overlay, Workspace, copy_tree};

/// Runs a file op over its inputs and commits the changes as a layer.
pub fn run(parts: &WorkerParts, op: &FileOp, inputs: &[StateRef]) -> anyhow::Result<StateRef> {
    let base: &[LayerRecord] = if op.has_base {
        inputs
            .first()
            .context("a file step has no base filesystem")?
            .layers()?
    } else {
        &[]
    };
    let scratch = parts.snapshots.scratch()?;
    let workspace = Workspace::prepare(parts, base, &scratch)?;
    workspace.with_root(&scratch, |root| {
        for action in &op.actions {
            apply(parts, root, action, inputs)?;
        }
        Ok(())
    })?;
    workspace.commit(parts, base, &scratch)
}

/// A copy step done ahead of its turn, over an earlier state of its destination stage
/// (see `kiln_solver::scheduler`): its change set, hashed, waiting to be committed
/// over the real state.
pub struct PreparedCopy {
    /// The state it was done over.
    base: Vec<LayerRecord>,
    /// Its change set (an overlay upper dir in `_scratch`).
    upper: PathBuf,
    hashed: HashedLayer,
    /// The destinations, as paths relative to the root: none existed in `base`.
    dests: Vec<PathBuf>,
    /// Whether owner names were looked up in `/etc/passwd` and `/etc/group`.
    reads_user_db: bool,
    _scratch: ScratchDir,
}

/// Does a copy step over `inputs[0]`, an earlier state of its destination, when the
/// result can later be shown to be the one running it in its turn would give: every
/// action copies from another input to a destination that does not exist yet, under
/// real directories. `None` when that is not so.
///
/// Such a copy reads nothing of its destination stage but the destination's ancestors
/// (that they are directories, and the metadata of those it copies up), the fact that
/// the destination is absent, and, for `--chown` names, `/etc/passwd` and
/// `/etc/group`; and it writes only under its destination and those ancestors. So if
/// no layer between the earlier state and the real one has an entry at the destination,
/// at an ancestor of it or at those two files (a layer is a tree: an entry below the
/// destination comes with one at the destination), the change set is the same.
pub fn prepare(
    parts: &WorkerParts,
    op: &FileOp,
    inputs: &[StateRef],
) -> anyhow::Result<Option<PreparedCopy>> {
    if !op.has_base || !parts.layers_kept_in_snapshots() {
        return Ok(None);
    }
    let mut dests = Vec::new();
    let mut reads_user_db = false;
    for action in &op.actions {
        let FileAction::Copy(copy) = action else {
            return Ok(None);
        };
        let Some(dest) = plain_relative(&copy.dest) else {
            return Ok(None);
        };
        if copy.input == 0 || copy.unpack {
            return Ok(None);
        }
        reads_user_db |= copy.owner.as_ref().is_some_and(|o| {
            matches!(o.user, Principal::Name(_)) || matches!(o.group, Some(Principal::Name(_)))
        });
        dests.push(dest);
    }
    let base = inputs
        .first()
        .context("a file step has no base filesystem")?
        .layers()?;
    let scratch = parts.snapshots.scratch()?;
    let workspace = Workspace::prepare(parts, base, &scratch)?;
    let fresh = workspace.with_root(&scratch, |root| {
        if !dests.iter().all(|d| absent_under_real_dirs(root, d)) {
            return Ok(false);
        }
        for action in &op.actions {
            apply(parts, root, action, inputs)?;
        }
        Ok(true)
    })?;
    let Workspace::Overlay { upper, .. } = workspace else {
        return Ok(None);
    };
    if !fresh {
        return Ok(None);
    }
    let hashed = parts.hash_changes(&upper, kiln_image::layer::Source::OverlayUpper)?;
    Ok(Some(PreparedCopy {
        base: base.to_vec(),
        upper,
        hashed,
        dests,
        reads_user_db,
        _scratch: scratch,
    }))
}

/// Commits a prepared copy over `dest`, the real state of its destination stage, when
/// the layers `dest` has beyond the state the copy was done over touch nothing the copy
/// read (see [`prepare`]). `None` when they might: the step then runs as usual.
pub fn commit_prepared(
    parts: &WorkerParts,
    prepared: PreparedCopy,
    dest: &StateRef,
) -> anyhow::Result<Option<StateRef>> {
    let layers = dest.layers()?;
    let same_below = layers.len() >= prepared.base.len()
        && layers
            .iter()
            .zip(&prepared.base)
            .all(|(a, b)| a.diff_id == b.diff_id);
    if !same_below {
        return Ok(None);
    }
    let between = layers.len() - prepared.base.len();
    let dirs = parts.lowerdirs(layers)?;
    for dir in dirs.iter().take(between) {
        if touches(dir, &prepared)? {
            return Ok(None);
        }
    }
    let state = parts.commit_hashed(layers, prepared.hashed, &prepared.upper)?;
    Ok(Some(state))
}

/// Whether the layer whose snapshot is `dir` has an entry the prepared copy depends on.
fn touches(dir: &Path, prepared: &PreparedCopy) -> anyhow::Result<bool> {
    let entry = |rel: &Path| -> anyhow::Result<Option<fs::Metadata>> {
        match fs::symlink_metadata(dir.join(rel)) {
            Ok(meta) => Ok(Some(meta)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("reading {}", dir.join(rel).display())),
        }
    };
    let exists = |rel: &Path| entry(rel).map(|meta| meta.is_some());
    // An opaque root hides everything below it.
    if kiln_image::layer::is_overlay_opaque(dir)? {
        return Ok(true);
    }
    for dest in &prepared.dests {
        for at in dest.ancestors().filter(|a| !a.as_os_str().is_empty()) {
            if exists(at)? {
                return Ok(true);
            }
        }
    }
    if prepared.reads_user_db {
        for file in ["etc/passwd", "etc/group"] {
            if exists(Path::new(file))? {
                return Ok(true);
            }
        }
        // `/etc` replaced (by a file, a symlink, or an opaque directory) hides both.
        if let Some(meta) = entry(Path::new("etc"))?
            && (!meta.is_dir() || kiln_image::layer::is_overlay_opaque(&dir.join("etc"))?)
        {
            return Ok(true);
        }
    }
    Ok(false)
}

/// `dest` as a path relative to the root, when it is absolute, below the root, and
/// has no `.` or `..` in it.
fn plain_relative(dest: &str) -> Option<PathBuf> {
    let rel = dest.strip_prefix('/')?.trim_end_matches('/');
    if rel.is_empty() {
        return None;
    }
    let mut out = PathBuf::new();
    for part in rel.split('/') {
        if part.is_empty() || part == "." || part == ".." {
            return None;
        }
        out.push(part);
    }
    Some(out)
}

/// Whether nothing exists at `rel` in the tree at `root`, and each ancestor of it that
/// exists is a directory, not a symlink.
fn absent_under_real_dirs(root: &Path, rel: &Path) -> bool {
    let mut at = root.to_owned();
    let parts: Vec<_> = rel.components().collect();
    for (i, part) in parts.iter().enumerate() {
        at.push(part);
        match fs::symlink_metadata(&at) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return true,
            Err(_) => return false,
            Ok(_) if i + 1 == parts.len() => return false,
            Ok(meta) if !meta.file_type().is_dir() => return false,
            Ok(_) => {}
        }
    }
    false
}

fn apply(
    parts: &WorkerParts,
    root: &Path,
    action: &FileAction,
    inputs: &[StateRef],
) -> anyhow::Result<()> {
    match action {
        FileAction::Copy(copy) => copy_action(parts, root, copy, inputs),
        FileAction::Mkdir {
            path,
            mode,
            parents,
            owner,
        } => {
            let owner = resolve_owner(root, owner.as_ref())?;
            files::mkdir(root, path, *mode, *parents, Some(owner))
                .with_context(|| format!("creating directory {path}"))
        }
        FileAction::Mkfile {
            path,
            data,
            mode,
            owner,
        } => {
            let owner = resolve_owner(root, owner.as_ref())?;
            files::mkfile(root, path, data, *mode, Some(owner))
                .with_context(|| format!("creating file {path}"))
        }
        FileAction::Rm {
            path,
            allow_not_found,
        } => files::rm(root, path, *allow_not_found).with_context(|| format!("removing {path}")),
    }
}

fn copy_action(
    parts: &WorkerParts,
    root: &Path,
    copy: &CopyAction,
    inputs: &[StateRef],
) -> anyhow::Result<()> {
    let source = inputs
        .get(copy.input)
        .with_context(|| format!("copy source input {} is missing", copy.input))?;
    let no_ignore = IgnoreMatcher::default();
    let mut view = None;
    let (tree_root, ignore, from_context) = match source {
        StateRef::Context => (parts.context.dir.clone(), &parts.context.ignore, true),
        StateRef::Layers(layers) => {
            let mounted = ScratchView::of_layers(parts, layers)?;
            let path = mounted.path().to_owned();
            view = Some(mounted);
            (path, &no_ignore, false)
        }
    };
    let selection = Selection {
        sources: copy.sources.clone(),
        wildcard: copy.allow_wildcard,
        allow_empty: copy.allow_empty_wildcard,
        excludes: copy.excludes.clone(),
    };
    let selected = ContextTree::new(&tree_root, ignore).select(&selection)?;
    let dest_is_dir = copy.dest.ends_with('/')
        || copy.sources.len() > 1
        || selected.len() > 1
        || files::resolve_in_root(root, &copy.dest)?.is_dir();
    if selected.len() > 1 && !copy.dest.ends_with('/') {
        bail!(
            "when using COPY with more than one source file, the destination must be a directory and end with a /"
        );
    }
    let mut roots = Vec::new();
    let mut entries = Vec::new();
    for s in &selected {
        let base_name = Path::new(&s.path)
            .file_name()
            .map(PathBuf::from)
            .unwrap_or_default();
        let prefix = if copy.parents {
            PathBuf::from(&s.path)
        } else if s.is_dir() && copy.dir_contents_only {
            PathBuf::new()
        } else if dest_is_dir {
            base_name
        } else {
            PathBuf::new()
        };
        if copy.unpack && !s.is_dir() && files::is_archive(&s.entries[0].abs)? {
            // Extracted files keep the archive's owners unless --chown says otherwise.
            let owner = match &copy.owner {
                Some(owner) => Some(resolve_owner(root, Some(owner))?),
                None => None,
            };
            files::unpack(root, &copy.dest, &s.entries[0].abs, owner)
                .with_context(|| format!("extracting {}", s.path))?;
            continue;
        }
        for e in &s.entries {
            let entry = CopyEntry {
                source: e.abs.clone(),
                target: if e.rel.is_empty() {
                    prefix.clone()
                } else {
                    prefix.join(&e.rel)
                },
            };
            // A copied directory's own entry keeps its mode: --chmod applies to what
            // is inside it, as in docker build.
            if e.rel.is_empty() && s.is_dir() {
                roots.push(entry);
            } else {
                entries.push(entry);
            }
        }
    }
    let owner = match &copy.owner {
        Some(owner) => Some(resolve_owner(root, Some(owner))?),
        // Files from the context belong to root; from a stage they keep their owner.
        None if from_context => Some(files::Owner { uid: 0, gid: 0 }),
        None => None,
    };
    let chmod = copy.mode.as_ref().map(chmod).transpose()?;
    for (entries, chmod) in [(roots, None), (entries, chmod)] {
        let request = CopyRequest {
            root: root.to_owned(),
            dest: copy.dest.clone(),
            entries,
            owner,
            chmod,
            create_parents: true,
        };
        files::copy(&request).with_context(|| format!("copying to {}", copy.dest))?;
    }
    drop(view);
    Ok(())
}

fn chmod(mode: &Chmod) -> anyhow::Result<files::Chmod> {
    let text = match mode {
        Chmod::Octal(bits) => format!("{bits:o}"),
        Chmod::Symbolic(expr) => expr.clone(),
    };
    text.parse().with_context(|| format!("--chmod={text}"))
}

fn owner_spec(owner: &Owner) -> String {
    let part = |p: &Principal| match p {
        Principal::Id(id) => id.to_string(),
        Principal::Name(name) => name.clone(),
    };
    match &owner.group {
        Some(group) => format!("{}:{}", part(&owner.user), part(group)),
        None => part(&owner.user),
    }
}

fn resolve_owner(root: &Path, owner: Option<&Owner>) -> anyhow::Result<files::Owner> {
    let Some(owner) = owner else {
        return Ok(files::Owner { uid: 0, gid: 0 });
    };
    let spec = owner_spec(owner);
    files::resolve_owner(root, &spec).with_context(|| format!("--chown={spec}"))
}

/// Resolves a `USER` spec for a RUN step against the `/etc/passwd` and `/etc/group`
/// of the stage, found in its lower dirs (top first) without mounting them.
pub fn resolve_user_in_lowers(
    lowers: &[PathBuf],
    spec: &str,
    scratch: &Path,
) -> anyhow::Result<User> {
    if spec.is_empty() {
        return Ok(User::default());
    }
    let view = scratch.join("userdb");
    fs::create_dir_all(view.join("etc"))?;
    for name in ["passwd", "group"] {
        let found = lowers
            .iter()
            .map(|l| l.join("etc").join(name))
            .find(|p| fs::symlink_metadata(p).is_ok());
        if let Some(path) = found
            && path.is_file()
        {
            fs::copy(&path, view.join("etc").join(name))?;
        }
    }
    let mut user = files::resolve_user(&view, spec).with_context(|| format!("USER {spec}"))?;
    fs::remove_dir_all(&view)?;
    // The primary group is among the process's groups, as BuildKit sets them up.
    if !user.additional_gids.contains(&user.gid) {
        user.additional_gids.insert(0, user.gid);
    }
    Ok(user)
}

/// `base/rel`, refusing a `rel` that climbs out of `base`.
pub fn join_inside(base: &Path, rel: &str) -> anyhow::Result<PathBuf> {
    let cleaned = kiln_cache::context::pattern::clean(&format!("/{rel}"));
    let rel = cleaned.trim_start_matches('/');
    Ok(if rel.is_empty() {
        base.to_owned()
    } else {
        base.join(rel)
    })
}

/// A filesystem mounted so that writes to it go to a throw-away upper dir: for
/// `COPY --from` and `RUN --mount=type=bind` (read-write binds discard their writes).
pub struct ScratchView {
    overlay: Option<Overlay>,
    path: PathBuf,
    _scratch: ScratchDir,
}

impl ScratchView {
    /// Mounts the chain `layers`.
    pub fn of_layers(parts: &WorkerParts, layers: &[LayerRecord]) -> anyhow::Result<ScratchView> {
        ScratchView::mount(parts, parts.lowerdirs(layers)?)
    }

    /// Mounts `lowers` (top first; none for an empty tree). Without overlayfs, the one
    /// tree given is copied.
    pub fn mount(parts: &WorkerParts, lowers: Vec<PathBuf>) -> anyhow::Result<ScratchView> {
        let scratch = parts.snapshots.scratch()?;
        if parts.snapshots.mode() == SnapshotMode::Copy
            && let Some(tree) = lowers.first()
        {
            let copy = scratch.path().join("copy");
            copy_tree(tree, &copy)?;
            return Ok(ScratchView {
                overlay: None,
                path: copy,
                _scratch: scratch,
            });
        }
        if lowers.is_empty() {
            let empty = scratch.path().join("empty");
            fs::create_dir(&empty)?;
            return Ok(ScratchView {
                overlay: None,
                path: empty,
                _scratch: scratch,
            });
        }
        let upper = scratch.path().join("upper");
        fs::create_dir(&upper)?;
        let overlay = Overlay::mount(&scratch, lowers, &upper)?;
        Ok(ScratchView {
            path: overlay.target.clone(),
            overlay: Some(overlay),
            _scratch: scratch,
        })
    }

    /// The mounted tree.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for ScratchView {
    fn drop(&mut self) {
        // Unmount before the scratch dir is removed.
        self.overlay.take();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_absolute_destinations_below_the_root_qualify() {
        assert_eq!(plain_relative("/a/b/"), Some(PathBuf::from("a/b")));
        assert_eq!(plain_relative("/a"), Some(PathBuf::from("a")));
        for dest in ["/", "a/b", "/a/../b", "/a/./b", "/a//b", ""] {
            assert_eq!(plain_relative(dest), None, "{dest:?}");
        }
    }

    #[test]
    fn a_destination_qualifies_when_absent_under_real_directories() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::create_dir_all(root.join("usr/local")).unwrap();
        fs::write(root.join("file"), "").unwrap();
        std::os::unix::fs::symlink("usr", root.join("link")).unwrap();
        assert!(absent_under_real_dirs(root, Path::new("new")));
        assert!(absent_under_real_dirs(
            root,
            Path::new("usr/local/new/deeper")
        ));
        assert!(absent_under_real_dirs(root, Path::new("missing/deeper")));
        // There already, or reached through something that is not a directory.
        assert!(!absent_under_real_dirs(root, Path::new("usr/local")));
        assert!(!absent_under_real_dirs(root, Path::new("file")));
        assert!(!absent_under_real_dirs(root, Path::new("file/new")));
        assert!(!absent_under_real_dirs(root, Path::new("link/new")));
    }
}
