//! What an image *is*, for comparing two builders: the filesystem its layers add up to
//! and the parts of its config and history a Dockerfile decides, with everything a
//! builder may legitimately vary (times, IDs, compression, layer digests) left out.
//!
//! The golden files are written from BuildKit's images and kiln's images are checked
//! against them through this one module, so the two sides cannot drift apart in how
//! they read an archive. The archive is read with kiln's own loader and the layers are
//! applied with kiln's own applier: both are tested against hostile input on their own,
//! and the recorder reading Docker's archives through them is a further check on them.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use anyhow::{Context, bail};
use kiln_cache::ContentStore;
use kiln_image::layer::{ApplyOptions, apply_layer};
use kiln_image::{BlobRead, Digest, Digester};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Fields of the image config's `config` object that a Dockerfile sets.
const CONTAINER_CONFIG_FIELDS: &[&str] = &[
    "Env",
    "Cmd",
    "Entrypoint",
    "WorkingDir",
    "User",
    "Labels",
    "ExposedPorts",
    "Volumes",
    "StopSignal",
    "Healthcheck",
    "OnBuild",
    "Shell",
    "ArgsEscaped",
];

/// Top-level fields of the image config that a Dockerfile (or the platform) sets;
/// `author` is MAINTAINER's.
const IMAGE_CONFIG_FIELDS: &[&str] = &["os", "architecture", "variant", "author"];

/// One image, as far as the compatibility suite cares.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Description {
    /// How many layers the manifest lists.
    pub layers: usize,
    /// The selected config fields; absent and `null` are the same thing here.
    pub config: BTreeMap<String, Value>,
    /// One entry per history record, in order.
    pub history: Vec<HistoryEntry>,
    /// Every path of the flattened filesystem except `/`, sorted.
    pub files: Vec<FileEntry>,
}

/// The reproducible part of a history record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryEntry {
    /// The instruction as the builder wrote it down.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_by: Option<String>,
    /// Whether the record has no layer of its own.
    #[serde(default)]
    pub empty_layer: bool,
    /// The builder's comment (`buildkit.dockerfile.v0`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
}

/// One path of the flattened filesystem.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    /// Absolute path inside the image.
    pub path: String,
    /// `dir`, `file`, `symlink`, `fifo`, `char`, `block` or `socket`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Permission bits including set-id and sticky bits, in octal.
    pub mode: String,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Size of a regular file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// SHA-256 of a regular file's content.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// A symlink's target, as written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// For a file with more than one name: the first of its names (in sorted order),
    /// the same for every name of that inode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hardlink_group: Option<String>,
}

/// Reads the single image in a `docker save`/`kiln save` archive (Docker or OCI layout)
/// and describes it.
pub fn describe_archive(archive: &Path) -> anyhow::Result<Description> {
    let scratch = tempfile::tempdir().context("temp dir")?;
    let store = ContentStore::open(&scratch.path().join("content"))?;
    let unpack = scratch.path().join("unpack");
    std::fs::create_dir(&unpack)?;
    let input = File::open(archive).with_context(|| format!("opening {}", archive.display()))?;
    let images = kiln_image::archive::load(input, &store, &unpack)
        .with_context(|| format!("loading {}", archive.display()))?;
    let [image] = images.as_slice() else {
        bail!(
            "{} holds {} images, not one",
            archive.display(),
            images.len()
        );
    };

    let manifest: Value =
        serde_json::from_slice(&store.read_blob(&Digest::try_from(image.manifest.digest())?)?)
            .context("image manifest")?;
    let config: Value =
        serde_json::from_slice(&store.read_blob(&image.config)?).context("image config")?;

    let rootfs = scratch.path().join("rootfs");
    std::fs::create_dir(&rootfs)?;
    let layers = manifest["layers"]
        .as_array()
        .context("the manifest has no layers array")?;
    let options = ApplyOptions::default().with_same_owner(true);
    for (index, layer) in layers.iter().enumerate() {
        let digest: Digest = layer["digest"]
            .as_str()
            .context("a layer without a digest")?
            .parse()?;
        apply_layer(store.open_blob(&digest)?, &rootfs, &options)
            .with_context(|| format!("applying layer {index} ({digest})"))?;
    }

    Ok(Description {
        layers: layers.len(),
        config: select_config(&config),
        history: history(&config),
        files: walk(&rootfs)?,
    })
}

fn select_config(config: &Value) -> BTreeMap<String, Value> {
    let container = &config["config"];
    CONTAINER_CONFIG_FIELDS
        .iter()
        .map(|field| (field, &container[field]))
        .chain(
            IMAGE_CONFIG_FIELDS
                .iter()
                .map(|field| (field, &config[field])),
        )
        .filter(|(_, value)| !value.is_null())
        .map(|(field, value)| ((*field).to_owned(), value.clone()))
        .collect()
}

