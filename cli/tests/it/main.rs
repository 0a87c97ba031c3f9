//! End-to-end tests of the `kiln` binary, one module per area.

mod archives;
mod debug_expand;
mod images;
mod debug_parse;
mod support;
