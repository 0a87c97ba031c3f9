//! `kiln save` and `kiln load`: images to and from docker-archive and OCI archive tars.
//!
//! `save` writes next to the output file and renames at the end, so a failed save
//! leaves no truncated archive behind. `load` tags only after the whole archive has been
//! checked, and sets all its names in one store update.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufReader, BufWriter, IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use jiff::Timestamp;
use kiln_image::Digest;
use kiln_image::archive::{self, ArchiveFormat, ArchiveImage};
use kiln_image::store::ImageTarget;

use crate::state::{State, display_name};

/// Archive kinds on the command line.
#[derive(Clone, Copy, Debug, Default, clap::ValueEnum)]
pub enum FormatArg {
    /// What `docker load` reads (also a valid OCI layout).
    #[default]
    Docker,
    /// An OCI image layout, as `skopeo` reads `oci-archive:`.
    Oci,
}

/// `kiln save`.
#[derive(clap::Args)]
pub struct SaveArgs {
    /// Write to this file instead of standard output.
    #[arg(short, long, value_name = "FILE")]
    output: Option<PathBuf>,
    /// The kind of archive.
    #[arg(long, value_enum, default_value_t)]
    format: FormatArg,
    /// Images to save (name, ID or digest).
    #[arg(required = true, value_name = "IMAGE")]
    images: Vec<String>,
}

/// `kiln load`.
#[derive(clap::Args)]
pub struct LoadArgs {
    /// Read from this file (a tar, plain or compressed) instead of standard input.
    #[arg(short, long, value_name = "FILE")]
    input: Option<PathBuf>,
}

/// Runs `kiln save`.
pub fn save(root: &Path, args: SaveArgs) -> anyhow::Result<ExitCode> {
    let state = State::open(root)?;
    let images = state.images.read()?;
    // One archive entry per image, with every name asked for; an image asked for by ID
    // is saved without names, as Docker does.
    let mut selected: BTreeMap<Digest, ArchiveImage> = BTreeMap::new();
    for query in &args.images {
        let resolved = images.resolve(query)?;
        let entry = selected
            .entry(resolved.image.digest.clone())
            .or_insert_with(|| ArchiveImage {
                names: Vec::new(),
                manifest: resolved.image.descriptor(),
            });
        if let Some(name) = resolved.name
            && !entry.names.contains(&name)
        {
            entry.names.push(name);
        }
    }
    let selected: Vec<ArchiveImage> = selected.into_values().collect();
    let format = match args.format {
        FormatArg::Docker => ArchiveFormat::Docker,
        FormatArg::Oci => ArchiveFormat::Oci,
    };
    let content = state.store.content();
    match &args.output {
        None => {
            let stdout = io::stdout();
            if stdout.is_terminal() {
                bail!("refusing to write an archive to a terminal; use -o FILE or a redirection");
            }
            let out = archive::save(BufWriter::new(stdout.lock()), format, &selected, content)?;
            out.into_inner().map_err(|e| e.into_error())?.flush()?;
        }
        Some(path) => {
            let dir = match path.parent() {
                Some(p) if !p.as_os_str().is_empty() => p,
                _ => Path::new("."),
            };
            let tmp = tempfile::NamedTempFile::new_in(dir)
                .with_context(|| format!("creating a temporary file next to {}", path.display()))?;
            let out = archive::save(BufWriter::new(tmp), format, &selected, content)
                .with_context(|| format!("saving to {}", path.display()))?;
            let tmp = out
                .into_inner()
                .map_err(|e| e.into_error())
                .with_context(|| format!("writing {}", path.display()))?;
            tmp.as_file()
                .sync_all()
                .with_context(|| format!("writing {}", path.display()))?;
            tmp.persist(path)
                .with_context(|| format!("writing {}", path.display()))?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs `kiln load`.
pub fn load(root: &Path, args: LoadArgs) -> anyhow::Result<ExitCode> {
    let state = State::open(root)?;
    let (input, source): (Box<dyn Read>, String) = match &args.input {
        Some(path) => (
            Box::new(BufReader::new(
                File::open(path).with_context(|| format!("opening {}", path.display()))?,
            )),
            path.display().to_string(),
        ),
        None => (Box::new(io::stdin().lock()), "standard input".to_owned()),
    };
    let scratch = state.store.root().join("tmp");
    std::fs::create_dir_all(&scratch).with_context(|| format!("creating {}", scratch.display()))?;
    let loaded = archive::load(input, state.store.content(), &scratch)
        .with_context(|| format!("loading {source}"))?;
    let now = Timestamp::now();
    state.images.update(|images| -> anyhow::Result<()> {
        for image in &loaded {
            let target = ImageTarget {
                media_type: image.manifest.media_type().clone(),
                digest: Digest::try_from(image.manifest.digest())?,
                size: image.manifest.size(),
                config: image.config.clone(),
            };
            for name in &image.names {
                images.tag(name.clone(), target.clone(), now)?;
            }
            if image.names.is_empty() {
                images.add_untagged(target, now);
            }
        }
        Ok(())
    })?;
    let mut out = io::stdout().lock();
    for image in &loaded {
        if image.names.is_empty() {
            writeln!(out, "Loaded image ID: {}", image.config)?;
        }
        for name in &image.names {
            writeln!(out, "Loaded image: {}", display_name(name))?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
