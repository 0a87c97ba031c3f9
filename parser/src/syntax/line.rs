//! One logical instruction line → a raw [`Node`]: the keyword, the `--flags`, and the
//! arguments cut as BuildKit's per-instruction "line parsers" cut them.
//!
//! The argument shapes are BuildKit's, because they decide what a Dockerfile means:
//! RUN/CMD/ENTRYPOINT/SHELL take a JSON array of strings if (and only if) the whole
//! rest parses as one, else the rest as one string; COPY/ADD/VOLUME fall back to
//! whitespace-separated words; ENV/LABEL produce `(key, value, separator)` triples,
//! the separator being empty for the legacy `ENV key value` form; ARG keeps its quoted
//! words; ONBUILD nests a whole node; any unknown keyword keeps a single empty argument.

use crate::error::{ErrorKind, ParseError};
use crate::span::{LineIndex, Span};
use crate::syntax::{Flag, KEYWORD_MAX, Node, keyword_of, lowercase_keyword};

/// A logical line: physical line pieces glued together by continuations, with the map
/// back to source offsets.
pub(crate) struct Logical {
    pub(crate) text: String,
    /// Where the first piece starts in the source.
    first: usize,
    /// `(offset in text, offset in source)` where each further piece starts (empty, and
    /// so never allocated, for the common one-line instruction).
    more: Vec<(usize, usize)>,
}

impl Logical {
    pub(crate) fn new(piece: &str, source_offset: usize) -> Logical {
        Logical {
            text: piece.to_owned(),
            first: source_offset,
            more: Vec::new(),
        }
    }

    pub(crate) fn push(&mut self, piece: &str, source_offset: usize) {
        self.more.push((self.text.len(), source_offset));
        self.text.push_str(piece);
    }

    /// The source offset of text offset `at`.
    fn source(&self, at: usize) -> usize {
        let (text_start, source_start) = match self.more.partition_point(|p| p.0 <= at) {
            0 => (0, self.first),
            i => self.more[i - 1],
        };
        source_start + (at - text_start)
    }

    /// The source span of text range `start..end`.
    pub(crate) fn span(&self, index: &LineIndex<'_>, start: usize, end: usize) -> Span {
        let s = self.source(start);
        let e = if end > start {
            self.source(end - 1) + 1
        } else {
            s
        };
        index.span(s, e)
    }
}

/// Where spans are computed from while building nodes.
pub(crate) struct LineContext<'a, 'b> {
    pub(crate) logical: &'b Logical,
    pub(crate) index: &'b LineIndex<'a>,
    pub(crate) escape: char,
}

impl LineContext<'_, '_> {
    fn span(&self, start: usize, end: usize) -> Span {
        self.logical.span(self.index, start, end)
    }
}

/// The whitespace BuildKit splits on (`[\t\v\f\r ]`).
fn is_split_space(c: char) -> bool {
    matches!(c, '\t' | '\u{b}' | '\u{c}' | '\r' | ' ')
}

