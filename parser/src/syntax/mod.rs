//! The syntax layer: Dockerfile text → raw [`Node`]s, one per instruction, in the shape
//! of BuildKit's `parser.Node`.
//!
//! This layer knows about lines and nothing about what instructions mean: parser
//! directives at the top, comments, blank lines, the escape character as line
//! continuation (with comments and blank lines allowed inside a continued instruction),
//! CRLF endings, a UTF-8 byte-order mark, and heredoc bodies following RUN/COPY/ADD
//! lines. Each node keeps the logical line it came from, its spans, its `--flags` (not
//! yet validated) and its arguments as BuildKit's line parsers cut them, so that
//! [`Node::dump`] can print BuildKit's golden-test format byte for byte and the typed
//! layer ([`crate::instructions`]) can apply BuildKit's rules to exactly the same input.
//!
//! Everything here is linear in the input: each physical line is looked at a bounded
//! number of times, and no line may exceed BuildKit's scanner limit of 64 KiB.

mod directives;
mod dump;
pub(crate) mod heredoc;
pub(crate) mod line;

use std::borrow::Cow;

use serde::Serialize;

pub use directives::{CheckConfig, Directive};

use crate::error::{ErrorKind, ParseError};
use crate::span::{Columns, LineStart, MAX_TEXT_LEN, Span};
use directives::DirectiveScanner;
use line::{LineContext, LineText, Logical, RawHeredoc, RawNode};

/// BuildKit's scanner refuses physical lines longer than this (its 64 KiB buffer, less
/// the newline).
pub const MAX_LINE_LEN: usize = 64 * 1024 - 1;

/// The raw parse of a Dockerfile.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SyntaxTree {
    /// The parser directives at the top of the file, in order.
    pub directives: Vec<Directive>,
    /// The escape character: `\` unless `# escape=` says `` ` ``.
    pub escape: char,
    /// One node per instruction.
    pub nodes: Vec<Node>,
}

/// One instruction as the syntax layer sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Node {
    /// The keyword as written (`RUN`, `run`, …); the usual uppercase spellings are
    /// shared rather than allocated per node.
    pub keyword: Cow<'static, str>,
    /// The leading `--flag[=value]` words, quotes removed, not yet validated.
    pub flags: Vec<Flag>,
    /// The arguments as BuildKit's line parser for this keyword cuts them.
    pub args: Vec<String>,
    /// ONBUILD's trigger instruction.
    pub trigger: Option<Box<Node>>,
    /// The arguments were a JSON array (exec form).
    pub json: bool,
    /// Heredoc bodies attached to the instruction, in marker order.
    pub heredocs: Vec<Heredoc>,
    /// The logical line: continuations joined, comments inside them dropped, leading
    /// whitespace removed.
    pub original: String,
    /// The whole instruction, up to the end of its last heredoc body.
    pub span: Span,
    /// The keyword.
    pub keyword_span: Span,
}

/// A `--flag[=value]` word.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Flag {
    /// The word with quotes and escapes removed, dashes included.
    pub text: String,
    /// Where it is written.
    pub span: Span,
}

/// A heredoc attached to an instruction.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Heredoc {
    /// The delimiter word, quotes removed (`EOF` for `<<"EOF"`).
    pub name: String,
    /// The file descriptor written before `<<` (`3<<EOF`), 0 when none.
    pub fd: u32,
    /// Variables in the body are to be expanded (the delimiter was not quoted).
    pub expand: bool,
    /// `<<-`: leading tabs are to be stripped from the body.
    pub chomp: bool,
    /// The body, line endings included, as written (tabs not yet stripped).
    pub content: String,
    /// The body's lines and the terminator.
    pub span: Span,
}

