//! `kiln store check [--repair]`: is the store whole, and if not, what is broken where.
//!
//! A plain check shares the store with running builds and changes nothing. `--repair`
//! waits for the store to be free (like `kiln prune`) and removes what is damaged and
//! can be made again: corrupt blobs, incomplete snapshots, cache records that lost their
//! blobs, leftovers of killed processes (their containers and mounts included). Damaged images are reported and kept; the exit
//! status is non-zero while any problem remains.

use std::io::{self, Write};
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context as _;
use kiln_cache::CheckReport;
use kiln_executor::RuncExecutor;

use crate::state::State;

/// `kiln store …`.
#[derive(clap::Subcommand)]
pub enum StoreCommand {
    /// Verify blobs, snapshots, cache records and images; exit non-zero on problems.
    Check(CheckArgs),
}

/// `kiln store check`.
#[derive(clap::Args)]
pub struct CheckArgs {
    /// Remove corrupt blobs, incomplete snapshots and dangling cache records (damaged
    /// images are only reported).
    #[arg(long)]
    repair: bool,
}

/// Runs `kiln store …`.
pub fn run(root: &Path, command: StoreCommand) -> anyhow::Result<ExitCode> {
    match command {
        StoreCommand::Check(args) => check(root, args),
    }
}

fn check(root: &Path, args: CheckArgs) -> anyhow::Result<ExitCode> {
    let mut out = io::stdout().lock();
    let executor_dir = root.join("executor-v1");
    if args.repair && executor_dir.exists() {
        // Containers and mounts of killed builds pin the scratch they ran on.
        let cleaned = RuncExecutor::new(&executor_dir)
            .cleanup_stale()
            .context("cleaning up steps of builds that were killed")?;
        if cleaned > 0 {
            writeln!(
                out,
                "repaired: removed {cleaned} steps left by killed builds"
            )?;
        }
    }
    let state = State::open(root)?;
    let report = if args.repair {
        state.store.lock_exclusive()?.repair()?
    } else {
        state.store.check()?
    };
    print(&report, &mut out)?;
    Ok(if report.unrepaired().next().is_none() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn print(report: &CheckReport, out: &mut impl Write) -> io::Result<()> {
    for finding in &report.findings {
        let label = if finding.repaired {
            "repaired"
        } else {
            "problem"
        };
        writeln!(out, "{label}: {}", finding.problem)?;
    }
    let c = report.checked;
    let remaining = report.unrepaired().count();
    writeln!(
        out,
        "checked {} blobs, {} snapshots, {} cache records, {} images: {}",
        c.blobs,
        c.snapshots,
        c.records,
        c.images,
        match (report.findings.len(), remaining) {
            (0, _) => "no problems".to_owned(),
            (found, 0) => format!("{found} problems, all repaired"),
            (found, left) if found == left => format!("{found} problems"),
            (found, left) => format!("{found} problems, {left} not repaired"),
        }
    )
}
