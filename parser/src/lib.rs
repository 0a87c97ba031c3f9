//! Dockerfile text → typed AST.
//!
//! The parser is layered as BuildKit's Dockerfile frontend is, so that each layer can be
//! held against BuildKit's own behaviour in isolation:
//!
//! 1. syntax — parser directives, lines, continuations, comments, heredocs → raw nodes;
//! 2. instructions — raw nodes → typed instructions with validated flags;
//! 3. [`shell`] — word lexing and `$VAR` expansion, used later by the solver with the
//!    build's ARG/ENV values.
//!
//! The crate performs no I/O.
#![deny(missing_docs)]
pub mod shell;
