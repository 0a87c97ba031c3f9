//! The image store: which names point at which image manifests.
//!
//! It is one small JSON file, `images-v1.json` under the root, rather than a database:
//! a machine holds tens or hundreds of names, every command reads all of them
//! (`kiln images`) and writes are rare. Each change takes an exclusive lock on a
//! sibling `.lock` file, re-reads the file, applies the change to [`Images`] and renames
//! a fresh copy into place, so two kiln processes never lose each other's tags and a
//! reader (which takes no lock) always sees a whole file.
//!
//! An image is known by its manifest; its ID is its config's digest, as Docker shows
//! it. Names behave as Docker's do: tagging moves a name, an image that loses its last
//! name to a re-tag stays as an untagged (`<none>`) record until pruned, and removing an
//! image's last name with `rmi` removes the image.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use jiff::Timestamp;
use oci_spec::image::{Descriptor, MediaType};
use serde::{Deserialize, Serialize};

use crate::{Digest, ImageRef, RefError};

/// The store's file name under the root.
pub const STORE_FILE: &str = "images-v1.json";

/// The format version written in the file.
const FORMAT_VERSION: u32 = 1;

/// An image as the store knows it: its manifest and its ID.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageTarget {
    /// The manifest's media type.
    pub media_type: MediaType,
    /// The manifest's digest.
    pub digest: Digest,
    /// The manifest's size in bytes.
    pub size: u64,
    /// The config's digest: the image ID.
    pub config: Digest,
}

impl ImageTarget {
    /// A descriptor of the manifest.
    pub fn descriptor(&self) -> Descriptor {
        Descriptor::new(self.media_type.clone(), self.size, &self.digest)
    }
}

/// One name (or the lack of one) for one image.
#[derive(Clone, Debug, PartialEq)]
pub struct ImageRecord {
    /// The name; `None` for an image that lost its last name to a re-tag.
    pub name: Option<ImageRef>,
    /// The image.
    pub image: ImageTarget,
    /// When the name was set.
    pub created: Timestamp,
}

/// What a user's image argument resolved to.
#[derive(Clone, Debug, PartialEq)]
pub struct Resolved {
    /// The name, when the argument was one (`rmi NAME` untags only that name).
    pub name: Option<ImageRef>,
    /// The image.
    pub image: ImageTarget,
}

/// Why the store could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store file or its directory could not be read.
    #[error("reading {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The store file could not be written.
    #[error("writing {path}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The lock file could not be opened or locked.
    #[error("locking {path}")]
    Lock {
        /// The lock file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The store file is not valid JSON of the expected shape.
    #[error("{path} is not a valid image store")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
    /// A stored name does not parse.
    #[error("{path}: entry {index} has an invalid name {name:?}")]
    CorruptName {
        /// The file.
        path: PathBuf,
        /// The entry's position.
        index: usize,
        /// The name.
        name: String,
        /// The cause.
        #[source]
        source: RefError,
    },
    /// The file was written by a kiln with another format.
    #[error("{path} has format version {found}; this kiln reads version {FORMAT_VERSION}")]
    Version {
        /// The file.
        path: PathBuf,
        /// The version found.
        found: u32,
    },
    /// No image matches.
    #[error("no such image: {query}")]
    NotFound {
        /// What was looked for.
        query: String,
    },
    /// A short ID matches more than one image.
    #[error("image ID prefix {prefix:?} matches more than one image")]
    Ambiguous {
        /// The prefix.
        prefix: String,
    },
    /// A name without a tag (`name@sha256:…`) cannot be set.
    #[error("{name} has no tag; images are named repository:tag")]
    NoTag {
        /// The name.
        name: ImageRef,
    },
}

/// All records, as read from the file; the value changes operate on.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Images {
    records: Vec<ImageRecord>,
}

impl Images {
    /// Every record, in the order they were set.
    pub fn records(&self) -> &[ImageRecord] {
        &self.records
    }

    /// The record for a name.
    pub fn get(&self, name: &ImageRef) -> Option<&ImageRecord> {
        self.records.iter().find(|r| r.name.as_ref() == Some(name))
    }

    /// Every record of the image with that manifest.
    pub fn records_of(&self, manifest: &Digest) -> Vec<&ImageRecord> {
        self.records
            .iter()
            .filter(|r| &r.image.digest == manifest)
            .collect()
    }

