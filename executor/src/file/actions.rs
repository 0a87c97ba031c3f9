//! The small file actions: `mkdir` (`WORKDIR`, `RUN --mount` targets), `mkfile`
//! (heredoc sources) and `rm`, on container paths inside the stage's root.
//!
//! Modes are exact, whatever kiln's umask, so that a step's result does not depend on
//! the environment kiln runs in. `mkdir` and `mkfile` follow a symlink at the path, as
//! `mkdir -p` and a shell redirection in the container would; `rm` removes the symlink
//! itself.

use std::fs::{self, File};
use std::io::Write;
use std::path::Path;

use rustix::fs::{AtFlags, CWD, Gid, Mode, OFlags, Uid};

use super::inroot::{create_dirs, io_error, require_dir, resolve, resolve_parent, shown};
use super::{FileError, Owner};
use crate::rootpath::is_missing;

/// Creates the directory `path` with `mode` and `owner` (root's when `None`); with
/// `parents`, missing parents too, with the same mode and owner. An existing directory
/// is left as it is.
pub fn mkdir(
    root: &Path,
    path: &str,
    mode: u32,
    parents: bool,
    owner: Option<Owner>,
) -> Result<(), FileError> {
    let rel = resolve(root, Path::new(path))?;
    if !parents && let Some(parent) = rel.parent() {
        require_dir(root, &root.join(parent), path)?;
    }
    if parents {
        // `mkdir -p` (Go's `MkdirAll`, which BuildKit uses) also makes a directory named
        // just before a `..`: `/a/b/../c` creates `/a/b` as well as `/a/c`.
        let parts: Vec<&str> = path.split('/').collect();
        for (i, pair) in parts.windows(2).enumerate() {
            if pair[1] == ".." && !matches!(pair[0], "" | "." | "..") {
                let prefix = parts[..=i].join("/");
                create_dirs(root, &resolve(root, Path::new(&prefix))?, mode, owner)?;
            }
        }
    }
    create_dirs(root, &rel, mode, owner)?;
    Ok(())
}

/// Writes `data` to the file `path`, replacing the contents of an existing file, and
/// gives it `mode` and, when given, `owner`. The parent directory must exist.
pub fn mkfile(
    root: &Path,
    path: &str,
    data: &[u8],
    mode: u32,
    owner: Option<Owner>,
) -> Result<(), FileError> {
    let rel = resolve(root, Path::new(path))?;
    let host = root.join(&rel);
    if let Some(parent) = rel.parent() {
        require_dir(root, &root.join(parent), path)?;
    }
    if fs::symlink_metadata(&host).is_ok_and(|m| m.is_dir()) {
        return Err(FileError::IsADirectory {
            path: shown(root, &host),
        });
    }
    let fd = rustix::fs::open(
        &host,
        OFlags::WRONLY | OFlags::CREATE | OFlags::TRUNC | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o600),
    )
    .map_err(|e| io_error(root, "create file", &host, e.into()))?;
    File::from(fd)
        .write_all(data)
        .map_err(|e| io_error(root, "write", &host, e))?;
    if let Some(owner) = owner {
        rustix::fs::chownat(
            CWD,
            &host,
            Some(Uid::from_raw(owner.uid)),
            Some(Gid::from_raw(owner.gid)),
            AtFlags::SYMLINK_NOFOLLOW,
        )
        .map_err(|e| io_error(root, "change the owner of", &host, e.into()))?;
    }
    rustix::fs::chmod(&host, Mode::from_raw_mode(mode & 0o7777))
        .map_err(|e| io_error(root, "change the mode of", &host, e.into()))
}

/// Removes `path` (recursively if it is a directory; a symlink, not what it points to).
/// A missing path is an error unless `allow_not_found`.
pub fn rm(root: &Path, path: &str, allow_not_found: bool) -> Result<(), FileError> {
    let host = match resolve_parent(root, path)? {
        (parent, Some(name)) => root.join(parent).join(name),
        (dir, None) if dir.as_os_str().is_empty() => return Err(FileError::RemoveRoot),
        (dir, None) => root.join(dir),
    };
    let removed = match fs::symlink_metadata(&host) {
        Ok(meta) if meta.is_dir() => fs::remove_dir_all(&host),
        Ok(_) => fs::remove_file(&host),
        Err(err) => Err(err),
    };
    match removed {
        Ok(()) => Ok(()),
        Err(err) if is_missing(&err) && allow_not_found => Ok(()),
        Err(err) if is_missing(&err) => Err(FileError::NotFound {
            path: path.to_owned(),
        }),
        Err(err) => Err(io_error(root, "remove", &host, err)),
    }
}
