//! Container paths resolved on the host, inside the rootfs, as runc resolves them.
//!
//! A rootfs is untrusted content: `/etc/resolv.conf` may be a symlink to
//! `/run/systemd/resolve/stub-resolv.conf`, or to `../../../../host/file`. runc resolves
//! mount destinations as if the rootfs were `/` (symlinks followed inside it, `..`
//! stopping at its top), and creates what is missing at the resolved place. Working out
//! which mount points runc will create, and creating the working directory, must use the
//! same rules, or kiln would look at (or write to) the wrong file, possibly on the host.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::fs;
use std::io;
use std::path::{Component, Path, PathBuf};

/// Linux gives up after 40 nested links; a rootfs gets no more than that in total.
const MAX_SYMLINKS: usize = 40;

/// `path` (as seen inside the container) resolved under `root`: the returned path is
/// relative to `root`, its existing leading components contain no symlinks, and
/// components that do not exist are kept as written.
pub(crate) fn resolve(root: &Path, path: &Path) -> io::Result<PathBuf> {
    let mut pending: VecDeque<OsString> = components(path).collect();
    let mut resolved = PathBuf::new();
    let mut links = 0;
    while let Some(part) = pending.pop_front() {
        if part == ".." {
            resolved.pop();
            continue;
        }
        let candidate = resolved.join(&part);
        match fs::symlink_metadata(root.join(&candidate)) {
            Ok(meta) if meta.file_type().is_symlink() => {
                links += 1;
                if links > MAX_SYMLINKS {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidInput,
                        format!("too many symlinks resolving {path:?} in the rootfs"),
                    ));
                }
                let target = fs::read_link(root.join(&candidate))?;
                if target.is_absolute() {
                    resolved = PathBuf::new();
                }
                for part in components(&target).collect::<Vec<_>>().into_iter().rev() {
                    pending.push_front(part);
                }
            }
            Ok(_) => resolved = candidate,
            Err(err) if is_missing(&err) => resolved = candidate,
            Err(err) => return Err(err),
        }
    }
    Ok(resolved)
}

/// Whether an error from looking a path up means it (or a parent) does not exist.
pub(crate) fn is_missing(err: &io::Error) -> bool {
    err.kind() == io::ErrorKind::NotFound
        || err.raw_os_error() == Some(rustix::io::Errno::NOTDIR.raw_os_error())
}

fn components(path: &Path) -> impl Iterator<Item = OsString> + '_ {
    path.components().filter_map(|c| match c {
        Component::Normal(name) => Some(name.to_owned()),
        Component::ParentDir => Some(OsString::from("..")),
        Component::RootDir | Component::CurDir | Component::Prefix(_) => None,
    })
}

/// Creates the directory `path` (as seen inside the container) under `root`, with
/// missing parents, mode 0755, owned by the caller (root).
pub(crate) fn create_dir_all(root: &Path, path: &Path) -> io::Result<()> {
    let resolved = resolve(root, path)?;
    // The existing prefix of `resolved` has no symlinks left and the rest does not
    // exist, so creating it cannot step outside `root`.
    fs::DirBuilder::new()
        .recursive(true)
        .create(root.join(resolved))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn symlinks_resolve_inside_the_root() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        fs::create_dir_all(r.join("etc")).unwrap();
        fs::create_dir_all(r.join("run/resolve")).unwrap();
        symlink("/run/resolve/stub.conf", r.join("etc/resolv.conf")).unwrap();
        symlink("../../../../../../etc", r.join("run/up")).unwrap();
        symlink("loop", r.join("loop")).unwrap();

        assert_eq!(
            resolve(r, Path::new("/etc/resolv.conf")).unwrap(),
            Path::new("run/resolve/stub.conf")
        );
        assert_eq!(
            resolve(r, Path::new("/run/up/hosts")).unwrap(),
            Path::new("etc/hosts")
        );
        assert_eq!(
            resolve(r, Path::new("/../../x/../etc")).unwrap(),
            Path::new("etc")
        );
        assert_eq!(
            resolve(r, Path::new("/missing/deeper")).unwrap(),
            Path::new("missing/deeper")
        );
        let err = resolve(r, Path::new("/loop/x")).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    }

    #[test]
    fn created_dirs_stay_inside_the_root() {
        let outer = tempfile::tempdir().unwrap();
        let root = outer.path().join("root");
        fs::create_dir(&root).unwrap();
        symlink("/../../outside", root.join("escape")).unwrap();
        create_dir_all(&root, Path::new("/escape/work")).unwrap();
        assert!(root.join("outside/work").is_dir());
        assert!(!outer.path().join("outside").exists());
    }
}
