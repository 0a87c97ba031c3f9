//! Copying a selection of host files into a stage's root, as BuildKit's copier does.
//!
//! What lands where follows BuildKit (`fsutil/copy`) so that images match
//! `docker build`'s:
//!
//! - The destination itself (target `""`) is resolved with every symlink followed. If
//!   it is an existing directory it keeps its owner, mode and times; created, it takes
//!   the source's (with `owner` and `chmod` applied).
//! - Directories below it take the source's metadata whether they are created or
//!   already exist; a non-directory in their place is an error. Directories an entry
//!   needs but the selection does not list, and missing parents of the destination
//!   (with `create_parents`), are created 0755, owned by `owner` or root.
//! - Anything else replaces what is at its path, without following a symlink there; a
//!   directory in the way is an error naming both sides.
//! - Owner (source's unless `owner`), mode (source's, through `chmod`), xattrs (except
//!   overlayfs's own) and access and modification times are copied in that order: chown
//!   clears set-id bits and file capabilities, so it comes first, and times come last.
//!   Directory times are set once everything is in place, as writing into a directory
//!   changes its times.
//! - Regular files with the same source inode (hard links within the request) become
//!   hard links to the first copy.
//!
//! File contents go through [`std::io::copy`], which uses `copy_file_range(2)` between
//! files (reflinks where the filesystem has them) and falls back to reading and writing.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io;
use std::os::unix::fs::symlink;
use std::path::{Component, Path, PathBuf};

use kiln_image::layer::whiteout::{OVERLAY_USER_XATTR_PREFIX, OVERLAY_XATTR_PREFIX};
use rustix::fs::{AtFlags, CWD, FileType, Gid, Mode, OFlags, Stat, Timespec, Timestamps, Uid};
use rustix::io::Errno;

use super::inroot::{create_dirs, io_error, require_dir, resolve, shown};
use super::{Chmod, FileError, Owner};
use crate::rootpath::is_missing;

/// What to copy, and where.
#[derive(Debug, Clone)]
pub struct CopyRequest {
    /// Host directory where the destination stage's filesystem is mounted.
    pub root: PathBuf,
    /// Container path of the destination: the directory entries are copied into, or,
    /// for an entry with an empty target, the exact path it is copied to.
    pub dest: String,
    /// The objects to copy, parents before their contents.
    pub entries: Vec<CopyEntry>,
    /// Owner of everything copied; `None` keeps each source's owner.
    pub owner: Option<Owner>,
    /// Mode of everything copied (files and directories); `None` keeps each source's.
    pub chmod: Option<Chmod>,
    /// Create missing parent directories of `dest` instead of failing.
    pub create_parents: bool,
}

/// One filesystem object to copy. Directories are not walked: their contents are
/// entries of their own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyEntry {
    /// Host path of the source file, directory, symlink or device node; a symlink is
    /// copied as a symlink.
    pub source: PathBuf,
    /// Path under the destination, relative and without `..`; empty for the destination
    /// itself.
    pub target: PathBuf,
}

/// What a copy wrote.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CopyStats {
    /// Regular files written.
    pub files: u64,
    /// Directories created or updated.
    pub dirs: u64,
    /// Symlinks created.
    pub symlinks: u64,
    /// Hard links made to an earlier copy.
    pub hard_links: u64,
    /// Device nodes and FIFOs created.
    pub special: u64,
    /// Bytes of file contents written.
    pub bytes: u64,
}

/// Copies every entry of `request` into its root; see the module docs for the rules.
pub fn copy(request: &CopyRequest) -> Result<CopyStats, FileError> {
    Copier::new(request, false).run()
}

/// [`copy`], but a directory entry whose target is a symlink to a directory merges
/// into that directory, as extracting an archive does in Docker (so an archive's
/// `lib/` lands in `/usr/lib` when `/lib` links there).
pub(super) fn copy_following_dir_symlinks(request: &CopyRequest) -> Result<CopyStats, FileError> {
    Copier::new(request, true).run()
}

struct Copier<'a> {
    req: &'a CopyRequest,
    follow_dir_symlinks: bool,
    /// Host paths of directories known to exist, by target.
    dirs: HashMap<PathBuf, PathBuf>,
    /// Host path of the first copy of each multiply-linked source inode.
    links: HashMap<(u64, u64), PathBuf>,
    /// Directory times to set at the end.
    dir_times: Vec<(PathBuf, Timestamps)>,
    stats: CopyStats,
}

