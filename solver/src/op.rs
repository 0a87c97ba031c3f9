//! The op model: what a build step does, independent of how or where it runs.
//!
//! Every vertex of a [`BuildGraph`](crate::BuildGraph) holds one [`Op`]. An op's fields
//! are exactly what decides its result, because its cache key is computed from them;
//! anything that only helps people follow the build (the instruction's text, the stage
//! name, the step number) lives in [`OpMetadata`] beside it and never enters a key.
//!
//! Inputs are filesystem states produced by other vertices, referred to by position in
//! the vertex's input list, so the same op over different inputs is a different step
//! while the op itself stays comparable.

use std::collections::BTreeMap;

use kiln_image::Digest;
use serde::Serialize;

/// One build step.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub enum Op {
    /// A filesystem that comes from outside the build.
    Source(SourceOp),
    /// A command run in a container over input 0.
    Exec(ExecOp),
    /// File actions (copy, mkdir, mkfile, rm) applied in order over input 0 (or an empty
    /// tree when the op has no base).
    File(FileOp),
    /// Several inputs layered in order (for `COPY --link`).
    Merge(MergeOp),
}

/// Where a source filesystem comes from.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub enum SourceOp {
    /// The empty filesystem (`FROM scratch`).
    Scratch,
    /// An image, pinned to the manifest digest it resolved to.
    Image {
        /// The reference as written after expansion, e.g. `docker.io/library/busybox:latest`.
        reference: String,
        /// The manifest digest the reference resolved to; it, not the name, is the identity.
        manifest: Digest,
        /// The platform picked from an index, as `os/arch[/variant]`.
        platform: String,
    },
    /// A local directory handed to the build, such as the build context.
    Local {
        /// `context` for the main build context.
        name: String,
        /// `.dockerignore` patterns, in file order.
        excludes: Vec<String>,
    },
    /// A remote file fetched by `ADD <url>`.
    Http {
        /// The URL.
        url: String,
        /// The expected digest (`ADD --checksum`), if given.
        checksum: Option<Digest>,
        /// The file name to store the download as.
        filename: String,
    },
}

/// A command run in a throw-away container.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct ExecOp {
    /// The command and its arguments, after the shell wrapping of the shell form.
    pub args: Vec<String>,
    /// `KEY=value` entries; kept sorted by key so equal environments key equally.
    pub env: Vec<String>,
    /// The working directory inside the container.
    pub cwd: String,
    /// The user as written in `USER` (`name`, `uid`, `name:group`, …); resolved against
    /// the rootfs's `/etc/passwd` and `/etc/group` when the step runs.
    pub user: String,
    /// The network mode.
    pub network: NetworkMode,
    /// Whether the step runs with every capability (`RUN --security=insecure`).
    pub insecure: bool,
    /// Extra mounts (`RUN --mount`), in the order written.
    pub mounts: Vec<ExecMount>,
    /// The hostname seen inside the container.
    pub hostname: String,
    /// Proxy variables (`HTTP_PROXY=…`) from the build's arguments, added to the
    /// environment when the step runs. Outside the key, as in BuildKit: a proxy change
    /// does not invalidate a step.
    #[serde(skip)]
    pub proxy_env: Vec<String>,
}

impl ExecOp {
    /// Sorts the environment by key (last definition of a key wins, as in a process
    /// environment) so that two equal environments produce the same key.
    pub fn normalise(&mut self) {
        let mut map: BTreeMap<&str, &str> = BTreeMap::new();
        for entry in &self.env {
            let (k, v) = entry.split_once('=').unwrap_or((entry, ""));
            map.insert(k, v);
        }
        self.env = map.into_iter().map(|(k, v)| format!("{k}={v}")).collect();
    }
}

/// `RUN --network`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize)]
pub enum NetworkMode {
    /// The builder's default.
    #[default]
    Default,
    /// Only a loopback interface.
    None,
    /// The host's network.
    Host,
}

/// A `RUN --mount`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub enum ExecMount {
    /// A path of another input, read-only unless `readwrite` (writes are discarded).
    Bind {
        /// Index into the vertex's inputs.
        input: usize,
        /// The path inside that input.
        source: String,
        /// The mount point.
        target: String,
        /// Whether writes are allowed (and then thrown away).
        readwrite: bool,
    },
    /// A directory kept between builds, never part of a key's content or a layer.
    Cache {
        /// The cache's identity (`id=`, default the target path).
        id: String,
        /// The mount point.
        target: String,
        /// `shared`, `private` or `locked`.
        sharing: CacheSharing,
        /// Whether the cache is mounted read-only.
        readonly: bool,
        /// Initial owner and mode of a new cache directory.
        uid: u32,
        /// Group of a new cache directory.
        gid: u32,
        /// Mode of a new cache directory.
        mode: u32,
    },
    /// An empty tmpfs.
    Tmpfs {
        /// The mount point.
        target: String,
        /// The size limit in bytes, if any.
        size: Option<u64>,
    },
    /// A secret provided to the build; its value never enters a key.
    Secret {
        /// The secret's id.
        id: String,
        /// The file path it appears at, if mounted as a file.
        target: Option<String>,
        /// The environment variable it appears in, if any.
        env: Option<String>,
        /// Whether a missing secret is an error.
        required: bool,
        /// File mode.
        mode: u32,
        /// File owner.
        uid: u32,
        /// File group.
        gid: u32,
    },
}