/// The instruction a keyword names, case-insensitively.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) enum Keyword {
    From,
    Run,
    Cmd,
    Label,
    Maintainer,
    Expose,
    Env,
    Add,
    Copy,
    Entrypoint,
    Volume,
    User,
    Workdir,
    Arg,
    Onbuild,
    Stopsignal,
    Healthcheck,
    Shell,
    /// No instruction.
    #[default]
    Unknown,
}

impl Keyword {
    /// Every instruction, with its usual (uppercase) spelling.
    const ALL: [(Keyword, &'static str); 18] = [
        (Keyword::From, "FROM"),
        (Keyword::Run, "RUN"),
        (Keyword::Cmd, "CMD"),
        (Keyword::Label, "LABEL"),
        (Keyword::Maintainer, "MAINTAINER"),
        (Keyword::Expose, "EXPOSE"),
        (Keyword::Env, "ENV"),
        (Keyword::Add, "ADD"),
        (Keyword::Copy, "COPY"),
        (Keyword::Entrypoint, "ENTRYPOINT"),
        (Keyword::Volume, "VOLUME"),
        (Keyword::User, "USER"),
        (Keyword::Workdir, "WORKDIR"),
        (Keyword::Arg, "ARG"),
        (Keyword::Onbuild, "ONBUILD"),
        (Keyword::Stopsignal, "STOPSIGNAL"),
        (Keyword::Healthcheck, "HEALTHCHECK"),
        (Keyword::Shell, "SHELL"),
    ];

    /// The instruction `word` names, ASCII letters in any case.
    #[cfg(test)]
    fn of(word: &str) -> Keyword {
        Keyword::of_prefix(word, word.len())
    }

    /// The instruction named by the first `len` bytes of `text`, ASCII letters in any
    /// case. Every keyword is made of letters, which differ from their lowercase forms
    /// in bit 5 only, so a byte matches a keyword's (uppercase) letter exactly when it
    /// does with that bit cleared: the word is read into two integers (in one load when
    /// `text` is long enough), bit 5 of each byte cleared and its length put in the
    /// last byte, and looked up in a table without collisions among the keywords.
    pub(crate) fn of_prefix(text: &str, len: usize) -> Keyword {
        /// Bit 5 cleared in the bytes a keyword can take.
        const LETTERS: u128 = u128::from_le_bytes([!0x20; 16]) >> 40;
        let bytes = text.as_bytes();
        if len > 11 || len > bytes.len() {
            return Keyword::Unknown;
        }
        let word = match bytes.first_chunk::<16>() {
            Some(&chunk) => u128::from_le_bytes(chunk),
            None => {
                let mut chunk = [0u8; 16];
                chunk[..len].copy_from_slice(&bytes[..len]);
                u128::from_le_bytes(chunk)
            }
        };
        let packed = word & ((1u128 << (len * 8)) - 1) & LETTERS | (len as u128) << 120;
        let (name, keyword) = KEYWORD_TABLE[keyword_slot(packed)];
        match name == packed {
            true => keyword,
            false => Keyword::Unknown,
        }
    }

    /// The usual spelling.
    fn name(self) -> Option<&'static str> {
        Keyword::ALL
            .iter()
            .find(|(keyword, _)| *keyword == self)
            .map(|&(_, name)| name)
    }
}

/// `word` as [`Keyword::of_prefix`] packs it: bit 5 of each byte cleared, the length
/// in the last byte.
const fn pack_keyword(word: &[u8]) -> u128 {
    let mut packed = [0u8; 16];
    let mut i = 0;
    while i < word.len() {
        packed[i] = word[i] & !0x20;
        i += 1;
    }
    packed[15] = word.len() as u8;
    u128::from_le_bytes(packed)
}

/// The slot of a packed word in [`KEYWORD_TABLE`]: a multiplicative hash, its
/// multiplier found by trying random ones until no two keywords shared a slot.
const fn keyword_slot(packed: u128) -> usize {
    let folded = (packed as u64) ^ ((packed >> 64) as u64);
    (folded.wrapping_mul(0x5b4b1b75321c5297) >> 59) as usize
}

