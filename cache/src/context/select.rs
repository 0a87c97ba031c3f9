//! Which files a step reads: a COPY/ADD source list resolved against a tree.
//!
//! One walk serves both the step's cache key and the copy itself, so the files that
//! are hashed are exactly the files that are copied. The walk applies, in Docker's
//! terms: sources relative to the tree's root (a leading `/` changes nothing), symlinks
//! in a source path followed but never out of the tree, wildcards matched per path
//! element, `.dockerignore` (a source it removes does not exist), `--exclude` patterns
//! relative to each source, and `!` re-includes that bring back a file below a
//! directory that is left out (the directory then comes back with it).

use std::fs::{self, Metadata};
use std::io;
use std::path::{Path, PathBuf};

use super::ignore::{IgnoreError, IgnoreMatcher, MatchInfo};
use super::pattern::{BadPattern, clean, glob_match};

/// How many symlinks a path may pass through before resolution gives up.
const MAX_LINKS: usize = 255;

/// Why a selection could not be made or hashed.
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

pub(super) fn io_at(path: &Path) -> impl FnOnce(io::Error) -> ContextError + '_ {
    move |source| ContextError::Io {
        path: path.to_owned(),
        source,
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

/// One path a source resolved to, with everything below it that is read.
#[derive(Debug)]
pub struct SelectedSource {
    /// The source as written.
    pub source: String,
    /// The resolved path relative to the tree's root (`.` for the root itself).
    pub path: String,
    /// The path itself (first, with `rel` empty) and, for a directory, what is below
    /// it, parents before children, siblings in byte order.
    pub entries: Vec<SelectedEntry>,
}

impl SelectedSource {
    /// Whether the source is a directory (whose contents a COPY copies).
    pub fn is_dir(&self) -> bool {
        self.entries.first().is_some_and(|e| e.meta.is_dir())
    }
}

/// One file, directory or link that is read.
#[derive(Debug)]
pub struct SelectedEntry {
    /// Its path relative to the selected source (empty for the source itself).
    pub rel: String,
    /// Its path on the host.
    pub abs: PathBuf,
    /// Its `lstat`.
    pub meta: Metadata,
}

/// A directory tree files are selected from, with the ignore rules that apply to it.
pub struct ContextTree<'a> {
    root: &'a Path,
    ignore: &'a IgnoreMatcher,
}

