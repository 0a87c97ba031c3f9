//! Layer tar → directory: unpacking one layer onto a snapshot directory, safely.
//!
//! A layer is untrusted input. Entry paths are cleaned first (absolute paths, `..`
//! components and NUL bytes are refused outright, not rewritten), then every change is
//! made relative to a parent directory resolved inside the target without following
//! symlinks ([`super::root`]); files are created with `O_EXCL | O_NOFOLLOW` after
//! whatever was at their name is removed. So no entry can write, link or read outside
//! the target: the worst a hostile tar gets is an error naming its entry (index and path).
//!
//! Metadata is restored as Docker does: owner (when running as root, or as asked), then
//! mode (after chown, which clears set-id bits), then xattrs, then times; directory times
//! last, once nothing more will be written into them. Hard-link entries take the
//! metadata of the inode they link to. Whiteouts are carried out or converted to
//! overlayfs form, per [`WhiteoutMode`].
//!
//! The decompressed stream is hashed on the way through, so callers can check the diffID
//! the image config promises.

use std::collections::HashSet;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::Path;
use std::rc::Rc;

use rustix::fs::{AtFlags, FileType, Mode, OFlags, Timestamps, XattrFlags};
use rustix::io::Errno;

use super::root::{self, ResolveError, Root};
use super::tar_reader::{TarEntry, TarReader};
use super::whiteout::{
    self, OPAQUE_WHITEOUT, OVERLAY_OPAQUE_XATTR, WHITEOUT_META_PREFIX, WHITEOUT_PREFIX,
    WhiteoutMode,
};
use super::{Compression, EntryProblem, LayerError, PathProblem};
use crate::{Digest, Digester};

/// How to apply a layer.
#[derive(Clone, Debug)]
pub struct ApplyOptions {
    /// What to do with whiteouts.
    pub whiteouts: WhiteoutMode,
    /// Restore owners from the tar (default: when running as root).
    pub same_owner: bool,
}

impl Default for ApplyOptions {
    fn default() -> ApplyOptions {
        ApplyOptions {
            whiteouts: WhiteoutMode::default(),
            same_owner: rustix::process::geteuid().is_root(),
        }
    }
}

impl ApplyOptions {
    /// Sets what to do with whiteouts.
    pub fn with_whiteouts(mut self, mode: WhiteoutMode) -> ApplyOptions {
        self.whiteouts = mode;
        self
    }

    /// Sets whether owners are restored.
    pub fn with_same_owner(mut self, same_owner: bool) -> ApplyOptions {
        self.same_owner = same_owner;
        self
    }
}

/// What an apply read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Applied {
    /// SHA-256 of the decompressed tar stream (compare with the config's diffID).
    pub diff_id: Digest,
    /// Size of the decompressed tar stream.
    pub diff_size: u64,
    /// The compression found from the stream's first bytes.
    pub compression: Compression,
    /// Number of tar entries applied (PAX and long-name headers not counted).
    pub entries: u64,
}

/// Applies the layer read from `layer` (gzip, zstd or plain tar) onto `target`.
pub fn apply_layer<R: Read>(
    layer: R,
    target: &Path,
    options: &ApplyOptions,
) -> Result<Applied, LayerError> {
    let (compression, reader) = Compression::decompress(layer)?;
    let hashed = HashingReader {
        inner: reader,
        digester: Digester::new(),
    };
    let root = Root::open(target).map_err(|source| LayerError::Target {
        path: target.to_owned(),
        source,
    })?;
    let mut applier = Applier {
        root,
        options,
        written: HashSet::new(),
        dir_times: Vec::new(),
        buf: vec![0; 256 * 1024],
    };
    let mut tar = TarReader::new(hashed);
    let mut entries = 0;
    for index in 0.. {
        let entry = tar
            .next_entry()
            .map_err(|problem| LayerError::ReadEntry { index, problem })?;
        let Some(entry) = entry else { break };
        applier
            .entry(&entry, &mut tar)
            .map_err(|problem| LayerError::Entry {
                index,
                path: String::from_utf8_lossy(&entry.path).into_owned(),
                problem,
            })?;
        entries += 1;
    }
    applier.finish()?;
    // The diffID covers the whole stream, including what follows the end-of-archive
    // blocks.
    let mut hashed = tar.into_inner();
    io::copy(&mut hashed, &mut io::sink()).map_err(|source| LayerError::ReadLayer { source })?;
    let diff_size = hashed.digester.len();
    Ok(Applied {
        diff_id: hashed.digester.finish(),
        diff_size,
        compression,
        entries,
    })
}

