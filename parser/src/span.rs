//! Source locations.
//!
//! A [`Span`] names a place in the Dockerfile text twice over: as 1-based line and
//! column, which is what people and the solver's error messages want ("step failed at
//! Dockerfile:12"), and as a byte range, which is what a diagnostic renderer needs to
//! draw a caret. Both are computed once, at parse time, as the lines are read.

use std::cell::Cell;

use serde::Serialize;

/// A range of the Dockerfile text.
///
/// Its numbers are `u32`, which keeps the AST small (an instruction carries one); the
/// parser refuses text of 4 GiB or more ([`crate::ErrorKind::TooLarge`]), so that every
/// offset, line and column fits.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize)]
pub struct Span {
    /// 1-based line of the first byte.
    pub line: u32,
    /// 1-based column (in characters) of the first byte.
    pub column: u32,
    /// 1-based line of the last byte (equal to `line` for one-line spans).
    pub end_line: u32,
    /// Byte offset of the first byte.
    pub start: u32,
    /// Byte offset one past the last byte.
    pub end: u32,
}

/// The largest Dockerfile the parser takes, in bytes: every offset of a [`Span`] fits
/// in a `u32`.
pub const MAX_TEXT_LEN: usize = u32::MAX as usize;

impl Span {
    /// The span of bytes `start..end`, from line `line` (column `column`) to line
    /// `end_line`. The parser checks the text's length first, so the numbers fit.
    pub(crate) fn new(
        line: usize,
        column: usize,
        end_line: usize,
        start: usize,
        end: usize,
    ) -> Span {
        debug_assert!(end <= MAX_TEXT_LEN && end_line <= MAX_TEXT_LEN);
        Span {
            line: line as u32,
            column: column as u32,
            end_line: end_line as u32,
            start: start as u32,
            end: end as u32,
        }
    }

    /// The number of bytes covered.
    pub fn len(&self) -> usize {
        (self.end - self.start) as usize
    }

    /// Whether the span covers no byte (a position).
    pub fn is_empty(&self) -> bool {
        self.end == self.start
    }

    /// Byte offsets `start..end`, to index the text with.
    pub fn range(&self) -> std::ops::Range<usize> {
        self.start as usize..self.end as usize
    }
}

impl From<Span> for miette::SourceSpan {
    fn from(span: Span) -> miette::SourceSpan {
        (span.start as usize, span.len()).into()
    }
}

/// A physical line's place: its 1-based number and the byte offset where it starts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct LineStart {
    pub(crate) number: usize,
    pub(crate) offset: usize,
    /// The line is known to be ASCII, so that its columns are byte counts.
    pub(crate) ascii: bool,
}

/// Columns of byte offsets, counted in characters from the start of their line. The
/// parser asks about offsets in order, so the last answer is remembered and columns
/// further along the same line are counted from there: the many flags of one long line
/// cost linear time.
pub(crate) struct Columns<'a> {
    text: &'a str,
    /// The last column computed, as `(offset, column)`.
    last: Cell<(usize, usize)>,
}

impl<'a> Columns<'a> {
    pub(crate) fn new(text: &'a str) -> Columns<'a> {
        Columns {
            text,
            last: Cell::new((0, 1)),
        }
    }

    /// The 1-based column of byte `offset` of the line `line`.
    pub(crate) fn column(&self, line: LineStart, offset: usize) -> usize {
        if line.ascii {
            return offset - line.offset + 1;
        }
        let line_start = line.offset;
        let (from, base) = match self.last.get() {
            (at, column) if line_start <= at && at <= offset => (at, column),
            _ => (line_start, 1),
        };
        let column = self
            .text
            .get(from..offset)
            .map_or(1, |s| s.chars().count() + base);
        self.last.set((offset, column));
        column
    }

    /// The span of bytes `start..end`, both on the line `line`.
    pub(crate) fn on_line(&self, line: LineStart, start: usize, end: usize) -> Span {
        Span::new(
            line.number,
            self.column(line, start),
            line.number,
            start,
            end,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_count_characters() {
        let text = "ab\néx y\n";
        let columns = Columns::new(text);
        let line = LineStart {
            number: 2,
            offset: 3,
            ascii: false,
        };
        let s = columns.on_line(line, 6, 7);
        assert_eq!((s.line, s.column, s.end_line), (2, 3, 2));
        assert_eq!(columns.column(line, 7), 4);
        let first = LineStart {
            number: 1,
            offset: 0,
            ascii: false,
        };
        assert_eq!(columns.column(first, 1), 2);
        let ascii = LineStart {
            ascii: true,
            ..first
        };
        assert_eq!(columns.column(ascii, 1), 2);
    }
}
