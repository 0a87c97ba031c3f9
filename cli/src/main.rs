//! The `kiln` command: clap arguments → resolved settings → commands.
//!
//! Library crates return typed errors; this binary lifts them into `anyhow` and prints
//! them once, with their causes, as `kiln: error: …`.

mod archive;
mod build;
mod check;
mod debug;
mod history;
mod human;
mod images;
mod import;
mod prune;
mod registry;
mod root;
mod state;
mod transfer;

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

    /// A registry (`host[:port]`) that may be reached over plain HTTP; loopback
    /// registries always may. May be given several times.
    #[arg(
        long = "insecure-registry",
        global = true,
        env = "KILN_INSECURE_REGISTRIES",
        value_delimiter = ',',
        value_name = "HOST"
    )]
    insecure_registries: Vec<String>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Build an image from a Dockerfile and a context.
    Build(Box<build::BuildArgs>),
    /// Tools for looking inside kiln's parser.
    #[command(subcommand)]
    Debug(debug::DebugCommand),
    /// List images.
    Images(images::ImagesArgs),
    /// Show an image's manifest and config as JSON.
    Inspect(images::InspectArgs),
    /// Show the history of an image.
    History(history::HistoryArgs),
    /// Give an image another name.
    Tag(images::TagArgs),
    /// Remove image names, and images left without one.
    Rmi(images::RmiArgs),
    /// Remove untagged images and content nothing refers to.
    Prune(prune::PruneArgs),
    /// Show how much space blobs and snapshots take.
    Du(prune::DuArgs),
    /// Write images to a docker or OCI archive.
    Save(archive::SaveArgs),
    /// Read images from a docker or OCI archive.
    Load(archive::LoadArgs),
    /// Make a one-layer image from a root filesystem tarball.
    Import(import::ImportArgs),
    /// Look after the store: `kiln store check [--repair]`.
    #[command(subcommand)]
    Store(check::StoreCommand),
    /// Download an image from a registry.
    Pull(registry::PullArgs),
    /// Upload an image to a registry.
    Push(registry::PushArgs),
    /// Save credentials for a registry (in Docker's config file).
    Login(registry::LoginArgs),
    /// Remove the saved credentials for a registry.
    Logout(registry::LogoutArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let root = root::resolve(cli.root);
    registry::set_insecure(cli.insecure_registries);
    let result = match cli.command {
        Command::Build(args) => build::run(&root, *args),
        Command::Debug(cmd) => debug::run(cmd),
        Command::Images(args) => images::images(&root, args),
        Command::Inspect(args) => images::inspect(&root, args),
        Command::History(args) => history::run(&root, args),
        Command::Tag(args) => images::tag(&root, args),
        Command::Rmi(args) => images::rmi(&root, args),
        Command::Prune(args) => prune::prune(&root, args),
        Command::Du(args) => prune::du(&root, args),
        Command::Save(args) => archive::save(&root, args),
        Command::Load(args) => archive::load(&root, args),
        Command::Import(args) => import::run(&root, args),
        Command::Store(cmd) => check::run(&root, cmd),
        Command::Pull(args) => registry::pull_command(&root, args),
        Command::Push(args) => registry::push_command(&root, args),
        Command::Login(args) => registry::login(args),
        Command::Logout(args) => registry::logout(args),
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
