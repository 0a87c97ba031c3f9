//! Content checksums of the files a step reads, with a stat cache so that an unchanged
//! context is not read again.
//!
//! A checksum covers, for every selected path: its name relative to the selection, its
//! type, permission bits, owner, device numbers, link target, extended attributes and,
//! for regular files, the SHA-256 of the contents; a directory's checksum covers its
//! children's names and checksums. Timestamps never enter, so touching a file or
//! checking a tree out again leaves keys unchanged.
//!
//! File digests and extended attributes are remembered against (device, inode, size,
//! mtime, ctime). When all of these are unchanged the file is not read and its
//! attributes are not listed (changing an attribute changes the ctime). A digest is not
//! remembered while the file's mtime is within two seconds of the moment it was hashed,
//! nor are attributes while its ctime is: a change in the same clock tick could
//! otherwise go unseen.

use std::collections::HashMap;
use std::fs::{self, File, Metadata};
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{SystemTime, UNIX_EPOCH};

use kiln_image::{Digest, Digester};
use serde::{Deserialize, Serialize};

use super::select::{ContextError, SelectedSource, io_at};

/// The version tag of the checksum encoding; part of every checksum.
const CHECKSUM_VERSION: &[u8] = b"kiln-content-checksum-v1";

#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
struct StatEntry {
    dev: u64,
    ino: u64,
    size: u64,
    mtime_ns: i128,
    ctime_ns: i128,
    digest: Digest,
    /// The file's extended attributes (sorted by name), when they were read with it;
    /// entries written by older versions have none and are completed on next use.
    #[serde(default)]
    xattrs: Option<Xattrs>,
}

impl StatEntry {
    fn describes(&self, meta: &Metadata) -> bool {
        self.dev == meta.dev()
            && self.ino == meta.ino()
            && self.size == meta.size()
            && self.mtime_ns == mtime_ns(meta)
            && self.ctime_ns == ctime_ns(meta)
    }
}

fn mtime_ns(meta: &Metadata) -> i128 {
    meta.mtime() as i128 * 1_000_000_000 + meta.mtime_nsec() as i128
}

fn ctime_ns(meta: &Metadata) -> i128 {
    meta.ctime() as i128 * 1_000_000_000 + meta.ctime_nsec() as i128
}

type Entries = HashMap<PathBuf, StatEntry>;

/// Remembered file digests, optionally kept in a file between builds.
#[derive(Default)]
pub struct StatCache {
    file: Option<PathBuf>,
    /// The file being read in the background, until the entries are first needed.
    loading: Mutex<Option<JoinHandle<Entries>>>,
    entries: OnceLock<Mutex<Entries>>,
    dirty: AtomicBool,
}

impl StatCache {
    /// A cache that lives only as long as this value.
    pub fn in_memory() -> StatCache {
        StatCache::default()
    }

    /// A cache kept in `file`. A missing or unreadable file starts an empty cache: the
    /// cache only ever saves work, it is never needed for correctness.
    ///
    /// The file is read and parsed on a thread of its own while the build starts (a
    /// large context's cache takes tens of milliseconds to parse, about as long as
    /// walking the context); the first lookup waits for it.
    pub fn open(file: PathBuf) -> StatCache {
        let path = file.clone();
        let read = move || -> Entries {
            fs::read(&path)
                .ok()
                .and_then(|bytes| serde_json::from_slice(&bytes).ok())
                .unwrap_or_default()
        };
        let (loading, entries) = match std::thread::Builder::new()
            .name("stat-cache".into())
            .spawn(read.clone())
        {
            Ok(handle) => (Some(handle), OnceLock::new()),
            Err(_) => (None, OnceLock::from(Mutex::new(read()))),
        };
        StatCache {
            file: Some(file),
            loading: Mutex::new(loading),
            entries,
            dirty: AtomicBool::new(false),
        }
    }

    /// The entries, once the file is read.
    fn entries(&self) -> &Mutex<Entries> {
        self.entries.get_or_init(|| {
            let loading = self
                .loading
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take();
            Mutex::new(
                loading
                    .and_then(|handle| handle.join().ok())
                    .unwrap_or_default(),
            )
        })
    }

