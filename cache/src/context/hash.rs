//! Content checksums of the files a step reads, with a stat cache so that an unchanged
//! context is not read again.
//!
//! A checksum covers, for every selected path: its name relative to the selection, its
//! type, permission bits, owner, device numbers, link target, extended attributes and,
//! for regular files, the SHA-256 of the contents; a directory's checksum covers its
//! children's names and checksums. Timestamps never enter, so touching a file or
//! checking a tree out again leaves keys unchanged.
//!
//! File digests are remembered against (device, inode, size, mtime, ctime). When all
//! of these are unchanged the file is not read. A file whose mtime is within two
//! seconds of the moment it was hashed is not remembered: a write in the same clock
//! tick could otherwise go unseen.

use std::collections::HashMap;
use std::fs::{self, File, Metadata};
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use kiln_image::{Digest, Digester};
use serde::{Deserialize, Serialize};

use super::ignore::{IgnoreError, IgnoreMatcher, MatchInfo};
use super::pattern::{BadPattern, clean, glob_match};

/// The version tag of the checksum encoding; part of every checksum.
const CHECKSUM_VERSION: &[u8] = b"kiln-content-checksum-v1";

/// How many symlinks a path may pass through before resolution gives up.
const MAX_LINKS: usize = 255;

/// Why a checksum could not be computed.
#[derive(Debug, thiserror::Error)]
pub enum ContextError {
    /// A source path does not exist, or is excluded by `.dockerignore`.
    #[error("{path:?} not found in the build context or excluded by .dockerignore")]
    NotFound {
        /// The source as written.
        path: String,
    },
    /// A wildcard matched nothing.
    #[error("no source files were specified: {pattern:?} matches nothing")]
    NoMatch {
        /// The pattern as written.
        pattern: String,
    },
    /// A path passes through too many symlinks.
    #[error("too many levels of symbolic links resolving {path:?}")]
    TooManyLinks {
        /// The source as written.
        path: String,
    },
    /// A malformed wildcard.
    #[error(transparent)]
    BadPattern(#[from] BadPattern),
    /// Malformed exclude patterns.
    #[error("bad exclude pattern")]
    Exclude(#[from] IgnoreError),
    /// Reading the tree failed.
    #[error("reading {path}")]
    Io {
        /// The file that could not be read.
        path: PathBuf,
        /// The failure.
        #[source]
        source: io::Error,
    },
}

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> ContextError + '_ {
    move |source| ContextError::Io {
        path: path.to_owned(),
        source,
    }
}

#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
struct StatEntry {
    dev: u64,
    ino: u64,
    size: u64,
    mtime_ns: i128,
    ctime_ns: i128,
    digest: Digest,
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

/// Remembered file digests, optionally kept in a file between builds.
#[derive(Default)]
pub struct StatCache {
    file: Option<PathBuf>,
    entries: Mutex<HashMap<PathBuf, StatEntry>>,
    dirty: AtomicBool,
}

impl StatCache {
    /// A cache that lives only as long as this value.
    pub fn in_memory() -> StatCache {
        StatCache::default()
    }

    /// A cache kept in `file`. A missing or unreadable file starts an empty cache: the
    /// cache only ever saves work, it is never needed for correctness.
    pub fn open(file: PathBuf) -> StatCache {
        let entries = fs::read(&file)
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .unwrap_or_default();
        StatCache {
            file: Some(file),
            entries: Mutex::new(entries),
            dirty: AtomicBool::new(false),
        }
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
            let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
            serde_json::to_writer(io::BufWriter::new(tmp.as_file_mut()), &*entries)?;
        }
        tmp.as_file().sync_all()?;
        tmp.persist(file).map_err(|e| e.error)?;
        Ok(())
    }

