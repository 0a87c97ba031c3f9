//! `kiln history IMAGE`: the config's history, newest first, as `docker history` prints
//! it.
//!
//! Entries that made a layer are matched with the manifest's layers in order and show
//! that layer's (stored, so usually compressed) size; the others show `0B`. Only the top
//! entry is the image itself; the others have no image ID of their own (`<missing>`),
//! as for any image Docker pulled or loaded rather than built.

use std::io::{self, Write};
use std::path::Path;
use std::process::ExitCode;

use anyhow::bail;
use jiff::Timestamp;
use kiln_image::config::ImageConfig;
use kiln_image::oci_spec::image::ImageManifest;
use serde_json::json;

use crate::human::{self, OutputFormat, Table};
use crate::images::id_text;
use crate::state::State;

/// How many characters of CREATED BY are shown without `--no-trunc`.
const CREATED_BY_WIDTH: usize = 45;

/// `kiln history`.
#[derive(clap::Args)]
pub struct HistoryArgs {
    /// Only show image IDs.
    #[arg(short, long)]
    quiet: bool,
    /// Show full image IDs and commands.
    #[arg(long)]
    no_trunc: bool,
    /// Print a table or one JSON object per line.
    #[arg(long, value_enum, default_value_t)]
    format: OutputFormat,
    /// The image (name, ID or digest).
    image: String,
}

/// One row, before formatting.
struct Entry {
    id: String,
    created: Option<Timestamp>,
    created_by: String,
    size: u64,
    comment: String,
}

/// Runs `kiln history`.
pub fn run(root: &Path, args: HistoryArgs) -> anyhow::Result<ExitCode> {
    let state = State::open(root)?;
    let resolved = state.resolve(&args.image)?;
    let manifest: ImageManifest = state.read_json(&resolved.image.digest, "manifest")?;
    let config: ImageConfig = state.read_json(&resolved.image.config, "config")?;

    let mut layers = manifest.layers().iter();
    let mut entries = Vec::new();
    for h in &config.history {
        let size = if h.empty_layer {
            0
        } else {
            match layers.next() {
                Some(layer) => layer.size(),
                None => bail!(
                    "image {}: its config's history lists more layers than its manifest",
                    args.image
                ),
            }
        };
        entries.push(Entry {
            id: "<missing>".to_owned(),
            created: h.created.as_deref().and_then(|c| c.parse().ok()),
            created_by: h.created_by.clone().unwrap_or_default().replace('\t', " "),
            size,
            comment: h.comment.clone().unwrap_or_default(),
        });
    }
    entries.reverse();
    if let Some(top) = entries.first_mut() {
        top.id = id_text(&resolved.image, args.no_trunc);
    }

    let now = Timestamp::now();
    let mut out = io::stdout().lock();
    if args.quiet {
        for e in &entries {
            writeln!(out, "{}", e.id)?;
        }
        return Ok(ExitCode::SUCCESS);
    }
    let rows = entries.iter().map(|e| {
        let created_by = if args.no_trunc {
            e.created_by.clone()
        } else {
            human::ellipsis(&e.created_by, CREATED_BY_WIDTH)
        };
        let since = e
            .created
            .map_or_else(|| "N/A".to_owned(), |t| human::ago(t, now));
        (e, created_by, since)
    });
    match args.format {
        OutputFormat::Table => {
            let mut table = Table::new(&["IMAGE", "CREATED", "CREATED BY", "SIZE", "COMMENT"]);
            for (e, created_by, since) in rows {
                table.row(vec![
                    e.id.clone(),
                    since,
                    created_by,
                    human::size(e.size),
                    e.comment.clone(),
                ]);
            }
            table.write(&mut out)?;
        }
        OutputFormat::Json => {
            for (e, created_by, since) in rows {
                let created_at = e
                    .created
                    .map(|t| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
                    .unwrap_or_default();
                let line = json!({
                    "ID": e.id,
                    "CreatedAt": created_at,
                    "CreatedSince": since,
                    "CreatedBy": created_by,
                    "Size": human::size(e.size),
                    "Comment": e.comment,
                });
                writeln!(out, "{line}")?;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
