//! The end of a build: the target's layers and configuration become an image — a
//! config blob and a manifest in the content store — and go where `--output` says.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use jiff::Timestamp;
use kiln_cache::{ContentStore, LayerRecord, variant};
use kiln_image::archive::{ArchiveFormat, ArchiveImage, save};
use kiln_image::config::ImageConfig;
use kiln_image::layer::{ApplyOptions, Compression, WriteOptions, apply_layer, write_layer};
use kiln_image::oci_spec::image::{Descriptor, MediaType};
use kiln_image::store::ImageStore;
use kiln_image::{Digest, ImageRef};
use kiln_solver::VertexId;
use kiln_solver::lower::LayerStep;

use super::worker::{StateRef, WorkerParts};
use crate::state::{display_name, store_image};

/// `--output`.
#[derive(Debug)]
pub enum Output {
    /// Into the image store, under these names (none: untagged), and pushed to their
    /// registries when `push` is set.
    Image {
        /// The names.
        names: Vec<ImageRef>,
        /// Whether the image is pushed too.
        push: bool,
    },
    /// An archive file: OCI layout or `docker load` format.
    Archive {
        /// Which format.
        format: ArchiveFormat,
        /// The file.
        dest: PathBuf,
        /// Names recorded in the archive.
        names: Vec<ImageRef>,
        /// How its layers are compressed (`compression=`; gzip unless asked).
        compression: Compression,
    },
    /// The final filesystem, unpacked into a directory.
    Local(PathBuf),
    /// The final filesystem as one tar file.
    Tar(PathBuf),
}

impl Output {
    /// Parses `--output` (`type=image[,name=NAME][,push=true]`, `type=registry,name=NAME`,
    /// `type=oci|docker,dest=FILE[,compression=gzip|zstd|uncompressed]`,
    /// `type=tar,dest=FILE`, `type=local,dest=DIR`); `-t` names and `--push`
    /// add to an image output.
    pub fn parse(
        spec: Option<&str>,
        mut names: Vec<ImageRef>,
        push: bool,
    ) -> anyhow::Result<Output> {
        let Some(spec) = spec else {
            return Ok(Output::Image { names, push });
        };
        let mut kind = None;
        let mut dest = None;
        let mut push_field = None;
        let mut compression = None;
        for field in spec.split(',') {
            match field.split_once('=') {
                Some(("type", v)) => kind = Some(v.to_owned()),
                Some(("dest", v)) => dest = Some(PathBuf::from(v)),
                Some(("name", v)) => names.push(
                    v.parse()
                        .with_context(|| format!("--output {spec:?}: name {v:?}"))?,
                ),
                Some(("push", v)) => {
                    push_field = Some(match v {
                        "true" => true,
                        "false" => false,
                        _ => bail!("--output {spec:?}: push={v}: expected true or false"),
                    })
                }
                Some(("compression", v)) => {
                    compression = Some(match v {
                        "gzip" => Compression::Gzip,
                        "zstd" => Compression::Zstd,
                        "uncompressed" => Compression::None,
                        _ => bail!(
                            "--output {spec:?}: compression={v}: expected gzip, zstd or uncompressed"
                        ),
                    })
                }
                _ => bail!("--output {spec:?}: unknown field {field:?}"),
            }
        }
        if compression.is_some() && !matches!(kind.as_deref(), Some("oci" | "docker")) {
            bail!("--output {spec:?}: compression= applies to type=oci and type=docker");
        }
        let compression = compression.unwrap_or(Compression::Gzip);
        if push_field.is_some() && !matches!(kind.as_deref(), None | Some("image")) {
            bail!("--output {spec:?}: push= applies to type=image");
        }
        let need_dest = |what: &str| {
            dest.clone()
                .with_context(|| format!("--output type={what} needs dest=FILE"))
        };
        Ok(match kind.as_deref() {
            None | Some("image") => Output::Image {
                names,
                push: push || push_field == Some(true),
            },
            Some("registry") => Output::Image { names, push: true },
            Some("oci") => Output::Archive {
                format: ArchiveFormat::Oci,
                dest: need_dest("oci")?,
                names,
                compression,
            },
            Some("docker") => Output::Archive {
                format: ArchiveFormat::Docker,
                dest: need_dest("docker")?,
                names,
                compression,
            },
            Some("local") => Output::Local(need_dest("local")?),
            Some("tar") => Output::Tar(need_dest("tar")?),
            Some(other) => {
                bail!("--output type={other} is not supported (image, oci, docker, local, tar)")
            }
        })
    }
}

/// The lowered image and what the exporter needs to know of how it was lowered.
#[derive(Clone, Copy)]
pub struct LoweredImage<'a> {
    /// The configuration and history as lowered.
    pub image: &'a ImageConfig,
    /// The target's filesystem.
    pub target: VertexId,
    /// The history entries with a layer, and their steps.
    pub steps: &'a [LayerStep],
    /// How many history entries came with the base image.
    pub inherited_history: usize,
    /// `SOURCE_DATE_EPOCH`, when set (then every time is already fixed).
    pub epoch: Option<i64>,
}

