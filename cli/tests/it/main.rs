//! End-to-end tests of the `kiln` binary, one module per area.

mod archives;
mod build;
mod compat;
mod debug_expand;
mod debug_parse;
mod images;
mod support;
