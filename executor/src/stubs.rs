//! Mount points runc creates in the rootfs, and removing them so no trace reaches the
//! step's layer.
//!
//! runc creates a missing mount destination (an empty file for a file bind, an empty
//! directory otherwise, with missing parents) before mounting over it. Those stubs would
//! otherwise show up in the upper dir: `/etc/hosts` in a rootfs without one, `/proc` in a
//! `FROM scratch` image, the target of a cache mount. As BuildKit does, the missing paths
//! are recorded before the run and removed after it when they are still empty; the
//! modification times of the directories they were created in are put back.
//!
//! With an overlay rootfs one more trace is left: creating a stub in a directory that
//! exists only in a lower layer copies that directory up into the upper dir. After
//! unmounting, such a copy is removed again if it is empty, is not opaque, and has the
//! lower directory's mode and owner — then dropping it changes nothing in the merged view.

use std::fs::{self, File, FileTimes};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::rootpath::{is_missing, resolve};

/// What runc will create for a run, and how to undo it.
#[derive(Debug)]
pub(crate) struct MountStubs {
    root: PathBuf,
    /// Paths (relative to `root`) that do not exist yet, deepest first.
    created: Vec<PathBuf>,
    /// Existing directories that will get a new entry, with their times.
    parents: Vec<(PathBuf, FileTimesSnapshot)>,
    overlay: Option<CopyUps>,
}

#[derive(Debug, Clone, Copy)]
struct FileTimesSnapshot {
    accessed: std::time::SystemTime,
    modified: std::time::SystemTime,
}

/// Directories that may be copied up into the upper dir by creating stubs.
#[derive(Debug)]
struct CopyUps {
    upper: PathBuf,
    lowers: Vec<PathBuf>,
    /// Relative paths absent from `upper` before the run, deepest first.
    absent: Vec<PathBuf>,
}

impl MountStubs {
    /// Records which of `destinations` (container paths) are missing under `root`.
    /// `overlay` names the upper and lower dirs when `root` is an overlay mount.
    pub(crate) fn record<'a>(
        root: &Path,
        destinations: impl IntoIterator<Item = &'a Path>,
        overlay: Option<(&Path, &[PathBuf])>,
    ) -> io::Result<MountStubs> {
        let mut created: Vec<PathBuf> = Vec::new();
        let mut parents: Vec<(PathBuf, FileTimesSnapshot)> = Vec::new();
        for dest in destinations {
            let resolved = resolve(root, dest)?;
            let mut prefix = PathBuf::new();
            let mut missing = false;
            for part in resolved.components() {
                let parent = prefix.clone();
                prefix.push(part);
                if !missing {
                    match fs::symlink_metadata(root.join(&prefix)) {
                        Ok(_) => continue,
                        Err(err) if is_missing(&err) => missing = true,
                        Err(err) => return Err(err),
                    }
                    if !parents.iter().any(|(p, _)| *p == parent) {
                        let meta = fs::metadata(root.join(&parent))?;
                        let times = FileTimesSnapshot {
                            accessed: meta.accessed()?,
                            modified: meta.modified()?,
                        };
                        parents.push((parent, times));
                    }
                }
                if !created.contains(&prefix) {
                    created.push(prefix.clone());
                }
            }
        }
        sort_deepest_first(&mut created);

        let overlay = match overlay {
            Some((upper, lowers)) => {
                let mut absent = Vec::new();
                for (parent, _) in &parents {
                    for dir in parent.ancestors().filter(|d| !d.as_os_str().is_empty()) {
                        let dir = dir.to_owned();
                        if !absent.contains(&dir) && !exists(&upper.join(&dir))? {
                            absent.push(dir);
                        }
                    }
                }
                sort_deepest_first(&mut absent);
                Some(CopyUps {
                    upper: upper.to_owned(),
                    lowers: lowers.to_vec(),
                    absent,
                })
            }
            None => None,
        };
        Ok(MountStubs {
            root: root.to_owned(),
            created,
            parents,
            overlay,
        })
    }

    /// The stubs that will be created, relative to the rootfs, deepest first.
    #[cfg(test)]
    pub(crate) fn created(&self) -> &[PathBuf] {
        &self.created
    }

    /// Removes the stubs that are still empty and restores their parents' times; runs
    /// after the container is gone and while the rootfs is still mounted.
    pub(crate) fn remove(&self) -> io::Result<()> {
        for rel in &self.created {
            let path = self.root.join(rel);
            let meta = match fs::symlink_metadata(&path) {
                Ok(meta) => meta,
                Err(err) if is_missing(&err) => continue,
                Err(err) => return Err(err),
            };
            let result = if meta.is_dir() {
                fs::remove_dir(&path)
            } else if meta.is_file() && meta.len() == 0 {
                fs::remove_file(&path)
            } else {
                Ok(())
            };
            match result {
                Err(err) if err.kind() == io::ErrorKind::DirectoryNotEmpty => {}
                other => other?,
            }
        }
        for (rel, times) in &self.parents {
            File::open(self.root.join(rel))?.set_times(
                FileTimes::new()
                    .set_accessed(times.accessed)
                    .set_modified(times.modified),
            )?;
        }
        Ok(())
    }

    /// Removes directories that creating stubs copied up into the upper dir and that
    /// now hold nothing of their own; runs after the overlay is unmounted.
    pub(crate) fn prune_copy_ups(&self) -> io::Result<()> {
        let Some(overlay) = &self.overlay else {
            return Ok(());
        };
        for rel in &overlay.absent {
            let path = overlay.upper.join(rel);
            let meta = match fs::symlink_metadata(&path) {
                Ok(meta) if meta.is_dir() => meta,
                Ok(_) => continue,
                Err(err) if is_missing(&err) => continue,
                Err(err) => return Err(err),
            };
            if fs::read_dir(&path)?.next().is_some() || is_opaque(&path)? {
                continue;
            }
            let Some(lower) = overlay.lower_meta(rel)? else {
                continue;
            };
            if lower.is_dir()
                && lower.mode() == meta.mode()
                && lower.uid() == meta.uid()
                && lower.gid() == meta.gid()
            {
                fs::remove_dir(&path)?;
            }
        }
        Ok(())
    }
}

