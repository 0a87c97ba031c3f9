//! `kiln debug …`: tools for people (and tests) chasing a surprise in the parser or the
//! shell expander.

mod expand;
mod parse;

use std::process::ExitCode;

use clap::Subcommand;

pub(crate) use parse::diagnostic;

/// The `kiln debug` subcommands.
#[derive(Subcommand)]
pub enum DebugCommand {
    /// Parse a Dockerfile and print its AST.
    Parse(parse::ParseArgs),
    /// Expand shell words as the Dockerfile frontend does, from JSON requests on stdin.
    Expand(expand::ExpandArgs),
}

/// Runs one `kiln debug` subcommand.
pub fn run(cmd: DebugCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        DebugCommand::Parse(args) => parse::run(args),
        DebugCommand::Expand(args) => expand::run(args),
    }
}