fn history(config: &Value) -> Vec<HistoryEntry> {
    let Some(records) = config["history"].as_array() else {
        return Vec::new();
    };
    records
        .iter()
        .map(|record| HistoryEntry {
            created_by: record["created_by"].as_str().map(str::to_owned),
            empty_layer: record["empty_layer"].as_bool().unwrap_or(false),
            comment: record["comment"].as_str().map(str::to_owned),
        })
        .collect()
}

/// Lists every path under `root`, sorted, with hard links grouped by inode.
fn walk(root: &Path) -> anyhow::Result<Vec<FileEntry>> {
    let mut found = Vec::new();
    collect(root, "", &mut found)?;
    found.sort_by(|a, b| a.0.path.cmp(&b.0.path));

    let mut first_name: HashMap<u64, String> = HashMap::new();
    for (entry, inode) in &found {
        if let Some(inode) = inode {
            first_name
                .entry(*inode)
                .or_insert_with(|| entry.path.clone());
        }
    }
    Ok(found
        .into_iter()
        .map(|(mut entry, inode)| {
            entry.hardlink_group = inode.map(|inode| first_name[&inode].clone());
            entry
        })
        .collect())
}

/// Each entry comes with its inode number when it is a non-directory with more than
/// one name.
fn collect(
    root: &Path,
    prefix: &str,
    out: &mut Vec<(FileEntry, Option<u64>)>,
) -> anyhow::Result<()> {
    let dir = root.join(prefix.trim_start_matches('/'));
    for child in std::fs::read_dir(&dir).with_context(|| format!("listing {}", dir.display()))? {
        let child = child?;
        let path = format!("{prefix}/{}", child.file_name().to_string_lossy());
        let meta = child.path().symlink_metadata()?;
        let kind = meta.file_type();
        let mut entry = FileEntry {
            path,
            kind: kind_name(&kind)?.to_owned(),
            mode: format!("{:04o}", meta.mode() & 0o7777),
            uid: meta.uid(),
            gid: meta.gid(),
            size: None,
            sha256: None,
            target: None,
            hardlink_group: None,
        };
        if kind.is_file() {
            entry.size = Some(meta.len());
            entry.sha256 = Some(sha256_file(&child.path())?);
        } else if kind.is_symlink() {
            let target = std::fs::read_link(child.path())?;
            entry.target = Some(target.to_string_lossy().into_owned());
        }
        let inode = (!kind.is_dir() && meta.nlink() > 1).then_some(meta.ino());
        let recurse = kind.is_dir().then(|| entry.path.clone());
        out.push((entry, inode));
        if let Some(sub) = recurse {
            collect(root, &sub, out)?;
        }
    }
    Ok(())
}

fn kind_name(kind: &std::fs::FileType) -> anyhow::Result<&'static str> {
    Ok(if kind.is_dir() {
        "dir"
    } else if kind.is_file() {
        "file"
    } else if kind.is_symlink() {
        "symlink"
    } else if kind.is_fifo() {
        "fifo"
    } else if kind.is_char_device() {
        "char"
    } else if kind.is_block_device() {
        "block"
    } else if kind.is_socket() {
        "socket"
    } else {
        bail!("unknown file type {kind:?}")
    })
}

fn sha256_file(path: &Path) -> anyhow::Result<String> {
    let mut file = File::open(path).with_context(|| format!("reading {}", path.display()))?;
    let mut digester = Digester::new();
    let mut buf = vec![0; 64 * 1024];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        digester.update(&buf[..n]);
    }
    Ok(digester.finish().hex().to_owned())
}

impl Description {
    /// The golden-file text: pretty JSON, except that each file is one line, so a
    /// change to one path is a one-line change in review.
    pub fn to_golden(&self) -> String {
        let mut out = String::from("{\n");
        out += &format!("  \"layers\": {},\n", self.layers);
        let config = serde_json::to_string_pretty(&self.config).expect("config serialises");
        out += &format!("  \"config\": {},\n", config.replace('\n', "\n  "));
        out += "  \"history\": [\n";
        push_lines(&mut out, &self.history);
        out += "  ],\n  \"files\": [\n";
        push_lines(&mut out, &self.files);
        out += "  ]\n}\n";
        out
    }
}

fn push_lines<T: Serialize>(out: &mut String, items: &[T]) {
    for (index, item) in items.iter().enumerate() {
        let comma = if index + 1 < items.len() { "," } else { "" };
        let line = serde_json::to_string(item).expect("entry serialises");
        out.push_str(&format!("    {line}{comma}\n"));
    }
}
