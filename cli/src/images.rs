//! `kiln images`, `kiln inspect`, `kiln tag` and `kiln rmi`: the image store as a user
//! sees it, with Docker's columns and Docker's rules for names.
//!
//! `rmi` only drops names (and the records of images left without one); the blobs
//! they held are removed by `kiln prune`, which knows what else still needs them.

use std::collections::BTreeSet;
use std::io::{self, Write};
use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use jiff::Timestamp;
use kiln_image::ImageRef;
use kiln_image::oci_spec::image::ImageManifest;
use kiln_image::store::{ImageRecord, ImageTarget};
use serde_json::json;

use crate::human::{self, OutputFormat, Table};
use crate::state::{State, display_name};

/// `kiln images`.
#[derive(clap::Args)]
pub struct ImagesArgs {
    /// Only show image IDs.
    #[arg(short, long)]
    quiet: bool,
    /// Show full image IDs.
    #[arg(long)]
    no_trunc: bool,
    /// Print a table or one JSON object per line.
    #[arg(long, value_enum, default_value_t)]
    format: OutputFormat,
}

/// `kiln inspect`.
#[derive(clap::Args)]
pub struct InspectArgs {
    /// Images to show (name, ID or digest).
    #[arg(required = true, value_name = "IMAGE")]
    images: Vec<String>,
}

/// `kiln tag`.
#[derive(clap::Args)]
pub struct TagArgs {
    /// The image to name (name, ID or digest).
    source: String,
    /// The new name, `repository[:tag]`.
    target: String,
}

/// `kiln rmi`.
#[derive(clap::Args)]
pub struct RmiArgs {
    /// Remove an image by ID even when several names point at it.
    #[arg(short, long)]
    force: bool,
    /// Images to remove (name, ID or digest).
    #[arg(required = true, value_name = "IMAGE")]
    images: Vec<String>,
}

/// An image record with what `images` and `inspect` show of it.
struct Shown {
    record: ImageRecord,
    manifest: ImageManifest,
    config: serde_json::Value,
    created: Timestamp,
    size: u64,
}

fn show(state: &State, record: ImageRecord) -> anyhow::Result<Shown> {
    let manifest: ImageManifest = state.read_json(&record.image.digest, "manifest")?;
    let config: serde_json::Value = state.read_json(&record.image.config, "config")?;
    let created = created_of(&config).unwrap_or(record.created);
    let size = manifest.layers().iter().map(|l| l.size()).sum();
    Ok(Shown {
        record,
        manifest,
        config,
        created,
        size,
    })
}

/// The config's `created`, when it has a valid one.
pub fn created_of(config: &serde_json::Value) -> Option<Timestamp> {
    config.get("created")?.as_str()?.parse().ok()
}

/// The ID column: 12 hex characters, or the whole digest with `--no-trunc`.
pub fn id_text(record: &ImageTarget, no_trunc: bool) -> String {
    if no_trunc {
        record.config.to_string()
    } else {
        record.config.short().to_owned()
    }
}

