//! Directory tree (or overlayfs upper dir) → layer tar, in one streaming pass.
//!
//! The tar is what Docker and BuildKit produce and every runtime reads: ustar headers,
//! with a PAX extended header in front of an entry when something does not fit (paths
//! over ustar's 100+155 bytes, link targets over 100, large ids, sizes or times) and for
//! xattrs (`SCHILY.xattr.*`). Headers are written here rather than by the `tar` crate's
//! builder, which spells long names as GNU extensions and drops directories' trailing `/`.
//!
//! Output is a function of the tree's content and metadata only: entries are sorted by
//! name with parents first, user/group names are left empty, times are whole seconds
//! (and clamped to `SOURCE_DATE_EPOCH` when asked), xattrs are sorted, and hard links are
//! recorded as links to the first path (in that order) of their inode. Sockets cannot be
//! put in a tar and are left out, as Docker does.

use std::collections::HashMap;
use std::fs::{File, Metadata};
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use tar::{EntryType, Header};

use super::pipeline::{self, ChunkWriter};
use super::whiteout::{self, OPAQUE_WHITEOUT, WHITEOUT_PREFIX};
use super::{Compression, LayerDescriptor, LayerError};
use crate::media_type::Flavor;

const BLOCK: usize = 512;
/// Largest value of an 8-byte octal header field (uid, gid, mode).
const MAX_OCTAL_8: u64 = 0o7777777;
/// Largest value of a 12-byte octal header field (size, mtime).
const MAX_OCTAL_12: u64 = 0o77777777777;

/// What the source directory is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Source {
    /// A plain tree: every file is what it is.
    #[default]
    Tree,
    /// An overlayfs upper dir: 0/0 character devices are whiteouts and directories with
    /// an `opaque` xattr hide their lower contents; overlay's own xattrs are dropped.
    /// The mount must not have used `redirect_dir` or `metacopy` (both off by default),
    /// since with them an upper dir alone no longer describes the change.
    OverlayUpper,
}

/// How to write a layer.
#[derive(Clone, Debug, Default)]
pub struct WriteOptions {
    /// Compression of the blob.
    pub compression: Compression,
    /// Compression level; `None` for the algorithm's default.
    pub level: Option<i32>,
    /// `SOURCE_DATE_EPOCH`: modification times later than this are set to it.
    pub source_date_epoch: Option<i64>,
    /// What the source directory is.
    pub source: Source,
    /// Media type family recorded in the descriptor.
    pub flavor: Flavor,
}

impl WriteOptions {
    /// Sets the compression.
    pub fn with_compression(mut self, compression: Compression) -> WriteOptions {
        self.compression = compression;
        self
    }

    /// Sets the compression level.
    pub fn with_level(mut self, level: i32) -> WriteOptions {
        self.level = Some(level);
        self
    }

    /// Clamps modification times to `epoch` (seconds since 1970).
    pub fn with_source_date_epoch(mut self, epoch: i64) -> WriteOptions {
        self.source_date_epoch = Some(epoch);
        self
    }

    /// Sets what the source directory is.
    pub fn with_source(mut self, source: Source) -> WriteOptions {
        self.source = source;
        self
    }

    /// Sets the media type family of the descriptor.
    pub fn with_flavor(mut self, flavor: Flavor) -> WriteOptions {
        self.flavor = flavor;
        self
    }
}

/// Writes the tree under `dir` as a layer blob into `out` and describes it.
///
/// The uncompressed tar is never held in memory: it is hashed (diffID), compressed and
/// hashed again (digest) on separate threads as it is produced.
pub fn write_layer<W: Write>(
    dir: &Path,
    out: &mut W,
    options: &WriteOptions,
) -> Result<LayerDescriptor, LayerError> {
    let compression = options.compression;
    let level = compression.check_level(options.level.unwrap_or(compression.default_level()))?;
    let root_meta = std::fs::symlink_metadata(dir).map_err(|source| LayerError::Walk {
        path: dir.to_owned(),
        source,
    })?;
    if !root_meta.is_dir() {
        return Err(LayerError::NotADirectory {
            path: dir.to_owned(),
        });
    }
    let hashed = pipeline::run(out, compression, level, |w| {
        let mut tar = TarWriter {
            out: w,
            options,
            links: HashMap::new(),
        };
        tar.write_tree(dir, &root_meta)?;
        tar.out
            .zeros(2 * BLOCK)
            .map_err(|source| LayerError::WriteLayer { source })
    })?;
    Ok(hashed.describe(options.flavor, compression))
}

