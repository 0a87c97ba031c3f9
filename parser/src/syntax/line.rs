//! One logical instruction line → a raw node: the keyword, the `--flags`, and the
//! arguments cut as BuildKit's per-instruction "line parsers" cut them.
//!
//! The argument shapes are BuildKit's, because they decide what a Dockerfile means:
//! RUN/CMD/ENTRYPOINT/SHELL take a JSON array of strings if (and only if) the whole
//! rest parses as one, else the rest as one string; COPY/ADD/VOLUME fall back to
//! whitespace-separated words; ENV/LABEL produce `(key, value, separator)` triples,
//! the separator being empty for the legacy `ENV key value` form; ARG keeps its quoted
//! words; ONBUILD nests a whole node; any unknown keyword keeps a single empty argument.
//!
//! Most arguments are pieces of the line as written, so they are kept as byte ranges of
//! the logical line ([`Text::Slice`]) and become owned strings only where the public
//! types need them: once, in [`super::Node`] or in the typed instruction.

use std::borrow::Cow;

use crate::error::{ErrorKind, ParseError};
use crate::span::{Columns, LineStart, Span};
use crate::syntax::Keyword;

/// A piece of text the syntax layer cut from a logical line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Text {
    /// Bytes `start..end` of the logical line, as written.
    Slice(usize, usize),
    /// Text that is not in the line (a separator, an empty argument).
    Fixed(&'static str),
    /// Text that differs from what is written (quotes, escapes or JSON decoded).
    Owned(String),
}

impl Text {
    /// The text, `line` being the logical line it was cut from.
    pub(crate) fn get<'s>(&'s self, line: &'s str) -> &'s str {
        match self {
            Text::Slice(start, end) => &line[*start..*end],
            Text::Fixed(text) => text,
            Text::Owned(text) => text,
        }
    }

    /// The text as an owned string, moved out when it is one already.
    pub(crate) fn take(&mut self, line: &str) -> String {
        match self {
            Text::Owned(text) => std::mem::take(text),
            other => other.get(line).to_owned(),
        }
    }

    /// `part`, a text cut from this one (its ranges relative to this text), as a text
    /// of the line this one was cut from.
    pub(crate) fn part(&self, part: Text) -> Text {
        match (self, part) {
            (Text::Slice(start, _), Text::Slice(s, e)) => Text::Slice(start + s, start + e),
            (Text::Fixed(text), Text::Slice(s, e)) => Text::Fixed(&text[s..e]),
            (Text::Owned(text), Text::Slice(s, e)) => Text::Owned(text[s..e].to_owned()),
            (_, other) => other,
        }
    }
}

/// A `--flag[=value]` word of a raw node.
#[derive(Debug)]
pub(crate) struct RawFlag {
    /// The word with quotes and escapes removed, dashes included.
    pub(crate) text: Text,
    /// Where it is written.
    pub(crate) span: Span,
}

/// A heredoc attached to a raw node; its body stays in the source until wanted.
#[derive(Debug)]
pub(crate) struct RawHeredoc {
    /// The delimiter word, quotes removed.
    pub(crate) name: Text,
    pub(crate) fd: u32,
    pub(crate) expand: bool,
    pub(crate) chomp: bool,
    /// The body's byte range in the source.
    pub(crate) content: (usize, usize),
    pub(crate) span: Span,
}

/// One instruction as the syntax layer cuts it, its text left in the logical line: the
/// shape of [`super::Node`] without the copies. The reader reuses one for every
/// instruction, so its vectors are allocated once per parse.
#[derive(Debug, Default)]
pub(crate) struct RawNode {
    /// The keyword's byte range in the logical line.
    pub(crate) keyword: (usize, usize),
    /// The instruction it names.
    pub(crate) kind: Keyword,
    /// This instruction's byte range in the logical line (all of it, except for an
    /// ONBUILD trigger).
    pub(crate) original: (usize, usize),
    pub(crate) flags: Vec<RawFlag>,
    pub(crate) args: Vec<Text>,
    pub(crate) trigger: Option<Box<RawNode>>,
    /// A trigger node kept from an earlier instruction, to be reused.
    spare: Option<Box<RawNode>>,
    pub(crate) json: bool,
    pub(crate) heredocs: Vec<RawHeredoc>,
    pub(crate) span: Span,
    pub(crate) keyword_span: Span,
}

