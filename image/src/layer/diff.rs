//! The changes from one tree to another, written as an overlay upper dir.
//!
//! Where overlayfs is unavailable, a step runs on a plain copy of its base; what it did
//! is then the difference between the base and the copy. Writing that difference in
//! overlay form (changed and new entries as they are, deleted ones as 0/0 character
//! devices) lets [`write_layer`](super::write_layer) turn it into a layer exactly as it
//! does an overlay upper dir. Regular files are hard-linked from the new tree, not
//! copied, so the difference costs no file data.
//!
//! An entry is unchanged when its type, permission bits, owner, size, modification time
//! (to the nanosecond), link target and device number are the same; copies made for a
//! step keep modification times, so a step that rewrites a file changes its time.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs::{self, Metadata};
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt, symlink};
use std::path::Path;

use super::LayerError;

/// Writes into the empty directory `out` the changes that turn `lower` (absent: an
/// empty tree) into `upper`.
pub fn diff_trees(lower: Option<&Path>, upper: &Path, out: &Path) -> Result<(), LayerError> {
    diff_dir(lower, upper, out)
}

fn walk_err(path: &Path) -> impl FnOnce(io::Error) -> LayerError + '_ {
    move |source| LayerError::Walk {
        path: path.to_owned(),
        source,
    }
}

fn entries(dir: &Path) -> Result<BTreeMap<OsString, Metadata>, LayerError> {
    let mut map = BTreeMap::new();
    for entry in fs::read_dir(dir).map_err(walk_err(dir))? {
        let entry = entry.map_err(walk_err(dir))?;
        let path = entry.path();
        let meta = fs::symlink_metadata(&path).map_err(walk_err(&path))?;
        map.insert(entry.file_name(), meta);
    }
    Ok(map)
}

fn diff_dir(lower: Option<&Path>, upper: &Path, out: &Path) -> Result<(), LayerError> {
    let new = entries(upper)?;
    let old = match lower {
        Some(dir) => entries(dir)?,
        None => BTreeMap::new(),
    };
    for (name, meta) in &new {
        let (from, to) = (upper.join(name), out.join(name));
        let before = old.get(name);
        if meta.is_dir() {
            match before {
                Some(b) if b.is_dir() => {
                    // A directory is written when it changed or something in it did.
                    let lower_dir = lower.map(|l| l.join(name));
                    fs::create_dir(&to).map_err(walk_err(&to))?;
                    diff_dir(lower_dir.as_deref(), &from, &to)?;
                    let empty = fs::read_dir(&to).map_err(walk_err(&to))?.next().is_none();
                    if empty && same(b, meta) {
                        fs::remove_dir(&to).map_err(walk_err(&to))?;
                    } else {
                        copy_meta(&from, meta, &to)?;
                    }
                }
                _ => copy_tree(&from, meta, &to)?,
            }
        } else if before.is_none_or(|b| !same_entry(b, meta, &upper.join(name), lower, name)) {
            link_entry(&from, meta, &to)?;
        }
    }
    for name in old.keys().filter(|n| !new.contains_key(*n)) {
        let to = out.join(name);
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &to,
            rustix::fs::FileType::CharacterDevice,
            rustix::fs::Mode::empty(),
            0,
        )
        .map_err(|e| walk_err(&to)(e.into()))?;
    }
    Ok(())
}

/// Whether two entries' own metadata is the same (not their contents).
fn same(a: &Metadata, b: &Metadata) -> bool {
    a.file_type() == b.file_type()
        && a.mode() == b.mode()
        && a.uid() == b.uid()
        && a.gid() == b.gid()
        && a.mtime() == b.mtime()
        && a.mtime_nsec() == b.mtime_nsec()
}

fn same_entry(
    a: &Metadata,
    b: &Metadata,
    new: &Path,
    lower: Option<&Path>,
    name: &OsString,
) -> bool {
    if !same(a, b) || a.len() != b.len() || a.rdev() != b.rdev() {
        return false;
    }
    if b.file_type().is_symlink() {
        let old = lower.map(|l| fs::read_link(l.join(name)).ok());
        return old.flatten() == fs::read_link(new).ok();
    }
    true
}

/// Puts `from` (not a directory) at `to`: a hard link for a regular file, a copy of
/// anything else.
fn link_entry(from: &Path, meta: &Metadata, to: &Path) -> Result<(), LayerError> {
    let ft = meta.file_type();
    if ft.is_file() {
        fs::hard_link(from, to).map_err(walk_err(from))
    } else if ft.is_symlink() {
        let target = fs::read_link(from).map_err(walk_err(from))?;
        symlink(&target, to).map_err(walk_err(to))?;
        lchown(to, meta)
    } else {
        let kind = if ft.is_char_device() {
            rustix::fs::FileType::CharacterDevice
        } else if ft.is_block_device() {
            rustix::fs::FileType::BlockDevice
        } else if ft.is_fifo() {
            rustix::fs::FileType::Fifo
        } else {
            // Sockets are not part of layers.
            return Ok(());
        };
        rustix::fs::mknodat(
            rustix::fs::CWD,
            to,
            kind,
            rustix::fs::Mode::from_raw_mode(meta.mode() & 0o7777),
            meta.rdev(),
        )
        .map_err(|e| walk_err(to)(e.into()))?;
        copy_meta(from, meta, to)
    }
}

