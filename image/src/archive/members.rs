//! One pass over an archive's tar stream, turning members into blobs in the store.
//!
//! Docker writes `manifest.json` last, so nothing about an archive can be known until
//! the stream has been read to its end. Rather than extracting the archive to disk and
//! copying it a second time, each member goes where it will end up while the stream is
//! read: small metadata files (`manifest.json`, `index.json`, `repositories`, the legacy
//! `<id>/json` and `<id>/VERSION`) stay in memory under a size cap, members named
//! `blobs/sha256/<hex>` stream straight into the store (which checks them against their
//! name), and anything else (legacy `<id>/layer.tar`, `<id>.json` configs) is hashed
//! into a scratch file and then stored under the digest found.
//!
//! Member names are only ever keys of a map here, never paths on disk; names that would
//! escape the archive (absolute, `..`) and links pointing outside it are still refused,
//! so that a hostile archive gets a clear error rather than odd lookups.

use std::collections::BTreeMap;
use std::io::{self, Read, Seek};
use std::path::Path;

use tar::EntryType;

use super::ArchiveError;
use crate::{BlobRead, BlobWrite, Digest, Digester};

/// The most bytes a metadata member (or a manifest, index or config read back from the
/// store) may have. Real ones are a few KiB; this keeps a hostile archive from making
/// kiln buffer gigabytes of "JSON".
pub const METADATA_LIMIT: u64 = 16 << 20;

/// How many links may be followed from one member before giving up.
const MAX_LINK_HOPS: usize = 16;

/// What became of one member.
enum Member {
    /// A file.
    File(Content),
    /// A symbolic or hard link to another member (normalised archive path).
    Link(String),
}

/// Where a file member's bytes are.
enum Content {
    /// A small metadata file, kept in memory.
    Inline(Vec<u8>),
    /// Content now in the blob store.
    Stored(Digest),
}

/// The members of an archive, after one pass over it.
pub struct Members {
    files: BTreeMap<String, Member>,
}

impl Members {
    /// Reads the whole tar stream, storing blobs in `store` and spooling through
    /// `scratch`.
    pub fn read<R, S>(input: R, store: &S, scratch: &Path) -> Result<Members, ArchiveError>
    where
        R: Read,
        S: BlobWrite + ?Sized,
    {
        let mut archive = tar::Archive::new(input);
        let mut files = BTreeMap::new();
        for entry in archive.entries().map_err(ArchiveError::Read)? {
            let mut entry = entry.map_err(ArchiveError::Read)?;
            let raw = entry.path_bytes().into_owned();
            let raw = String::from_utf8(raw).map_err(|e| ArchiveError::NonUtf8Name {
                name: String::from_utf8_lossy(e.as_bytes()).into_owned(),
            })?;
            let Some(name) = clean_name(&raw)? else {
                continue;
            };
            let member = match entry.header().entry_type() {
                EntryType::Regular | EntryType::Continuous => {
                    Member::File(read_file(&name, &mut entry, store, scratch)?)
                }
                EntryType::Symlink | EntryType::Link => {
                    let target = entry
                        .link_name_bytes()
                        .map(|t| String::from_utf8_lossy(&t).into_owned())
                        .unwrap_or_default();
                    let base = if entry.header().entry_type() == EntryType::Symlink {
                        parent(&name)
                    } else {
                        ""
                    };
                    let resolved =
                        join_within(base, &target).ok_or_else(|| ArchiveError::UnsafeLink {
                            name: name.clone(),
                            target: target.clone(),
                        })?;
                    Member::Link(resolved)
                }
                // Directories, pax global headers and special files carry nothing an
                // image archive needs.
                _ => continue,
            };
            files.insert(name, member);
        }
        Ok(Members { files })
    }

    /// Whether a member of that name exists (links followed).
    pub fn contains(&self, name: &str) -> bool {
        self.resolve(name).is_ok()
    }

    /// The bytes of a member: from memory, or read back from the store under the
    /// metadata size cap.
    pub fn bytes<S>(&self, name: &str, store: &S) -> Result<Vec<u8>, ArchiveError>
    where
        S: BlobRead + ?Sized,
    {
        match self.resolve(name)? {
            Content::Inline(data) => Ok(data.clone()),
            Content::Stored(digest) => read_limited(store, digest, name),
        }
    }

    /// The digest of a member's content, storing it first if it was kept in memory.
    pub fn blob<S>(&self, name: &str, store: &S) -> Result<Digest, ArchiveError>
    where
        S: BlobWrite + ?Sized,
    {
        match self.resolve(name)? {
            Content::Stored(digest) => Ok(digest.clone()),
            Content::Inline(data) => {
                store
                    .put_blob(data)
                    .map(|(digest, _)| digest)
                    .map_err(|source| ArchiveError::Store {
                        name: name.to_owned(),
                        source,
                    })
            }
        }
    }

    fn resolve(&self, name: &str) -> Result<&Content, ArchiveError> {
        let mut current = clean_name(name)?.unwrap_or_default();
        for _ in 0..MAX_LINK_HOPS {
            match self.files.get(&current) {
                None => {
                    return Err(ArchiveError::MissingMember {
                        name: name.to_owned(),
                    });
                }
                Some(Member::Link(target)) => current = target.clone(),
                Some(Member::File(content)) => return Ok(content),
            }
        }
        Err(ArchiveError::LinkLoop {
            name: name.to_owned(),
        })
    }
}

