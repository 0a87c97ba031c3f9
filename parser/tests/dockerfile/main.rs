//! Tests of the Dockerfile parser as a whole, one module per area.

mod golden;
mod limits;
mod props;
mod typed;
