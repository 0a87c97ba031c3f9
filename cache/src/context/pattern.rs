//! Path patterns as Docker reads them: Go's `filepath.Clean` and `filepath.Match`
//! (`*`, `?`, `[...]`, `\` escapes), which `.dockerignore`, `COPY --exclude` and
//! wildcard COPY sources are all defined in terms of.

/// Cleans a slash-separated path lexically, as Go's `filepath.Clean` does: repeated
/// slashes and `.` elements go, `..` removes the element before it (never climbing
/// above `/`), a trailing slash goes, and an empty result is `.`.
pub fn clean(path: &str) -> String {
    let rooted = path.starts_with('/');
    let mut out: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if out.last().is_some_and(|last| *last != "..") {
                    out.pop();
                } else if !rooted {
                    out.push("..");
                }
            }
            _ => out.push(part),
        }
    }
    let joined = out.join("/");
    match (rooted, joined.is_empty()) {
        (true, _) => format!("/{joined}"),
        (false, true) => ".".to_owned(),
        (false, false) => joined,
    }
}

/// Why a pattern is malformed (Go's `filepath.ErrBadPattern`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("syntax error in pattern {pattern:?}")]
pub struct BadPattern {
    /// The pattern as written.
    pub pattern: String,
}

/// Whether `name` (one path element, or a whole path: `*` never matches `/`) matches
/// `pattern` under Go's `filepath.Match` rules.
pub fn glob_match(pattern: &str, name: &str) -> Result<bool, BadPattern> {
    let bad = || BadPattern {
        pattern: pattern.to_owned(),
    };
    let pat: Vec<char> = pattern.chars().collect();
    let text: Vec<char> = name.chars().collect();
    // Classic two-pointer matching with one backtrack point per `*`: linear in the
    // product of the lengths at worst, never exponential.
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    loop {
        if p < pat.len() {
            match pat[p] {
                '*' => {
                    star = Some((p, t));
                    p += 1;
                    continue;
                }
                c if t < text.len() => {
                    let (ok, next) = match c {
                        '?' => (text[t] != '/', p + 1),
                        '[' => {
                            let (ok, next) = match_class(&pat, p, text[t]).ok_or_else(bad)?;
                            (ok && text[t] != '/', next)
                        }
                        '\\' => {
                            let escaped = *pat.get(p + 1).ok_or_else(bad)?;
                            (escaped == text[t], p + 2)
                        }
                        _ => (c == text[t], p + 1),
                    };
                    if ok {
                        p = next;
                        t += 1;
                        continue;
                    }
                }
                _ => {}
            }
        } else if t == text.len() {
            return Ok(true);
        }
        // Mismatch: let the last `*` swallow one more character, unless that is a `/`.
        match star {
            Some((sp, st)) if st < text.len() && text[st] != '/' => {
                star = Some((sp, st + 1));
                p = sp + 1;
                t = st + 1;
            }
            _ => {
                validate(&pat[p..]).map_err(|_| bad())?;
                return Ok(false);
            }
        }
    }
}

/// Checks the rest of a pattern for syntax errors, as Go does even after a mismatch.
fn validate(pat: &[char]) -> Result<(), ()> {
    let mut i = 0;
    while i < pat.len() {
        match pat[i] {
            '\\' if i + 1 >= pat.len() => return Err(()),
            '\\' => i += 2,
            '[' => i = match_class(pat, i, '\0').ok_or(())?.1,
            _ => i += 1,
        }
    }
    Ok(())
}

/// Matches `c` against the class starting at `pat[start] == '['`; returns whether it
/// matched and the index after the closing `]`, or `None` when the class is malformed.
fn match_class(pat: &[char], start: usize, c: char) -> Option<(bool, usize)> {
    let mut i = start + 1;
    let negated = pat.get(i) == Some(&'^');
    if negated {
        i += 1;
    }
    let mut matched = false;
    let mut first = true;
    loop {
        let lo = match pat.get(i)? {
            ']' if !first => return Some((matched != negated, i + 1)),
            '-' | ']' => return None,
            '\\' => {
                i += 1;
                *pat.get(i)?
            }
            ch => *ch,
        };
        i += 1;
        first = false;
        let hi = if pat.get(i) == Some(&'-') && pat.get(i + 1).is_some_and(|ch| *ch != ']') {
            i += 1;
            let hi = match pat.get(i)? {
                '\\' => {
                    i += 1;
                    *pat.get(i)?
                }
                ch => *ch,
            };
            i += 1;
            hi
        } else {
            lo
        };
        if lo <= c && c <= hi {
            matched = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_matches_go() {
        for (input, want) in [
            ("", "."),
            (".", "."),
            ("a/b/../c", "a/c"),
            ("/../a", "/a"),
            ("../a/./b/", "../a/b"),
            ("a//b///", "a/b"),
            ("a/../..", ".."),
            ("/", "/"),
        ] {
            assert_eq!(clean(input), want, "clean({input:?})");
        }
    }

    #[test]
    fn glob_matches_go() {
        let cases = [
            ("abc", "abc", true),
            ("*", "abc", true),
            ("*c", "abc", true),
            ("a*", "a", true),
            ("a*", "ab/c", false),
            ("a*/b", "abc/b", true),
            ("a*b*c*d*e*/f", "axbxcxdxe/f", true),
            ("a*b*c*d*e*/f", "axbxcxdxexxx/f", true),
            ("a*b*c*d*e*/f", "axbxcxdxe/xxx/f", false),
            ("a?b", "a/b", false),
            ("ab[c]", "abc", true),
            ("ab[b-d]", "abc", true),
            ("ab[^c]", "abc", false),
            ("ab[^b-d]", "abe", true),
            ("a\\*b", "a*b", true),
            ("a\\*b", "ab", false),
            ("[\\]a]", "]", true),
            ("[a-ζ]*", "α", true),
            ("*x", "xxx", true),
        ];
        for (pattern, name, want) in cases {
            assert_eq!(
                glob_match(pattern, name),
                Ok(want),
                "{pattern:?} vs {name:?}"
            );
        }
        for pattern in ["[", "[^", "[]a]", "[-]", "a\\", "[x-]", "*[a"] {
            assert!(
                glob_match(pattern, "zzz").is_err(),
                "{pattern:?} should be malformed"
            );
        }
    }

    #[test]
    fn glob_is_not_exponential() {
        let pattern = "*a".repeat(30) + "b";
        let name = "a".repeat(5000);
        assert_eq!(glob_match(&pattern, &name), Ok(false));
    }
}
