//! `kiln prune` and `kiln du`: what the store holds, and giving back what nothing needs.
//!
//! Tagged images are the collector's strong roots. `prune` first drops untagged image
//! records (images that lost their last name to a re-tag), as `docker image prune` does,
//! then collects under the store's exclusive lock, so no build running beside it loses
//! a blob it has written but not yet tagged.

use std::io::{self, Write};
use std::path::Path;
use std::process::ExitCode;

use kiln_cache::gc::{GcOptions, GcRoots};
use kiln_cache::{CacheIndex, ChainId, ContentStore};
use kiln_image::Digest;
use kiln_image::store::Images;
use serde_json::json;

use crate::human::{self, OutputFormat, Table};
use crate::state::State;

/// `kiln prune`.
#[derive(clap::Args)]
pub struct PruneArgs {
    /// Also remove what only the build cache keeps.
    #[arg(short, long)]
    all: bool,
    /// Stop once the store takes at most this much (`10GB`, `512MB`, bytes).
    #[arg(long, value_name = "SIZE", value_parser = human::parse_size)]
    keep_storage: Option<u64>,
}

/// `kiln du`.
#[derive(clap::Args)]
pub struct DuArgs {
    /// Print a table or one JSON object.
    #[arg(long, value_enum, default_value_t)]
    format: OutputFormat,
}

/// The collector's roots: every image the store names, and every layer (and snapshot
/// chain) the build cache index refers to.
fn roots(images: &Images, index: &CacheIndex) -> anyhow::Result<GcRoots> {
    let mut cache = Vec::new();
    for (_, record) in index.all()? {
        for layer in &record.layers {
            cache.push(layer.blob.clone());
        }
        let chains = ChainId::prefixes(record.layers.iter().map(|l| &l.diff_id));
        cache.extend(chains.into_iter().map(|c| c.digest().clone()));
    }
    Ok(GcRoots {
        tagged: images
            .records()
            .iter()
            .map(|r| r.image.digest.clone())
            .collect(),
        cache,
    })
}

/// Drops cache records whose layers a collection removed, so no build trusts them.
fn forget_collected(index: &CacheIndex, content: &ContentStore) -> anyhow::Result<()> {
    let stale: Vec<Digest> = index
        .all()?
        .into_iter()
        .filter(|(_, record)| record.layers.iter().any(|l| !content.contains(&l.blob)))
        .map(|(key, _)| key)
        .collect();
    index.remove(&stale)?;
    Ok(())
}

/// Runs `kiln prune`.
pub fn prune(root: &Path, args: PruneArgs) -> anyhow::Result<ExitCode> {
    let state = State::open(root)?;
    let exclusive = state.store.lock_exclusive()?;
    let removed = state.images.update(|images| -> anyhow::Result<_> {
        let untagged: Vec<_> = images
            .records()
            .iter()
            .filter(|r| r.name.is_none())
            .map(|r| r.image.clone())
            .collect();
        for image in &untagged {
            images.remove(&image.digest);
        }
        Ok(untagged)
    })?;
    let index = exclusive.store().index();
    let roots = roots(&state.images.read()?, &index)?;
    let report = exclusive.gc(
        &roots,
        &GcOptions {
            keep: args.keep_storage,
            all: args.all,
        },
    )?;
    forget_collected(&index, exclusive.store().content())?;
    let mut out = io::stdout().lock();
    for image in &removed {
        writeln!(out, "Deleted: {}", image.config)?;
    }
    writeln!(
        out,
        "Total reclaimed space: {}",
        human::size(report.bytes_freed)
    )?;
    Ok(ExitCode::SUCCESS)
}

/// Runs `kiln du`.
pub fn du(root: &Path, args: DuArgs) -> anyhow::Result<ExitCode> {
    let state = State::open(root)?;
    let roots = roots(&state.images.read()?, &state.store.index())?;
    let usage = state.store.disk_usage(&roots)?;
    let mut out = io::stdout().lock();
    match args.format {
        OutputFormat::Table => {
            let mut table = Table::new(&["TYPE", "COUNT", "SIZE"]);
            for (kind, count, bytes) in [
                ("Blobs", usage.blobs.count, usage.blobs.bytes),
                ("Snapshots", usage.snapshots.count, usage.snapshots.bytes),
                ("Scratch", usage.scratch.entries, usage.scratch.bytes),
            ] {
                table.row(vec![kind.to_owned(), count.to_string(), human::size(bytes)]);
            }
            table.write(&mut out)?;
            writeln!(
                out,
                "Reclaimable: {} ({} with --all)",
                human::size(usage.reclaimable),
                human::size(usage.reclaimable_all)
            )?;
        }
        OutputFormat::Json => {
            let line = json!({
                "Blobs": {"Count": usage.blobs.count, "Bytes": usage.blobs.bytes},
                "Snapshots": {"Count": usage.snapshots.count, "Bytes": usage.snapshots.bytes},
                "Scratch": {"Count": usage.scratch.entries, "Bytes": usage.scratch.bytes},
                "Reclaimable": usage.reclaimable,
                "ReclaimableAll": usage.reclaimable_all,
            });
            writeln!(out, "{line}")?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