impl RawNode {
    /// The keyword as written.
    pub(crate) fn keyword<'s>(&self, line: &'s str) -> &'s str {
        &line[self.keyword.0..self.keyword.1]
    }

    /// This instruction's text.
    pub(crate) fn original<'s>(&self, line: &'s str) -> &'s str {
        &line[self.original.0..self.original.1]
    }
}

/// A piece of a logical line: where it starts in the logical text and in the source,
/// and the physical line it is on.
#[derive(Clone, Copy, Default)]
struct Piece {
    at: usize,
    source: usize,
    line: LineStart,
}

/// A logical line: physical line pieces glued together by continuations, with the map
/// back to source offsets and lines. A one-line instruction is its piece of the source;
/// only continued ones are copied, into a buffer reused from one instruction to the
/// next.
#[derive(Default)]
pub(crate) struct Logical {
    /// The text of a continued instruction.
    joined: String,
    /// The first piece's length.
    first_len: usize,
    first: Piece,
    /// The further pieces (empty for the common one-line instruction).
    more: Vec<Piece>,
}

impl Logical {
    /// Starts a new logical line with its first piece, at `source_offset` on `line`.
    pub(crate) fn reset(&mut self, piece: &str, source_offset: usize, line: LineStart) {
        self.first = Piece {
            at: 0,
            source: source_offset,
            line,
        };
        self.first_len = piece.len();
        self.more.clear();
    }

    /// Appends the piece `piece` of the source `src`, at `source_offset` on `line`.
    pub(crate) fn push(&mut self, src: &str, piece: &str, source_offset: usize, line: LineStart) {
        if self.more.is_empty() {
            self.joined.clear();
            self.joined
                .push_str(&src[self.first.source..self.first.source + self.first_len]);
        }
        self.more.push(Piece {
            at: self.joined.len(),
            source: source_offset,
            line,
        });
        self.joined.push_str(piece);
    }

    /// The text, `src` being the source it was read from.
    pub(crate) fn text<'s>(&'s self, src: &'s str) -> &'s str {
        match self.more.is_empty() {
            true => &src[self.first.source..self.first.source + self.first_len],
            false => &self.joined,
        }
    }

    /// Where text range `start..end` is in the source, when it is there in one piece
    /// (it lies within one physical line).
    #[inline]
    fn in_source(&self, start: usize, end: usize) -> Option<usize> {
        if self.more.is_empty() {
            return Some(self.first.source + start);
        }
        let i = self.more.partition_point(|p| p.at <= start);
        let piece = match i {
            0 => &self.first,
            i => &self.more[i - 1],
        };
        let piece_end = self.more.get(i).map_or(self.joined.len(), |p| p.at);
        (end <= piece_end).then_some(piece.source + (start - piece.at))
    }

    /// The piece holding text offset `at`.
    fn piece(&self, at: usize) -> &Piece {
        match self.more.partition_point(|p| p.at <= at) {
            0 => &self.first,
            i => &self.more[i - 1],
        }
    }

    /// The source span of text range `start..end`.
    pub(crate) fn span(&self, columns: &Columns<'_>, start: usize, end: usize) -> Span {
        let first = self.piece(start);
        let s = first.source + (start - first.at);
        let span = Span::new(
            first.line.number,
            columns.column(first.line, s),
            first.line.number,
            s,
            s,
        );
        self.extend(span, start, end)
    }

    /// `span`, the span of text offset `start`, reaching on to text offset `end`.
    fn extend(&self, span: Span, start: usize, end: usize) -> Span {
        if end <= start {
            return span;
        }
        let last = self.piece(end - 1);
        Span {
            end_line: last.line.number as u32,
            end: (last.source + (end - 1 - last.at) + 1) as u32,
            ..span
        }
    }
}