/// Runs `kiln images`.
pub fn images(root: &Path, args: ImagesArgs) -> anyhow::Result<ExitCode> {
    let state = State::open(root)?;
    let mut shown = state
        .images
        .read()?
        .records()
        .iter()
        .cloned()
        .map(|r| show(&state, r))
        .collect::<anyhow::Result<Vec<_>>>()?;
    shown.sort_by_key(|s| std::cmp::Reverse(s.created));
    let now = Timestamp::now();
    let mut out = io::stdout().lock();
    if args.quiet {
        for s in &shown {
            writeln!(out, "{}", id_text(&s.record.image, args.no_trunc))?;
        }
        return Ok(ExitCode::SUCCESS);
    }
    let columns: Vec<[String; 5]> = shown
        .iter()
        .map(|s| {
            let (repo, tag) = match &s.record.name {
                Some(name) => (
                    name.familiar().to_owned(),
                    name.tag().unwrap_or("<none>").to_owned(),
                ),
                None => ("<none>".to_owned(), "<none>".to_owned()),
            };
            [
                repo,
                tag,
                id_text(&s.record.image, args.no_trunc),
                human::ago(s.created, now),
                human::size(s.size),
            ]
        })
        .collect();
    match args.format {
        OutputFormat::Table => {
            let mut table = Table::new(&["REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE"]);
            for row in columns {
                table.row(row.into());
            }
            table.write(&mut out)?;
        }
        OutputFormat::Json => {
            for (s, [repo, tag, id, since, size]) in shown.iter().zip(columns) {
                let line = json!({
                    "Repository": repo,
                    "Tag": tag,
                    "ID": id,
                    "Digest": s.record.image.digest.to_string(),
                    "CreatedAt": s.created.strftime("%Y-%m-%d %H:%M:%S +0000 UTC").to_string(),
                    "CreatedSince": since,
                    "Size": size,
                });
                writeln!(out, "{line}")?;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs `kiln inspect`: a JSON array with, for each image, its names, manifest and
/// config as stored.
pub fn inspect(root: &Path, args: InspectArgs) -> anyhow::Result<ExitCode> {
    let state = State::open(root)?;
    let images = state.images.read()?;
    let mut out = Vec::new();
    for query in &args.images {
        let resolved = images.resolve(query)?;
        let names: Vec<String> = images
            .records_of(&resolved.image.digest)
            .into_iter()
            .filter_map(|r| r.name.as_ref().map(display_name))
            .collect();
        let record = images
            .records_of(&resolved.image.digest)
            .into_iter()
            .next()
            .cloned()
            .expect("a resolved image has a record");
        let s = show(&state, record)?;
        out.push(json!({
            "Id": resolved.image.config.to_string(),
            "RepoTags": names,
            "Created": s.created.to_string(),
            "Size": s.size,
            "Descriptor": resolved.image.descriptor(),
            "Manifest": s.manifest,
            "Config": s.config,
        }));
    }
    let mut stdout = io::stdout().lock();
    serde_json::to_writer_pretty(&mut stdout, &out)?;
    writeln!(stdout)?;
    Ok(ExitCode::SUCCESS)
}

/// Runs `kiln tag`.
pub fn tag(root: &Path, args: TagArgs) -> anyhow::Result<ExitCode> {
    let state = State::open(root)?;
    let target: ImageRef = args
        .target
        .parse()
        .with_context(|| format!("invalid target name {:?}", args.target))?;
    state.images.update(|images| -> anyhow::Result<()> {
        let source = images.resolve(&args.source)?;
        images.tag(target, source.image, Timestamp::now())?;
        Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}

/// Runs `kiln rmi`; every argument is tried, and the command fails if any could not be
/// removed.
pub fn rmi(root: &Path, args: RmiArgs) -> anyhow::Result<ExitCode> {
    let state = State::open(root)?;
    let mut failed = false;
    let mut out = io::stdout().lock();
    for query in &args.images {
        match state
            .images
            .update(|images| remove_one(images, query, args.force))
        {
            Ok(lines) => {
                for line in lines {
                    writeln!(out, "{line}")?;
                }
            }
            Err(err) => {
                eprintln!("kiln: error: {err:#}");
                failed = true;
            }
        }
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// Removes one name, or one image with all its names; returns Docker's report lines.
fn remove_one(
    images: &mut kiln_image::store::Images,
    query: &str,
    force: bool,
) -> anyhow::Result<Vec<String>> {
    let resolved = images.resolve(query)?;
    let mut lines = Vec::new();
    let removed: Vec<ImageRecord> = match &resolved.name {
        Some(name) => vec![images.untag(name)?],
        None => {
            let names: BTreeSet<_> = images
                .records_of(&resolved.image.digest)
                .into_iter()
                .filter_map(|r| r.name.clone())
                .collect();
            if names.len() > 1 && !force {
                bail!(
                    "unable to delete {} (must be forced): image is referenced in {} names",
                    resolved.image.config.short(),
                    names.len()
                );
            }
            images.remove(&resolved.image.digest)
        }
    };
    lines.extend(
        removed
            .iter()
            .filter_map(|r| r.name.as_ref().map(display_name))
            .map(|n| format!("Untagged: {n}")),
    );
    if images.records_of(&resolved.image.digest).is_empty() {
        lines.push(format!("Deleted: {}", resolved.image.config));
    }
    Ok(lines)
}