struct HashingReader<R> {
    inner: R,
    digester: Digester,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.digester.update(&buf[..n]);
        Ok(n)
    }
}

/// Splits a tar path into components: `./` prefixes, empty and `.` components dropped;
/// absolute paths, `..` and NUL bytes refused.
pub(super) fn clean_path(raw: &[u8]) -> Result<Vec<&[u8]>, PathProblem> {
    if raw.contains(&0) {
        return Err(PathProblem::NulByte);
    }
    if raw.starts_with(b"/") {
        return Err(PathProblem::Absolute);
    }
    let parts: Vec<&[u8]> = raw
        .split(|&b| b == b'/')
        .filter(|c| !c.is_empty() && *c != b".")
        .collect();
    if parts.iter().any(|c| *c == b"..") {
        return Err(PathProblem::DotDot);
    }
    Ok(parts)
}

struct Applier<'a> {
    root: Root,
    options: &'a ApplyOptions,
    /// Paths this layer wrote, with all their ancestors: what an opaque marker keeps and
    /// what a later entry may not replace wholesale.
    written: HashSet<Vec<u8>>,
    /// Directory times, set at the end (deepest last-written first).
    dir_times: Vec<(Vec<u8>, Timestamps)>,
    buf: Vec<u8>,
}

fn io_err(op: &'static str) -> impl Fn(Errno) -> EntryProblem {
    move |e| EntryProblem::Io {
        op,
        source: e.into(),
    }
}