/// Puts the whole directory `from` at `to`.
fn copy_tree(from: &Path, meta: &Metadata, to: &Path) -> Result<(), LayerError> {
    fs::create_dir(to).map_err(walk_err(to))?;
    for (name, child) in entries(from)? {
        let (f, t) = (from.join(&name), to.join(&name));
        if child.is_dir() {
            copy_tree(&f, &child, &t)?;
        } else {
            link_entry(&f, &child, &t)?;
        }
    }
    copy_meta(from, meta, to)
}

/// Gives `to` the mode, owner, extended attributes and times of `from`.
fn copy_meta(from: &Path, meta: &Metadata, to: &Path) -> Result<(), LayerError> {
    lchown(to, meta)?;
    fs::set_permissions(to, fs::Permissions::from_mode(meta.mode() & 0o7777))
        .map_err(walk_err(to))?;
    if let Ok(names) = xattr::list(from) {
        for name in names {
            if let Ok(Some(value)) = xattr::get(from, &name) {
                xattr::set(to, &name, &value).map_err(walk_err(to))?;
            }
        }
    }
    let times = fs::FileTimes::new()
        .set_accessed(meta.accessed().map_err(walk_err(from))?)
        .set_modified(meta.modified().map_err(walk_err(from))?);
    fs::File::open(to)
        .and_then(|f| f.set_times(times))
        .map_err(walk_err(to))
}

fn lchown(path: &Path, meta: &Metadata) -> Result<(), LayerError> {
    std::os::unix::fs::lchown(path, Some(meta.uid()), Some(meta.gid())).map_err(walk_err(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(dir: &Path) -> Vec<String> {
        let mut out = Vec::new();
        for entry in walkdir::WalkDir::new(dir).min_depth(1).sort_by_file_name() {
            let entry = entry.unwrap();
            let rel = entry
                .path()
                .strip_prefix(dir)
                .unwrap()
                .display()
                .to_string();
            let kind = if entry.file_type().is_char_device() {
                " (whiteout)"
            } else {
                ""
            };
            out.push(format!("{rel}{kind}"));
        }
        out
    }

    #[test]
    fn changed_new_and_deleted_entries_are_written_in_overlay_form() {
        let dir = tempfile::tempdir().unwrap();
        let (lower, upper, out) = (
            dir.path().join("l"),
            dir.path().join("u"),
            dir.path().join("o"),
        );
        for root in [&lower, &upper] {
            fs::create_dir_all(root.join("keep/sub")).unwrap();
            fs::create_dir_all(root.join("gone-dir/x")).unwrap();
            fs::write(root.join("keep/sub/same"), "same").unwrap();
            fs::write(root.join("keep/changed"), "old").unwrap();
            fs::write(root.join("removed"), "bye").unwrap();
        }
        // Same times for both copies of the unchanged entries.
        for rel in [
            "keep/sub/same",
            "keep/changed",
            "removed",
            "keep/sub",
            "keep",
            "gone-dir/x",
            "gone-dir",
        ] {
            let t = fs::metadata(lower.join(rel)).unwrap().modified().unwrap();
            fs::File::open(upper.join(rel))
                .unwrap()
                .set_modified(t)
                .unwrap();
        }
        fs::write(upper.join("keep/changed"), "new contents").unwrap();
        fs::write(upper.join("added"), "hi").unwrap();
        fs::remove_file(upper.join("removed")).unwrap();
        fs::remove_dir_all(upper.join("gone-dir")).unwrap();
        symlink("keep", upper.join("link")).unwrap();
        fs::create_dir(&out).unwrap();

        diff_trees(Some(&lower), &upper, &out).unwrap();
        assert_eq!(
            names(&out),
            [
                "added",
                "gone-dir (whiteout)",
                "keep",
                "keep/changed",
                "link",
                "removed (whiteout)"
            ]
        );
        assert_eq!(
            fs::read_to_string(out.join("keep/changed")).unwrap(),
            "new contents"
        );
    }

    #[test]
    fn against_nothing_everything_is_new() {
        let dir = tempfile::tempdir().unwrap();
        let (upper, out) = (dir.path().join("u"), dir.path().join("o"));
        fs::create_dir_all(upper.join("a/b")).unwrap();
        fs::write(upper.join("a/b/c"), "c").unwrap();
        fs::create_dir(&out).unwrap();
        diff_trees(None, &upper, &out).unwrap();
        assert_eq!(names(&out), ["a", "a/b", "a/b/c"]);
    }
}
