//! Dockerfile text → typed AST.
//!
//! The parser is layered as BuildKit's Dockerfile frontend is, so that each layer can be
//! held against BuildKit's own behaviour in isolation:
//!
//! 1. [`syntax`] — parser directives, lines, continuations, comments, heredocs → raw
//!    nodes ([`syntax::Node`], BuildKit's `parser.Node`, printable in BuildKit's
//!    golden-test format with [`syntax::SyntaxTree::dump`]);
//! 2. [`instructions`] — raw nodes → typed instructions with validated flags, grouped
//!    into stages ([`Dockerfile`]);
//! 3. [`shell`] — word lexing and `$VAR` expansion, used later by the solver with the
//!    build's ARG/ENV values.
//!
//! Every node and instruction carries a [`Span`] (line, column, byte range), and every
//! error is a [`ParseError`] with the span of the offending text, renderable as a
//! `miette` diagnostic. The crate performs no I/O.
//!
//! The reference is BuildKit's Dockerfile frontend: what it accepts parses, what it
//! rejects fails. Where kiln deliberately differs:
//! - values BuildKit checks only when it dispatches an instruction (mount options,
//!   `--chmod`) are checked at parse time when they are literal; with a `$` in them they
//!   are kept as [`instructions::Expandable::Deferred`] for the solver to check;
//! - `--flag` words are read character by character; BuildKit reads them byte by byte,
//!   which garbles non-ASCII text in flag values (and treats the bytes 0x85 and 0xA0
//!   of multi-byte characters as spaces);
//! - a JSON array nested deeper than 128 levels is read as shell form; BuildKit (up to
//!   10,000 levels) rejects it as "not an array of strings";
//! - input must be UTF-8 (`parse` takes `&str`).
#![deny(missing_docs)]
mod error;
pub mod golang;
pub mod instructions;
pub mod shell;
mod span;
pub mod syntax;

pub use error::{ErrorKind, ParseError};
pub use instructions::{Command, Dockerfile, Instruction, Stage};
pub use span::{MAX_TEXT_LEN, Span};

/// Parses a Dockerfile. The result borrows its text from `text` (see [`Dockerfile`]);
/// [`Dockerfile::into_owned`] detaches it.
pub fn parse(text: &str) -> Result<Dockerfile<'_>, ParseError> {
    instructions::build(text)
}
