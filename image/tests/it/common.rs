//! Shared fixtures: a temp-dir test context, a tree snapshot for comparing directories,
//! and a raw tar builder for archives no well-behaved writer would produce.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use kiln_image::layer::{ApplyOptions, WriteOptions, apply_layer, write_layer};
use kiln_image::{LayerDescriptor, LayerError};

/// A temp dir with conventional sub-dirs.
pub struct TestContext {
    pub dir: tempfile::TempDir,
}

impl TestContext {
    pub fn new() -> TestContext {
        TestContext {
            dir: tempfile::tempdir().expect("create temp dir"),
        }
    }

    /// A fresh, empty sub-directory.
    pub fn mkdir(&self, name: &str) -> PathBuf {
        let p = self.dir.path().join(name);
        fs::create_dir_all(&p).unwrap();
        p
    }

    /// Writes the tree at `src` as a layer into memory.
    pub fn write(&self, src: &Path, options: &WriteOptions) -> (LayerDescriptor, Vec<u8>) {
        let mut blob = Vec::new();
        let desc = write_layer(src, &mut blob, options).expect("write layer");
        (desc, blob)
    }

    pub fn apply(
        &self,
        blob: &[u8],
        target: &Path,
        options: &ApplyOptions,
    ) -> Result<kiln_image::layer::Applied, LayerError> {
        apply_layer(blob, target, options)
    }
}

pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// Everything the round trip must preserve about one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub kind: &'static str,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: i64,
    /// File contents, symlink target, or "major:minor".
    pub data: Vec<u8>,
    pub xattrs: BTreeMap<Vec<u8>, Vec<u8>>,
    /// For multiply-linked files: the first path (in sorted order) of the inode.
    pub link_group: Option<PathBuf>,
}

/// Snapshot of the tree under `root` (root itself excluded), sorted by path.
pub fn snapshot(root: &Path) -> BTreeMap<PathBuf, Node> {
    let mut out = BTreeMap::new();
    let mut inodes: HashMap<u64, PathBuf> = HashMap::new();
    for e in walkdir::WalkDir::new(root).min_depth(1).sort_by_file_name() {
        let e = e.unwrap();
        let m = e.metadata().unwrap();
        let rel = e.path().strip_prefix(root).unwrap().to_owned();
        let ft = m.file_type();
        if ft.is_socket() {
            continue; // layers cannot hold sockets
        }
        let (kind, data) = if ft.is_dir() {
            ("dir", vec![])
        } else if ft.is_symlink() {
            (
                "symlink",
                fs::read_link(e.path())
                    .unwrap()
                    .as_os_str()
                    .as_bytes()
                    .to_vec(),
            )
        } else if ft.is_char_device() || ft.is_block_device() {
            let rdev = m.rdev();
            let k = if ft.is_char_device() { "char" } else { "block" };
            (
                k,
                format!("{}:{}", rustix::fs::major(rdev), rustix::fs::minor(rdev)).into_bytes(),
            )
        } else if ft.is_fifo() {
            ("fifo", vec![])
        } else {
            ("file", fs::read(e.path()).unwrap())
        };
        let link_group = (!ft.is_dir() && m.nlink() > 1)
            .then(|| inodes.entry(m.ino()).or_insert_with(|| rel.clone()).clone());
        let xattrs = xattr::list(e.path())
            .unwrap()
            .map(|n| {
                let v = xattr::get(e.path(), &n).unwrap().unwrap_or_default();
                (n.as_bytes().to_vec(), v)
            })
            .collect();
        out.insert(
            rel,
            Node {
                kind,
                mode: if ft.is_symlink() {
                    0
                } else {
                    m.mode() & 0o7777
                },
                uid: m.uid(),
                gid: m.gid(),
                mtime: m.mtime(),
                data,
                xattrs,
                link_group,
            },
        );
    }
    out
}