/// Builds the node of the line text `line`, found at offset `base` of the logical line.
/// The caller fills in [`Node::original`], which it may own already.
pub(crate) fn node_from_line(
    ctx: &LineContext<'_, '_>,
    line: &str,
    base: usize,
) -> Result<Node, ParseError> {
    let lead = line.len() - line.trim_start().len();
    let trimmed = line.trim();
    let start = base + lead;
    let cmd_len = trimmed.find(is_split_space).unwrap_or(trimmed.len());
    let keyword = &trimmed[..cmd_len];
    let keyword_span = ctx.span(start, start + cmd_len);
    let after_cmd = &trimmed[cmd_len..];
    let after_cmd = after_cmd.trim_start_matches(is_split_space);
    let rest_base = start + (trimmed.len() - after_cmd.len());
    let (flags, rest_offset) = extract_flags(ctx, after_cmd, rest_base);
    let raw_rest = &after_cmd[rest_offset..];
    let rest = raw_rest.trim();
    let rest_base = rest_base + rest_offset + (raw_rest.len() - raw_rest.trim_start().len());
    let error = |kind| ParseError::new(kind, keyword_span);

    let mut node = Node {
        keyword: keyword_of(keyword),
        flags,
        args: Vec::new(),
        trigger: None,
        json: false,
        heredocs: Vec::new(),
        original: String::new(),
        span: ctx.span(start, base + line.trim_end().len()),
        keyword_span,
    };
    let mut buf = [0u8; KEYWORD_MAX];
    match lowercase_keyword(keyword, &mut buf) {
        "add" | "copy" | "volume" => match parse_json(rest).map_err(error)? {
            Some(args) => (node.args, node.json) = (args, true),
            None => node.args = split_whitespace(rest),
        },
        "cmd" | "entrypoint" | "run" | "shell" => {
            (node.args, node.json) = maybe_json(rest).map_err(error)?
        }
        "arg" => {
            node.args = words(rest, ctx.escape)
                .into_iter()
                .map(str::to_owned)
                .collect()
        }
        "env" => node.args = name_values(rest, ctx.escape, "ENV").map_err(error)?,
        "label" => node.args = name_values(rest, ctx.escape, "LABEL").map_err(error)?,
        "expose" | "from" => node.args = split_whitespace(rest),
        "healthcheck" => {
            if !rest.is_empty() {
                let type_len = rest.find(char::is_whitespace).unwrap_or(rest.len());
                let cmd = rest[type_len..].trim_start();
                node.args.push(rest[..type_len].to_owned());
                let (args, json) = maybe_json(cmd).map_err(error)?;
                node.args.extend(args);
                node.json = json;
            }
        }
        "maintainer" | "stopsignal" | "user" | "workdir" => {
            if !rest.is_empty() {
                node.args.push(rest.to_owned());
            }
        }
        "onbuild" => {
            if !rest.is_empty() {
                let mut child = node_from_line(ctx, rest, rest_base)?;
                child.original = rest.to_owned();
                node.trigger = Some(Box::new(child));
            }
        }
        _ => node.args.push(String::new()),
    }
    Ok(node)
}

/// Reads the leading `--flag` words of `line`; returns them and the offset where the
/// arguments start. Quotes are removed and `\` escapes the next character, as in
/// BuildKit's `extractBuilderFlags`; a lone `--` ends the flags.
fn extract_flags(ctx: &LineContext<'_, '_>, line: &str, base: usize) -> (Vec<Flag>, usize) {
    let mut flags = Vec::new();
    let mut pos = 0;
    loop {
        let rest = &line[pos..];
        let start = pos + (rest.len() - rest.trim_start().len());
        if !line[start..].starts_with("--") {
            return (flags, start);
        }
        let (word, end) = flag_word(line, start);
        if word == "--" {
            return (flags, end);
        }
        flags.push(Flag {
            text: word,
            span: ctx.span(base + start, base + end),
        });
        pos = end;
    }
}

/// The flag word starting at `start`, quotes and escapes removed, and where it ends.
fn flag_word(line: &str, start: usize) -> (String, usize) {
    let bytes = &line.as_bytes()[start..];
    let plain = bytes
        .iter()
        .position(|&b| b >= 0x80 || matches!(b, b'\t'..=b'\r' | b' ' | b'\'' | b'"' | b'\\'))
        .unwrap_or(bytes.len());
    if bytes
        .get(plain)
        .is_none_or(|b| matches!(b, b'\t'..=b'\r' | b' '))
    {
        return (line[start..start + plain].to_owned(), start + plain);
    }
    let mut word = String::new();
    let mut quote: Option<char> = None;
    let mut chars = line[start..].char_indices();
    while let Some((i, c)) = chars.next() {
        match (quote, c) {
            (None, c) if c.is_whitespace() => return (word, start + i),
            (None, '\'' | '"') => quote = Some(c),
            (Some(q), c) if c == q => quote = None,
            (_, '\\') => {
                if let Some((_, n)) = chars.next() {
                    word.push(n);
                }
            }
            (_, c) => word.push(c),
        }
    }
    (word, line.len())
}