/// Reads a blob from the store, refusing one larger than [`METADATA_LIMIT`].
pub fn read_limited<S>(store: &S, digest: &Digest, what: &str) -> Result<Vec<u8>, ArchiveError>
where
    S: BlobRead + ?Sized,
{
    let read_err = |source| ArchiveError::ReadBlob {
        digest: digest.clone(),
        source,
    };
    let size = store.blob_size(digest).map_err(read_err)?;
    if size > METADATA_LIMIT {
        return Err(ArchiveError::TooLarge {
            name: what.to_owned(),
            size,
            limit: METADATA_LIMIT,
        });
    }
    let mut buf = Vec::with_capacity(size as usize);
    store
        .open_blob(digest)
        .map_err(read_err)?
        .take(METADATA_LIMIT + 1)
        .read_to_end(&mut buf)
        .map_err(read_err)?;
    Ok(buf)
}

/// Whether a member is metadata kept in memory rather than content for the store.
fn is_metadata(name: &str) -> bool {
    matches!(
        name,
        "manifest.json" | "index.json" | "oci-layout" | "repositories"
    ) || name.ends_with("/json")
        || name.ends_with("/VERSION")
}

fn read_file<R, S>(
    name: &str,
    entry: &mut tar::Entry<'_, R>,
    store: &S,
    scratch: &Path,
) -> Result<Content, ArchiveError>
where
    R: Read,
    S: BlobWrite + ?Sized,
{
    let size = entry.size();
    if is_metadata(name) {
        if size > METADATA_LIMIT {
            return Err(ArchiveError::TooLarge {
                name: name.to_owned(),
                size,
                limit: METADATA_LIMIT,
            });
        }
        let mut data = Vec::with_capacity(size as usize);
        entry.read_to_end(&mut data).map_err(ArchiveError::Read)?;
        return Ok(Content::Inline(data));
    }
    let store_err = |source: io::Error| {
        if source.kind() == io::ErrorKind::InvalidData {
            ArchiveError::BlobMismatch {
                name: name.to_owned(),
                source,
            }
        } else {
            ArchiveError::Store {
                name: name.to_owned(),
                source,
            }
        }
    };
    if let Some(digest) = digest_from_name(name) {
        if !store.has_blob(&digest) {
            store.write_blob(&digest, entry).map_err(store_err)?;
        }
        return Ok(Content::Stored(digest));
    }
    let spool = tempfile::tempfile_in(scratch).map_err(|source| ArchiveError::Scratch {
        dir: scratch.to_owned(),
        source,
    })?;
    let mut tee = Digester::tee(spool);
    io::copy(entry, &mut tee).map_err(ArchiveError::Read)?;
    let (mut spool, digest, _) = tee.finish();
    spool.rewind().map_err(store_err)?;
    if !store.has_blob(&digest) {
        store.write_blob(&digest, &mut spool).map_err(store_err)?;
    }
    Ok(Content::Stored(digest))
}

/// `blobs/sha256/<hex>` names its own digest.
fn digest_from_name(name: &str) -> Option<Digest> {
    let hex = name.strip_prefix("blobs/sha256/")?;
    format!("sha256:{hex}").parse().ok()
}

/// Normalises a member name: `./` prefixes, empty and `.` components dropped. `None`
/// for the archive root itself; an error for names that are absolute or climb with
/// `..`.
fn clean_name(raw: &str) -> Result<Option<String>, ArchiveError> {
    if raw.starts_with('/') {
        return Err(ArchiveError::UnsafeName {
            name: raw.to_owned(),
        });
    }
    let mut parts = Vec::new();
    for part in raw.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                return Err(ArchiveError::UnsafeName {
                    name: raw.to_owned(),
                });
            }
            other => parts.push(other),
        }
    }
    Ok((!parts.is_empty()).then(|| parts.join("/")))
}

/// The directory part of a normalised member name (`""` at the top).
fn parent(name: &str) -> &str {
    name.rsplit_once('/').map_or("", |(dir, _)| dir)
}

/// Resolves a link `target` against directory `base`, lexically; `None` when it is
/// absolute or climbs above the archive root.
fn join_within(base: &str, target: &str) -> Option<String> {
    if target.starts_with('/') {
        return None;
    }
    let mut parts: Vec<&str> = base.split('/').filter(|p| !p.is_empty()).collect();
    for part in target.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            other => parts.push(other),
        }
    }
    (!parts.is_empty()).then(|| parts.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_normalised_and_escapes_refused() {
        assert_eq!(
            clean_name("./manifest.json").unwrap().as_deref(),
            Some("manifest.json")
        );
        assert_eq!(clean_name("a//b/./c").unwrap().as_deref(), Some("a/b/c"));
        assert_eq!(clean_name("./").unwrap(), None);
        assert!(matches!(
            clean_name("/etc/passwd"),
            Err(ArchiveError::UnsafeName { .. })
        ));
        assert!(matches!(
            clean_name("a/../../x"),
            Err(ArchiveError::UnsafeName { .. })
        ));
    }

    #[test]
    fn links_resolve_inside_the_archive_only() {
        assert_eq!(
            join_within("abc", "../def/layer.tar").as_deref(),
            Some("def/layer.tar")
        );
        assert_eq!(join_within("", "x/./y").as_deref(), Some("x/y"));
        assert_eq!(join_within("abc", "../../etc/passwd"), None);
        assert_eq!(join_within("abc", "/etc/passwd"), None);
    }

    #[test]
    fn only_blob_paths_name_digests() {
        let hex = "a".repeat(64);
        assert!(digest_from_name(&format!("blobs/sha256/{hex}")).is_some());
        assert!(digest_from_name(&format!("{hex}/layer.tar")).is_none());
        assert!(digest_from_name("blobs/sha256/short").is_none());
    }
}
