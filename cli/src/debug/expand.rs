//! `kiln debug expand` (being written).

use std::process::ExitCode;

/// Arguments of `kiln debug expand`.
#[derive(clap::Args)]
pub struct ExpandArgs {}

/// Runs `kiln debug expand`.
pub fn run(_args: ExpandArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("kiln debug expand is being written")
}