    /// How many file digests the cache holds.
    pub fn len(&self) -> usize {
        self.entries.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Whether the cache holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn file_digest(&self, path: &Path, meta: &Metadata) -> Result<(Digest, bool), ContextError> {
        if let Some(entry) = self
            .entries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(path)
            && entry.describes(meta)
        {
            return Ok((entry.digest.clone(), false));
        }
        let mut file = File::open(path).map_err(io_at(path))?;
        let mut digester = Digester::new();
        io::copy(&mut file, &mut digester).map_err(io_at(path))?;
        let digest = digester.finish();
        let now_ns = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as i128);
        if now_ns - mtime_ns(meta) > 2_000_000_000 {
            self.entries
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
                    },
                );
            self.dirty.store(true, Ordering::Release);
        }
        Ok((digest, true))
    }
}

/// What a step reads from a tree.
#[derive(Clone, Debug, Default)]
pub struct Selection {
    /// Source paths (relative to the tree; a leading `/` is the tree's root).
    pub sources: Vec<String>,
    /// Whether sources are wildcard patterns.
    pub wildcard: bool,
    /// Whether a wildcard that matches nothing is fine.
    pub allow_empty: bool,
    /// Patterns left out, relative to each selected source (`COPY --exclude`).
    pub excludes: Vec<String>,
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

/// Computes content checksums of selections within one tree.
pub struct TreeHasher<'a> {
    root: &'a Path,
    ignore: &'a IgnoreMatcher,
    cache: &'a StatCache,
}

impl<'a> TreeHasher<'a> {
    /// A hasher over `root`, leaving out what `ignore` matches (`.dockerignore`).
    pub fn new(root: &'a Path, ignore: &'a IgnoreMatcher, cache: &'a StatCache) -> Self {
        TreeHasher {
            root,
            ignore,
            cache,
        }
    }

    /// The checksum of everything `selection` reads.
    pub fn checksum(&self, selection: &Selection) -> Result<(Digest, HashStats), ContextError> {
        let excludes = IgnoreMatcher::new(&selection.excludes)?;
        let mut stats = HashStats::default();
        let mut d = Digester::new();
        field(&mut d, b"version", CHECKSUM_VERSION);
        for source in &selection.sources {
            let matches = if selection.wildcard {
                self.expand(source)?
            } else {
                vec![self.resolve(source)?]
            };
            if matches.is_empty() && !selection.allow_empty {
                return Err(ContextError::NoMatch {
                    pattern: source.clone(),
                });
            }
            for rel in matches {
                let abs = self.abs(&rel);
                let meta = fs::symlink_metadata(&abs).map_err(io_at(&abs))?;
                let walk = Walk {
                    excludes: &excludes,
                    stats: &mut stats,
                };
                let parent = self.parent_info(&rel);
                let no_exclude = MatchInfo::default();
                match self.hash_entry(&rel, "", &abs, &meta, &parent, &no_exclude, walk)? {
                    Some(digest) => {
                        field(&mut d, b"match", rel.as_bytes());
                        field(&mut d, b"digest", digest.to_string().as_bytes());
                    }
                    // A wildcard match that .dockerignore removes is simply not there.
                    None if selection.wildcard => {}
                    None => {
                        return Err(ContextError::NotFound {
                            path: source.clone(),
                        });
                    }
                }
            }
        }
        Ok((d.finish(), stats))
    }

    fn abs(&self, rel: &str) -> PathBuf {
        if rel == "." {
            self.root.to_owned()
        } else {
            self.root.join(rel)
        }
    }

    /// The ignore results of `rel`'s parent directories, to match `rel` itself against.
    fn parent_info(&self, rel: &str) -> MatchInfo {
        let mut info = MatchInfo::default();
        let Some((parent, _)) = rel.rsplit_once('/') else {
            return info;
        };
        let mut prefix = String::new();
        for part in parent.split('/') {
            if !prefix.is_empty() {
                prefix.push('/');
            }
            prefix.push_str(part);
            info = self.ignore.matches(&prefix, &info).1;
        }
        info
    }

