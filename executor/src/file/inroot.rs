//! Container paths of file actions, resolved on the host inside the stage's root, and
//! directories created there.
//!
//! Resolution is [`crate::rootpath`]'s, the rules runc uses for mount destinations, so
//! that `RUN`, `WORKDIR` and `COPY` agree on what a path means in the same image. A
//! stage's root is not in use by any container while file actions run, so a path
//! resolved here stays valid while it is used.

use std::ffi::OsString;
use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Component, Path, PathBuf};

use rustix::fs::{AtFlags, CWD, Gid, Mode, Uid};

use super::{FileError, Owner};
use crate::rootpath;

/// The host path of the container path `path` inside `root`: every symlink on the way,
/// the last component included, is followed as the container would follow it (an
/// absolute target starts again at `root`, `..` never climbs above `root`). Components
/// that do not exist are kept as written.
pub fn resolve_in_root(root: &Path, path: &str) -> Result<PathBuf, FileError> {
    Ok(root.join(resolve(root, Path::new(path))?))
}

/// Like [`resolve_in_root`], but relative to `root`.
pub(super) fn resolve(root: &Path, path: &Path) -> Result<PathBuf, FileError> {
    rootpath::resolve(root, path).map_err(|source| FileError::Resolve {
        path: path.display().to_string(),
        source,
    })
}

/// Where the object named by `path` itself lives: its parent resolved (relative to
/// `root`) and its last name, not followed, so that replacing or removing it acts on a
/// symlink rather than on what it points to. When `path` ends in `/` or `..` (or is
/// `/`), it names a directory reached by resolution and there is no last name.
pub(super) fn resolve_parent(
    root: &Path,
    path: &str,
) -> Result<(PathBuf, Option<OsString>), FileError> {
    let path = Path::new(path);
    match (path.components().next_back(), path.parent()) {
        (Some(Component::Normal(name)), Some(parent)) => {
            Ok((resolve(root, parent)?, Some(name.to_owned())))
        }
        _ => Ok((resolve(root, path)?, None)),
    }
}

/// How a host path under `root` looks from inside the container, for messages.
pub(super) fn shown(root: &Path, host: &Path) -> String {
    match host.strip_prefix(root) {
        Ok(rel) => Path::new("/").join(rel).display().to_string(),
        Err(_) => host.display().to_string(),
    }
}

/// The error for a failed operation `op` on the host path `host`.
pub(super) fn io_error(root: &Path, op: &'static str, host: &Path, source: io::Error) -> FileError {
    FileError::Io {
        op,
        path: shown(root, host),
        source,
    }
}

/// Fails unless the host path `host` is a directory: `path` is the container path
/// that needs it as a parent.
pub(super) fn require_dir(root: &Path, host: &Path, path: &str) -> Result<(), FileError> {
    match fs::symlink_metadata(host) {
        Ok(meta) if meta.is_dir() => Ok(()),
        Ok(_) => Err(FileError::NotADirectory {
            path: shown(root, host),
        }),
        Err(err) if rootpath::is_missing(&err) => Err(FileError::ParentMissing {
            path: path.to_owned(),
        }),
        Err(err) => Err(io_error(root, "inspect", host, err)),
    }
}

/// Creates the missing directories of `rel` (a path [`resolve`]d under `root`, so its
/// existing part has no symlinks), each with `mode` and `owner` (the caller's identity
/// when `None`); existing directories are left as they are. Returns whether the last
/// one was created.
pub(super) fn create_dirs(
    root: &Path,
    rel: &Path,
    mode: u32,
    owner: Option<Owner>,
) -> Result<bool, FileError> {
    let mut host = root.to_path_buf();
    let mut created = false;
    for part in rel.components() {
        host.push(part);
        match fs::symlink_metadata(&host) {
            Ok(meta) if meta.is_dir() => created = false,
            Ok(_) => {
                return Err(FileError::NotADirectory {
                    path: shown(root, &host),
                });
            }
            Err(err) if rootpath::is_missing(&err) => {
                make_dir(&host, mode, owner)
                    .map_err(|e| io_error(root, "create directory", &host, e))?;
                created = true;
            }
            Err(err) => return Err(io_error(root, "inspect", &host, err)),
        }
    }
    Ok(created)
}

/// `mkdir` with an exact mode, whatever the umask; a set-group-id bit inherited from
/// the parent is kept, as `mkdir(2)` keeps it.
fn make_dir(host: &Path, mode: u32, owner: Option<Owner>) -> io::Result<()> {
    fs::DirBuilder::new().mode(0o700).create(host)?;
    if let Some(owner) = owner {
        rustix::fs::chownat(
            CWD,
            host,
            Some(Uid::from_raw(owner.uid)),
            Some(Gid::from_raw(owner.gid)),
            AtFlags::SYMLINK_NOFOLLOW,
        )?;
    }
    let inherited = fs::symlink_metadata(host)?.mode() & 0o2000;
    rustix::fs::chmod(host, Mode::from_raw_mode((mode & 0o7777) | inherited))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn parents_resolve_and_last_names_stay() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        fs::create_dir_all(r.join("real")).unwrap();
        symlink("/real", r.join("link")).unwrap();
        assert_eq!(
            resolve_parent(r, "/link/file").unwrap(),
            (PathBuf::from("real"), Some(OsString::from("file")))
        );
        assert_eq!(
            resolve_parent(r, "/link").unwrap(),
            (PathBuf::new(), Some(OsString::from("link")))
        );
        assert_eq!(resolve_parent(r, "/").unwrap(), (PathBuf::new(), None));
        assert_eq!(
            resolve_parent(r, "/link/..").unwrap(),
            (PathBuf::new(), None)
        );
        assert_eq!(resolve_in_root(r, "/link").unwrap(), r.join("real"));
    }

    #[test]
    fn created_dirs_get_mode_and_owner() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        let owner = Owner {
            uid: 1234,
            gid: 5678,
        };
        assert!(create_dirs(r, Path::new("a/b"), 0o750, Some(owner)).unwrap());
        for dir in ["a", "a/b"] {
            let meta = fs::metadata(r.join(dir)).unwrap();
            assert_eq!(meta.mode() & 0o7777, 0o750, "{dir}");
            assert_eq!((meta.uid(), meta.gid()), (1234, 5678), "{dir}");
        }
        assert!(!create_dirs(r, Path::new("a/b"), 0o700, None).unwrap());
        assert_eq!(fs::metadata(r.join("a/b")).unwrap().mode() & 0o7777, 0o750);
        fs::write(r.join("file"), "").unwrap();
        let err = create_dirs(r, Path::new("file/x"), 0o755, None).unwrap_err();
        assert!(
            matches!(err, FileError::NotADirectory { ref path } if path == "/file"),
            "{err}"
        );
    }
}
