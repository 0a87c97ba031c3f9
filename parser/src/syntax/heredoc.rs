//! Heredoc markers (`<<EOF`, `<<-EOF`, `<<"EOF"`, `3<<EOF`) on RUN, COPY and ADD lines.
//!
//! BuildKit finds them in two passes, reproduced here: the whole instruction line is cut
//! into shell words with quotes and escapes kept as written, and every word of the shape
//! `[fd]<<[-]rest` is a heredoc. Its name is `rest` with quotes and escapes removed; the
//! body is expanded later only if removing them took away no quote character, which is
//! how BuildKit tells `<<EOF` (expand) from `<<"EOF"` or `<<'EOF'` (keep literal).
//! Both passes use the [`crate::shell`] lexer, as BuildKit uses its own, with an empty
//! environment and unset variables kept as written, so `$VAR` in a delimiter stays.

use std::borrow::Cow;
use std::collections::BTreeMap;

use crate::shell::Lex;
use crate::syntax::line::{Text, class};

/// A heredoc marker found in a word.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Marker {
    /// The delimiter, quotes and escapes removed: a range of the word (or of the line,
    /// from [`markers`]) when it is written there as is.
    pub(crate) name: Text,
    pub(crate) fd: u32,
    pub(crate) chomp: bool,
    pub(crate) expand: bool,
}

/// The empty environment both passes run with (unset variables are kept as written).
fn no_env() -> BTreeMap<String, String> {
    BTreeMap::new()
}

/// Reads a heredoc marker out of one word (`^(\d*)<<(-?)([^<]*)$`).
pub(crate) fn parse_marker(word: &str) -> Option<Marker> {
    let digits = word.bytes().take_while(u8::is_ascii_digit).count();
    let rest = word[digits..].strip_prefix("<<")?;
    let (chomp, rest) = match rest.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, rest),
    };
    if rest.is_empty() || rest.contains('<') {
        return None;
    }
    let fd = word[..digits].parse().unwrap_or(0);
    if let Some((at, len, expand)) = plain_name(rest) {
        let start = word.len() - rest.len() + at;
        return Some(Marker {
            name: Text::Slice(start, start + len),
            fd,
            chomp,
            expand,
        });
    }
    let lex = Lex::new('\\').with_skip_unset_env(true);
    let words = lex.process_words(rest, &no_env()).ok()?;
    let raw = lex
        .with_raw_quotes(true)
        .process_words(rest, &no_env())
        .ok()?;
    let ([name], [raw]) = (words.as_slice(), raw.as_slice()) else {
        return None;
    };
    let quotes = |s: &str| s.chars().filter(|&c| c == '\'' || c == '"').count();
    Some(Marker {
        expand: quotes(name) == quotes(raw),
        fd,
        chomp,
        name: Text::Owned(name.clone()),
    })
}

/// Whether the lexer would give `text` back as one word, unchanged: no quote, escape,
/// `$` or whitespace in it.
fn is_plain(text: &str) -> bool {
    !text.is_empty()
        && !text
            .chars()
            .any(|c| matches!(c, '\'' | '"' | '\\' | '$') || c.is_whitespace())
}

/// The name of a delimiter the lexer is not needed for, as its offset and length in
/// `rest`, and whether the body expands: `EOF` (expands), `"EOF"` or `'EOF'` (kept
/// literal) with a plain name inside.
fn plain_name(rest: &str) -> Option<(usize, usize, bool)> {
    if is_plain(rest) {
        return Some((0, rest.len(), true));
    }
    let quoted = ["\"", "'"]
        .into_iter()
        .find_map(|q| rest.strip_prefix(q).and_then(|inner| inner.strip_suffix(q)))?;
    is_plain(quoted).then_some((1, quoted.len(), false))
}

/// Every heredoc marker on an instruction line, in order. The line is cut into words
/// with quotes and escapes kept, so a quoted `"<<EOF"` is no marker; a line whose
/// quotes do not balance has none.
pub(crate) fn markers(line: &str) -> Markers<'_> {
    // One pass over the quotes, escapes and `$`s of the line: any escape or `$` calls
    // for the lexer; else the words are cut here, if the quotes balance. Quotes are
    // ASCII, and no byte of a multi-byte character is one.
    let bytes = line.as_bytes();
    let mut quote = None;
    let mut at = 0;
    loop {
        at = class::find(bytes, at, class::QUOTE | class::BACKSLASH | class::DOLLAR);
        let Some(&b) = bytes.get(at) else {
            break;
        };
        at += 1;
        match quote {
            _ if b == b'\\' || b == b'$' => return Markers::Lexed(lexed_markers(line).into_iter()),
            Some(q) if b == q => quote = None,
            Some(_) => {}
            None => quote = Some(b),
        }
    }
    Markers::Raw(quote.is_none().then_some(RawWords { line, pos: 0 }))
}

/// The heredoc markers of a line, read as the line's words are cut.
pub(crate) enum Markers<'a> {
    /// From words cut without the lexer (`None` when the quotes do not balance).
    Raw(Option<RawWords<'a>>),
    /// Found by the lexer.
    Lexed(std::vec::IntoIter<Marker>),
}

impl Iterator for Markers<'_> {
    type Item = Marker;

    fn next(&mut self) -> Option<Marker> {
        match self {
            Markers::Raw(words) => words.as_mut()?.find_map(|(at, word)| {
                let marker = parse_marker(word)?;
                Some(Marker {
                    name: Text::Slice(at, at + word.len()).part(marker.name),
                    ..marker
                })
            }),
            Markers::Lexed(markers) => markers.next(),
        }
    }
}