    /// Resolves what a user typed: a name (`busybox`, `busybox:1.36`,
    /// `busybox@sha256:…`), a full image ID or manifest digest (`sha256:…`), or an image
    /// ID prefix (`dcda15e5942e`). Names win over ID prefixes, as in Docker.
    pub fn resolve(&self, query: &str) -> Result<Resolved, StoreError> {
        let not_found = || StoreError::NotFound {
            query: query.to_owned(),
        };
        if let Ok(digest) = query.parse::<Digest>() {
            let found = self
                .records
                .iter()
                .find(|r| r.image.config == digest)
                .or_else(|| self.records.iter().find(|r| r.image.digest == digest));
            return found.map(unnamed).ok_or_else(not_found);
        }
        if let Ok(name) = query.parse::<ImageRef>() {
            if let Some(digest) = name.digest() {
                let repo = name.name();
                let found = self.records.iter().find(|r| {
                    &r.image.digest == digest && r.name.as_ref().is_some_and(|n| n.name() == repo)
                });
                return found.map(unnamed).ok_or_else(not_found);
            }
            if let Some(record) = self.get(&name) {
                return Ok(Resolved {
                    image: record.image.clone(),
                    name: Some(name),
                });
            }
        }
        let prefix = query.strip_prefix("sha256:").unwrap_or(query);
        if prefix.is_empty()
            || !prefix
                .bytes()
                .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        {
            return Err(not_found());
        }
        let mut matches = self
            .records
            .iter()
            .filter(|r| r.image.config.hex().starts_with(prefix));
        let first = matches.next().ok_or_else(not_found)?;
        if matches.any(|r| r.image.digest != first.image.digest) {
            return Err(StoreError::Ambiguous {
                prefix: prefix.to_owned(),
            });
        }
        Ok(unnamed(first))
    }

    /// Points `name` at an image. An image that thereby loses its only name stays as
    /// an untagged record; an untagged record of the newly named image goes.
    pub fn tag(
        &mut self,
        name: ImageRef,
        image: ImageTarget,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        if name.tag().is_none() {
            return Err(StoreError::NoTag { name });
        }
        if let Some(pos) = self.position(&name) {
            let old = self.records.remove(pos);
            if old.image == image {
                self.records.insert(pos, old);
                return Ok(());
            }
            if self.records_of(&old.image.digest).is_empty() {
                self.records.push(ImageRecord { name: None, ..old });
            }
        }
        self.records
            .retain(|r| r.name.is_some() || r.image.digest != image.digest);
        self.records.push(ImageRecord {
            name: Some(name),
            image,
            created: now,
        });
        Ok(())
    }

    /// Records an image with no name, unless it already has a record.
    pub fn add_untagged(&mut self, image: ImageTarget, now: Timestamp) {
        if self.records_of(&image.digest).is_empty() {
            self.records.push(ImageRecord {
                name: None,
                image,
                created: now,
            });
        }
    }

    /// Removes a name and returns its record.
    pub fn untag(&mut self, name: &ImageRef) -> Result<ImageRecord, StoreError> {
        let pos = self.position(name).ok_or_else(|| StoreError::NotFound {
            query: name.to_string(),
        })?;
        Ok(self.records.remove(pos))
    }

    /// Removes every record of the image with that manifest and returns them.
    pub fn remove(&mut self, manifest: &Digest) -> Vec<ImageRecord> {
        let (gone, kept) = std::mem::take(&mut self.records)
            .into_iter()
            .partition(|r| &r.image.digest == manifest);
        self.records = kept;
        gone
    }

    fn position(&self, name: &ImageRef) -> Option<usize> {
        self.records
            .iter()
            .position(|r| r.name.as_ref() == Some(name))
    }
}

fn unnamed(record: &ImageRecord) -> Resolved {
    Resolved {
        name: None,
        image: record.image.clone(),
    }
}

/// The store file under one root directory.
#[derive(Clone, Debug)]
pub struct ImageStore {
    dir: PathBuf,
}

impl ImageStore {
    /// The store under `root`; nothing is read or created until used.
    pub fn open(root: &Path) -> ImageStore {
        ImageStore {
            dir: root.to_owned(),
        }
    }

    /// The store file's path.
    pub fn path(&self) -> PathBuf {
        self.dir.join(STORE_FILE)
    }

