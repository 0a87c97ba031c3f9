//! Source locations.
//!
//! A [`Span`] names a place in the Dockerfile text twice over: as 1-based line and
//! column, which is what people and the solver's error messages want ("step failed at
//! Dockerfile:12"), and as a byte range, which is what a diagnostic renderer needs to
//! draw a caret. Both are computed once, at parse time, from a [`LineIndex`].

use std::cell::Cell;

use serde::Serialize;

/// A range of the Dockerfile text.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize)]
pub struct Span {
    /// 1-based line of the first byte.
    pub line: usize,
    /// 1-based column (in characters) of the first byte.
    pub column: usize,
    /// 1-based line of the last byte (equal to `line` for one-line spans).
    pub end_line: usize,
    /// Byte offset of the first byte.
    pub start: usize,
    /// Byte offset one past the last byte.
    pub end: usize,
}

impl Span {
    /// The number of bytes covered.
    pub fn len(&self) -> usize {
        self.end - self.start
    }

    /// Whether the span covers no byte (a position).
    pub fn is_empty(&self) -> bool {
        self.end == self.start
    }
}

impl From<Span> for miette::SourceSpan {
    fn from(span: Span) -> miette::SourceSpan {
        (span.start, span.len()).into()
    }
}

/// Where each line of a text starts, to turn byte offsets into lines and columns.
pub(crate) struct LineIndex<'a> {
    text: &'a str,
    starts: Vec<usize>,
    /// The line last looked up: parsing asks about nearby offsets in order, so most
    /// lookups are answered without a search.
    last: Cell<usize>,
    /// The last column computed, as `(offset, column)`: columns further along the same
    /// line are counted from there, so the many flags of one long line cost linear time.
    last_column: Cell<(usize, usize)>,
}

/// Calls `f` with the offset of every `\n` in `bytes`, in order, testing eight bytes at
/// a time: most words hold none.
fn for_each_newline(bytes: &[u8], mut f: impl FnMut(usize)) {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);
    const NEWLINES: u64 = u64::from_ne_bytes([b'\n'; 8]);
    let mut chunks = bytes.chunks_exact(8);
    let mut at = 0;
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let x = u64::from_ne_bytes(word) ^ NEWLINES;
        if x.wrapping_sub(ONES) & !x & HIGHS != 0 {
            for (i, &b) in chunk.iter().enumerate() {
                if b == b'\n' {
                    f(at + i);
                }
            }
        }
        at += 8;
    }
    for (i, &b) in chunks.remainder().iter().enumerate() {
        if b == b'\n' {
            f(at + i);
        }
    }
}

impl<'a> LineIndex<'a> {
    pub(crate) fn new(text: &'a str) -> LineIndex<'a> {
        let mut starts = Vec::with_capacity(text.len() / 32 + 1);
        starts.push(0);
        for_each_newline(text.as_bytes(), |i| starts.push(i + 1));
        LineIndex {
            text,
            starts,
            last: Cell::new(1),
            last_column: Cell::new((0, 1)),
        }
    }

    /// The number of lines.
    pub(crate) fn line_count(&self) -> usize {
        self.starts.len()
    }

    /// The offset where 1-based line `line` starts, if there is such a line.
    pub(crate) fn line_start(&self, line: usize) -> Option<usize> {
        self.starts.get(line - 1).copied()
    }

    /// Whether byte `offset` is on 1-based line `line`.
    fn holds(&self, line: usize, offset: usize) -> bool {
        self.starts[line - 1] <= offset && self.starts.get(line).is_none_or(|&next| offset < next)
    }

    /// The 1-based line holding byte `offset`.
    fn line_of(&self, offset: usize) -> usize {
        let hint = self.last.get();
        let line = [hint, hint + 1]
            .into_iter()
            .find(|&l| l <= self.starts.len() && self.holds(l, offset))
            .unwrap_or_else(|| self.starts.partition_point(|&s| s <= offset).max(1));
        self.last.set(line);
        line
    }

    /// `span` reaching on to byte `end`, if that is further.
    pub(crate) fn extend(&self, span: Span, end: usize) -> Span {
        let end = end.min(self.text.len());
        if end <= span.end {
            return span;
        }
        Span {
            end_line: self.line_of(end - 1),
            end,
            ..span
        }
    }

    /// The span of bytes `start..end`.
    pub(crate) fn span(&self, start: usize, end: usize) -> Span {
        let start = start.min(self.text.len());
        let end = end.clamp(start, self.text.len());
        let line = self.line_of(start);
        let line_start = self.starts[line - 1];
        let (from, base) = match self.last_column.get() {
            (offset, column) if line_start <= offset && offset <= start => (offset, column),
            _ => (line_start, 1),
        };
        let column = self
            .text
            .get(from..start)
            .map_or(1, |s| s.chars().count() + base);
        self.last_column.set((start, column));
        let end_line = if end > start {
            self.line_of(end - 1)
        } else {
            line
        };
        Span {
            line,
            column,
            end_line,
            start,
            end,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newlines_found_at_every_offset() {
        for len in 0..40 {
            let text: Vec<u8> = (0..len)
                .map(|i| if i % 3 == 1 { b'\n' } else { b'a' })
                .collect();
            let mut found = Vec::new();
            for_each_newline(&text, |i| found.push(i));
            let expected: Vec<usize> = (0..len).filter(|i| i % 3 == 1).collect();
            assert_eq!(found, expected);
        }
    }

    #[test]
    fn lines_and_columns_count_characters() {
        let idx = LineIndex::new("ab\néx y\n");
        let s = idx.span(6, 7);
        assert_eq!((s.line, s.column, s.end_line), (2, 3, 2));
        let all = idx.span(0, 9);
        assert_eq!((all.line, all.column, all.end_line), (1, 1, 2));
        assert_eq!(idx.extend(idx.span(0, 2), 9), all);
        assert_eq!(idx.extend(all, 3), all);
    }
}