impl Applier<'_> {
    fn entry<R: Read>(
        &mut self,
        entry: &TarEntry,
        data: &mut TarReader<R>,
    ) -> Result<(), EntryProblem> {
        let parts = clean_path(&entry.path).map_err(EntryProblem::Path)?;
        let kind = Kind::of(entry.kind)?;
        let Some((&name, dirs)) = parts.split_last() else {
            // "./" itself: the target's own metadata is not the layer's to change.
            return if kind == Kind::Dir {
                Ok(())
            } else {
                Err(EntryProblem::RootNotDirectory)
            };
        };
        if name.starts_with(WHITEOUT_PREFIX.as_bytes()) {
            return self.whiteout(dirs, name);
        }
        let parent = self.parent(dirs, true)?.expect("created on demand");
        let rel = parts.join(&b'/');

        if kind == Kind::HardLink {
            self.hard_link(&parent, name, &rel, &entry.link)?;
            self.mark_written(&rel);
            return Ok(());
        }
        let keep_dir = self.clear(&parent, name, &rel, kind == Kind::Dir)?;
        match kind {
            Kind::File => {
                let fd = rustix::fs::openat(
                    &*parent,
                    name,
                    OFlags::WRONLY
                        | OFlags::CREATE
                        | OFlags::EXCL
                        | OFlags::NOFOLLOW
                        | OFlags::CLOEXEC,
                    Mode::from_raw_mode(0o600),
                )
                .map_err(io_err("create file"))?;
                self.copy_data(data, entry.size, &mut File::from(fd))?;
            }
            Kind::Dir => {
                if !keep_dir {
                    rustix::fs::mkdirat(&*parent, name, Mode::from_raw_mode(0o700))
                        .map_err(io_err("create directory"))?;
                }
            }
            Kind::Symlink => {
                if entry.link.is_empty() || entry.link.contains(&0) {
                    return Err(EntryProblem::BadSymlinkTarget {
                        target: String::from_utf8_lossy(&entry.link).into_owned(),
                    });
                }
                rustix::fs::symlinkat(&entry.link[..], &*parent, name)
                    .map_err(io_err("create symlink"))?;
            }
            Kind::Node(ft) => {
                let dev = rustix::fs::makedev(entry.device.0, entry.device.1);
                rustix::fs::mknodat(&*parent, name, ft, Mode::from_raw_mode(0o600), dev)
                    .map_err(io_err("create device node"))?;
            }
            Kind::HardLink => unreachable!("handled above"),
        }
        self.set_metadata(&parent, name, &rel, kind, entry)?;
        self.mark_written(&rel);
        Ok(())
    }

    fn parent(
        &mut self,
        dirs: &[&[u8]],
        create: bool,
    ) -> Result<Option<Rc<OwnedFd>>, EntryProblem> {
        self.root.dir(dirs, create).map_err(|e| match e {
            ResolveError::Symlink(i) => EntryProblem::ThroughSymlink {
                component: String::from_utf8_lossy(&dirs[..=i].join(&b'/')).into_owned(),
            },
            ResolveError::NotDirectory(i) => EntryProblem::ParentNotDirectory {
                component: String::from_utf8_lossy(&dirs[..=i].join(&b'/')).into_owned(),
            },
            ResolveError::Io(source) => EntryProblem::Io {
                op: "open parent directory",
                source,
            },
        })
    }

    /// Makes room for a new entry at `name`: an existing directory stays if the entry is
    /// a directory (returns true); anything else is removed. A directory this layer
    /// already wrote into may not be replaced by a non-directory.
    fn clear(
        &mut self,
        parent: &OwnedFd,
        name: &[u8],
        rel: &[u8],
        is_dir: bool,
    ) -> Result<bool, EntryProblem> {
        let st = match rustix::fs::statat(parent, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            Err(Errno::NOENT) => return Ok(false),
            Err(e) => return Err(io_err("inspect existing file")(e)),
        };
        if FileType::from_raw_mode(st.st_mode) == FileType::Directory {
            if is_dir {
                return Ok(true);
            }
            if self.written.contains(rel) {
                return Err(EntryProblem::ReplacesDirectory);
            }
            self.root.forget();
        }
        root::remove_all(parent.as_fd(), name).map_err(|source| EntryProblem::Io {
            op: "remove existing file",
            source,
        })?;
        Ok(false)
    }

    fn copy_data(
        &mut self,
        data: &mut impl Read,
        expected: u64,
        file: &mut File,
    ) -> Result<(), EntryProblem> {
        let mut copied = 0u64;
        loop {
            let n = match data.read(&mut self.buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(source) => return Err(EntryProblem::ReadData { source }),
            };
            file.write_all(&self.buf[..n])
                .map_err(|source| EntryProblem::Io {
                    op: "write file",
                    source,
                })?;
            copied += n as u64;
        }
        if copied != expected {
            return Err(EntryProblem::Truncated {
                expected,
                actual: copied,
            });
        }
        Ok(())
    }

    fn hard_link(
        &mut self,
        parent: &OwnedFd,
        name: &[u8],
        rel: &[u8],
        target: &[u8],
    ) -> Result<(), EntryProblem> {
        let shown = || String::from_utf8_lossy(target).into_owned();
        let parts = clean_path(target).map_err(|problem| EntryProblem::LinkTarget {
            target: shown(),
            problem,
        })?;
        let Some((&tname, tdirs)) = parts.split_last() else {
            return Err(EntryProblem::LinkToDirectory { target: shown() });
        };
        if parts.join(&b'/') == rel {
            return Ok(());
        }
        let Some(tparent) = self.parent(tdirs, false)? else {
            return Err(EntryProblem::LinkTargetMissing { target: shown() });
        };
        match rustix::fs::statat(&*tparent, tname, AtFlags::SYMLINK_NOFOLLOW) {
            Err(Errno::NOENT) => return Err(EntryProblem::LinkTargetMissing { target: shown() }),
            Err(e) => return Err(io_err("inspect hard link target")(e)),
            Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::Directory => {
                return Err(EntryProblem::LinkToDirectory { target: shown() });
            }
            Ok(_) => {}
        }
        // `parent` may have been the kept descriptor the lookup above replaced; it is
        // still open (we hold an Rc), so the link lands in the right directory.
        self.clear(parent, name, rel, false)?;
        rustix::fs::linkat(&*tparent, tname, parent, name, AtFlags::empty())
            .map_err(io_err("create hard link"))
    }

    fn whiteout(&mut self, dirs: &[&[u8]], name: &[u8]) -> Result<(), EntryProblem> {
        if name.starts_with(WHITEOUT_META_PREFIX.as_bytes()) && name != OPAQUE_WHITEOUT.as_bytes() {
            return Ok(());
        }
        let overlay = self.options.whiteouts == WhiteoutMode::Overlay;
        let dir_rel = dirs.join(&b'/');
        let Some(parent) = self.parent(dirs, overlay)? else {
            return Ok(()); // nothing below to hide
        };
        if name == OPAQUE_WHITEOUT.as_bytes() {
            self.mark_written(&dir_rel);
            if overlay {
                return set_xattr(parent.as_fd(), None, OVERLAY_OPAQUE_XATTR.as_bytes(), b"y");
            }
            let names = root::children(parent.as_fd()).map_err(|source| EntryProblem::Io {
                op: "list directory",
                source,
            })?;
            self.root.forget();
            for child in names {
                let child_rel = join(&dir_rel, &child);
                if !self.written.contains(&child_rel) {
                    root::remove_all(parent.as_fd(), &child).map_err(|source| {
                        EntryProblem::Io {
                            op: "remove hidden file",
                            source,
                        }
                    })?;
                }
            }
            return Ok(());
        }
        let hidden = &name[WHITEOUT_PREFIX.len()..];
        if hidden.is_empty() || hidden == b"." || hidden == b".." {
            return Err(EntryProblem::BadWhiteout);
        }
        self.root.forget();
        root::remove_all(parent.as_fd(), hidden).map_err(|source| EntryProblem::Io {
            op: "remove whited-out file",
            source,
        })?;
        if overlay {
            rustix::fs::mknodat(
                &*parent,
                hidden,
                FileType::CharacterDevice,
                Mode::empty(),
                0,
            )
            .map_err(io_err("create whiteout device"))?;
            self.mark_written(&join(&dir_rel, hidden));
        }
        Ok(())
    }

    fn set_metadata(
        &mut self,
        parent: &OwnedFd,
        name: &[u8],
        rel: &[u8],
        kind: Kind,
        entry: &TarEntry,
    ) -> Result<(), EntryProblem> {
        let id =
            |field, v: u64| u32::try_from(v).map_err(|_| EntryProblem::BadHeaderField { field });
        let (uid, gid) = (id("uid", entry.uid)?, id("gid", entry.gid)?);
        if self.options.same_owner {
            rustix::fs::chownat(
                parent,
                name,
                Some(rustix::fs::Uid::from_raw(uid)),
                Some(rustix::fs::Gid::from_raw(gid)),
                AtFlags::SYMLINK_NOFOLLOW,
            )
            .map_err(io_err("change owner"))?;
        }
        if kind != Kind::Symlink {
            rustix::fs::chmodat(
                parent,
                name,
                Mode::from_raw_mode(entry.mode & 0o7777),
                AtFlags::empty(),
            )
            .map_err(io_err("change mode"))?;
        }
        for (key, value) in &entry.xattrs {
            // Overlay's bookkeeping is never taken from a layer: it could redirect lookups.
            if !whiteout::is_overlay_xattr(key, true) {
                set_xattr(parent.as_fd(), Some(name), key, value)?;
            }
        }
        let t = rustix::fs::Timespec {
            tv_sec: entry.mtime.0,
            tv_nsec: entry.mtime.1.into(),
        };
        let times = Timestamps {
            last_access: t,
            last_modification: t,
        };
        if kind == Kind::Dir {
            self.dir_times.push((rel.to_vec(), times));
        } else {
            rustix::fs::utimensat(parent, name, &times, AtFlags::SYMLINK_NOFOLLOW)
                .map_err(io_err("set times"))?;
        }
        Ok(())
    }

    /// Records `rel` and its ancestors as written by this layer.
    fn mark_written(&mut self, rel: &[u8]) {
        let mut path = rel;
        while self.written.insert(path.to_vec()) {
            match path.iter().rposition(|&b| b == b'/') {
                Some(i) => path = &path[..i],
                None => break,
            }
        }
    }

    /// Sets directory times, children before parents.
    fn finish(mut self) -> Result<(), LayerError> {
        let times = std::mem::take(&mut self.dir_times);
        for (rel, ts) in times.into_iter().rev() {
            let parts: Vec<&[u8]> = rel.split(|&b| b == b'/').collect();
            let (name, dirs) = parts.split_last().expect("directory entries have a name");
            let fail = |problem| LayerError::DirectoryTimes {
                path: String::from_utf8_lossy(&rel).into_owned(),
                problem,
            };
            // A directory whited out later in the same layer has nothing left to date.
            let Some(parent) = self.parent(dirs, false).map_err(fail)? else {
                continue;
            };
            match rustix::fs::utimensat(&*parent, *name, &ts, AtFlags::SYMLINK_NOFOLLOW) {
                Ok(()) | Err(Errno::NOENT) => {}
                Err(e) => return Err(fail(io_err("set times")(e))),
            }
        }
        Ok(())
    }
}