    /// The records as they are now (empty when nothing was ever stored).
    pub fn read(&self) -> Result<Images, StoreError> {
        let path = self.path();
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Images::default()),
            Err(source) => return Err(StoreError::Read { path, source }),
        };
        let file: StoreFile =
            serde_json::from_slice(&bytes).map_err(|source| StoreError::Corrupt {
                path: path.clone(),
                source,
            })?;
        if file.version != FORMAT_VERSION {
            return Err(StoreError::Version {
                path,
                found: file.version,
            });
        }
        let records = file
            .images
            .into_iter()
            .enumerate()
            .map(|(index, r)| r.into_record(&path, index))
            .collect::<Result<_, _>>()?;
        Ok(Images { records })
    }

    /// Applies `change` to the current records under the store's lock and writes the
    /// result back; nothing is written if `change` fails.
    pub fn update<T, E>(&self, change: impl FnOnce(&mut Images) -> Result<T, E>) -> Result<T, E>
    where
        E: From<StoreError>,
    {
        let _lock = self.lock()?;
        let mut images = self.read()?;
        let before = images.clone();
        let out = change(&mut images)?;
        if images != before {
            self.write(&images)?;
        }
        Ok(out)
    }

    fn lock(&self) -> Result<File, StoreError> {
        let path = self.dir.join(format!("{STORE_FILE}.lock"));
        let lock_err = |source| StoreError::Lock {
            path: path.clone(),
            source,
        };
        fs::create_dir_all(&self.dir).map_err(lock_err)?;
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(lock_err)?;
        file.lock().map_err(lock_err)?;
        Ok(file)
    }

    fn write(&self, images: &Images) -> Result<(), StoreError> {
        let path = self.path();
        let write_err = |source| StoreError::Write {
            path: path.clone(),
            source,
        };
        let file = StoreFile {
            version: FORMAT_VERSION,
            images: images.records.iter().map(DiskRecord::from).collect(),
        };
        let json = serde_json::to_vec_pretty(&file).expect("store records always serialise");
        let mut tmp = tempfile::NamedTempFile::new_in(&self.dir).map_err(write_err)?;
        tmp.write_all(&json).map_err(write_err)?;
        tmp.as_file().sync_all().map_err(write_err)?;
        tmp.persist(&path).map_err(|e| write_err(e.error))?;
        Ok(())
    }
}

/// The file's shape.
#[derive(Serialize, Deserialize)]
struct StoreFile {
    version: u32,
    images: Vec<DiskRecord>,
}

#[derive(Serialize, Deserialize)]
struct DiskRecord {
    name: Option<String>,
    #[serde(flatten)]
    image: ImageTarget,
    created: Timestamp,
}

impl DiskRecord {
    fn into_record(self, path: &Path, index: usize) -> Result<ImageRecord, StoreError> {
        let name = match self.name {
            None => None,
            Some(name) => Some(name.parse().map_err(|source| StoreError::CorruptName {
                path: path.to_owned(),
                index,
                name,
                source,
            })?),
        };
        Ok(ImageRecord {
            name,
            image: self.image,
            created: self.created,
        })
    }
}