/// Dates the history entries this build added by the layers they belong to: an entry
/// with a layer gets the time its layer was made, one without takes the time of the
/// layer before it (or after it, when it comes first). A rebuild from the cache thus
/// has the same history and image ID, while a step that really ran shows when it ran.
fn date_history(
    config: &mut ImageConfig,
    inherited: usize,
    steps: &[LayerStep],
    results: &BTreeMap<VertexId, StateRef>,
) -> anyhow::Result<()> {
    let mut times: Vec<Option<i64>> = vec![None; config.history.len()];
    for step in steps {
        if config
            .history
            .get(step.history)
            .is_some_and(|h| !h.empty_layer)
        {
            times[step.history] = chain(results, &step.vertex)?.last().map(|l| l.created);
        }
    }
    let mut last = None;
    for t in times.iter_mut().skip(inherited) {
        match t {
            Some(_) => last = *t,
            None => *t = last,
        }
    }
    let mut next = None;
    for t in times.iter_mut().skip(inherited).rev() {
        match t {
            Some(_) => next = *t,
            None => *t = next,
        }
    }
    let format = |secs: i64| jiff::Timestamp::from_second(secs).map(|t| t.to_string());
    for (entry, time) in config.history.iter_mut().zip(&times).skip(inherited) {
        if let Some(secs) = time {
            entry.created = Some(format(*secs)?);
        }
    }
    if let Some(Some(secs)) = times.iter().skip(inherited).last() {
        config.created = Some(format(*secs)?);
    }
    Ok(())
}

/// Applies `layers` in order onto `dest`, whiteouts removing what they hide.
fn unpack_layers(
    content: &ContentStore,
    layers: &[LayerRecord],
    dest: &Path,
) -> anyhow::Result<()> {
    for layer in layers {
        let blob = content.open_blob(&layer.blob)?;
        apply_layer(BufReader::new(blob), dest, &ApplyOptions::default())
            .with_context(|| format!("unpacking layer {} into {}", layer.blob, dest.display()))?;
    }
    Ok(())
}

/// The layers of a solved step.
fn chain<'r>(
    results: &'r BTreeMap<VertexId, StateRef>,
    id: &VertexId,
) -> anyhow::Result<&'r [LayerRecord]> {
    results
        .get(id)
        .with_context(|| format!("step {} was not solved", id.index()))?
        .layers()
}

/// What was exported.
pub struct Exported {
    /// The manifest digest.
    pub manifest: Digest,
    /// The config digest (the image ID).
    pub config: Digest,
    /// The names it was given, as Docker shows them.
    pub names: Vec<String>,
}