/// A logical line as the typed layer reads it: its text, and the way back to the
/// source, so that the text of the AST is borrowed from the source wherever it is
/// written there as is and copied only where continuations were joined inside it.
#[derive(Clone, Copy)]
pub(crate) struct LineText<'r, 'src> {
    /// The logical line.
    pub(crate) line: &'r str,
    logical: &'r Logical,
    /// The whole source.
    pub(crate) src: &'src str,
}

impl<'r, 'src> LineText<'r, 'src> {
    /// The logical line `line`, made of the pieces `logical` of the source `src`.
    pub(crate) fn new(line: &'r str, logical: &'r Logical, src: &'src str) -> Self {
        LineText { line, logical, src }
    }

    /// The text, borrowed from the logical line.
    pub(crate) fn get(&self, text: &'r Text) -> &'r str {
        text.get(self.line)
    }

    /// Bytes `start..end` of the logical line, borrowed from the source when they are
    /// in it in one piece.
    #[inline]
    pub(crate) fn slice(&self, start: usize, end: usize) -> Cow<'src, str> {
        match self.logical.in_source(start, end) {
            Some(at) => Cow::Borrowed(&self.src[at..at + (end - start)]),
            None => Cow::Owned(self.line[start..end].to_owned()),
        }
    }

    /// The whole logical line.
    #[inline]
    pub(crate) fn whole(&self) -> Cow<'src, str> {
        self.slice(0, self.line.len())
    }

    /// The text for the AST: borrowed from the source when it is written there as is,
    /// moved out of `text` when it is owned already.
    #[inline]
    pub(crate) fn cow(&self, text: &mut Text) -> Cow<'src, str> {
        match text {
            Text::Slice(start, end) => self.slice(*start, *end),
            Text::Fixed(text) => Cow::Borrowed(text),
            Text::Owned(text) => Cow::Owned(std::mem::take(text)),
        }
    }

    /// Bytes `range` of the source.
    pub(crate) fn source(&self, (start, end): (usize, usize)) -> &'src str {
        &self.src[start..end]
    }
}

/// Where spans are computed from while building nodes.
pub(crate) struct LineContext<'a, 'b> {
    pub(crate) logical: &'b Logical,
    pub(crate) columns: &'b Columns<'a>,
    pub(crate) escape: char,
}

impl LineContext<'_, '_> {
    fn span(&self, start: usize, end: usize) -> Span {
        self.logical.span(self.columns, start, end)
    }
}

/// Classes of bytes, looked up in one table by the loops that look at every byte of a
/// line instead of testing each byte against a chain of ranges.
mod class {
    /// ASCII whitespace as `char::is_whitespace` has it (`\t`..=`\r`, space).
    pub(super) const SPACE: u8 = 1;
    /// `'` or `"`.
    pub(super) const QUOTE: u8 = 2;
    /// `\`.
    pub(super) const BACKSLASH: u8 = 4;
    /// Part of a multi-byte character.
    pub(super) const HIGH: u8 = 8;
    /// The whitespace BuildKit splits words at (`[\t\v\f\r ]`).
    pub(super) const SPLIT: u8 = 16;
    /// `` ` ``, the other escape character.
    pub(super) const BACKTICK: u8 = 32;

    /// The classes of every byte.
    static CLASSES: [u8; 256] = {
        let mut classes = [0; 256];
        let mut b = 0;
        while b < 256 {
            classes[b] = match b as u8 {
                b'\n' => SPACE,
                b'\t' | 0x0b | 0x0c | b'\r' | b' ' => SPACE | SPLIT,
                b'\'' | b'"' => QUOTE,
                b'\\' => BACKSLASH,
                b'`' => BACKTICK,
                0x80.. => HIGH,
                _ => 0,
            };
            b += 1;
        }
        classes
    };

    /// Whether `b` is in one of the classes `mask`.
    #[inline]
    pub(super) fn is(b: u8, mask: u8) -> bool {
        CLASSES[usize::from(b)] & mask != 0
    }

    /// The class of the escape character `escape`, when it has one of its own.
    pub(super) fn of_escape(escape: u8) -> Option<u8> {
        match escape {
            b'\\' => Some(BACKSLASH),
            b'`' => Some(BACKTICK),
            _ => None,
        }
    }