/// BuildKit's `parseJSON`: `Some` if `rest` is, in full, a JSON array of strings; an
/// error if it is a JSON array holding anything else; `None` otherwise.
fn parse_json(rest: &str) -> Result<Option<Vec<String>>, ErrorKind> {
    if !rest.starts_with('[') {
        return Ok(None);
    }
    if let Some(strings) = plain_json_strings(rest) {
        return Ok(Some(strings));
    }
    if let Ok(strings) = serde_json::from_str::<Vec<String>>(rest) {
        return Ok(Some(strings));
    }
    let Ok(values) = serde_json::from_str::<Vec<serde_json::Value>>(rest) else {
        return Ok(None);
    };
    values
        .into_iter()
        .map(|v| match v {
            serde_json::Value::String(s) => Ok(s),
            _ => Err(ErrorKind::NotStringArray),
        })
        .collect::<Result<_, _>>()
        .map(Some)
}

/// `rest` as a JSON array of strings without escapes (the usual exec form), read
/// without a JSON parser; `None` for anything else, which is left to serde_json.
fn plain_json_strings(rest: &str) -> Option<Vec<String>> {
    let bytes = rest.as_bytes();
    let skip_space = |mut i: usize| {
        while bytes
            .get(i)
            .is_some_and(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
        {
            i += 1;
        }
        i
    };
    let mut strings = Vec::with_capacity(bytes.iter().filter(|&&b| b == b'"').count() / 2);
    if bytes.first() != Some(&b'[') {
        return None;
    }
    let mut i = skip_space(1);
    if bytes.get(i) == Some(&b']') {
        return (skip_space(i + 1) == bytes.len()).then_some(strings);
    }
    loop {
        if bytes.get(i) != Some(&b'"') {
            return None;
        }
        let start = i + 1;
        let len = bytes[start..]
            .iter()
            .position(|&b| b == b'"' || b == b'\\' || b < 0x20)?;
        if bytes[start + len] != b'"' {
            return None;
        }
        strings.push(rest[start..start + len].to_owned());
        i = skip_space(start + len + 1);
        match bytes.get(i) {
            Some(b',') => i = skip_space(i + 1),
            Some(b']') => return (skip_space(i + 1) == bytes.len()).then_some(strings),
            _ => return None,
        }
    }
}

/// BuildKit's `parseMaybeJSON`: a JSON array of strings, or the whole rest as one word.
fn maybe_json(rest: &str) -> Result<(Vec<String>, bool), ErrorKind> {
    if rest.is_empty() {
        return Ok((Vec::new(), false));
    }
    Ok(match parse_json(rest)? {
        Some(args) => (args, true),
        None => (vec![rest.to_owned()], false),
    })
}

fn split_whitespace(rest: &str) -> Vec<String> {
    if rest.is_empty() {
        return Vec::new();
    }
    rest.split(is_split_space)
        .filter(|w| !w.is_empty())
        .map(str::to_owned)
        .collect()
}

/// BuildKit's `parseWords`: whitespace-separated words, quotes and escapes kept. Each
/// word is a slice of `rest` (only an escape character ending the input is dropped).
pub(crate) fn words(rest: &str, escape: char) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start: Option<usize> = None;
    let mut blank_ok = false;
    let mut quote: Option<char> = None;
    let mut chars = rest.char_indices();
    let mut end = rest.len();
    while let Some((i, c)) = chars.next() {
        match (quote, start) {
            (None, None) if c.is_whitespace() => continue,
            (None, Some(s)) if c.is_whitespace() => {
                if blank_ok || i > s {
                    out.push(&rest[s..i]);
                }
                start = None;
                blank_ok = false;
                continue;
            }
            _ => {}
        }
        start.get_or_insert(i);
        match quote {
            None if c == '\'' || c == '"' => {
                quote = Some(c);
                blank_ok = true;
            }
            Some(q) if c == q => quote = None,
            Some('\'') => {}
            _ if c == escape && chars.next().is_none() => {
                end = i;
                quote = None;
            }
            _ => {}
        }
    }
    if let Some(s) = start
        && (blank_ok || end > s)
    {
        out.push(&rest[s..end]);
    }
    out
}