    /// Writes the cache back to its file (temp file, then rename) if anything changed.
    pub fn save(&self) -> io::Result<()> {
        let Some(file) = &self.file else {
            return Ok(());
        };
        if !self.dirty.swap(false, Ordering::AcqRel) {
            return Ok(());
        }
        let dir = file.parent().unwrap_or(Path::new("."));
        fs::create_dir_all(dir)?;
        let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
        {
            let entries = self.entries().lock().unwrap_or_else(|e| e.into_inner());
            serde_json::to_writer(io::BufWriter::new(tmp.as_file_mut()), &*entries)?;
        }
        tmp.as_file().sync_all()?;
        tmp.persist(file).map_err(|e| e.error)?;
        Ok(())
    }

    /// How many file digests the cache holds.
    pub fn len(&self) -> usize {
        self.entries()
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .len()
    }

    /// Whether the cache holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The digest and extended attributes of the file at `path`, and whether it was
    /// read (rather than remembered).
    fn file_facts(&self, path: &Path, meta: &Metadata) -> Result<FileFacts, ContextError> {
        let known = self
            .entries()
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(path)
            .filter(|entry| entry.describes(meta))
            .map(|entry| (entry.digest.clone(), entry.xattrs.clone()));
        if let Some((digest, Some(xattrs))) = &known {
            return Ok(FileFacts {
                digest: digest.clone(),
                xattrs: xattrs.clone(),
                read: false,
            });
        }
        let xattrs = read_xattrs(path)?;
        let (digest, read) = match known {
            Some((digest, None)) => (digest, false),
            _ => {
                let mut file = File::open(path).map_err(io_at(path))?;
                let mut digester = Digester::new();
                io::copy(&mut file, &mut digester).map_err(io_at(path))?;
                (digester.finish(), true)
            }
        };
        let now_ns = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as i128);
        // Attributes are remembered only when the ctime (which their changes move) is
        // as old as the mtime must be for the digest.
        let settled = |t: i128| now_ns - t > 2_000_000_000;
        if settled(mtime_ns(meta)) {
            self.entries()
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(
                    path.to_owned(),
                    StatEntry {
                        dev: meta.dev(),
                        ino: meta.ino(),
                        size: meta.size(),
                        mtime_ns: mtime_ns(meta),
                        ctime_ns: ctime_ns(meta),
                        digest: digest.clone(),
                        xattrs: settled(ctime_ns(meta)).then(|| xattrs.clone()),
                    },
                );
            self.dirty.store(true, Ordering::Release);
        }
        Ok(FileFacts {
            digest,
            xattrs,
            read,
        })
    }
}

/// Extended attributes: (name, value) pairs sorted by name.
type Xattrs = Vec<(Vec<u8>, Vec<u8>)>;

/// What the checksum needs of a regular file.
struct FileFacts {
    digest: Digest,
    xattrs: Xattrs,
    read: bool,
}

/// Counters from one checksum run, for progress and benchmarks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HashStats {
    /// Entries visited.
    pub entries: u64,
    /// Files whose contents were read.
    pub files_read: u64,
    /// Bytes read.
    pub bytes_read: u64,
}

/// The checksum of a selection: for each selected path, every entry's relative name,
/// type, permission bits, owner, device numbers, link target, xattrs and contents.
pub fn checksum(
    selected: &[SelectedSource],
    cache: &StatCache,
) -> Result<(Digest, HashStats), ContextError> {
    let mut stats = HashStats::default();
    let mut d = Digester::new();
    d.field(b"version", CHECKSUM_VERSION);
    for source in selected {
        d.field(b"match", source.path.as_bytes());
        for entry in &source.entries {
            stats.entries += 1;
            d.field(b"entry", entry.rel.as_bytes());
            let ft = entry.meta.file_type();
            if ft.is_file() {
                let facts = cache.file_facts(&entry.abs, &entry.meta)?;
                header(&mut d, &entry.meta, &facts.xattrs);
                if facts.read {
                    stats.files_read += 1;
                    stats.bytes_read += entry.meta.size();
                }
                d.field(b"content", facts.digest.to_string().as_bytes());
                continue;
            }
            header(&mut d, &entry.meta, &read_xattrs(&entry.abs)?);
            if ft.is_symlink() {
                let target = fs::read_link(&entry.abs).map_err(io_at(&entry.abs))?;
                d.field(b"link", target.as_os_str().as_encoded_bytes());
            }
        }
    }
    Ok((d.finish(), stats))
}