/// Every keyword, packed, in its slot (the others hold a word no keyword packs to).
const KEYWORD_TABLE: [(u128, Keyword); 32] = {
    let mut table = [(0, Keyword::Unknown); 32];
    let mut i = 0;
    while i < Keyword::ALL.len() {
        let (keyword, name) = Keyword::ALL[i];
        let packed = pack_keyword(name.as_bytes());
        let slot = keyword_slot(packed);
        assert!(table[slot].0 == 0, "two keywords share a slot");
        table[slot] = (packed, keyword);
        i += 1;
    }
    table
};

/// `keyword` as a node keeps it: a shared constant for the usual spellings.
fn keyword_of(keyword: &str, kind: Keyword) -> Cow<'static, str> {
    match kind.name() {
        Some(name) if name == keyword => Cow::Borrowed(name),
        _ => Cow::Owned(keyword.to_owned()),
    }
}

/// A physical line of the input.
#[derive(Clone, Copy)]
struct PhysLine<'a> {
    /// The line with its line ending (`\n`, and any `\r` before it) removed.
    text: &'a str,
    /// Offset of `text` in the source.
    start: usize,
    /// The line's number and where it starts (before any byte-order mark).
    line: LineStart,
}

impl PhysLine<'_> {
    /// Offset one past `text`.
    fn end(&self) -> usize {
        self.start + self.text.len()
    }
}

/// The physical lines of the input.
struct Lines<'a> {
    src: &'a str,
    pos: usize,
    /// Lines handed out so far.
    count: usize,
}

impl<'a> Lines<'a> {
    /// Where the next line starts (whether it is ASCII is not known yet).
    fn next_start(&self) -> LineStart {
        LineStart {
            number: self.count + 1,
            offset: self.pos,
            ascii: false,
        }
    }

    fn next(&mut self) -> Result<Option<PhysLine<'a>>, ParseError> {
        if self.pos >= self.src.len() {
            return Ok(None);
        }
        let mut line = self.next_start();
        let start = self.pos;
        let (newline, ascii) = find_newline(&self.src.as_bytes()[start..]);
        let end = newline.map_or(self.src.len(), |i| start + i);
        line.ascii = ascii;
        if end - start > MAX_LINE_LEN {
            return Err(ParseError::new(
                ErrorKind::LineTooLong { max: MAX_LINE_LEN },
                Span::new(line.number, 1, line.number, start, start),
            ));
        }
        self.pos = (end + 1).min(self.src.len());
        self.count += 1;
        let mut text = &self.src[start..end];
        if self.count == 1
            && let Some(rest) = text.strip_prefix('\u{feff}')
        {
            text = rest;
        }
        let text_start = end - text.len();
        Ok(Some(PhysLine {
            text: text.trim_end_matches('\r'),
            start: text_start,
            line,
        }))
    }
}

/// The offset of the first `\n` in `bytes`, and whether the bytes before it are ASCII
/// (which makes columns on the line byte counts), testing eight bytes at a time: lines
/// are short, and a general search spends more on setting up than on searching.
fn find_newline(bytes: &[u8]) -> (Option<usize>, bool) {
    const ONES: u64 = u64::from_le_bytes([0x01; 8]);
    const HIGHS: u64 = u64::from_le_bytes([0x80; 8]);
    const NEWLINES: u64 = u64::from_le_bytes([b'\n'; 8]);
    let mut chunks = bytes.chunks_exact(8);
    let mut at = 0;
    // The high bits of the bytes before the newline.
    let mut high = 0;
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let word = u64::from_le_bytes(word);
        let x = word ^ NEWLINES;
        // The lowest set bit marks the first zero byte exactly (borrows only run
        // upwards, past it).
        let found = x.wrapping_sub(ONES) & !x & HIGHS;
        if found != 0 {
            let before = found.trailing_zeros() as usize / 8;
            let below = (1u64 << (before * 8)) - 1;
            high |= word & below;
            return (Some(at + before), high & HIGHS == 0);
        }
        high |= word;
        at += 8;
    }
    let rest = chunks.remainder();
    let newline = rest.iter().position(|&b| b == b'\n');
    let before = &rest[..newline.unwrap_or(rest.len())];
    let ascii = high & HIGHS == 0 && before.is_ascii();
    (newline.map(|i| at + i), ascii)
}