    const ONES: u64 = u64::from_le_bytes([0x01; 8]);
    const HIGHS: u64 = u64::from_le_bytes([0x80; 8]);

    /// The high bits of the bytes of `word` equal to `byte`. The lowest is exact;
    /// above it a borrow may set more.
    #[inline]
    fn equal(word: u64, byte: u8) -> u64 {
        let x = word ^ (ONES * u64::from(byte));
        x.wrapping_sub(ONES) & !x & HIGHS
    }

    /// The high bits of the ASCII bytes of `word` below `bound` (at most 0x80), the
    /// lowest exact as in [`equal`].
    #[inline]
    fn below(word: u64, bound: u8) -> u64 {
        word.wrapping_sub(ONES * u64::from(bound)) & !word & HIGHS
    }

    /// The high bits of bytes of `word` that may be in the classes `mask`: every byte
    /// that is, and some that are not (other control characters for the whitespace
    /// classes). The lowest bit of each test is exact, so the lowest of all is a byte
    /// the test is true of.
    #[inline]
    fn candidates(word: u64, mask: u8) -> u64 {
        let mut found = 0;
        if mask & (SPACE | SPLIT) != 0 {
            found |= below(word, 0x21);
        }
        if mask & QUOTE != 0 {
            found |= equal(word, b'"') | equal(word, b'\'');
        }
        if mask & BACKSLASH != 0 {
            found |= equal(word, b'\\');
        }
        if mask & BACKTICK != 0 {
            found |= equal(word, b'`');
        }
        if mask & HIGH != 0 {
            found |= word & HIGHS;
        }
        found
    }

    /// The offset of the first byte of `bytes` from `from` on in one of the classes
    /// `mask`, or `bytes.len()`. Eight bytes are tested at a time for bytes that may
    /// be in them, and only those looked up: the loops over the bytes of a line spend
    /// more on their ends (a branch mispredicted) than on their bytes otherwise.
    #[inline]
    pub(super) fn find(bytes: &[u8], from: usize, mask: u8) -> usize {
        let mut at = from;
        while let Some(chunk) = bytes.get(at..).and_then(|b| b.first_chunk::<8>()) {
            let found = candidates(u64::from_le_bytes(*chunk), mask);
            if found == 0 {
                at += 8;
                continue;
            }
            at += found.trailing_zeros() as usize / 8;
            if is(bytes[at], mask) {
                return at;
            }
            at += 1;
        }
        while let Some(&b) = bytes.get(at) {
            if is(b, mask) {
                return at;
            }
            at += 1;
        }
        bytes.len()
    }
}

/// `s` without leading whitespace (`char::is_whitespace`), ASCII bytes tested as they
/// are.
pub(crate) fn trim_start(s: &str) -> &str {
    let skip = s
        .bytes()
        .position(|b| !matches!(b, b'\t'..=b'\r' | b' '))
        .unwrap_or(s.len());
    match s.as_bytes().get(skip) {
        Some(&b) if b >= 0x80 => s[skip..].trim_start(),
        _ => &s[skip..],
    }
}

/// `s` without trailing whitespace (`char::is_whitespace`), ASCII bytes tested as they
/// are.
pub(crate) fn trim_end(s: &str) -> &str {
    let keep = s
        .bytes()
        .rposition(|b| !matches!(b, b'\t'..=b'\r' | b' '))
        .map_or(0, |i| i + 1);
    match keep.checked_sub(1).map(|i| s.as_bytes()[i]) {
        Some(b) if b >= 0x80 => s[..keep].trim_end(),
        _ => &s[..keep],
    }
}

/// The whitespace BuildKit splits on (`[\t\v\f\r ]`).
fn is_split_space(c: char) -> bool {
    matches!(c, '\t' | '\u{b}' | '\u{c}' | '\r' | ' ')
}

/// Whether `b` is a byte of [`is_split_space`] (all of which are ASCII).
fn is_split_byte(b: &u8) -> bool {
    matches!(b, b'\t' | 0x0b | 0x0c | b'\r' | b' ')
}