/// Sets a path's mtime (and atime) without following symlinks.
pub fn set_mtime(path: &Path, secs: i64) {
    let t = rustix::fs::Timespec {
        tv_sec: secs,
        tv_nsec: 0,
    };
    rustix::fs::utimensat(
        rustix::fs::CWD,
        path,
        &rustix::fs::Timestamps {
            last_access: t,
            last_modification: t,
        },
        rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
    )
    .unwrap();
}

/// A tar built header by header, for archives a normal writer refuses to make.
#[derive(Default)]
pub struct RawTar {
    pub bytes: Vec<u8>,
}

impl RawTar {
    pub fn new() -> RawTar {
        RawTar::default()
    }

    fn header(path: &[u8], kind: tar::EntryType, size: u64, link: &[u8]) -> tar::Header {
        let mut h = tar::Header::new_ustar();
        let u = h.as_ustar_mut().unwrap();
        u.name[..path.len()].copy_from_slice(path);
        u.linkname[..link.len()].copy_from_slice(link);
        h.set_entry_type(kind);
        h.set_mode(0o644);
        h.set_size(size);
        h.set_mtime(1_600_000_000);
        h.set_cksum();
        h
    }

    fn push_header(&mut self, h: &tar::Header, data: &[u8]) {
        self.bytes.extend_from_slice(h.as_bytes());
        self.bytes.extend_from_slice(data);
        let pad = (512 - data.len() % 512) % 512;
        self.bytes.extend(std::iter::repeat_n(0, pad));
    }

    pub fn file(mut self, path: &str, data: &[u8]) -> RawTar {
        let h = Self::header(
            path.as_bytes(),
            tar::EntryType::Regular,
            data.len() as u64,
            b"",
        );
        self.push_header(&h, data);
        self
    }

    pub fn dir(mut self, path: &str) -> RawTar {
        let mut h = Self::header(path.as_bytes(), tar::EntryType::Directory, 0, b"");
        h.set_mode(0o755);
        h.set_cksum();
        self.push_header(&h, b"");
        self
    }

    pub fn symlink(mut self, path: &str, target: &str) -> RawTar {
        let h = Self::header(
            path.as_bytes(),
            tar::EntryType::Symlink,
            0,
            target.as_bytes(),
        );
        self.push_header(&h, b"");
        self
    }

    pub fn hardlink(mut self, path: &str, target: &str) -> RawTar {
        let h = Self::header(path.as_bytes(), tar::EntryType::Link, 0, target.as_bytes());
        self.push_header(&h, b"");
        self
    }

    /// A PAX extended header with the given records, applying to the next entry.
    pub fn pax(mut self, records: &[(&str, &[u8])]) -> RawTar {
        let mut body = Vec::new();
        for (k, v) in records {
            let rest = k.len() + v.len() + 3;
            let mut len = rest + 1;
            while len != rest + len.to_string().len() {
                len = rest + len.to_string().len();
            }
            body.extend_from_slice(format!("{len} {k}=").as_bytes());
            body.extend_from_slice(v);
            body.push(b'\n');
        }
        let h = Self::header(
            b"PaxHeaders/x",
            tar::EntryType::XHeader,
            body.len() as u64,
            b"",
        );
        self.push_header(&h, &body);
        self
    }

    /// A header whose size field claims `size` bytes, followed by `data` only.
    pub fn lying_file(mut self, path: &str, size: u64, data: &[u8]) -> RawTar {
        let h = Self::header(path.as_bytes(), tar::EntryType::Regular, size, b"");
        self.bytes.extend_from_slice(h.as_bytes());
        self.bytes.extend_from_slice(data);
        self
    }

    /// A raw 512-byte header block, as given.
    pub fn raw_block(mut self, block: [u8; 512]) -> RawTar {
        self.bytes.extend_from_slice(&block);
        self
    }

    pub fn finish(mut self) -> Vec<u8> {
        self.bytes.extend(std::iter::repeat_n(0, 1024));
        self.bytes
    }
}