/// The line of byte `end - 1`, where `end` is the end of the text of `last`, the last
/// line read: that line, unless its text is empty and the byte is the line break before.
fn line_before(end: usize, last: &PhysLine<'_>) -> usize {
    if end > last.line.offset || last.line.number == 1 {
        last.line.number
    } else {
        last.line.number - 1
    }
}

/// `span` reaching on to `end`, the end of the text of `last`, if that is further.
fn extend(span: Span, end: usize, last: &PhysLine<'_>) -> Span {
    if end <= span.end as usize {
        return span;
    }
    Span {
        end_line: line_before(end, last) as u32,
        end: end as u32,
        ..span
    }
}

/// Removes a trailing escape character (and the spaces and tabs after it) that
/// continues the line, unless the escape character is itself escaped. Returns the kept
/// text and whether the line ends the instruction.
fn trim_continuation(line: &str, escape: char) -> (&str, bool) {
    let Some(escape) = u8::try_from(escape).ok().filter(u8::is_ascii) else {
        return trim_continuation_char(line, escape);
    };
    let bytes = line.as_bytes();
    let mut end = bytes.len();
    while end > 0 && matches!(bytes[end - 1], b' ' | b'\t') {
        end -= 1;
    }
    match (
        end.checked_sub(1).map(|i| bytes[i]),
        end.checked_sub(2).map(|i| bytes[i]),
    ) {
        (Some(last), before) if last == escape && before != Some(escape) => {
            (&line[..end - 1], false)
        }
        _ => (line, true),
    }
}

/// [`trim_continuation`] for an escape character that is not ASCII.
fn trim_continuation_char(line: &str, escape: char) -> (&str, bool) {
    let body = line.trim_end_matches([' ', '\t']);
    let Some(before) = body.strip_suffix(escape) else {
        return (line, true);
    };
    if before.ends_with(escape) {
        return (line, true);
    }
    (before, false)
}

/// Parses Dockerfile text into raw nodes.
pub fn parse_syntax(src: &str) -> Result<SyntaxTree, ParseError> {
    let mut reader = NodeReader::new(src)?;
    let mut nodes = Vec::with_capacity(src.len() / 64);
    while let Some(mut read) = reader.next_node()? {
        nodes.push(read.take_node());
    }
    reader.finish()?;
    Ok(SyntaxTree {
        directives: reader.directives,
        escape: reader.escape,
        nodes,
    })
}

/// Reads the nodes of a Dockerfile one at a time, so that the typed layer can consume
/// each as it is made instead of holding them all.
pub(crate) struct NodeReader<'a> {
    columns: Columns<'a>,
    lines: Lines<'a>,
    scanner: DirectiveScanner,
    /// The directives found so far: all of them once the first node is read.
    pub(crate) directives: Vec<Directive>,
    /// The escape character.
    pub(crate) escape: char,
    /// Nodes read so far.
    count: usize,
    /// The current instruction's logical line.
    logical: Logical,
    /// The current instruction.
    node: RawNode,
}

/// The instruction a [`NodeReader`] has just read: the raw node, and the logical line
/// its text ranges point into (with the source its heredoc ranges point into).
pub(crate) struct Read<'r, 'src> {
    pub(crate) node: &'r mut RawNode,
    pub(crate) text: LineText<'r, 'src>,
}

impl Read<'_, '_> {
    /// The public node, its strings copied out.
    pub(crate) fn take_node(&mut self) -> Node {
        raw_to_node(self.node, self.text.line, self.text.src)
    }
}