impl From<&ImageRecord> for DiskRecord {
    fn from(r: &ImageRecord) -> DiskRecord {
        DiskRecord {
            name: r.name.as_ref().map(ToString::to_string),
            image: r.image.clone(),
            created: r.created,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(n: u8) -> ImageTarget {
        ImageTarget {
            media_type: MediaType::ImageManifest,
            digest: Digest::of(&[n, 0]),
            size: 100 + u64::from(n),
            config: Digest::of(&[n, 1]),
        }
    }

    fn name(s: &str) -> ImageRef {
        s.parse().unwrap()
    }

    fn now() -> Timestamp {
        Timestamp::from_second(1_700_000_000).unwrap()
    }

    #[test]
    fn names_ids_and_digests_resolve() {
        let mut images = Images::default();
        images.tag(name("busybox"), image(1), now()).unwrap();
        images.tag(name("busybox:2"), image(2), now()).unwrap();

        let by_name = images.resolve("busybox:latest").unwrap();
        assert_eq!(by_name.name, Some(name("busybox")));
        assert_eq!(by_name.image, image(1));

        let id = image(2).config;
        for query in [id.to_string(), id.hex().to_owned(), id.short().to_owned()] {
            let found = images.resolve(&query).unwrap();
            assert_eq!((found.name, found.image), (None, image(2)), "{query}");
        }
        assert_eq!(
            images.resolve(&image(1).digest.to_string()).unwrap().image,
            image(1)
        );
        let pinned = format!("busybox@{}", image(2).digest);
        assert_eq!(images.resolve(&pinned).unwrap().image, image(2));

        assert!(matches!(
            images.resolve("alpine"),
            Err(StoreError::NotFound { .. })
        ));
        assert!(matches!(
            images.resolve("ffff0000"),
            Err(StoreError::NotFound { .. })
        ));
    }

    #[test]
    fn a_name_equal_to_an_id_prefix_wins() {
        let mut images = Images::default();
        images.tag(name("busybox"), image(1), now()).unwrap();
        let prefix = image(1).config.short().to_owned();
        images.tag(name(&prefix), image(2), now()).unwrap();
        assert_eq!(images.resolve(&prefix).unwrap().image, image(2));
    }

    #[test]
    fn ambiguous_prefixes_are_refused() {
        let mut images = Images::default();
        let mut a = image(1);
        let mut b = image(2);
        a.config = "sha256:aaaa000000000000000000000000000000000000000000000000000000000001"
            .parse()
            .unwrap();
        b.config = "sha256:aaaa000000000000000000000000000000000000000000000000000000000002"
            .parse()
            .unwrap();
        images.tag(name("a"), a, now()).unwrap();
        images.tag(name("b"), b, now()).unwrap();
        assert!(matches!(
            images.resolve("aaaa"),
            Err(StoreError::Ambiguous { .. })
        ));
    }

    #[test]
    fn retagging_leaves_the_old_image_untagged_until_named_again() {
        let mut images = Images::default();
        images.tag(name("app"), image(1), now()).unwrap();
        images.tag(name("app"), image(2), now()).unwrap();
        let untagged: Vec<_> = images
            .records()
            .iter()
            .filter(|r| r.name.is_none())
            .collect();
        assert_eq!(untagged.len(), 1);
        assert_eq!(untagged[0].image, image(1));

        images.tag(name("old"), image(1), now()).unwrap();
        assert!(images.records().iter().all(|r| r.name.is_some()));
        assert_eq!(images.records().len(), 2);
    }

    #[test]
    fn untag_and_remove() {
        let mut images = Images::default();
        images.tag(name("a"), image(1), now()).unwrap();
        images.tag(name("b"), image(1), now()).unwrap();
        images.untag(&name("a")).unwrap();
        assert!(matches!(
            images.untag(&name("a")),
            Err(StoreError::NotFound { .. })
        ));
        assert_eq!(images.records_of(&image(1).digest).len(), 1);
        images.tag(name("c"), image(1), now()).unwrap();
        assert_eq!(images.remove(&image(1).digest).len(), 2);
        assert!(images.records().is_empty());
    }

    #[test]
    fn digest_names_cannot_be_set() {
        let mut images = Images::default();
        let pinned = name(&format!("busybox@{}", image(1).digest));
        assert!(matches!(
            images.tag(pinned, image(1), now()),
            Err(StoreError::NoTag { .. })
        ));
    }

    #[test]
    fn the_file_round_trips_and_failed_changes_write_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = ImageStore::open(dir.path());
        assert!(store.read().unwrap().records().is_empty());
        store
            .update(|images| images.tag(name("busybox"), image(1), now()))
            .unwrap();
        store
            .update(|images| images.tag(name("app"), image(2), now()))
            .unwrap();
        let before = std::fs::read(store.path()).unwrap();
        let failed: Result<(), StoreError> = store.update(|images| {
            images.tag(name("busybox"), image(3), now())?;
            images.untag(&name("nothing")).map(drop)
        });
        assert!(failed.is_err());
        assert_eq!(std::fs::read(store.path()).unwrap(), before);

        let images = store.read().unwrap();
        assert_eq!(images.get(&name("busybox")).unwrap().image, image(1));
        assert_eq!(images.get(&name("app")).unwrap().created, now());
        let text = String::from_utf8(before).unwrap();
        assert!(text.contains("\"version\": 1"), "{text}");
        assert!(text.contains("docker.io/library/busybox:latest"), "{text}");
    }

    #[test]
    fn other_versions_and_garbage_are_reported() {
        let dir = tempfile::tempdir().unwrap();
        let store = ImageStore::open(dir.path());
        std::fs::write(store.path(), r#"{"version": 2, "images": []}"#).unwrap();
        assert!(matches!(
            store.read(),
            Err(StoreError::Version { found: 2, .. })
        ));
        std::fs::write(store.path(), "not json").unwrap();
        assert!(matches!(store.read(), Err(StoreError::Corrupt { .. })));
    }

    #[test]
    fn concurrent_writers_lose_no_tags() {
        let dir = tempfile::tempdir().unwrap();
        let threads: Vec<_> = (0..8u8)
            .map(|t| {
                let store = ImageStore::open(dir.path());
                std::thread::spawn(move || {
                    for i in 0..10u8 {
                        store
                            .update(|images| {
                                images.tag(name(&format!("t{t}:{i}")), image(t), now())
                            })
                            .unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let images = ImageStore::open(dir.path()).read().unwrap();
        assert_eq!(images.records().len(), 80);
    }
}
