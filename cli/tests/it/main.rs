//! End-to-end tests of the `kiln` binary, one module per area.

mod archives;
mod build;
mod compat;
mod debug_expand;
mod debug_parse;
#[path = "../../../image/tests/support/faulty_proxy.rs"]
mod faulty_proxy;
mod hostile;
mod images;
mod limits;
mod registry;
#[path = "../../../image/tests/support/registry.rs"]
mod registry_support;
mod reliability;
mod support;