    /// Resolves a source path inside the root, following symlinks but never out of it
    /// (an absolute or `..` link target is taken relative to the root).
    fn resolve(&self, source: &str) -> Result<String, ContextError> {
        let not_found = || ContextError::NotFound {
            path: source.to_owned(),
        };
        let mut pending: Vec<String> = clean(&format!("/{source}"))
            .split('/')
            .filter(|p| !p.is_empty())
            .map(str::to_owned)
            .rev()
            .collect();
        let mut resolved: Vec<String> = Vec::new();
        let mut links = 0;
        while let Some(part) = pending.pop() {
            if part == ".." {
                resolved.pop();
                continue;
            }
            let candidate = self.root.join(resolved.join("/")).join(&part);
            let meta = match fs::symlink_metadata(&candidate) {
                Ok(meta) => meta,
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(not_found()),
                Err(e) => return Err(io_at(&candidate)(e)),
            };
            if meta.file_type().is_symlink() {
                links += 1;
                if links > MAX_LINKS {
                    return Err(ContextError::TooManyLinks {
                        path: source.to_owned(),
                    });
                }
                let target = fs::read_link(&candidate).map_err(io_at(&candidate))?;
                let target = target.to_string_lossy();
                if target.starts_with('/') {
                    resolved.clear();
                }
                for p in target
                    .split('/')
                    .rev()
                    .filter(|p| !p.is_empty() && *p != ".")
                {
                    pending.push(p.to_owned());
                }
            } else {
                resolved.push(part);
            }
        }
        Ok(if resolved.is_empty() {
            ".".to_owned()
        } else {
            resolved.join("/")
        })
    }

    /// Expands a wildcard source into the matching paths, sorted.
    fn expand(&self, pattern: &str) -> Result<Vec<String>, ContextError> {
        let cleaned = clean(&format!("/{pattern}"));
        let parts: Vec<&str> = cleaned.split('/').filter(|p| !p.is_empty()).collect();
        let mut current = vec![String::new()];
        for (i, part) in parts.iter().enumerate() {
            let last = i + 1 == parts.len();
            let mut next = Vec::new();
            for dir in &current {
                let abs = if dir.is_empty() {
                    self.root.to_owned()
                } else {
                    self.root.join(dir)
                };
                let join = |name: &str| {
                    if dir.is_empty() {
                        name.to_owned()
                    } else {
                        format!("{dir}/{name}")
                    }
                };
                if !has_magic(part) {
                    let rel = join(part);
                    if fs::symlink_metadata(self.abs(&rel)).is_ok() {
                        next.push(rel);
                    }
                    continue;
                }
                let entries = match fs::read_dir(&abs) {
                    Ok(entries) => entries,
                    Err(_) => continue,
                };
                let mut names: Vec<String> = entries
                    .filter_map(Result::ok)
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect();
                names.sort();
                for name in names {
                    if glob_match(part, &name)? {
                        let rel = join(&name);
                        if last || self.abs(&rel).is_dir() {
                            next.push(rel);
                        }
                    }
                }
            }
            current = next;
        }
        if parts.is_empty() {
            return Ok(vec![".".to_owned()]);
        }
        Ok(current)
    }