impl<'a> Copier<'a> {
    fn new(req: &'a CopyRequest, follow_dir_symlinks: bool) -> Copier<'a> {
        Copier {
            req,
            follow_dir_symlinks,
            dirs: HashMap::new(),
            links: HashMap::new(),
            dir_times: Vec::new(),
            stats: CopyStats::default(),
        }
    }

    fn run(mut self) -> Result<CopyStats, FileError> {
        let targets = self
            .req
            .entries
            .iter()
            .map(|e| clean_target(&e.target))
            .collect::<Result<Vec<_>, _>>()?;
        let root = &self.req.root;
        let dest = resolve(root, Path::new(&self.req.dest))?;
        if let Some(parent) = dest.parent().filter(|p| !p.as_os_str().is_empty()) {
            self.dest_parent(parent)?;
        }
        for (entry, target) in self.req.entries.iter().zip(targets) {
            self.entry(&dest, entry, target)?;
        }
        for (host, times) in self.dir_times.iter().rev() {
            rustix::fs::utimensat(CWD, host, times, AtFlags::SYMLINK_NOFOLLOW)
                .map_err(|e| io_error(root, "set the times of", host, e.into()))?;
        }
        Ok(self.stats)
    }

    /// Checks (or creates, with `create_parents`) the parent of the destination.
    fn dest_parent(&self, parent: &Path) -> Result<(), FileError> {
        let root = &self.req.root;
        if self.req.create_parents {
            create_dirs(root, parent, 0o755, self.req.owner)?;
            return Ok(());
        }
        require_dir(root, &root.join(parent), &self.req.dest)
    }

    fn entry(&mut self, dest: &Path, entry: &CopyEntry, target: PathBuf) -> Result<(), FileError> {
        let root = &self.req.root;
        let st = rustix::fs::lstat(&entry.source).map_err(|e| FileError::Source {
            path: entry.source.clone(),
            source: e.into(),
        })?;
        let host = match (target.parent(), target.file_name()) {
            (Some(parent), Some(name)) => self.dir(dest, parent)?.join(name),
            _ => root.join(dest),
        };
        let top = target.as_os_str().is_empty();
        match FileType::from_raw_mode(st.st_mode) {
            FileType::Directory => {
                let (host, created) = self.directory(&host)?;
                if created || !top {
                    self.metadata(&host, &entry.source, &st)?;
                }
                self.dirs.insert(target, host);
                self.stats.dirs += 1;
                return Ok(());
            }
            FileType::RegularFile => {
                let key = (st.st_dev, st.st_ino);
                if st.st_nlink > 1
                    && let Some(first) = self.links.get(&key)
                {
                    self.clear(&host, &entry.source)?;
                    fs::hard_link(first, &host)
                        .map_err(|e| io_error(root, "create hard link", &host, e))?;
                    self.stats.hard_links += 1;
                    return Ok(());
                }
                self.stats.bytes += self.contents(&entry.source, &host)?;
                self.stats.files += 1;
                if st.st_nlink > 1 {
                    self.links.insert(key, host.clone());
                }
            }
            FileType::Symlink => {
                let link = fs::read_link(&entry.source).map_err(|e| FileError::Source {
                    path: entry.source.clone(),
                    source: e,
                })?;
                self.clear(&host, &entry.source)?;
                symlink(&link, &host).map_err(|e| io_error(root, "create symlink", &host, e))?;
                self.stats.symlinks += 1;
            }
            kind @ (FileType::CharacterDevice | FileType::BlockDevice | FileType::Fifo) => {
                self.clear(&host, &entry.source)?;
                rustix::fs::mknodat(CWD, &host, kind, Mode::from_raw_mode(0o600), st.st_rdev)
                    .map_err(|e| io_error(root, "create device node", &host, e.into()))?;
                self.stats.special += 1;
            }
            FileType::Socket | FileType::Unknown => {
                return Err(FileError::UnsupportedSource {
                    path: entry.source.clone(),
                });
            }
        }
        self.metadata(&host, &entry.source, &st)
    }

    /// The host path of the directory `parent` (a target), created if missing.
    fn dir(&mut self, dest: &Path, parent: &Path) -> Result<PathBuf, FileError> {
        if let Some(host) = self.dirs.get(parent) {
            return Ok(host.clone());
        }
        let root = &self.req.root;
        let rel = resolve(root, &Path::new("/").join(dest).join(parent))?;
        create_dirs(root, &rel, 0o755, self.req.owner)?;
        let host = root.join(rel);
        self.dirs.insert(parent.to_owned(), host.clone());
        Ok(host)
    }

    /// Makes sure a directory is at `host`: returns where it is and whether it was
    /// created.
    fn directory(&self, host: &Path) -> Result<(PathBuf, bool), FileError> {
        let root = &self.req.root;
        match fs::symlink_metadata(host) {
            Ok(meta) if meta.is_dir() => Ok((host.to_owned(), false)),
            Ok(meta) if meta.is_symlink() && self.follow_dir_symlinks => {
                let followed = root.join(resolve(root, Path::new(&shown(root, host)))?);
                match fs::symlink_metadata(&followed) {
                    Ok(meta) if meta.is_dir() => Ok((followed, false)),
                    _ => Err(FileError::NotADirectory {
                        path: shown(root, host),
                    }),
                }
            }
            Ok(_) => Err(FileError::NotADirectory {
                path: shown(root, host),
            }),
            Err(err) if is_missing(&err) => {
                fs::create_dir(host).map_err(|e| io_error(root, "create directory", host, e))?;
                Ok((host.to_owned(), true))
            }
            Err(err) => Err(io_error(root, "inspect", host, err)),
        }
    }

    /// Makes room for a non-directory at `host`.
    fn clear(&self, host: &Path, source: &Path) -> Result<(), FileError> {
        let root = &self.req.root;
        match fs::symlink_metadata(host) {
            Ok(meta) if meta.is_dir() => Err(FileError::DirectoryInTheWay {
                from: source.to_owned(),
                to: shown(root, host),
            }),
            Ok(_) => fs::remove_file(host).map_err(|e| io_error(root, "replace", host, e)),
            Err(err) if is_missing(&err) => Ok(()),
            Err(err) => Err(io_error(root, "inspect", host, err)),
        }
    }

    /// Writes a new file at `host` with the contents of `source`, replacing what is
    /// there (see [`Copier::clear`]); returns its size. The file is created first and
    /// the place cleared only when that finds something in the way, which saves a
    /// lookup per file in the usual case of a destination that does not exist yet.
    fn contents(&self, source: &Path, host: &Path) -> Result<u64, FileError> {
        let open_failed = |e: Errno| FileError::Source {
            path: source.to_owned(),
            source: e.into(),
        };
        let mut from = File::from(
            rustix::fs::open(
                source,
                OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .map_err(open_failed)?,
        );
        let root = &self.req.root;
        let create = || {
            rustix::fs::open(
                host,
                OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::from_raw_mode(0o600),
            )
        };
        let created = match create() {
            Err(Errno::EXIST) => {
                self.clear(host, source)?;
                create()
            }
            other => other,
        };
        let mut to =
            File::from(created.map_err(|e| io_error(root, "create file", host, e.into()))?);
        io::copy(&mut from, &mut to).map_err(|e| io_error(root, "copy contents to", host, e))
    }

    /// Owner, mode, xattrs and times from the source (directory times are deferred).
    fn metadata(&mut self, host: &Path, source: &Path, st: &Stat) -> Result<(), FileError> {
        let root = &self.req.root;
        let (uid, gid) = self
            .req
            .owner
            .map_or((st.st_uid, st.st_gid), |o| (o.uid, o.gid));
        rustix::fs::chownat(
            CWD,
            host,
            Some(Uid::from_raw(uid)),
            Some(Gid::from_raw(gid)),
            AtFlags::SYMLINK_NOFOLLOW,
        )
        .map_err(|e| io_error(root, "change the owner of", host, e.into()))?;
        let kind = FileType::from_raw_mode(st.st_mode);
        if kind != FileType::Symlink {
            let is_dir = kind == FileType::Directory;
            let mode = match &self.req.chmod {
                Some(chmod) => chmod.apply(st.st_mode, is_dir),
                None => st.st_mode & 0o7777,
            };
            rustix::fs::chmod(host, Mode::from_raw_mode(mode))
                .map_err(|e| io_error(root, "change the mode of", host, e.into()))?;
        }
        copy_xattrs(root, source, host)?;
        let times = Timestamps {
            last_access: Timespec {
                tv_sec: st.st_atime,
                tv_nsec: st.st_atime_nsec as _,
            },
            last_modification: Timespec {
                tv_sec: st.st_mtime,
                tv_nsec: st.st_mtime_nsec as _,
            },
        };
        if kind == FileType::Directory {
            self.dir_times.push((host.to_owned(), times));
            return Ok(());
        }
        rustix::fs::utimensat(CWD, host, &times, AtFlags::SYMLINK_NOFOLLOW)
            .map_err(|e| io_error(root, "set the times of", host, e.into()))
    }
}

/// The target's components, refusing absolute paths and `..`.
fn clean_target(target: &Path) -> Result<PathBuf, FileError> {
    target
        .components()
        .filter(|c| *c != Component::CurDir)
        .map(|c| match c {
            Component::Normal(name) => Ok(name),
            _ => Err(FileError::InvalidTarget {
                target: target.to_owned(),
            }),
        })
        .collect()
}

/// Copies the extended attributes of `source` (not following symlinks) to `host`,
/// except overlayfs's bookkeeping, which would change what the stage's overlay shows.
/// A filesystem without xattr support on either side means there is nothing to copy.
fn copy_xattrs(root: &Path, source: &Path, host: &Path) -> Result<(), FileError> {
    let unsupported = |e: &io::Error| e.raw_os_error() == Some(Errno::OPNOTSUPP.raw_os_error());
    let read_failed = |e| FileError::Source {
        path: source.to_owned(),
        source: e,
    };
    let names = match xattr::list(source) {
        Ok(names) => names,
        Err(e) if unsupported(&e) => return Ok(()),
        Err(e) => return Err(read_failed(e)),
    };
    for name in names {
        let text = name.to_string_lossy();
        if text.starts_with(OVERLAY_XATTR_PREFIX) || text.starts_with(OVERLAY_USER_XATTR_PREFIX) {
            continue;
        }
        let Some(value) = xattr::get(source, &name).map_err(read_failed)? else {
            continue;
        };
        match xattr::set(host, &name, &value) {
            Ok(()) => {}
            Err(e) if unsupported(&e) => return Ok(()),
            Err(source) => {
                return Err(FileError::Xattr {
                    name: text.into_owned(),
                    path: shown(root, host),
                    source,
                });
            }
        }
    }
    Ok(())
}