/// Compresses the plain tar read from `tar` into `out` as a layer blob of the given
/// flavor, and describes it: how a layer kept uncompressed in a store is made ready for
/// a registry. The diffID is the digest of what was read, so a caller that knows which
/// blob it read can check that it read all of it, unchanged.
pub fn compress_layer<R: Read + Send, W: Write>(
    mut tar: R,
    out: &mut W,
    compression: Compression,
    level: Option<i32>,
    flavor: Flavor,
) -> Result<LayerDescriptor, LayerError> {
    let level = compression.check_level(level.unwrap_or(compression.default_level()))?;
    let hashed = pipeline::run(out, compression, level, |w| {
        w.copy_from(&mut tar, u64::MAX)
            .map(drop)
            .map_err(|source| LayerError::ReadLayer { source })
    })?;
    Ok(hashed.describe(flavor, compression))
}

/// One tar entry's metadata, before encoding.
struct Entry {
    path: Vec<u8>,
    kind: EntryType,
    mode: u32,
    uid: u64,
    gid: u64,
    mtime: i64,
    size: u64,
    link: Option<Vec<u8>>,
    device: Option<(u32, u32)>,
    xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

struct TarWriter<'a, 'w> {
    out: &'a mut ChunkWriter<'w>,
    options: &'a WriteOptions,
    /// First path seen for each multiply-linked inode.
    links: HashMap<(u64, u64), Vec<u8>>,
}

impl TarWriter<'_, '_> {
    fn write_tree(&mut self, dir: &Path, root_meta: &Metadata) -> Result<(), LayerError> {
        let overlay = self.options.source == Source::OverlayUpper;
        if overlay && self.opaque(dir)? {
            let marker = self.marker(OPAQUE_WHITEOUT.as_bytes().to_vec(), root_meta);
            self.append(&marker, None)?;
        }
        let walk = walkdir::WalkDir::new(dir)
            .min_depth(1)
            .follow_links(false)
            .sort_by_file_name();
        for item in walk {
            let item = item.map_err(|e| LayerError::Walk {
                path: e.path().unwrap_or(dir).to_owned(),
                source: e.into(),
            })?;
            let path = item.path();
            let meta = item.metadata().map_err(|e| LayerError::Walk {
                path: path.to_owned(),
                source: e.into(),
            })?;
            let rel = path
                .strip_prefix(dir)
                .expect("walkdir yields paths under its root")
                .as_os_str()
                .as_bytes()
                .to_vec();
            let name = item.file_name().as_bytes();
            if name.starts_with(WHITEOUT_PREFIX.as_bytes()) {
                return Err(LayerError::ReservedName {
                    path: path.to_owned(),
                });
            }
            let ft = meta.file_type();
            if overlay && ft.is_char_device() && meta.rdev() == 0 {
                let mut wh = rel[..rel.len() - name.len()].to_vec();
                wh.extend_from_slice(WHITEOUT_PREFIX.as_bytes());
                wh.extend_from_slice(name);
                let marker = self.marker(wh, &meta);
                self.append(&marker, None)?;
                continue;
            }
            if ft.is_socket() {
                continue;
            }
            let mut entry = self.entry(path, rel, &meta)?;
            if ft.is_dir() {
                entry.path.push(b'/');
                self.append(&entry, None)?;
                if overlay && self.opaque(path)? {
                    let mut opq = entry.path.clone();
                    opq.extend_from_slice(OPAQUE_WHITEOUT.as_bytes());
                    let marker = self.marker(opq, &meta);
                    self.append(&marker, None)?;
                }
            } else if entry.kind == EntryType::Regular && entry.size > 0 {
                let mut file = File::open(path).map_err(|source| LayerError::Walk {
                    path: path.to_owned(),
                    source,
                })?;
                self.append(&entry, Some((path, &mut file)))?;
            } else {
                self.append(&entry, None)?;
            }
        }
        Ok(())
    }

    fn opaque(&self, dir: &Path) -> Result<bool, LayerError> {
        whiteout::is_overlay_opaque(dir).map_err(|source| LayerError::Walk {
            path: dir.to_owned(),
            source,
        })
    }

    fn mtime(&self, meta: &Metadata) -> i64 {
        match self.options.source_date_epoch {
            Some(epoch) => meta.mtime().min(epoch),
            None => meta.mtime(),
        }
    }

    /// A whiteout marker: an empty regular file owned by root with mode 0.
    fn marker(&self, path: Vec<u8>, meta: &Metadata) -> Entry {
        Entry {
            path,
            kind: EntryType::Regular,
            mode: 0,
            uid: 0,
            gid: 0,
            mtime: self.mtime(meta),
            size: 0,
            link: None,
            device: None,
            xattrs: Vec::new(),
        }
    }