fn raw_to_node(raw: &mut RawNode, line: &str, src: &str) -> Node {
    Node {
        keyword: keyword_of(raw.keyword(line), raw.kind),
        flags: raw
            .flags
            .iter_mut()
            .map(|f| Flag {
                text: f.text.take(line),
                span: f.span,
            })
            .collect(),
        args: raw.args.iter_mut().map(|a| a.take(line)).collect(),
        trigger: raw
            .trigger
            .as_mut()
            .map(|t| Box::new(raw_to_node(t, line, src))),
        json: raw.json,
        heredocs: raw
            .heredocs
            .iter_mut()
            .map(|d| Heredoc {
                name: d.name.take(line),
                fd: d.fd,
                expand: d.expand,
                chomp: d.chomp,
                content: src[d.content.0..d.content.1].to_owned(),
                span: d.span,
            })
            .collect(),
        original: raw.original(line).to_owned(),
        span: raw.span,
        keyword_span: raw.keyword_span,
    }
}

impl<'a> NodeReader<'a> {
    /// A reader of `src`, which must be shorter than [`MAX_TEXT_LEN`].
    pub(crate) fn new(src: &'a str) -> Result<NodeReader<'a>, ParseError> {
        if src.len() > MAX_TEXT_LEN {
            return Err(ParseError::new(
                ErrorKind::TooLarge { max: MAX_TEXT_LEN },
                Span::default(),
            ));
        }
        Ok(NodeReader {
            columns: Columns::new(src),
            lines: Lines {
                src,
                pos: 0,
                count: 0,
            },
            scanner: DirectiveScanner::default(),
            directives: Vec::new(),
            escape: '\\',
            count: 0,
            logical: Logical::default(),
            node: RawNode::default(),
        })
    }

    /// The error for input without instructions, once every node has been read.
    pub(crate) fn finish(&self) -> Result<(), ParseError> {
        match self.count {
            0 => Err(ParseError::new(
                ErrorKind::NoInstructions,
                Span::new(1, 1, 1, 0, 0),
            )),
            _ => Ok(()),
        }
    }

    /// The next node, or `None` at the end of the input.
    pub(crate) fn next_node(&mut self) -> Result<Option<Read<'_, 'a>>, ParseError> {
        let columns = &self.columns;
        let lines = &mut self.lines;
        let src = lines.src;
        while let Some(first) = lines.next()? {
            let token = line::trim_start(first.text);
            let token_start = first.start + (first.text.len() - token.len());
            if let Some(found) = self.scanner.scan(token) {
                let span = columns.on_line(first.line, token_start, token_start + token.len());
                record_directive(
                    &mut self.directives,
                    &mut self.escape,
                    found.name,
                    found.value,
                    span,
                )?;
                continue;
            }
            if token.starts_with('#') {
                continue;
            }
            let escape = self.escape;
            let (piece, mut done) = trim_continuation(token, escape);
            if done && piece.is_empty() {
                continue;
            }
            let logical = &mut self.logical;
            logical.reset(piece, token_start, first.line);
            let mut last = first;
            while !done {
                let Some(next) = lines.next()? else {
                    break;
                };
                last = next;
                let token = line::trim_start(next.text);
                if token.is_empty() || token.starts_with('#') {
                    continue;
                }
                let (piece, end) = trim_continuation(next.text, escape);
                logical.push(src, piece, next.start, next.line);
                done = end;
            }
            let ctx = LineContext {
                logical,
                columns,
                escape,
            };
            let line = logical.text(src);
            let node = &mut self.node;
            line::node_from_line(&ctx, line, 0, node)?;
            if node.can_contain_heredoc() && line.contains("<<") {
                for marker in heredoc::markers(line) {
                    let body_line = lines.next_start();
                    let body_start = body_line.offset;
                    let mut body_end = body_start;
                    let terminated = loop {
                        let Some(body) = lines.next()? else {
                            break false;
                        };
                        last = body;
                        let candidate = if marker.chomp {
                            body.text.trim_start_matches('\t')
                        } else {
                            body.text
                        };
                        if candidate == marker.name.get(line) {
                            break true;
                        }
                        body_end = lines.pos;
                    };
                    if !terminated {
                        let name = marker.name.get(line).to_owned();
                        return Err(ParseError::new(
                            ErrorKind::UnterminatedHeredoc { name },
                            node.keyword_span,
                        ));
                    }
                    let end = last.end();
                    node.heredocs.push(RawHeredoc {
                        name: marker.name,
                        fd: marker.fd,
                        expand: marker.expand,
                        chomp: marker.chomp,
                        content: (body_start, body_end),
                        span: Span::new(
                            body_line.number,
                            columns.column(body_line, body_start),
                            match end > body_start {
                                true => line_before(end, &last),
                                false => body_line.number,
                            },
                            body_start,
                            end,
                        ),
                    });
                }
            }
            node.span = extend(node.span, last.end(), &last);
            self.count += 1;
            return Ok(Some(Read {
                node,
                text: LineText::new(line, logical, src),
            }));
        }
        Ok(None)
    }
}

fn record_directive(
    directives: &mut Vec<Directive>,
    escape: &mut char,
    name: String,
    value: &str,
    span: Span,
) -> Result<(), ParseError> {
    if directives.iter().any(|d| d.name == name) {
        return Err(ParseError::new(
            ErrorKind::DuplicateDirective { name },
            span,
        ));
    }
    match name.as_str() {
        "escape" => {
            *escape = match value {
                "\\" => '\\',
                "`" => '`',
                _ => {
                    let value = value.to_owned();
                    return Err(ParseError::new(ErrorKind::InvalidEscape { value }, span));
                }
            }
        }
        "check" => {
            CheckConfig::parse(value).map_err(|option| {
                ParseError::new(ErrorKind::InvalidCheckOption { option }, span)
            })?;
        }
        _ => {}
    }
    directives.push(Directive {
        name,
        value: value.to_owned(),
        span,
    });
    Ok(())
}

impl RawNode {
    /// Whether heredoc markers on this line open heredocs: RUN, COPY and ADD in shell
    /// form, directly or as an ONBUILD trigger.
    fn can_contain_heredoc(&self) -> bool {
        let node = match (&self.trigger, self.kind) {
            (Some(trigger), Keyword::Onbuild) => trigger,
            _ => self,
        };
        matches!(node.kind, Keyword::Run | Keyword::Copy | Keyword::Add) && !node.json
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dump(src: &str) -> String {
        parse_syntax(src).unwrap().dump()
    }

    #[test]
    fn continuations_comments_and_crlf() {
        let src = "\u{feff}FROM x\r\nRUN a \\\r\n# note\r\n\r\n  b\r\nRUN c\\\\\n";
        assert_eq!(
            dump(src),
            "(from \"x\")\n(run \"a   b\")\n(run \"c\\\\\\\\\")\n"
        );
    }

    #[test]
    fn escape_directive_changes_continuation() {
        let src = "# escape=`\nFROM x\nRUN a `\n  b \\\n";
        let tree = parse_syntax(src).unwrap();
        assert_eq!(tree.escape, '`');
        assert_eq!(tree.dump(), "(from \"x\")\n(run \"a   b \\\\\")\n");
    }

    #[test]
    fn heredoc_bodies_and_spans() {
        let src = "FROM x\nRUN <<A cat <<-'B'\nhello $x\nA\n\tworld\n\tB\nRUN ok\n";
        let tree = parse_syntax(src).unwrap();
        let run = &tree.nodes[1];
        assert_eq!(run.heredocs.len(), 2);
        assert_eq!(run.heredocs[0].content, "hello $x\n");
        assert!(run.heredocs[0].expand);
        assert_eq!(run.heredocs[1].content, "\tworld\n");
        assert!(run.heredocs[1].chomp && !run.heredocs[1].expand);
        assert_eq!((run.span.line, run.span.end_line), (2, 6));
        assert_eq!(tree.nodes[2].span.line, 7);
    }

    #[test]
    fn flag_spans_point_at_the_flag() {
        let src = "FROM x\nRUN --network=none \\\n    --mount=type=cache,target=/c make\n";
        let tree = parse_syntax(src).unwrap();
        let flags = &tree.nodes[1].flags;
        assert_eq!(flags[1].text, "--mount=type=cache,target=/c");
        assert_eq!((flags[1].span.line, flags[1].span.column), (3, 5));
        assert_eq!(&src[flags[1].span.range()], "--mount=type=cache,target=/c");
    }

    #[test]
    fn continuations_trimmed_as_by_characters() {
        for line in [
            "", "\\", "a \\", "a \\ \t", "a \\\\", "a\\\\ ", "`", "a `", "a ``", "\\`", "é", "aé",
            "a é\t", "aéé", " \t", "x\\\t\\ ",
        ] {
            for escape in ['\\', '`', 'é'] {
                assert_eq!(
                    trim_continuation(line, escape),
                    trim_continuation_char(line, escape),
                    "{line:?} {escape:?}"
                );
            }
        }
    }

    #[test]
    fn keywords_in_any_case() {
        for (keyword, name) in Keyword::ALL {
            assert_eq!(Keyword::of(name), keyword);
            assert_eq!(Keyword::of(&name.to_lowercase()), keyword);
            assert_eq!(Keyword::of(&name[..name.len() - 1]), Keyword::Unknown);
            assert_eq!(Keyword::of(&format!("{name}S")), Keyword::Unknown);
        }
        assert_eq!(Keyword::of("rUn"), Keyword::Run);
        assert_eq!(Keyword::of(""), Keyword::Unknown);
        assert_eq!(Keyword::of("HEALTHCHECKS"), Keyword::Unknown);
        assert_eq!(Keyword::of("ſhell"), Keyword::Unknown);
    }

    #[test]
    fn newlines_found_at_every_offset() {
        for len in 0..40 {
            for at in 0..=len {
                let mut bytes = vec![b'a'; len];
                if let Some(b) = bytes.get_mut(at) {
                    *b = b'\n';
                }
                bytes.extend_from_slice(b"\n\x8a\n");
                assert_eq!(find_newline(&bytes), (Some(at), true), "{len} {at}");
                if at > 0 {
                    bytes[at - 1] = 0xc3;
                    assert_eq!(find_newline(&bytes), (Some(at), false), "{len} {at}");
                }
            }
        }
        assert_eq!(
            find_newline(&[0x8a, 0x0b, 0x09, 0xff, 0, 0, 0, 0, 1]),
            (None, false)
        );
        assert_eq!(find_newline(b"0123456789"), (None, true));
    }

    #[test]
    fn errors() {
        let err = |src: &str| parse_syntax(src).unwrap_err().kind;
        assert_eq!(err("# just a comment\n\n"), ErrorKind::NoInstructions);
        assert!(matches!(
            err("# syntax=a\n# SYNTAX=b\nFROM x"),
            ErrorKind::DuplicateDirective { .. }
        ));
        assert!(matches!(
            err("# escape=x\nFROM x"),
            ErrorKind::InvalidEscape { .. }
        ));
        assert!(matches!(
            err("FROM x\nRUN <<EOF\nno end\n"),
            ErrorKind::UnterminatedHeredoc { .. }
        ));
        let long = format!("FROM x\nRUN {}\n", "a".repeat(MAX_LINE_LEN));
        assert!(matches!(err(&long), ErrorKind::LineTooLong { .. }));
    }
}