impl<'a> ContextTree<'a> {
    /// The tree at `root`, leaving out what `ignore` matches (`.dockerignore`).
    pub fn new(root: &'a Path, ignore: &'a IgnoreMatcher) -> ContextTree<'a> {
        ContextTree { root, ignore }
    }

    /// Resolves `selection`: one [`SelectedSource`] per path each source names, in
    /// source order (wildcard matches sorted).
    pub fn select(&self, selection: &Selection) -> Result<Vec<SelectedSource>, ContextError> {
        let excludes = IgnoreMatcher::new(&selection.excludes)?;
        let mut selected = Vec::new();
        for source in &selection.sources {
            let expanded = selection.wildcard && has_magic(source);
            let matches = if expanded {
                self.expand(source)?
            } else {
                vec![self.resolve(source)?]
            };
            if matches.is_empty() && !selection.allow_empty {
                return Err(ContextError::NoMatch {
                    pattern: source.clone(),
                });
            }
            for path in matches {
                let abs = self.abs(&path);
                let meta = fs::symlink_metadata(&abs).map_err(io_at(&abs))?;
                let mut entries = Vec::new();
                let walk = Walk {
                    excludes: &excludes,
                    out: &mut entries,
                };
                let parent = self.parent_info(&path);
                let kept = self.walk(&path, "", abs, meta, &parent, &MatchInfo::default(), walk)?;
                if kept {
                    selected.push(SelectedSource {
                        source: source.clone(),
                        path,
                        entries,
                    });
                } else if !expanded {
                    // A wildcard match that .dockerignore removes is simply not there.
                    return Err(ContextError::NotFound {
                        path: source.clone(),
                    });
                }
            }
        }
        Ok(selected)
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
                let abs = if dir.is_empty() {
                    self.root.to_owned()
                } else {
                    self.root.join(dir)
                };
                let Ok(entries) = fs::read_dir(&abs) else {
                    continue;
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

    /// Adds `abs` (tree path `rel`, selection path `sel_rel`) and what is below it to
    /// the walk's output; returns whether anything was kept.
    #[allow(clippy::too_many_arguments)]
    fn walk(
        &self,
        rel: &str,
        sel_rel: &str,
        abs: PathBuf,
        meta: Metadata,
        ignore_parent: &MatchInfo,
        exclude_parent: &MatchInfo,
        walk: Walk<'_>,
    ) -> Result<bool, ContextError> {
        let Walk { excludes, out } = walk;
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
        let is_dir = meta.is_dir();
        // A left-out directory is still walked when a `!` pattern could bring back
        // something below it; it then counts only if something does come back.
        let gone_for_good = (ignored && !self.ignore.has_exclusions())
            || (excluded && !excludes.has_exclusions())
            || (left_out && !is_dir);
        if gone_for_good {
            return Ok(false);
        }
        let at = out.len();
        out.push(SelectedEntry {
            rel: sel_rel.to_owned(),
            abs: abs.clone(),
            meta,
        });
        if !is_dir {
            return Ok(true);
        }
        // Each child is stat'ed relative to the open directory (`fstatat`), not by its
        // whole path: a context of many files spends its walk in path lookups otherwise.
        let mut children: Vec<_> = fs::read_dir(&abs)
            .map_err(io_at(&abs))?
            .map(|e| e.map(|e| (e.file_name(), e.metadata())))
            .collect::<Result<_, _>>()
            .map_err(io_at(&abs))?;
        children.sort_by(|a, b| a.0.cmp(&b.0));
        let mut kept_any = false;
        for (name, child_meta) in children {
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
            let child_meta = child_meta.map_err(io_at(&child_abs))?;
            let walk = Walk {
                excludes,
                out: &mut *out,
            };
            kept_any |= self.walk(
                &child_rel,
                &child_sel,
                child_abs,
                child_meta,
                &ignore_info,
                &exclude_info,
                walk,
            )?;
        }
        if left_out && !kept_any {
            out.truncate(at);
            return Ok(false);
        }
        Ok(true)
    }
}

/// State threaded through a recursive walk.
struct Walk<'w> {
    excludes: &'w IgnoreMatcher,
    out: &'w mut Vec<SelectedEntry>,
}

fn has_magic(part: &str) -> bool {
    part.contains(['*', '?', '[', '\\'])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(files: &[&str]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for f in files {
            let p = dir.path().join(f);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(p, f).unwrap();
        }
        dir
    }

    fn rels(dir: &Path, ignore: &[&str], sel: Selection) -> Vec<(String, Vec<String>)> {
        let ignore = IgnoreMatcher::new(ignore).unwrap();
        ContextTree::new(dir, &ignore)
            .select(&sel)
            .unwrap()
            .into_iter()
            .map(|s| (s.path, s.entries.into_iter().map(|e| e.rel).collect()))
            .collect()
    }

    fn sources(s: &[&str]) -> Selection {
        Selection {
            sources: s.iter().map(|s| s.to_string()).collect(),
            wildcard: true,
            ..Selection::default()
        }
    }

    #[test]
    fn a_directory_lists_itself_then_its_contents_in_order() {
        let t = tree(&["src/b.rs", "src/a/x.rs", "top.txt"]);
        assert_eq!(
            rels(t.path(), &[], sources(&["src", "top.txt"])),
            [
                (
                    "src".to_owned(),
                    vec!["".into(), "a".into(), "a/x.rs".into(), "b.rs".into()]
                ),
                ("top.txt".to_owned(), vec!["".into()]),
            ]
        );
    }

    #[test]
    fn a_left_out_directory_comes_back_with_a_re_included_child() {
        let t = tree(&["docs/a.md", "docs/public/b.md", "docs/public/c.md"]);
        let got = rels(t.path(), &["docs", "!docs/public/b.md"], sources(&["."]));
        assert_eq!(
            got[0].1,
            ["", "docs", "docs/public", "docs/public/b.md"],
            "only the re-included file and its parents"
        );
    }

    #[test]
    fn wildcards_skip_ignored_matches_and_plain_sources_fail_on_them() {
        let t = tree(&["a.txt", "b.txt"]);
        assert_eq!(rels(t.path(), &["b.txt"], sources(&["*.txt"])).len(), 1);
        let ignore = IgnoreMatcher::new(&["b.txt"]).unwrap();
        let err = ContextTree::new(t.path(), &ignore)
            .select(&sources(&["b.txt"]))
            .unwrap_err();
        assert!(matches!(err, ContextError::NotFound { .. }));
    }
}