    fn entry(&mut self, path: &Path, rel: Vec<u8>, meta: &Metadata) -> Result<Entry, LayerError> {
        let walk_err = |source| LayerError::Walk {
            path: path.to_owned(),
            source,
        };
        let ft = meta.file_type();
        let mut entry = Entry {
            path: rel,
            kind: EntryType::Regular,
            mode: meta.mode() & 0o7777,
            uid: meta.uid().into(),
            gid: meta.gid().into(),
            mtime: self.mtime(meta),
            size: 0,
            link: None,
            device: None,
            xattrs: self.xattrs(path).map_err(walk_err)?,
        };
        if !ft.is_dir() && meta.nlink() > 1 {
            match self.links.get(&(meta.dev(), meta.ino())) {
                Some(first) => {
                    entry.kind = EntryType::Link;
                    entry.link = Some(first.clone());
                    entry.xattrs.clear();
                    return Ok(entry);
                }
                None => {
                    self.links
                        .insert((meta.dev(), meta.ino()), entry.path.clone());
                }
            }
        }
        if ft.is_dir() {
            entry.kind = EntryType::Directory;
        } else if ft.is_symlink() {
            entry.kind = EntryType::Symlink;
            let target = std::fs::read_link(path).map_err(walk_err)?;
            entry.link = Some(target.into_os_string().into_encoded_bytes());
        } else if ft.is_char_device() || ft.is_block_device() {
            entry.kind = if ft.is_char_device() {
                EntryType::Char
            } else {
                EntryType::Block
            };
            let rdev = meta.rdev();
            entry.device = Some((rustix::fs::major(rdev), rustix::fs::minor(rdev)));
        } else if ft.is_fifo() {
            entry.kind = EntryType::Fifo;
        } else {
            entry.size = meta.size();
        }
        Ok(entry)
    }

    fn xattrs(&self, path: &Path) -> io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let overlay = self.options.source == Source::OverlayUpper;
        let mut out = Vec::new();
        for name in xattr::list(path)? {
            let bytes = name.as_bytes();
            if whiteout::is_overlay_xattr(bytes, overlay) {
                continue;
            }
            // A value can vanish between listing and reading; then there is nothing to keep.
            if let Some(value) = xattr::get(path, &name)? {
                out.push((bytes.to_vec(), value));
            }
        }
        out.sort();
        Ok(out)
    }

    /// Encodes `entry` (PAX header first if needed), then its data and padding.
    fn append(
        &mut self,
        entry: &Entry,
        data: Option<(&Path, &mut File)>,
    ) -> Result<(), LayerError> {
        let write_err = |source| LayerError::WriteLayer { source };
        let (header, pax) = encode(entry);
        if !pax.is_empty() {
            let pax_header = pax_header(entry, pax.len() as u64);
            self.out
                .write_all(pax_header.as_bytes())
                .map_err(write_err)?;
            self.out.write_all(&pax).map_err(write_err)?;
            self.out
                .zeros(padding(pax.len() as u64))
                .map_err(write_err)?;
        }
        self.out.write_all(header.as_bytes()).map_err(write_err)?;
        if let Some((path, file)) = data {
            let copied = self.out.copy_from(file, entry.size).map_err(|source| {
                // A read error names the file; a failing consumer is an output error.
                if source.kind() == io::ErrorKind::BrokenPipe {
                    LayerError::WriteLayer { source }
                } else {
                    LayerError::Walk {
                        path: path.to_owned(),
                        source,
                    }
                }
            })?;
            if copied != entry.size {
                return Err(LayerError::FileChanged {
                    path: path.to_owned(),
                    expected: entry.size,
                    actual: copied,
                });
            }
            self.out.zeros(padding(entry.size)).map_err(write_err)?;
        }
        Ok(())
    }
}

fn padding(len: u64) -> usize {
    (BLOCK - (len % BLOCK as u64) as usize) % BLOCK
}