/// `s` without leading [`is_split_space`] characters.
fn trim_start_split(s: &str) -> &str {
    let skip = s
        .bytes()
        .position(|b| !is_split_byte(&b))
        .unwrap_or(s.len());
    &s[skip..]
}

/// Fills `node` (cleared first) from the line text `line`, found at offset `base` of the
/// logical line.
pub(crate) fn node_from_line(
    ctx: &LineContext<'_, '_>,
    line: &str,
    base: usize,
    node: &mut RawNode,
) -> Result<(), ParseError> {
    let from_keyword = trim_start(line);
    let lead = line.len() - from_keyword.len();
    let trimmed = trim_end(from_keyword);
    let start = base + lead;
    let cmd_len = class::find(trimmed.as_bytes(), 0, class::SPLIT);
    let keyword_span = ctx.span(start, start + cmd_len);
    let after_cmd = &trimmed[cmd_len..];
    let after_cmd = trim_start_split(after_cmd);
    let rest_base = start + (trimmed.len() - after_cmd.len());
    node.flags.clear();
    let rest_offset = extract_flags(ctx, after_cmd, rest_base, &mut node.flags);
    let raw_rest = &after_cmd[rest_offset..];
    let rest = trim_start(raw_rest);
    let rest_base = rest_base + rest_offset + (raw_rest.len() - rest.len());
    let rest = trim_end(rest);
    let error = |kind| ParseError::new(kind, keyword_span);

    let kind = Keyword::of_prefix(&line[lead..], cmd_len);
    node.keyword = (start, start + cmd_len);
    node.kind = kind;
    node.original = (base, base + line.len());
    node.args.clear();
    if let Some(trigger) = node.trigger.take() {
        node.spare = Some(trigger);
    }
    node.json = false;
    node.heredocs.clear();
    // The end of the line's text: `base + trim_end(line).len()`.
    let text_end = match trimmed.is_empty() {
        true => base,
        false => start + trimmed.len(),
    };
    node.span = ctx.logical.extend(keyword_span, start, text_end);
    node.keyword_span = keyword_span;
    let args = &mut node.args;
    match kind {
        Keyword::Add | Keyword::Copy | Keyword::Volume => {
            node.json = parse_json(rest, rest_base, args).map_err(error)?;
            if !node.json {
                split_whitespace(rest, rest_base, args);
            }
        }
        Keyword::Cmd | Keyword::Entrypoint | Keyword::Run | Keyword::Shell => {
            node.json = maybe_json(rest, rest_base, args).map_err(error)?
        }
        Keyword::Arg => args.extend(
            Words::new(rest, ctx.escape).map(|(s, e)| Text::Slice(rest_base + s, rest_base + e)),
        ),
        Keyword::Env => name_values(rest, rest_base, ctx.escape, "ENV", args).map_err(error)?,
        Keyword::Label => name_values(rest, rest_base, ctx.escape, "LABEL", args).map_err(error)?,
        Keyword::Expose | Keyword::From => split_whitespace(rest, rest_base, args),
        Keyword::Healthcheck => {
            if !rest.is_empty() {
                let type_len = rest.find(char::is_whitespace).unwrap_or(rest.len());
                let cmd = rest[type_len..].trim_start();
                args.push(Text::Slice(rest_base, rest_base + type_len));
                let cmd_base = rest_base + (rest.len() - cmd.len());
                node.json = maybe_json(cmd, cmd_base, args).map_err(error)?;
            }
        }
        Keyword::Maintainer | Keyword::Stopsignal | Keyword::User | Keyword::Workdir => {
            if !rest.is_empty() {
                args.push(Text::Slice(rest_base, rest_base + rest.len()));
            }
        }
        Keyword::Onbuild => {
            if !rest.is_empty() {
                let mut child = node.spare.take().unwrap_or_default();
                node_from_line(ctx, rest, rest_base, &mut child)?;
                node.trigger = Some(child);
            }
        }
        Keyword::Unknown => args.push(Text::Fixed("")),
    }
    Ok(())
}

