//! `.dockerignore` semantics, exactly as Docker applies them.
//!
//! Patterns are root-anchored (`foo` is `./foo`, not any `foo`), cleaned like paths,
//! `*` and `?` stop at `/`, `**` spans directories, a pattern that matches a directory
//! matches everything below it, `!` re-includes, and the last pattern that matches
//! wins. Matching is done while walking, carrying each directory's per-pattern results
//! down to its children so a path is tested against each pattern once.

use regex::Regex;

use super::pattern::{BadPattern, clean, glob_match};

/// Reads a `.dockerignore` file into patterns: comment lines (`#` in the first column)
/// and blank lines dropped, whitespace trimmed, paths cleaned, a leading `/` removed.
pub fn read_ignore_file(text: &str) -> Vec<String> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut patterns = Vec::new();
    for line in text.lines() {
        if line.starts_with('#') {
            continue;
        }
        let mut pattern = line.trim();
        if pattern.is_empty() {
            continue;
        }
        let invert = pattern.starts_with('!');
        if invert {
            pattern = pattern[1..].trim();
        }
        let mut cleaned = String::new();
        if !pattern.is_empty() {
            cleaned = clean(pattern);
            if cleaned.len() > 1 && cleaned.starts_with('/') {
                cleaned.remove(0);
            }
        }
        patterns.push(if invert {
            format!("!{cleaned}")
        } else {
            cleaned
        });
    }
    patterns
}

/// Why ignore patterns could not be compiled.
#[derive(Debug, thiserror::Error)]
pub enum IgnoreError {
    /// A `!` with nothing after it.
    #[error("illegal exclusion pattern: \"!\"")]
    EmptyExclusion,
    /// A malformed pattern.
    #[error(transparent)]
    BadPattern(#[from] BadPattern),
}

#[derive(Debug)]
enum Matcher {
    Exact(String),
    /// `foo**`: anything starting with `foo`.
    Prefix(String),
    /// `**foo`: anything ending with `foo`, and `**/foo` also matches `foo`.
    Suffix(String),
    Regex(Regex),
}

#[derive(Debug)]
struct Pattern {
    matcher: Matcher,
    exclusion: bool,
}

impl Pattern {
    fn compile(text: &str, exclusion: bool) -> Result<Pattern, BadPattern> {
        let bad = || BadPattern {
            pattern: text.to_owned(),
        };
        // Syntax errors are those Go's filepath.Match reports.
        glob_match(text, ".")?;

        #[derive(PartialEq)]
        enum Kind {
            Exact,
            Prefix,
            Suffix,
            Regex,
        }
        let mut kind = Kind::Exact;
        let mut re = String::from("^");
        let chars: Vec<char> = text.chars().collect();
        let mut i = 0;
        let mut step = 0;
        while i < chars.len() {
            let c = chars[i];
            i += 1;
            match c {
                '*' if chars.get(i) == Some(&'*') => {
                    i += 1;
                    if chars.get(i) == Some(&'/') {
                        i += 1;
                    }
                    if i == chars.len() {
                        if kind == Kind::Exact {
                            kind = Kind::Prefix;
                        } else {
                            re.push_str(".*");
                            kind = Kind::Regex;
                        }
                    } else {
                        re.push_str("(.*/)?");
                        kind = Kind::Regex;
                    }
                    if step == 0 {
                        kind = Kind::Suffix;
                    }
                }
                '*' => {
                    re.push_str("[^/]*");
                    kind = Kind::Regex;
                }
                '?' => {
                    re.push_str("[^/]");
                    kind = Kind::Regex;
                }
                '\\' => match chars.get(i) {
                    Some(next) => {
                        re.push_str(&regex::escape(&next.to_string()));
                        i += 1;
                        kind = Kind::Regex;
                    }
                    None => re.push_str("\\\\"),
                },
                '[' | ']' => {
                    re.push(c);
                    kind = Kind::Regex;
                }
                _ => re.push_str(&regex::escape(&c.to_string())),
            }
            step += 1;
        }
        let matcher = match kind {
            Kind::Exact => Matcher::Exact(text.to_owned()),
            Kind::Prefix => Matcher::Prefix(text[..text.len() - 2].to_owned()),
            Kind::Suffix => Matcher::Suffix(text[2..].to_owned()),
            Kind::Regex => {
                re.push('$');
                Matcher::Regex(Regex::new(&re).map_err(|_| bad())?)
            }
        };
        Ok(Pattern { matcher, exclusion })
    }

    fn matches(&self, path: &str) -> bool {
        match &self.matcher {
            Matcher::Exact(p) => path == p,
            Matcher::Prefix(p) => path.starts_with(p.as_str()),
            Matcher::Suffix(s) => {
                path.ends_with(s.as_str()) || s.strip_prefix('/').is_some_and(|s| path == s)
            }
            Matcher::Regex(re) => re.is_match(path),
        }
    }
}

/// Compiled ignore patterns.
#[derive(Debug, Default)]
pub struct IgnoreMatcher {
    patterns: Vec<Pattern>,
    exclusions: bool,
}

/// Per-pattern results for a directory, handed down to its children.
#[derive(Clone, Debug, Default)]
pub struct MatchInfo {
    parent_matched: Vec<bool>,
}

impl IgnoreMatcher {
    /// Compiles patterns as [`read_ignore_file`] returns them (`!` prefix for re-includes).
    pub fn new<S: AsRef<str>>(patterns: &[S]) -> Result<IgnoreMatcher, IgnoreError> {
        let mut compiled = Vec::new();
        let mut exclusions = false;
        for pattern in patterns {
            let pattern = pattern.as_ref().trim();
            if pattern.is_empty() {
                continue;
            }
            let pattern = clean(pattern);
            let (text, exclusion) = match pattern.strip_prefix('!') {
                Some("") => return Err(IgnoreError::EmptyExclusion),
                Some(rest) => (rest, true),
                None => (pattern.as_str(), false),
            };
            exclusions |= exclusion;
            compiled.push(Pattern::compile(text, exclusion)?);
        }
        Ok(IgnoreMatcher {
            patterns: compiled,
            exclusions,
        })
    }