/// The ustar header for `entry` and the PAX records it needs (empty if none).
fn encode(entry: &Entry) -> (Header, Vec<u8>) {
    let mut pax = Vec::new();
    let mut h = Header::new_ustar();
    let u = h.as_ustar_mut().expect("a new ustar header");
    match split_ustar(&entry.path) {
        Some((prefix, name)) => {
            u.prefix[..prefix.len()].copy_from_slice(prefix);
            u.name[..name.len()].copy_from_slice(name);
        }
        None => {
            pax_record(&mut pax, b"path", &entry.path);
            let n = entry.path.len().min(u.name.len());
            u.name[..n].copy_from_slice(&entry.path[..n]);
        }
    }
    if let Some(link) = &entry.link {
        if link.len() > u.linkname.len() {
            pax_record(&mut pax, b"linkpath", link);
        }
        let n = link.len().min(u.linkname.len());
        u.linkname[..n].copy_from_slice(&link[..n]);
    }
    h.set_entry_type(entry.kind);
    h.set_mode(entry.mode);
    for (key, value, set) in [
        (
            &b"uid"[..],
            entry.uid,
            Header::set_uid as fn(&mut Header, u64),
        ),
        (&b"gid"[..], entry.gid, Header::set_gid),
    ] {
        if value > MAX_OCTAL_8 {
            pax_record(&mut pax, key, value.to_string().as_bytes());
            set(&mut h, 0);
        } else {
            set(&mut h, value);
        }
    }
    if entry.size > MAX_OCTAL_12 {
        pax_record(&mut pax, b"size", entry.size.to_string().as_bytes());
        h.set_size(0);
    } else {
        h.set_size(entry.size);
    }
    match u64::try_from(entry.mtime) {
        Ok(t) if t <= MAX_OCTAL_12 => h.set_mtime(t),
        _ => {
            pax_record(&mut pax, b"mtime", entry.mtime.to_string().as_bytes());
            h.set_mtime(0);
        }
    }
    if let Some((major, minor)) = entry.device {
        h.set_device_major(major)
            .expect("ustar headers have device fields");
        h.set_device_minor(minor)
            .expect("ustar headers have device fields");
    }
    for (name, value) in &entry.xattrs {
        let mut key = b"SCHILY.xattr.".to_vec();
        key.extend_from_slice(name);
        pax_record(&mut pax, &key, value);
    }
    h.set_cksum();
    (h, pax)
}

/// The header of the PAX extension entry describing `entry`.
fn pax_header(entry: &Entry, size: u64) -> Header {
    let base = entry
        .path
        .strip_suffix(b"/")
        .unwrap_or(&entry.path)
        .rsplit(|&b| b == b'/')
        .next()
        .unwrap_or_default();
    let mut name = b"PaxHeaders.0/".to_vec();
    name.extend_from_slice(base);
    name.truncate(100);
    let mut h = Header::new_ustar();
    let u = h.as_ustar_mut().expect("a new ustar header");
    u.name[..name.len()].copy_from_slice(&name);
    h.set_entry_type(EntryType::XHeader);
    h.set_mode(0o644);
    h.set_size(size);
    h.set_mtime(u64::try_from(entry.mtime).unwrap_or(0).min(MAX_OCTAL_12));
    h.set_cksum();
    h
}

/// Splits a path into ustar's `prefix` (≤155 bytes) and `name` (≤100) at a `/`.
fn split_ustar(path: &[u8]) -> Option<(&[u8], &[u8])> {
    if path.len() <= 100 {
        return Some((&[], path));
    }
    // Shortest prefix whose remaining name fits; the trailing '/' of a directory stays
    // in the name.
    let search_end = path.len() - 1;
    (0..search_end)
        .filter(|&i| path[i] == b'/')
        .find(|&i| search_end - i <= 100)
        .filter(|&i| i <= 155 && i > 0)
        .map(|i| (&path[..i], &path[i + 1..]))
}

/// Appends one `"<len> key=value\n"` record, `<len>` counting itself.
fn pax_record(out: &mut Vec<u8>, key: &[u8], value: &[u8]) {
    let rest = key.len() + value.len() + 3; // ' ', '=', '\n'
    let mut len = rest + 1;
    while len != rest + len.to_string().len() {
        len = rest + len.to_string().len();
    }
    out.extend_from_slice(len.to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(key);
    out.push(b'=');
    out.extend_from_slice(value);
    out.push(b'\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pax_record_lengths_count_themselves() {
        let mut v = Vec::new();
        pax_record(&mut v, b"path", b"x");
        assert_eq!(v, b"9 path=x\n");
        let mut v = Vec::new();
        // 91 value bytes make 98 + "99" = 100 bytes, so the length needs a third digit.
        pax_record(&mut v, b"path", &[b'a'; 91]);
        assert_eq!(v.len(), 101);
        assert!(v.starts_with(b"101 path="));
    }

    #[test]
    fn ustar_split() {
        let long_dir = [b"d".repeat(120), b"/".to_vec(), b"f".repeat(99)].concat();
        let (p, n) = split_ustar(&long_dir).unwrap();
        assert_eq!((p.len(), n.len()), (120, 99));
        assert!(split_ustar(&b"x".repeat(101)).is_none());
        let too_long = [b"d".repeat(200), b"/".to_vec(), b"f".repeat(50)].concat();
        assert!(split_ustar(&too_long).is_none());
        let dir = [b"d".repeat(120), b"/e/".to_vec()].concat();
        assert_eq!(split_ustar(&dir).unwrap().1, b"e/");
    }
}