/// Reads the leading `--flag` words of `line` into `flags`; returns the offset where the
/// arguments start. Quotes are removed and `\` escapes the next character, as in
/// BuildKit's `extractBuilderFlags`; a lone `--` ends the flags.
fn extract_flags(
    ctx: &LineContext<'_, '_>,
    line: &str,
    base: usize,
    flags: &mut Vec<RawFlag>,
) -> usize {
    let mut pos = 0;
    loop {
        let rest = &line[pos..];
        let start = pos + (rest.len() - trim_start(rest).len());
        if !line[start..].starts_with("--") {
            return start;
        }
        let (word, end) = flag_word(line, start);
        if word.get(line) == "--" {
            return end;
        }
        let word = match word {
            Text::Slice(s, e) => Text::Slice(base + s, base + e),
            other => other,
        };
        flags.push(RawFlag {
            text: word,
            span: ctx.span(base + start, base + end),
        });
        pos = end;
    }
}

/// The flag word starting at `start`, quotes and escapes removed, and where it ends: a
/// slice of `line` when it has neither.
fn flag_word(line: &str, start: usize) -> (Text, usize) {
    let bytes = &line.as_bytes()[start..];
    let plain = class::find(
        bytes,
        0,
        class::SPACE | class::QUOTE | class::BACKSLASH | class::HIGH,
    );
    if bytes
        .get(plain)
        .is_none_or(|b| matches!(b, b'\t'..=b'\r' | b' '))
    {
        return (Text::Slice(start, start + plain), start + plain);
    }
    let mut word = String::new();
    let mut quote: Option<char> = None;
    let mut chars = line[start..].char_indices();
    while let Some((i, c)) = chars.next() {
        match (quote, c) {
            (None, c) if c.is_whitespace() => return (Text::Owned(word), start + i),
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
    (Text::Owned(word), line.len())
}

/// BuildKit's `parseJSON`: if `rest` (at offset `base` of the logical line) is, in
/// full, a JSON array of strings, pushes them to `out` and returns true; an error if it
/// is a JSON array holding anything else; false otherwise, `out` untouched.
fn parse_json(rest: &str, base: usize, out: &mut Vec<Text>) -> Result<bool, ErrorKind> {
    if !rest.starts_with('[') {
        return Ok(false);
    }
    let before = out.len();
    if plain_json_strings(rest, base, out) {
        return Ok(true);
    }
    out.truncate(before);
    if let Ok(strings) = serde_json::from_str::<Vec<String>>(rest) {
        out.extend(strings.into_iter().map(Text::Owned));
        return Ok(true);
    }
    let Ok(values) = serde_json::from_str::<Vec<serde_json::Value>>(rest) else {
        return Ok(false);
    };
    let strings = values
        .into_iter()
        .map(|v| match v {
            serde_json::Value::String(s) => Ok(Text::Owned(s)),
            _ => Err(ErrorKind::NotStringArray),
        })
        .collect::<Result<Vec<_>, _>>()?;
    out.extend(strings);
    Ok(true)
}

/// Pushes the strings of `rest` to `out` as slices if it is a JSON array of strings
/// without escapes (the usual exec form), read without a JSON parser; false for
/// anything else, which is left to serde_json (what was pushed is then to be dropped).
fn plain_json_strings(rest: &str, base: usize, out: &mut Vec<Text>) -> bool {
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
    if bytes.first() != Some(&b'[') {
        return false;
    }
    let mut i = skip_space(1);
    if bytes.get(i) == Some(&b']') {
        return skip_space(i + 1) == bytes.len();
    }
    loop {
        if bytes.get(i) != Some(&b'"') {
            return false;
        }
        let start = i + 1;
        let Some(len) = bytes[start..]
            .iter()
            .position(|&b| b == b'"' || b == b'\\' || b < 0x20)
        else {
            return false;
        };
        if bytes[start + len] != b'"' {
            return false;
        }
        out.push(Text::Slice(base + start, base + start + len));
        i = skip_space(start + len + 1);
        match bytes.get(i) {
            Some(b',') => i = skip_space(i + 1),
            Some(b']') => return skip_space(i + 1) == bytes.len(),
            _ => return false,
        }
    }
}

/// BuildKit's `parseMaybeJSON`: a JSON array of strings, or the whole rest as one word.
/// Returns whether it was JSON.
fn maybe_json(rest: &str, base: usize, out: &mut Vec<Text>) -> Result<bool, ErrorKind> {
    if rest.is_empty() {
        return Ok(false);
    }
    if parse_json(rest, base, out)? {
        return Ok(true);
    }
    out.push(Text::Slice(base, base + rest.len()));
    Ok(false)
}

fn split_whitespace(rest: &str, base: usize, out: &mut Vec<Text>) {
    let bytes = rest.as_bytes();
    let mut at = 0;
    while at < bytes.len() {
        let end = class::find(bytes, at, class::SPLIT);
        if end > at {
            out.push(Text::Slice(base + at, base + end));
        }
        at = end + 1;
    }
}

/// BuildKit's `parseWords`: whitespace-separated words, quotes and escapes kept, as
/// byte ranges of the input (only an escape character ending the input is dropped).
/// ASCII bytes are tested as they are; other characters are decoded only to ask
/// whether they are whitespace.
pub(crate) struct Words<'s> {
    rest: &'s str,
    /// Where the next character starts.
    pos: usize,
    /// The escape character (always ASCII: `\` or `` ` ``).
    escape: Option<u8>,
    /// The classes of the bytes that end a run of ordinary ones outside quotes:
    /// whitespace, quotes, multi-byte characters and the escape character.
    stop: u8,
    /// Runs are skipped by class: the escape character, if any, has a class of its
    /// own (else bytes are looked at one by one).
    by_class: bool,
}

impl<'s> Words<'s> {
    pub(crate) fn new(rest: &'s str, escape: char) -> Words<'s> {
        let escape = u8::try_from(escape).ok().filter(u8::is_ascii);
        let stop = class::SPACE | class::QUOTE | class::HIGH;
        let escape_class = escape.map(class::of_escape);
        Words {
            rest,
            pos: 0,
            escape,
            stop: stop | escape_class.flatten().unwrap_or(0),
            by_class: escape_class.is_none_or(|class| class.is_some()),
        }
    }

    /// The width of the character at `at`, and whether it is whitespace.
    fn char_at(&self, at: usize) -> (usize, bool) {
        let b = self.rest.as_bytes()[at];
        if b < 0x80 {
            return (1, matches!(b, b'\t'..=b'\r' | b' '));
        }
        self.rest[at..]
            .chars()
            .next()
            .map_or((1, false), |c| (c.len_utf8(), c.is_whitespace()))
    }
}

impl Iterator for Words<'_> {
    type Item = (usize, usize);

    fn next(&mut self) -> Option<(usize, usize)> {
        let bytes = self.rest.as_bytes();
        let len = bytes.len();
        loop {
            if self.pos >= len {
                return None;
            }
            let (width, space) = self.char_at(self.pos);
            if !space {
                break;
            }
            self.pos += width;
        }
        let start = self.pos;
        let escape = self.escape;
        let mut blank_ok = false;
        let mut end = len;
        let mut pos = self.pos;
        'word: while pos < len {
            // Skip the bytes that change nothing outside quotes: ASCII, neither
            // whitespace, a quote nor the escape character.
            if self.by_class {
                pos = class::find(bytes, pos, self.stop);
            }
            let Some(&b) = bytes.get(pos) else {
                break;
            };
            if !class::is(b, self.stop) && Some(b) != escape {
                pos += 1;
                continue;
            }
            let i = pos;
            let (width, space) = self.char_at(i);
            pos += width;
            if space {
                self.pos = pos;
                return Some((start, i));
            }
            if b == b'\'' || b == b'"' {
                blank_ok = true;
                // Inside quotes only ASCII bytes matter, and no multi-byte character
                // holds one; the escape character works inside double quotes only.
                loop {
                    let Some(&c) = bytes.get(pos) else {
                        break 'word;
                    };
                    pos += 1;
                    if c == b {
                        continue 'word;
                    }
                    if b == b'"' && Some(c) == escape {
                        match pos < len {
                            true => pos += self.char_at(pos).0,
                            false => {
                                end = pos - 1;
                                break 'word;
                            }
                        }
                    }
                }
            }
            if Some(b) == escape {
                match pos < len {
                    true => pos += self.char_at(pos).0,
                    false => end = i,
                }
            }
        }
        self.pos = pos;
        (blank_ok || end > start).then_some((start, end))
    }
}