/// BuildKit's `parseNameVal` for ENV and LABEL: `(key, value, separator)` triples.
fn name_values(
    rest: &str,
    escape: char,
    instruction: &'static str,
) -> Result<Vec<String>, ErrorKind> {
    let words = words(rest, escape);
    let Some(first) = words.first() else {
        return Ok(Vec::new());
    };
    if !first.contains('=') {
        let Some(split) = rest.find(is_split_space) else {
            return Err(ErrorKind::LegacyPairWithoutValue { instruction });
        };
        let value = rest[split..].trim_start_matches(is_split_space);
        return Ok(vec![
            rest[..split].to_owned(),
            value.to_owned(),
            String::new(),
        ]);
    }
    let mut out = Vec::with_capacity(words.len() * 3);
    for word in words {
        let Some((key, value)) = word.split_once('=') else {
            return Err(ErrorKind::MissingEquals {
                word: word.to_owned(),
            });
        };
        out.extend([key.to_owned(), value.to_owned(), "=".to_owned()]);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_keep_quotes_and_escapes() {
        assert_eq!(words("foo bar", '\\'), ["foo", "bar"]);
        assert_eq!(words(r"foo\ bar", '\\'), [r"foo\ bar"]);
        assert_eq!(words(r#"a="b c" d=''"#, '\\'), [r#"a="b c""#, "d=''"]);
        assert_eq!(words("a\\", '\\'), ["a"]);
        assert_eq!(words("''", '\\'), ["''"]);
        assert_eq!(words("föo \"âb xÿ\"", '\\'), ["föo", "\"âb xÿ\""]);
        assert_eq!(
            words("a\\\u{a0}b c\u{a0}d\u{2003}", '\\'),
            ["a\\\u{a0}b", "c", "d"]
        );
        assert_eq!(words("x`é `\u{85}", '`'), ["x`é", "`\u{85}"]);
    }

    #[test]
    fn legacy_and_modern_pairs() {
        assert_eq!(
            name_values("PATH /usr/bin:$PATH", '\\', "ENV").unwrap(),
            ["PATH", "/usr/bin:$PATH", ""]
        );
        assert_eq!(
            name_values("a=1 b=\"2 3\"", '\\', "ENV").unwrap(),
            ["a", "1", "=", "b", "\"2 3\"", "="]
        );
        assert!(name_values("a=1 b", '\\', "ENV").is_err());
        assert!(name_values("a", '\\', "ENV").is_err());
    }

    #[test]
    fn json_only_when_complete() {
        assert_eq!(
            parse_json(r#"["a", "b"]"#),
            Ok(Some(vec!["a".into(), "b".into()]))
        );
        assert_eq!(parse_json(r#"["a" "b"]"#), Ok(None));
        assert_eq!(parse_json(r#"["a"] x"#), Ok(None));
        assert_eq!(parse_json("[1]"), Err(ErrorKind::NotStringArray));
        assert_eq!(parse_json("echo"), Ok(None));
        for text in [
            "[]",
            " [ ] ",
            r#"["a"]"#,
            "[\"a\" ,\t\"b c\"\n]\r\n",
            r#"["a",]"#,
            r#"["a" "b"]"#,
            r#"["a"]]"#,
            r#"["é\u00e9\"", "\\"]"#,
            "[\"a\tb\"]",
            r#"["a", 1]"#,
            r#"[["a"]]"#,
        ] {
            let text = text.trim_start();
            let serde = serde_json::from_str::<Vec<String>>(text).ok();
            if let Some(plain) = plain_json_strings(text) {
                assert_eq!(Some(plain), serde, "{text}");
            }
            assert_eq!(parse_json(text).ok().flatten(), serde, "{text}");
        }
    }
}
