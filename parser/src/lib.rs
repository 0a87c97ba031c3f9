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
#![deny(missing_docs)]
mod error;
mod golang;
pub mod instructions;
pub mod shell;
mod span;
pub mod syntax;

pub use error::{ErrorKind, ParseError};
pub use instructions::{Command, Dockerfile, Instruction, Stage};
pub use span::Span;

/// Parses a Dockerfile.
pub fn parse(text: &str) -> Result<Dockerfile, ParseError> {
    instructions::build(syntax::parse_syntax(text)?)
}