/// The offset of the first `byte` (ASCII) in `s`, found with a plain loop: the words
/// searched are short, and a general search spends more on setting up than on searching.
pub(crate) fn find_byte(s: &str, byte: u8) -> Option<usize> {
    s.bytes().position(|b| b == byte)
}

/// BuildKit's `parseNameVal` for ENV and LABEL: `(key, value, separator)` triples.
fn name_values(
    rest: &str,
    base: usize,
    escape: char,
    instruction: &'static str,
    out: &mut Vec<Text>,
) -> Result<(), ErrorKind> {
    let mut words = Words::new(rest, escape).peekable();
    let Some(&(first_start, first_end)) = words.peek() else {
        return Ok(());
    };
    if find_byte(&rest[first_start..first_end], b'=').is_none() {
        let Some(split) = rest.find(is_split_space) else {
            return Err(ErrorKind::LegacyPairWithoutValue { instruction });
        };
        let value = rest[split..].trim_start_matches(is_split_space);
        out.extend([
            Text::Slice(base, base + split),
            Text::Slice(base + rest.len() - value.len(), base + rest.len()),
            Text::Fixed(""),
        ]);
        return Ok(());
    }
    for (start, end) in words {
        let word = &rest[start..end];
        let Some(eq) = find_byte(word, b'=') else {
            return Err(ErrorKind::MissingEquals {
                word: word.to_owned(),
            });
        };
        let (start, eq) = (base + start, base + start + eq);
        out.extend([
            Text::Slice(start, eq),
            Text::Slice(eq + 1, base + end),
            Text::Fixed("="),
        ]);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(rest: &str, escape: char) -> Vec<&str> {
        Words::new(rest, escape).map(|(s, e)| &rest[s..e]).collect()
    }

    fn texts(line: &str, out: &[Text]) -> Vec<String> {
        out.iter().map(|t| t.get(line).to_owned()).collect()
    }

    fn name_values(
        rest: &str,
        escape: char,
        instruction: &'static str,
    ) -> Result<Vec<String>, ErrorKind> {
        let mut out = Vec::new();
        super::name_values(rest, 0, escape, instruction, &mut out)?;
        Ok(texts(rest, &out))
    }

    fn parse_json(rest: &str) -> Result<Option<Vec<String>>, ErrorKind> {
        let mut out = Vec::new();
        Ok(super::parse_json(rest, 0, &mut out)?.then(|| texts(rest, &out)))
    }

    fn plain_json_strings(rest: &str) -> Option<Vec<String>> {
        let mut out = Vec::new();
        super::plain_json_strings(rest, 0, &mut out).then(|| texts(rest, &out))
    }

    #[test]
    fn classes_found_as_byte_by_byte() {
        let masks = [
            class::SPLIT,
            class::SPACE | class::QUOTE | class::BACKSLASH | class::HIGH,
            class::SPACE | class::QUOTE | class::HIGH | class::BACKTICK,
        ];
        let alphabet = [
            "a", " ", "\t", "\u{b}", "\n", "\u{1}", "\u{1f}", "\"", "'", "\\", "`", "é", "!", "~",
        ];
        for seed in 0..3000u32 {
            let mut x = seed.wrapping_mul(2_654_435_761) | 1;
            let text: String = (0..(seed % 37))
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    alphabet[x as usize % alphabet.len()]
                })
                .collect();
            let bytes = text.as_bytes();
            for mask in masks {
                for from in 0..=bytes.len() {
                    let naive = (from..bytes.len())
                        .find(|&i| class::is(bytes[i], mask))
                        .unwrap_or(bytes.len());
                    assert_eq!(class::find(bytes, from, mask), naive, "{text:?} {from}");
                }
            }
        }
    }

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