fn join(dir: &[u8], name: &[u8]) -> Vec<u8> {
    if dir.is_empty() {
        return name.to_vec();
    }
    [dir, b"/", name].concat()
}

/// Sets an xattr on `name` in `dir` (or on `dir` itself), without following a final
/// symlink: through `/proc/self/fd`, since `O_PATH` descriptors take no `fsetxattr`.
fn set_xattr(
    dir: BorrowedFd<'_>,
    name: Option<&[u8]>,
    key: &[u8],
    value: &[u8],
) -> Result<(), EntryProblem> {
    let mut path = format!("/proc/self/fd/{}", dir.as_raw_fd()).into_bytes();
    let result = match name {
        Some(name) => {
            path.push(b'/');
            path.extend_from_slice(name);
            rustix::fs::lsetxattr(&path[..], key, value, XattrFlags::empty())
        }
        None => rustix::fs::setxattr(&path[..], key, value, XattrFlags::empty()),
    };
    result.map_err(|e| EntryProblem::Xattr {
        name: String::from_utf8_lossy(key).into_owned(),
        source: e.into(),
    })
}

/// What an entry creates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    File,
    Dir,
    Symlink,
    HardLink,
    Node(FileType),
}

impl Kind {
    fn of(typeflag: u8) -> Result<Kind, EntryProblem> {
        Ok(match typeflag {
            b'0' | b'\0' | b'7' => Kind::File,
            b'1' => Kind::HardLink,
            b'2' => Kind::Symlink,
            b'3' => Kind::Node(FileType::CharacterDevice),
            b'4' => Kind::Node(FileType::BlockDevice),
            b'5' => Kind::Dir,
            b'6' => Kind::Node(FileType::Fifo),
            other => return Err(EntryProblem::UnsupportedType(other)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cleans_and_refuses_paths() {
        assert_eq!(
            clean_path(b"./a//b/./c/").unwrap(),
            vec![&b"a"[..], b"b", b"c"]
        );
        assert!(clean_path(b"./").unwrap().is_empty());
        assert_eq!(clean_path(b"/etc/passwd"), Err(PathProblem::Absolute));
        assert_eq!(clean_path(b"a/../../b"), Err(PathProblem::DotDot));
        assert_eq!(clean_path(b"a\0b"), Err(PathProblem::NulByte));
    }
}
