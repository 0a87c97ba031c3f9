//! Resolving a layer entry's parent directory inside the target, component by component,
//! never following a symlink and never leaving the target.
//!
//! Every component is opened relative to the previous one with
//! `O_PATH | O_DIRECTORY | O_NOFOLLOW`, so a symlink (to anywhere, even inside the
//! target) or a non-directory in the middle of a path stops resolution with an error
//! naming the component; `..` never reaches here (entry paths are cleaned first). All
//! changes are then made with `*at` calls relative to the parent's descriptor. Real
//! layers never write through symlinks, so refusing to is no loss.
//!
//! The last parent is kept open, because consecutive entries of a tar usually share it;
//! the applier must call [`Root::forget`] whenever it removes a directory, since a kept
//! descriptor would still point at the removed inode.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;
use std::rc::Rc;

use rustix::fs::{AtFlags, FileType, Mode, OFlags};
use rustix::io::Errno;

/// Why a parent directory could not be resolved.
#[derive(Debug)]
pub(super) enum ResolveError {
    /// The component at this index is a symlink.
    Symlink(usize),
    /// The component at this index exists and is not a directory.
    NotDirectory(usize),
    /// Any other failure.
    Io(io::Error),
}

/// The target directory of an apply.
pub(super) struct Root {
    fd: OwnedFd,
    /// The last resolved parent: its components joined by `/`, and its descriptor.
    cached: Option<(Vec<u8>, Rc<OwnedFd>)>,
}

impl Root {
    /// Opens the target directory (following symlinks: the caller chose it).
    pub(super) fn open(path: &Path) -> io::Result<Root> {
        let fd = rustix::fs::open(
            path,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        Ok(Root { fd, cached: None })
    }

    /// Drops the kept parent descriptor (after a directory was removed).
    pub(super) fn forget(&mut self) {
        self.cached = None;
    }

    /// Opens the directory `dirs` (components relative to the target). Missing
    /// directories are created (mode 0755) when `create` is set; otherwise a missing one
    /// gives `Ok(None)`.
    pub(super) fn dir(
        &mut self,
        dirs: &[&[u8]],
        create: bool,
    ) -> Result<Option<Rc<OwnedFd>>, ResolveError> {
        let key = dirs.join(&b'/');
        if let Some((cached, fd)) = &self.cached
            && *cached == key
        {
            return Ok(Some(fd.clone()));
        }
        let mut current: Option<OwnedFd> = None;
        for (i, name) in dirs.iter().enumerate() {
            let at = current.as_ref().map_or(self.fd.as_fd(), |fd| fd.as_fd());
            let next = match open_dir(at, name) {
                Ok(fd) => fd,
                Err(Errno::NOENT) if create => {
                    match rustix::fs::mkdirat(at, *name, Mode::from_raw_mode(0o755)) {
                        Ok(()) | Err(Errno::EXIST) => {}
                        Err(e) => return Err(ResolveError::Io(e.into())),
                    }
                    open_dir(at, name).map_err(|e| classify(at, name, i, e))?
                }
                Err(Errno::NOENT) => return Ok(None),
                Err(e) => return Err(classify(at, name, i, e)),
            };
            current = Some(next);
        }
        let fd = Rc::new(match current {
            Some(fd) => fd,
            None => self.fd.try_clone().map_err(ResolveError::Io)?,
        });
        self.cached = Some((key, fd.clone()));
        Ok(Some(fd))
    }
}

fn open_dir(at: BorrowedFd<'_>, name: &[u8]) -> Result<OwnedFd, Errno> {
    rustix::fs::openat(
        at,
        name,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
}

fn classify(at: BorrowedFd<'_>, name: &[u8], index: usize, e: Errno) -> ResolveError {
    if e != Errno::NOTDIR && e != Errno::LOOP {
        return ResolveError::Io(e.into());
    }
    match rustix::fs::statat(at, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::Symlink => {
            ResolveError::Symlink(index)
        }
        Ok(_) => ResolveError::NotDirectory(index),
        Err(e) => ResolveError::Io(e.into()),
    }
}

/// Removes `name` in `dir`, recursively if it is a directory, never following symlinks.
/// A missing `name` is not an error.
pub(super) fn remove_all(dir: BorrowedFd<'_>, name: &[u8]) -> io::Result<()> {
    match rustix::fs::unlinkat(dir, name, AtFlags::empty()) {
        Ok(()) | Err(Errno::NOENT) => return Ok(()),
        Err(Errno::ISDIR) => {}
        Err(e) => return Err(e.into()),
    }
    let sub = rustix::fs::openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    for child in children(sub.as_fd())? {
        remove_all(sub.as_fd(), &child)?;
    }
    rustix::fs::unlinkat(dir, name, AtFlags::REMOVEDIR)?;
    Ok(())
}

/// The names in directory `dir` (without `.` and `..`), read before anything is changed.
pub(super) fn children(dir: BorrowedFd<'_>) -> io::Result<Vec<Vec<u8>>> {
    let readable = rustix::fs::openat(
        dir,
        c".",
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let mut names = Vec::new();
    for entry in rustix::fs::Dir::read_from(&readable)? {
        let name = entry?.file_name().to_bytes().to_vec();
        if name != b"." && name != b".." {
            names.push(name);
        }
    }
    Ok(names)
}