/// [`markers`] with the line cut by the shell lexer (whose words are copies, so the
/// names are too).
fn lexed_markers(line: &str) -> Vec<Marker> {
    Lex::new('\\')
        .with_raw_quotes(true)
        .with_raw_escapes(true)
        .with_skip_unset_env(true)
        .process_words(line, &no_env())
        .unwrap_or_default()
        .into_iter()
        .filter_map(|word| {
            let marker = parse_marker(&word)?;
            Some(Marker {
                name: Text::Owned(word).part(marker.name),
                ..marker
            })
        })
        .collect()
}

/// The words of a line without escapes or `$`, quotes kept, as the lexer in raw mode
/// cuts them (at whitespace outside quotes), with their offsets; made by [`markers`]
/// once it knows the quotes balance. ASCII bytes are tested as they are, other
/// characters decoded only to ask whether they are whitespace.
pub(crate) struct RawWords<'a> {
    line: &'a str,
    pos: usize,
}

impl<'a> Iterator for RawWords<'a> {
    type Item = (usize, &'a str);

    fn next(&mut self) -> Option<(usize, &'a str)> {
        let line = self.line;
        let bytes = line.as_bytes();
        let mut start = None;
        loop {
            if start.is_some() {
                // Within a word, skip what neither ends it nor opens a quote.
                self.pos = class::find(bytes, self.pos, class::SPACE | class::QUOTE | class::HIGH);
            }
            let Some(&b) = bytes.get(self.pos) else {
                break;
            };
            let i = self.pos;
            let space = match b {
                0x80.. => {
                    let c = line[i..].chars().next()?;
                    self.pos += c.len_utf8();
                    c.is_whitespace()
                }
                _ => {
                    self.pos += 1;
                    matches!(b, b'\t'..=b'\r' | b' ')
                }
            };
            if space {
                if let Some(s) = start {
                    return Some((s, &line[s..i]));
                }
                continue;
            }
            start.get_or_insert(i);
            if b == b'\'' || b == b'"' {
                // Up to the closing quote (or the end): no byte of a multi-byte
                // character is one.
                self.pos = bytes[self.pos..]
                    .iter()
                    .position(|&c| c == b)
                    .map_or(bytes.len(), |at| self.pos + at + 1);
            }
        }
        start.map(|s| (s, &line[s..]))
    }
}

/// Removes leading tabs from every line, as `<<-` asks: borrowed when no line has any.
pub(crate) fn chomp(content: &str) -> Cow<'_, str> {
    if !(content.starts_with('\t') || content.contains("\n\t")) {
        return Cow::Borrowed(content);
    }
    let mut out = String::with_capacity(content.len());
    for line in content.split_inclusive('\n') {
        out.push_str(line.trim_start_matches('\t'));
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A marker with its name resolved against `line`.
    #[derive(Debug, PartialEq, Eq)]
    struct M {
        name: String,
        fd: u32,
        chomp: bool,
        expand: bool,
    }

    fn m(name: &str, fd: u32, chomp: bool, expand: bool) -> M {
        M {
            name: name.into(),
            fd,
            chomp,
            expand,
        }
    }

    fn markers(line: &str) -> Vec<M> {
        resolve(line, super::markers(line))
    }

    fn lexed_markers(line: &str) -> Vec<M> {
        resolve(line, super::lexed_markers(line))
    }

    fn resolve(line: &str, markers: impl IntoIterator<Item = Marker>) -> Vec<M> {
        markers
            .into_iter()
            .map(|marker| M {
                name: marker.name.get(line).to_owned(),
                fd: marker.fd,
                chomp: marker.chomp,
                expand: marker.expand,
            })
            .collect()
    }

    #[test]
    fn markers_on_lines() {
        assert_eq!(markers("RUN <<EOF"), [m("EOF", 0, false, true)]);
        assert_eq!(
            markers("RUN 3<<-'E1' cat <<\"E2\" > x"),
            [m("E1", 3, true, false), m("E2", 0, false, false)]
        );
        assert_eq!(markers("RUN echo '<<EOF'"), []);
        assert_eq!(markers("RUN echo \"<<EOF"), []);
        assert_eq!(markers("RUN cat <<EOF>out"), [m("EOF>out", 0, false, true)]);
        assert_eq!(markers("RUN cat <<<EOF <<- <<"), []);
        assert_eq!(markers("RUN x <<E\\OF"), [m("EOF", 0, false, true)]);
        assert_eq!(markers("RUN x <<E\"O\"F"), [m("EOF", 0, false, false)]);
        assert_eq!(
            markers("COPY <<-\"A B\" 'x <<C' <<\"D\"E /d"),
            [m("A B", 0, true, false), m("DE", 0, false, false)]
        );
        assert_eq!(markers("COPY <<A \"x"), []);
    }

    #[test]
    fn raw_words_cut_as_the_lexer_does() {
        for line in [
            "RUN <<EOF",
            "COPY <<-\"CONF\" /etc/a.conf",
            "RUN 3<<'A' cat <<\"B C\" x<<D",
            "RUN a'b <<c'd <<e\"f\" \u{a0}<<G\u{2003}<<H",
            "RUN \"\" '' <<\"\" <<''",
            "RUN echo \"<<EOF",
            "RUN echo '<<EOF\"' <<X",
            "RUN \"<<A\" 'b <<C",
            "COPY <<A\u{e9}\u{a0}<<B 'x\u{e9}' \"<<y\" /d",
        ] {
            assert_eq!(markers(line), lexed_markers(line), "{line}");
        }
    }

    #[test]
    fn chomp_strips_leading_tabs_only() {
        assert_eq!(chomp("\t\ta\n \tb\n\tc"), "a\n \tb\nc");
    }
}