/// `--mount=type=cache,sharing=…`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub enum CacheSharing {
    /// Concurrent builds share the directory.
    Shared,
    /// Concurrent builds each get their own directory.
    Private,
    /// Concurrent builds wait for each other.
    Locked,
}

/// File actions applied in order.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct FileOp {
    /// Whether input 0 is the base the actions apply to (otherwise an empty tree).
    pub has_base: bool,
    /// The actions.
    pub actions: Vec<FileAction>,
}

/// One file action.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub enum FileAction {
    /// Copy paths from an input into the tree.
    Copy(CopyAction),
    /// Create a directory.
    Mkdir {
        /// Absolute path.
        path: String,
        /// Mode bits.
        mode: u32,
        /// Create missing parents.
        parents: bool,
        /// Owner, as written; root when absent.
        owner: Option<Owner>,
    },
    /// Create a file with the given contents (heredocs).
    Mkfile {
        /// Absolute path.
        path: String,
        /// Contents.
        data: Vec<u8>,
        /// Mode bits.
        mode: u32,
        /// Owner, as written; root when absent.
        owner: Option<Owner>,
    },
    /// Remove a path.
    Rm {
        /// Absolute path.
        path: String,
        /// Succeed when the path does not exist.
        allow_not_found: bool,
    },
}

/// A copy from one input (`COPY`, `ADD`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct CopyAction {
    /// Index into the vertex's inputs.
    pub input: usize,
    /// Source paths or wildcard patterns inside that input. With `parents`, a `/./` in
    /// a source marks where the kept parent directories start (otherwise they start at
    /// the input's root).
    pub sources: Vec<String>,
    /// Destination path; a trailing `/` means "into this directory".
    pub dest: String,
    /// `--chown`, as written; names are resolved when the step runs.
    pub owner: Option<Owner>,
    /// `--chmod`, when given.
    pub mode: Option<Chmod>,
    /// Expand wildcards in `sources`.
    pub allow_wildcard: bool,
    /// A wildcard that matches nothing is not an error.
    pub allow_empty_wildcard: bool,
    /// A directory source copies its contents, not itself.
    pub dir_contents_only: bool,
    /// Extract local tar archives (`ADD`).
    pub unpack: bool,
    /// Keep the source's parent directories (`--parents`).
    pub parents: bool,
    /// Patterns left out (`--exclude`).
    pub excludes: Vec<String>,
}

/// An owner as written in `--chown` or `USER` (`user[:group]`). Names are resolved
/// against the destination's `/etc/passwd` and `/etc/group` when the step runs, as
/// BuildKit does; numeric ids are used as they are.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct Owner {
    /// The user.
    pub user: Principal,
    /// The group; when absent, the user's primary group (or gid 0 for a numeric user
    /// with no passwd entry).
    pub group: Option<Principal>,
}

/// A user or group, by id or by name.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub enum Principal {
    /// A numeric id.
    Id(u32),
    /// A name to look up.
    Name(String),
}

impl Principal {
    fn parse(text: &str) -> Principal {
        text.parse()
            .map_or_else(|_| Principal::Name(text.to_owned()), Principal::Id)
    }
}

impl Owner {
    /// Reads `user[:group]`; `None` when the user part is empty.
    pub fn parse(spec: &str) -> Option<Owner> {
        let (user, group) = match spec.split_once(':') {
            Some((user, group)) => (user, Some(group)),
            None => (spec, None),
        };
        if user.is_empty() || group.is_some_and(str::is_empty) {
            return None;
        }
        Some(Owner {
            user: Principal::parse(user),
            group: group.map(Principal::parse),
        })
    }
}

/// `--chmod`: octal bits or a symbolic expression applied per file.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub enum Chmod {
    /// Octal mode.
    Octal(u32),
    /// Symbolic expression (`u+x,g-w`).
    Symbolic(String),
}

/// Layers inputs in order, later ones over earlier ones.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct MergeOp {
    /// How many inputs are merged (all of the vertex's inputs).
    pub inputs: usize,
}

/// What people see about a step; never part of its key.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OpMetadata {
    /// The progress name, e.g. `[build 2/4] RUN make`.
    pub name: String,
    /// The stage the step belongs to, if it was declared `AS name`.
    pub stage: Option<String>,
    /// 1-based Dockerfile line of the instruction, when the step comes from one.
    pub line: Option<usize>,
    /// Skip the cache lookup for this step (`--no-cache`, `--no-cache-filter`).
    pub ignore_cache: bool,
}

/// A file selection whose content an op's key depends on: the paths an op reads from
/// one of its inputs (`COPY src…` reads `src…` from the context).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct Selector {
    /// Index into the vertex's inputs.
    pub input: usize,
    /// Paths or wildcard patterns inside that input.
    pub paths: Vec<String>,
    /// Patterns left out.
    pub excludes: Vec<String>,
    /// Whether `paths` are wildcard patterns.
    pub wildcard: bool,
}

impl Op {
    /// The content selections the op's key depends on, beyond its inputs' keys.
    pub fn selectors(&self) -> Vec<Selector> {
        let Op::File(file) = self else {
            return Vec::new();
        };
        file.actions
            .iter()
            .filter_map(|action| match action {
                FileAction::Copy(copy) => Some(Selector {
                    input: copy.input,
                    paths: copy.sources.clone(),
                    excludes: copy.excludes.clone(),
                    wildcard: copy.allow_wildcard,
                }),
                _ => None,
            })
            .collect()
    }
}
