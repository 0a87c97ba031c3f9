//! The `kiln` command: clap arguments → resolved settings → commands.
//!
//! Library crates return typed errors; this binary lifts them into `anyhow` and prints
//! them once, with their causes, as `kiln: error: …`.

mod debug;
mod root;

use std::io;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// kiln: a Dockerfile build engine.
#[derive(Parser)]
#[command(name = "kiln", version, about, propagate_version = true)]
struct Cli {
    /// Where kiln keeps images, layers and its cache.
    #[arg(long, global = true, env = "KILN_ROOT", value_name = "DIR")]
    root: Option<std::path::PathBuf>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Tools for looking inside kiln's parser.
    #[command(subcommand)]
    Debug(debug::DebugCommand),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let _root = root::resolve(cli.root);
    let result = match cli.command {
        Command::Debug(cmd) => debug::run(cmd),
    };
    match result {
        Ok(code) => code,
        Err(err) if is_broken_pipe(&err) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("kiln: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// Output cut short by a closed pipe (`kiln images | head -1`) is not a failure.
fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        cause
            .downcast_ref::<io::Error>()
            .is_some_and(|e| e.kind() == io::ErrorKind::BrokenPipe)
    })
}