impl CopyUps {
    /// The metadata of `rel` in the topmost lower dir that has it.
    fn lower_meta(&self, rel: &Path) -> io::Result<Option<fs::Metadata>> {
        for lower in &self.lowers {
            match fs::symlink_metadata(lower.join(rel)) {
                Ok(meta) => return Ok(Some(meta)),
                Err(err) if is_missing(&err) => continue,
                Err(err) => return Err(err),
            }
        }
        Ok(None)
    }
}

fn sort_deepest_first(paths: &mut [PathBuf]) {
    paths.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
}

fn exists(path: &Path) -> io::Result<bool> {
    match fs::symlink_metadata(path) {
        Ok(_) => Ok(true),
        Err(err) if is_missing(&err) => Ok(false),
        Err(err) => Err(err),
    }
}

/// Whether overlayfs marked the upper directory as hiding everything below it.
fn is_opaque(path: &Path) -> io::Result<bool> {
    let mut value = [0u8; 8];
    match rustix::fs::lgetxattr(path, "trusted.overlay.opaque", &mut value) {
        Ok(n) => Ok(&value[..n] == b"y"),
        Err(rustix::io::Errno::NODATA) => Ok(false),
        Err(errno) => Err(errno.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, SystemTime};

    fn set_mtime(path: &Path, t: SystemTime) {
        File::open(path)
            .unwrap()
            .set_times(FileTimes::new().set_modified(t))
            .unwrap();
    }

    #[test]
    fn records_missing_paths_and_removes_only_empty_stubs() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        fs::create_dir(r.join("etc")).unwrap();
        let old = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        set_mtime(&r.join("etc"), old);
        let stubs = MountStubs::record(
            r,
            [
                Path::new("/etc/hosts"),
                Path::new("/proc"),
                Path::new("/root/.cache/go"),
            ],
            None,
        )
        .unwrap();
        assert_eq!(
            stubs.created(),
            [
                PathBuf::from("root/.cache/go"),
                PathBuf::from("etc/hosts"),
                PathBuf::from("root/.cache"),
                PathBuf::from("proc"),
                PathBuf::from("root"),
            ]
        );

        // What runc would create, plus a file the command wrote next to a stub.
        fs::write(r.join("etc/hosts"), "").unwrap();
        fs::create_dir(r.join("proc")).unwrap();
        fs::create_dir_all(r.join("root/.cache/go")).unwrap();
        fs::write(r.join("root/.profile"), "kept").unwrap();

        stubs.remove().unwrap();
        assert!(!r.join("etc/hosts").exists());
        assert!(!r.join("proc").exists());
        assert!(!r.join("root/.cache").exists());
        assert!(r.join("root/.profile").exists());
        assert_eq!(
            fs::metadata(r.join("etc")).unwrap().modified().unwrap(),
            old
        );
    }

    #[test]
    fn a_stub_that_got_content_is_kept() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        let stubs = MountStubs::record(r, [Path::new("/etc/hostname")], None).unwrap();
        fs::create_dir(r.join("etc")).unwrap();
        fs::write(r.join("etc/hostname"), "written").unwrap();
        stubs.remove().unwrap();
        assert!(r.join("etc/hostname").exists());
    }

    #[test]
    fn existing_destinations_are_not_stubs() {
        let root = tempfile::tempdir().unwrap();
        fs::create_dir(root.path().join("proc")).unwrap();
        let stubs = MountStubs::record(root.path(), [Path::new("/proc")], None).unwrap();
        assert!(stubs.created().is_empty());
    }

    #[test]
    fn copied_up_parents_are_pruned_when_unchanged() {
        let dir = tempfile::tempdir().unwrap();
        let (lower, upper, merged) = (
            dir.path().join("lower"),
            dir.path().join("upper"),
            dir.path().join("merged"),
        );
        fs::create_dir_all(lower.join("etc")).unwrap();
        fs::create_dir_all(lower.join("var/lib")).unwrap();
        fs::create_dir_all(&upper).unwrap();
        // `merged` stands in for the overlay: record sees the lower's tree.
        fs::create_dir_all(merged.join("etc")).unwrap();
        fs::create_dir_all(merged.join("var/lib")).unwrap();
        let lowers = vec![lower.clone()];
        let stubs = MountStubs::record(
            &merged,
            [Path::new("/etc/hosts"), Path::new("/var/lib/cache")],
            Some((&upper, &lowers)),
        )
        .unwrap();

        // The copy-ups overlayfs would have made: /etc unchanged, /var/lib chmodded.
        fs::create_dir_all(upper.join("etc")).unwrap();
        fs::create_dir_all(upper.join("var/lib")).unwrap();
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(upper.join("var/lib"), fs::Permissions::from_mode(0o700)).unwrap();

        stubs.prune_copy_ups().unwrap();
        assert!(!upper.join("etc").exists());
        assert!(upper.join("var/lib").exists());
        assert!(upper.join("var").exists());
    }
}