/// Type, permissions, owner, device numbers and xattrs of an entry.
fn header(d: &mut Digester, meta: &Metadata, xattrs: &[(Vec<u8>, Vec<u8>)]) {
    let ft = meta.file_type();
    let kind: &[u8] = if ft.is_dir() {
        b"dir"
    } else if ft.is_file() {
        b"file"
    } else if ft.is_symlink() {
        b"symlink"
    } else if ft.is_char_device() {
        b"char"
    } else if ft.is_block_device() {
        b"block"
    } else if ft.is_fifo() {
        b"fifo"
    } else {
        b"socket"
    };
    d.field(b"type", kind);
    // Symlink permission bits are meaningless on Linux and vary by filesystem.
    let mode = if ft.is_symlink() {
        0
    } else {
        meta.mode() & 0o7777
    };
    d.field(b"mode", &mode.to_be_bytes());
    d.field(b"uid", &meta.uid().to_be_bytes());
    d.field(b"gid", &meta.gid().to_be_bytes());
    if ft.is_char_device() || ft.is_block_device() {
        d.field(b"rdev", &meta.rdev().to_be_bytes());
    }
    for (name, value) in xattrs {
        d.field(b"xattr", name);
        d.field(b"value", value);
    }
}

/// The extended attributes of `abs` (not following a symlink), sorted by name; none
/// where the filesystem has no attributes.
fn read_xattrs(abs: &Path) -> Result<Xattrs, ContextError> {
    let mut names: Vec<_> = match xattr::list(abs) {
        Ok(names) => names.collect(),
        Err(e) if e.raw_os_error() == Some(libc::ENOTSUP) => Vec::new(),
        Err(e) => return Err(io_at(abs)(e)),
    };
    names.sort();
    names
        .into_iter()
        .map(|name| {
            let value = xattr::get(abs, &name)
                .map_err(io_at(abs))?
                .unwrap_or_default();
            Ok((name.into_encoded_bytes(), value))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::{PermissionsExt, symlink};
    use std::time::Duration;

    use super::*;
    use crate::context::{ContextTree, IgnoreMatcher, Selection};

    struct Tree {
        dir: tempfile::TempDir,
    }

    impl Tree {
        fn new(files: &[(&str, &str)]) -> Tree {
            let tree = Tree {
                dir: tempfile::tempdir().unwrap(),
            };
            for (path, content) in files {
                tree.write(path, content);
            }
            tree
        }

        fn path(&self, rel: &str) -> PathBuf {
            self.dir.path().join(rel)
        }

        fn write(&self, rel: &str, content: &str) {
            let path = self.path(rel);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(&path, content).unwrap();
            // Old enough for the stat cache to trust.
            let old = SystemTime::now() - Duration::from_secs(60);
            File::options()
                .write(true)
                .open(&path)
                .unwrap()
                .set_modified(old)
                .unwrap();
        }

        fn sum_with(
            &self,
            ignore: &[&str],
            cache: &StatCache,
            sel: &Selection,
        ) -> Result<(Digest, HashStats), ContextError> {
            let ignore = IgnoreMatcher::new(ignore).unwrap();
            let selected = ContextTree::new(self.dir.path(), &ignore).select(sel)?;
            checksum(&selected, cache)
        }

        fn sum(&self, ignore: &[&str], sources: &[&str]) -> Digest {
            self.sum_with(ignore, &StatCache::in_memory(), &select(sources))
                .unwrap()
                .0
        }
    }

    fn select(sources: &[&str]) -> Selection {
        Selection {
            sources: sources.iter().map(|s| s.to_string()).collect(),
            ..Selection::default()
        }
    }

    #[test]
    fn content_mode_and_names_count_but_mtimes_do_not() {
        let t = Tree::new(&[("a.txt", "one"), ("src/b.rs", "fn main() {}")]);
        let base = t.sum(&[], &["."]);
        assert_eq!(base, t.sum(&[], &["."]), "stable");

        File::options()
            .write(true)
            .open(t.path("a.txt"))
            .unwrap()
            .set_modified(SystemTime::now() - Duration::from_secs(5))
            .unwrap();
        assert_eq!(base, t.sum(&[], &["."]), "touching changes nothing");

        t.write("a.txt", "two");
        let changed = t.sum(&[], &["."]);
        assert_ne!(base, changed);

        fs::set_permissions(t.path("a.txt"), fs::Permissions::from_mode(0o755)).unwrap();
        assert_ne!(changed, t.sum(&[], &["."]), "mode counts");

        let before = t.sum(&[], &["src"]);
        fs::rename(t.path("src/b.rs"), t.path("src/c.rs")).unwrap();
        assert_ne!(before, t.sum(&[], &["src"]), "names count");
    }

    #[test]
    fn only_the_selected_files_count() {
        let t = Tree::new(&[("a.txt", "one"), ("b.txt", "two")]);
        let a = t.sum(&[], &["a.txt"]);
        t.write("b.txt", "changed");
        assert_eq!(a, t.sum(&[], &["a.txt"]));
        assert_ne!(a, t.sum(&[], &["b.txt"]));
        assert_eq!(
            a,
            t.sum(&[], &["/a.txt"]),
            "a leading slash is the context root"
        );
    }

    #[test]
    fn ignored_files_do_not_count_and_cannot_be_selected() {
        let t = Tree::new(&[
            ("app/main.c", "int main;"),
            ("app/build/out.o", "obj"),
            ("keep.md", "k"),
        ]);
        let ignore = ["app/build", "*.md", "!keep.md"];
        let before = t.sum(&ignore, &["."]);
        t.write("app/build/out.o", "other obj");
        t.write("notes.md", "new ignored file");
        assert_eq!(before, t.sum(&ignore, &["."]));
        t.write("keep.md", "re-included, so it counts");
        assert_ne!(before, t.sum(&ignore, &["."]));

        let err = t
            .sum_with(
                &ignore,
                &StatCache::in_memory(),
                &select(&["app/build/out.o"]),
            )
            .unwrap_err();
        assert!(matches!(err, ContextError::NotFound { .. }), "{err}");
    }

    #[test]
    fn re_included_files_below_an_ignored_directory_count() {
        let t = Tree::new(&[("docs/a.md", "a"), ("docs/public/b.md", "b")]);
        let ignore = ["docs", "!docs/public"];
        let before = t.sum(&ignore, &["."]);
        t.write("docs/a.md", "ignored change");
        assert_eq!(before, t.sum(&ignore, &["."]));
        t.write("docs/public/b.md", "kept change");
        assert_ne!(before, t.sum(&ignore, &["."]));
    }

    #[test]
    fn excludes_apply_relative_to_the_source() {
        let t = Tree::new(&[("src/a.rs", "a"), ("src/a.tmp", "t")]);
        let sel = Selection {
            excludes: vec!["*.tmp".into()],
            ..select(&["src"])
        };
        let cache = StatCache::in_memory();
        let before = t.sum_with(&[], &cache, &sel).unwrap().0;
        t.write("src/a.tmp", "changed");
        assert_eq!(before, t.sum_with(&[], &cache, &sel).unwrap().0);
        t.write("src/a.rs", "changed");
        assert_ne!(before, t.sum_with(&[], &cache, &sel).unwrap().0);
    }

    #[test]
    fn wildcards_select_matching_paths() {
        let t = Tree::new(&[
            ("a.txt", "a"),
            ("b.txt", "b"),
            ("c.md", "c"),
            ("d/e.txt", "e"),
        ]);
        let sel = Selection {
            wildcard: true,
            ..select(&["*.txt"])
        };
        let cache = StatCache::in_memory();
        let before = t.sum_with(&[], &cache, &sel).unwrap().0;
        t.write("c.md", "changed");
        t.write("d/e.txt", "changed");
        assert_eq!(before, t.sum_with(&[], &cache, &sel).unwrap().0);
        t.write("b.txt", "changed");
        assert_ne!(before, t.sum_with(&[], &cache, &sel).unwrap().0);

        let none = Selection {
            wildcard: true,
            ..select(&["*.nothing"])
        };
        assert!(matches!(
            t.sum_with(&[], &cache, &none),
            Err(ContextError::NoMatch { .. })
        ));
        let allowed = Selection {
            allow_empty: true,
            ..none
        };
        assert!(t.sum_with(&[], &cache, &allowed).is_ok());
    }

    #[test]
    fn symlinks_resolve_inside_the_root_only() {
        let t = Tree::new(&[("real/f", "data")]);
        symlink("real", t.path("link")).unwrap();
        symlink("/real/f", t.path("abs")).unwrap();
        symlink("../../../../etc/passwd", t.path("escape")).unwrap();
        assert_eq!(t.sum(&[], &["link/f"]), t.sum(&[], &["real/f"]));
        assert_eq!(
            t.sum(&[], &["abs"]),
            t.sum(&[], &["real/f"]),
            "absolute targets are root-relative"
        );
        let err = t
            .sum_with(&[], &StatCache::in_memory(), &select(&["escape"]))
            .unwrap_err();
        assert!(matches!(err, ContextError::NotFound { .. }), "{err}");

        symlink("loop", t.path("loop")).unwrap();
        let err = t
            .sum_with(&[], &StatCache::in_memory(), &select(&["loop"]))
            .unwrap_err();
        assert!(matches!(err, ContextError::TooManyLinks { .. }), "{err}");
    }

    #[test]
    fn the_stat_cache_skips_unchanged_files_and_survives_a_restart() {
        let t = Tree::new(&[("a", "1"), ("b", "2"), ("c/d", "3")]);
        let file = t
            .dir
            .path()
            .join("..")
            .join(format!("statcache-{}.json", std::process::id()));
        let cache = StatCache::open(file.clone());
        let (first, stats) = t.sum_with(&[], &cache, &select(&["."])).unwrap();
        assert_eq!(stats.files_read, 3);
        cache.save().unwrap();

        let reopened = StatCache::open(file.clone());
        assert_eq!(reopened.len(), 3);
        let (second, stats) = t.sum_with(&[], &reopened, &select(&["."])).unwrap();
        assert_eq!((first.clone(), stats.files_read), (second, 0));

        t.write("b", "changed");
        let (third, stats) = t.sum_with(&[], &reopened, &select(&["."])).unwrap();
        assert_eq!(stats.files_read, 1);
        assert_ne!(first, third);
        fs::remove_file(file).unwrap();
    }

    #[test]
    fn remembered_attributes_are_used_and_a_changed_one_is_seen() {
        let t = Tree::new(&[("a", "1")]);
        let path = t.path("a");
        if xattr::set(&path, "user.kiln.test", b"one").is_err() {
            panic!("this test needs user xattrs on the temp dir's filesystem");
        }
        let cache = StatCache::in_memory();
        let (first, _) = t.sum_with(&[], &cache, &select(&["a"])).unwrap();
        // The digest is remembered (the mtime is old) but not the attributes: the
        // ctime, which setting one moved, is fresh.
        let entry = cache.entries().lock().unwrap().get(&path).cloned().unwrap();
        assert_eq!(entry.xattrs, None, "ctime is fresh");
        // An entry as a later build finds it, with the attributes remembered (made up,
        // to tell them from the file's own).
        let aged = StatCache::in_memory();
        aged.entries().lock().unwrap().insert(
            path.clone(),
            StatEntry {
                xattrs: Some(vec![(b"user.kiln.test".to_vec(), b"remembered".to_vec())]),
                ..entry
            },
        );
        // The remembered attributes are what the checksum covers (the file is not asked).
        let (from_cache, stats) = t.sum_with(&[], &aged, &select(&["a"])).unwrap();
        assert_eq!(stats.files_read, 0);
        assert_ne!(from_cache, first);
        // Changing an attribute moves the ctime: the entry no longer describes the file.
        std::thread::sleep(Duration::from_millis(20));
        xattr::set(&path, "user.kiln.test", b"two").unwrap();
        let (changed, stats) = t.sum_with(&[], &aged, &select(&["a"])).unwrap();
        assert_eq!(stats.files_read, 1);
        assert_ne!(changed, first);
        assert_ne!(changed, from_cache);
        xattr::set(&path, "user.kiln.test", b"one").unwrap();
        assert_eq!(t.sum(&[], &["a"]), first);
    }

    #[test]
    fn a_freshly_written_file_is_not_trusted_by_the_stat_cache() {
        let t = Tree::new(&[]);
        fs::write(t.path("new"), "x").unwrap();
        let cache = StatCache::in_memory();
        t.sum_with(&[], &cache, &select(&["new"])).unwrap();
        assert!(cache.is_empty());
    }
}