/// Writes the image — `image` as lowered, over the layers of `target`, with the
/// history entries of `steps` that turned out empty marked so, carrying `inline_cache`
/// (`--cache-to type=inline`) — and sends it to `output`.
pub fn export(
    parts: &WorkerParts,
    lowered: &LoweredImage<'_>,
    results: &BTreeMap<VertexId, StateRef>,
    output: &Output,
    inline_cache: Option<serde_json::Value>,
) -> anyhow::Result<Exported> {
    let LoweredImage {
        image,
        target,
        steps,
        inherited_history,
        epoch,
    } = *lowered;
    let state = |id: &VertexId| chain(results, id);
    let layers = state(&target)?;
    let mut config = image.clone();
    // A base image's inline cache describes the base, not this image.
    config.inline_cache = inline_cache;
    for step in steps {
        let after = state(&step.vertex)?.len();
        let before = match &step.parent {
            Some(parent) => state(parent)?.len(),
            None => 0,
        };
        if after == before
            && let Some(entry) = config.history.get_mut(step.history)
        {
            // The step changed nothing: BuildKit leaves the empty diff out.
            entry.empty_layer = true;
        }
    }
    if epoch.is_none() {
        date_history(&mut config, inherited_history, steps, results)?;
    }
    config.rootfs.diff_ids = layers.iter().map(|l| l.diff_id.clone()).collect();
    let mut with_layer = config.history.iter().filter(|h| !h.empty_layer).count();
    if with_layer > layers.len() && inherited_history <= config.history.len() {
        // A base whose history names more layers than it has: its entries past its
        // layer count are taken as empty (BuildKit does the same), so that each layer
        // of this image keeps the entry of the step that made it.
        let ours = config.history[inherited_history..]
            .iter()
            .filter(|h| !h.empty_layer)
            .count();
        let mut base_layers = layers.len().saturating_sub(ours);
        for entry in &mut config.history[..inherited_history] {
            if entry.empty_layer {
                continue;
            }
            if base_layers == 0 {
                entry.empty_layer = true;
            } else {
                base_layers -= 1;
            }
        }
        with_layer = config.history.iter().filter(|h| !h.empty_layer).count();
    }
    if with_layer < layers.len() && inherited_history <= config.history.len() {
        // History is optional: a base image may describe fewer layers than it has.
        // Blank entries stand for them after the base's own, so that every layer keeps
        // one entry (BuildKit makes them up too).
        let missing = layers.len() - with_layer;
        let blank = kiln_image::config::History::default();
        config.history.splice(
            inherited_history..inherited_history,
            std::iter::repeat_n(blank, missing),
        );
        with_layer = layers.len();
    }
    if with_layer != layers.len() {
        bail!(
            "internal error: the image has {} layers but {with_layer} history entries with a layer",
            layers.len()
        );
    }

    let content = parts.store.content();
    let descriptors = layers
        .iter()
        .map(|l| Descriptor::new(MediaType::from(l.media_type.as_str()), l.size, &l.blob))
        .collect();
    let manifest = store_image(content, &config, descriptors)?;
    let config_digest = manifest.config.clone();
    let names = match output {
        Output::Image { names, .. } => {
            let images = ImageStore::open(parts.store.root());
            images.update(|all| -> anyhow::Result<()> {
                if names.is_empty() {
                    all.add_untagged(manifest.clone(), Timestamp::now());
                }
                for name in names {
                    all.tag(name.clone(), manifest.clone(), Timestamp::now())?;
                }
                Ok(())
            })?;
            names.iter().map(display_name).collect()
        }
        Output::Archive {
            format,
            dest,
            names,
            compression,
        } => {
            // Layers are stored plain; the archive gets them compressed, as a registry
            // would, unless asked otherwise.
            let packed =
                variant::distributable(content, &parts.index, &manifest.digest, *compression)?;
            let file =
                File::create(dest).with_context(|| format!("creating {}", dest.display()))?;
            let image = ArchiveImage {
                names: names.clone(),
                manifest: Descriptor::new(
                    manifest.media_type.clone(),
                    content.size(&packed)?,
                    &packed,
                ),
            };
            save(BufWriter::new(file), *format, &[image], content)
                .with_context(|| format!("writing {}", dest.display()))?;
            Vec::new()
        }
        Output::Local(dest) => {
            fs::create_dir_all(dest).with_context(|| format!("creating {}", dest.display()))?;
            unpack_layers(content, layers, dest)?;
            Vec::new()
        }
        Output::Tar(dest) => {
            let scratch = parts.snapshots.scratch()?;
            let tree = scratch.path().join("rootfs");
            fs::create_dir(&tree)?;
            unpack_layers(content, layers, &tree)?;
            let mut file = BufWriter::new(
                File::create(dest).with_context(|| format!("creating {}", dest.display()))?,
            );
            let options = WriteOptions {
                compression: Compression::None,
                ..parts.layer_options.clone()
            };
            write_layer(&tree, &mut file, &options)
                .with_context(|| format!("writing {}", dest.display()))?;
            file.flush()?;
            Vec::new()
        }
    };
    Ok(Exported {
        manifest: manifest.digest,
        config: config_digest,
        names,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(output: &Output) -> (Vec<String>, bool) {
        match output {
            Output::Image { names, push } => (names.iter().map(|n| n.to_string()).collect(), *push),
            other => panic!("not an image output: {other:?}"),
        }
    }

    #[test]
    fn image_and_registry_outputs() {
        let tag: ImageRef = "127.0.0.1:5000/a:1".parse().unwrap();
        let plain = Output::parse(None, vec![tag.clone()], false).unwrap();
        assert_eq!(
            names(&plain),
            (vec!["127.0.0.1:5000/a:1".to_owned()], false)
        );
        let pushed = Output::parse(None, vec![tag.clone()], true).unwrap();
        assert!(names(&pushed).1);
        let registry = Output::parse(
            Some("type=registry,name=127.0.0.1:5000/b:2"),
            vec![tag],
            false,
        )
        .unwrap();
        assert_eq!(
            names(&registry),
            (
                vec![
                    "127.0.0.1:5000/a:1".to_owned(),
                    "127.0.0.1:5000/b:2".to_owned()
                ],
                true
            )
        );
        let image = Output::parse(Some("type=image,name=x:1,push=true"), vec![], false).unwrap();
        assert!(names(&image).1);
        for (spec, expected) in [
            ("type=oci,dest=/x", Compression::Gzip),
            ("type=docker,dest=/x,compression=zstd", Compression::Zstd),
            (
                "type=oci,dest=/x,compression=uncompressed",
                Compression::None,
            ),
        ] {
            match Output::parse(Some(spec), vec![], false).unwrap() {
                Output::Archive { compression, .. } => assert_eq!(compression, expected, "{spec}"),
                other => panic!("{spec}: {other:?}"),
            }
        }
        for (bad, says) in [
            ("type=image,push=yes", "expected true or false"),
            ("type=oci,dest=/x,push=true", "applies to type=image"),
            ("type=image,name=UPPER", "name"),
            ("type=ftp", "not supported"),
            (
                "type=oci,dest=/x,compression=xz",
                "expected gzip, zstd or uncompressed",
            ),
            (
                "type=image,compression=gzip",
                "applies to type=oci and type=docker",
            ),
        ] {
            let err = format!("{:#}", Output::parse(Some(bad), vec![], false).unwrap_err());
            assert!(err.contains(says), "{bad}: {err}");
        }
    }
}
