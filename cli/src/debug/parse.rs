//! `kiln debug parse` (being written).

use std::process::ExitCode;

/// Arguments of `kiln debug parse`.
#[derive(clap::Args)]
pub struct ParseArgs {}

/// Runs `kiln debug parse`.
pub fn run(_args: ParseArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("kiln debug parse is being written")
}