    /// The checksum of one entry and (for a directory) everything below it, or `None`
    /// when the entry is left out and nothing below it is kept.
    #[allow(clippy::too_many_arguments)]
    fn hash_entry(
        &self,
        rel: &str,
        sel_rel: &str,
        abs: &Path,
        meta: &Metadata,
        ignore_parent: &MatchInfo,
        exclude_parent: &MatchInfo,
        walk: Walk<'_>,
    ) -> Result<Option<Digest>, ContextError> {
        let Walk { excludes, stats } = walk;
        stats.entries += 1;
        let (ignored, ignore_info) = if rel == "." {
            (false, MatchInfo::default())
        } else {
            self.ignore.matches(rel, ignore_parent)
        };
        let (excluded, exclude_info) = if sel_rel.is_empty() {
            (false, MatchInfo::default())
        } else {
            excludes.matches(sel_rel, exclude_parent)
        };
        let left_out = ignored || excluded;
        let ft = meta.file_type();
        // A left-out directory is still walked when a `!` pattern could bring back
        // something below it; it then counts only if something does come back.
        let gone_for_good = (ignored && !self.ignore.has_exclusions())
            || (excluded && !excludes.has_exclusions())
            || (left_out && !ft.is_dir());
        if gone_for_good {
            return Ok(None);
        }

        let mut d = Digester::new();
        header(&mut d, abs, meta)?;
        if ft.is_file() {
            let (digest, read) = self.cache.file_digest(abs, meta)?;
            if read {
                stats.files_read += 1;
                stats.bytes_read += meta.size();
            }
            field(&mut d, b"content", digest.to_string().as_bytes());
        } else if ft.is_symlink() {
            let target = fs::read_link(abs).map_err(io_at(abs))?;
            field(&mut d, b"link", target.as_os_str().as_encoded_bytes());
        } else if ft.is_dir() {
            let mut children: Vec<_> = fs::read_dir(abs)
                .map_err(io_at(abs))?
                .map(|e| e.map(|e| e.file_name()))
                .collect::<Result<_, _>>()
                .map_err(io_at(abs))?;
            children.sort();
            let mut kept_any = false;
            for name in children {
                let name_str = name.to_string_lossy();
                let child_rel = if rel == "." {
                    name_str.to_string()
                } else {
                    format!("{rel}/{name_str}")
                };
                let child_sel = if sel_rel.is_empty() {
                    name_str.to_string()
                } else {
                    format!("{sel_rel}/{name_str}")
                };
                let child_abs = abs.join(&name);
                let child_meta = fs::symlink_metadata(&child_abs).map_err(io_at(&child_abs))?;
                let walk = Walk {
                    excludes,
                    stats: &mut *stats,
                };
                if let Some(child) = self.hash_entry(
                    &child_rel,
                    &child_sel,
                    &child_abs,
                    &child_meta,
                    &ignore_info,
                    &exclude_info,
                    walk,
                )? {
                    kept_any = true;
                    field(&mut d, b"child", name.as_encoded_bytes());
                    field(&mut d, b"digest", child.to_string().as_bytes());
                }
            }
            if left_out && !kept_any {
                return Ok(None);
            }
        }
        Ok(Some(d.finish()))
    }
}

/// State threaded through a recursive walk.
struct Walk<'w> {
    excludes: &'w IgnoreMatcher,
    stats: &'w mut HashStats,
}

/// Type, permissions, owner, device numbers and xattrs of an entry.
fn header(d: &mut Digester, abs: &Path, meta: &Metadata) -> Result<(), ContextError> {
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
    field(d, b"type", kind);
    // Symlink permission bits are meaningless on Linux and vary by filesystem.
    let mode = if ft.is_symlink() {
        0
    } else {
        meta.mode() & 0o7777
    };
    field(d, b"mode", &mode.to_be_bytes());
    field(d, b"uid", &meta.uid().to_be_bytes());
    field(d, b"gid", &meta.gid().to_be_bytes());
    if ft.is_char_device() || ft.is_block_device() {
        field(d, b"rdev", &meta.rdev().to_be_bytes());
    }
    let mut names: Vec<_> = match xattr::list(abs) {
        Ok(names) => names.collect(),
        Err(e) if e.raw_os_error() == Some(libc::ENOTSUP) => Vec::new(),
        Err(e) => return Err(io_at(abs)(e)),
    };
    names.sort();
    for name in names {
        let value = xattr::get(abs, &name)
            .map_err(io_at(abs))?
            .unwrap_or_default();
        field(d, b"xattr", name.as_encoded_bytes());
        field(d, b"value", &value);
    }
    Ok(())
}

fn field(d: &mut Digester, tag: &[u8], value: &[u8]) {
    // Tagged and length-prefixed: no two field sequences share an encoding.
    d.update(&(tag.len() as u64).to_be_bytes());
    d.update(tag);
    d.update(&(value.len() as u64).to_be_bytes());
    d.update(value);
}

fn has_magic(part: &str) -> bool {
    part.contains(['*', '?', '[', '\\'])
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::{PermissionsExt, symlink};
    use std::time::Duration;

    use super::*;

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
            TreeHasher::new(self.dir.path(), &ignore, cache).checksum(sel)
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
    fn a_freshly_written_file_is_not_trusted_by_the_stat_cache() {
        let t = Tree::new(&[]);
        fs::write(t.path("new"), "x").unwrap();
        let cache = StatCache::in_memory();
        t.sum_with(&[], &cache, &select(&["new"])).unwrap();
        assert!(cache.is_empty());
    }
}