    /// Whether there are no patterns at all.
    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// Whether any pattern re-includes (`!`): then an ignored directory must still be
    /// walked, since something below it may come back.
    pub fn has_exclusions(&self) -> bool {
        self.exclusions
    }

    /// Whether `path` (relative, slash-separated) is ignored, given its parent
    /// directory's results (`MatchInfo::default()` for a top-level entry). Returns the
    /// results to hand to the path's own children.
    pub fn matches(&self, path: &str, parent: &MatchInfo) -> (bool, MatchInfo) {
        let mut matched = false;
        let mut info = MatchInfo {
            parent_matched: vec![false; self.patterns.len()],
        };
        for (i, pattern) in self.patterns.iter().enumerate() {
            let mut hit = parent.parent_matched.get(i).copied().unwrap_or(false);
            if !hit {
                if pattern.exclusion != matched {
                    continue;
                }
                hit = pattern.matches(path);
            }
            info.parent_matched[i] = hit;
            if hit {
                matched = !pattern.exclusion;
            }
        }
        (matched, info)
    }

    /// Whether `path` is ignored, checking its parent directories itself: for a single
    /// path outside a walk.
    pub fn is_ignored(&self, path: &str) -> bool {
        let path = clean(path);
        if path == "." {
            return false;
        }
        let mut info = MatchInfo::default();
        let mut prefix = String::new();
        let mut ignored = false;
        for part in path.split('/') {
            if !prefix.is_empty() {
                prefix.push('/');
            }
            prefix.push_str(part);
            (ignored, info) = self.matches(&prefix, &info);
        }
        ignored
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ignored(patterns: &[&str], path: &str) -> bool {
        IgnoreMatcher::new(patterns).unwrap().is_ignored(path)
    }

    #[test]
    fn reads_files_as_docker_does() {
        let text = "\u{feff}# comment\n  node_modules  \n\n/abs/path/\n! keep.txt\n a/../b\n#x\n  # not a comment\n";
        assert_eq!(
            read_ignore_file(text),
            [
                "node_modules",
                "abs/path",
                "!keep.txt",
                "b",
                "# not a comment"
            ]
        );
    }

    #[test]
    fn patterns_are_anchored_at_the_root() {
        assert!(ignored(&["foo"], "foo"));
        assert!(
            ignored(&["foo"], "foo/bar"),
            "a matched dir covers its contents"
        );
        assert!(!ignored(&["foo"], "sub/foo"));
        assert!(ignored(&["*.md"], "README.md"));
        assert!(!ignored(&["*.md"], "docs/README.md"));
        assert!(ignored(&["*/*.md"], "docs/README.md"));
    }

    #[test]
    fn double_star_spans_directories() {
        assert!(ignored(&["**/*.go"], "main.go"));
        assert!(ignored(&["**/*.go"], "a/b/c.go"));
        assert!(ignored(&["**"], "anything/at/all"));
        assert!(ignored(&["a/**/b"], "a/b"));
        assert!(ignored(&["a/**/b"], "a/x/y/b"));
        assert!(!ignored(&["a/**/b"], "ab"));
        assert!(ignored(&["dist/**"], "dist/x"));
        assert!(!ignored(&["dist/**"], "dist"));
        assert!(ignored(&["**/foo"], "foo"));
        assert!(ignored(&["**/foo"], "x/foo/y"));
    }

    #[test]
    fn last_match_wins_and_bang_re_includes() {
        let p = ["*.txt", "!keep.txt"];
        assert!(ignored(&p, "a.txt"));
        assert!(!ignored(&p, "keep.txt"));
        let p = ["!keep.txt", "*.txt"];
        assert!(ignored(&p, "keep.txt"));
        let p = ["docs", "!docs/public", "docs/public/secret"];
        assert!(ignored(&p, "docs/a"));
        assert!(!ignored(&p, "docs/public/a"));
        assert!(ignored(&p, "docs/public/secret"));
        assert!(ignored(&p, "docs/public/secret/deeper"));
        assert!(IgnoreMatcher::new(&p).unwrap().has_exclusions());
    }

    #[test]
    fn special_characters_are_literal() {
        assert!(ignored(&["a.b"], "a.b"));
        assert!(!ignored(&["a.b"], "axb"));
        assert!(ignored(&["f(1)+$"], "f(1)+$"));
        assert!(ignored(&["[ab]c"], "bc"));
        assert!(ignored(&["a\\*"], "a*"));
        assert!(!ignored(&["a\\*"], "ab"));
        assert!(ignored(&["?"], "x"));
        assert!(!ignored(&["?"], "xy"));
    }

    #[test]
    fn the_root_itself_is_never_ignored() {
        assert!(!ignored(&["*", "."], "."));
        assert!(!ignored(&["**"], ""));
    }

    #[test]
    fn bad_patterns_are_errors() {
        assert!(matches!(
            IgnoreMatcher::new(&["!"]),
            Err(IgnoreError::EmptyExclusion)
        ));
        assert!(matches!(
            IgnoreMatcher::new(&["a["]),
            Err(IgnoreError::BadPattern(_))
        ));
    }
}
