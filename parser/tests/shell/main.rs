//! Tests of the `shell` module: BuildKit-derived tables, variable tracking, properties.

mod matches;
mod props;
mod table;
