//! `kiln pull`, `kiln push`, `kiln login`, `kiln logout`, and the registry client the
//! other commands share.
//!
//! Credentials come from Docker's config file (`$DOCKER_CONFIG/config.json`, else
//! `~/.docker/config.json`) and its credential helpers, so a `docker login` works for
//! kiln and the other way round. Plain HTTP is used only for loopback registries and
//! those named with `--insecure-registry`.

use std::io::{self, BufRead, IsTerminal};
use std::process::ExitCode;
use std::sync::{Arc, OnceLock};

use anyhow::{Context as _, bail};
use jiff::Timestamp;
use kiln_cache::{CacheIndex, ContentStore, LayerRef, SnapshotMode, Store, variant};
use kiln_image::oci_spec::image::ImageManifest;
use kiln_image::registry::{
    ClientOptions, Credentials, RegistryClient, erase_credentials, pull_image, push_image,
    store_credentials,
};
use kiln_image::store::{ImageStore, ImageTarget};
use kiln_image::{BlobRead, Compression, ImageRef, Platform};

use crate::build::progress::ProgressMode;
use crate::build::worker::stored_image_layers;
use crate::build::workspace::overlay_works;
use crate::state::{State, display_name};
use crate::transfer::TransferDisplay;

static INSECURE: OnceLock<Vec<String>> = OnceLock::new();

/// Records the registries named with `--insecure-registry` for this process.
pub fn set_insecure(registries: Vec<String>) {
    let _ = INSECURE.set(registries);
}

/// A client with the process's settings: Docker's credentials, the insecure registries.
pub fn client() -> anyhow::Result<RegistryClient> {
    let options = ClientOptions {
        insecure_registries: INSECURE.get().cloned().unwrap_or_default(),
        credentials: Credentials::docker_config(),
        ..ClientOptions::default()
    };
    RegistryClient::new(options).context("setting up the registry client")
}

/// A runtime for the commands that talk to registries outside a build.
fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

/// Arguments of `kiln pull`.
#[derive(clap::Args)]
pub struct PullArgs {
    /// The platform to pull when the name has several (default: this machine's).
    #[arg(long)]
    platform: Option<String>,

    /// How progress is shown.
    #[arg(long, value_enum, default_value_t = ProgressMode::Auto)]
    progress: ProgressMode,

    /// Prints only the image's name.
    #[arg(short = 'q', long)]
    quiet: bool,

    /// Only downloads the blobs; the layers are unpacked when a build first runs a
    /// step on them (by default they are unpacked now, as `docker pull` does).
    #[arg(long)]
    no_unpack: bool,

    /// The image: `registry/repository[:tag|@digest]`.
    name: String,
}

/// Pulls `reference` into the store and names it; returns the stored image.
pub async fn pull(
    content: &ContentStore,
    images: &ImageStore,
    client: &RegistryClient,
    reference: &ImageRef,
    platform: &Platform,
    display: &TransferDisplay,
) -> anyhow::Result<ImageTarget> {
    let store = Arc::new(content.clone());
    let pulled = pull_image(client, reference, platform, store, display)
        .await
        .with_context(|| format!("pulling {reference}"))?;
    let target = ImageTarget {
        media_type: pulled.manifest.media_type.as_str().into(),
        digest: pulled.manifest.digest.clone(),
        size: pulled.manifest.bytes.len() as u64,
        config: pulled.config.clone(),
    };
    images.update(|images| -> anyhow::Result<()> {
        if reference.tag().is_some() {
            images.tag(reference.clone(), target.clone(), Timestamp::now())?;
        } else {
            images.add_untagged(target.clone(), Timestamp::now());
        }
        Ok(())
    })?;
    Ok(target)
}

/// Runs `kiln pull`.
pub fn pull_command(root: &std::path::Path, args: PullArgs) -> anyhow::Result<ExitCode> {
    let reference: ImageRef = args
        .name
        .parse()
        .with_context(|| format!("image name {:?}", args.name))?;
    let platform = match &args.platform {
        Some(p) => p.parse().with_context(|| format!("--platform {p}"))?,
        None => Platform::host(),
    };
    let state = State::open(root)?;
    let mode = if args.quiet {
        ProgressMode::Quiet
    } else {
        args.progress
    };
    let display = TransferDisplay::new(mode, "pull");
    let client = client()?;
    let target = runtime()?.block_on(pull(
        state.store.content(),
        &state.images,
        &client,
        &reference,
        &platform,
        &display,
    ))?;
    if !args.no_unpack {
        unpack(&state.store, &target.digest).with_context(|| format!("unpacking {reference}"))?;
    }
    if args.quiet {
        println!("{}", display_name(&reference));
    } else {
        println!("Digest: {}", target.digest);
        println!(
            "Status: image is up to date for {}",
            display_name(&reference)
        );
        println!("{reference}");
    }
    Ok(ExitCode::SUCCESS)
}

/// Unpacks a pulled image's layers into overlay snapshots, as `docker pull` does, so
/// the first step that runs on it starts at once. Where overlayfs cannot be mounted,
/// builds use copied trees made per step, and nothing is unpacked here.
fn unpack(store: &Store, manifest: &kiln_image::Digest) -> anyhow::Result<()> {
    let snapshots = store.snapshotter(SnapshotMode::Overlay)?;
    if !overlay_works(&snapshots.scratch()?) {
        return Ok(());
    }
    let layers: Vec<LayerRef> = stored_image_layers(store.content(), manifest)?
        .into_iter()
        .map(|l| LayerRef {
            blob: l.blob,
            diff_id: l.diff_id,
        })
        .collect();
    if !layers.is_empty() {
        snapshots.prepare(store.content(), &layers)?;
    }
    Ok(())
}

/// Arguments of `kiln push`.
#[derive(clap::Args)]
pub struct PushArgs {
    /// How progress is shown.
    #[arg(long, value_enum, default_value_t = ProgressMode::Auto)]
    progress: ProgressMode,

    /// Prints only the pushed manifest's digest.
    #[arg(short = 'q', long)]
    quiet: bool,

    /// The image to push, named for its registry: `registry/repository[:tag]`.
    name: String,

    /// Push it under this name instead (the local image keeps its name).
    destination: Option<String>,
}

/// Pushes the stored image `manifest` as `reference`; returns the pushed digest. Plain
/// layers (what builds store) go out gzip-compressed, so the pushed manifest is not the
/// stored one; the config, and the image ID, are the same.
pub async fn push(
    store: &Store,
    images: &ImageStore,
    client: &RegistryClient,
    reference: &ImageRef,
    manifest: &kiln_image::Digest,
    display: &TransferDisplay,
) -> anyhow::Result<kiln_image::Digest> {
    let content = store.content();
    remember_mount_sources(content, &store.index(), images, client, reference);
    let manifest = {
        let (content, index) = (content.clone(), store.index());
        let manifest = manifest.clone();
        tokio::task::spawn_blocking(move || {
            variant::distributable(&content, &index, &manifest, Compression::Gzip)
        })
        .await?
        .with_context(|| format!("compressing the layers of {reference}"))?
    };
    let blobs = Arc::new(content.clone());
    push_image(client, reference, &manifest, blobs, display)
        .await
        .with_context(|| format!("pushing {reference}"))
}

/// Tells the client which other repositories of the same registry hold the blobs of
/// images stored under their names (pulled or pushed there), so a push can mount
/// those blobs instead of uploading them. Best effort: an unreadable record is
/// skipped.
fn remember_mount_sources(
    content: &ContentStore,
    index: &CacheIndex,
    images: &ImageStore,
    client: &RegistryClient,
    reference: &ImageRef,
) {
    let Ok(all) = images.read() else {
        return;
    };
    for record in all.records() {
        let Some(name) = &record.name else { continue };
        if name.domain() != reference.domain() || name.path() == reference.path() {
            continue;
        }
        let Ok(bytes) = content.read_blob(&record.image.digest) else {
            continue;
        };
        let Ok(manifest) = serde_json::from_slice::<ImageManifest>(&bytes) else {
            continue;
        };
        client.remember_blob(name, &record.image.config);
        for layer in manifest.layers() {
            if let Ok(digest) = layer.digest().to_string().parse() {
                // A plain layer was pushed as its gzip variant.
                if let Ok(Some(variant)) = variant::known(index, &digest, Compression::Gzip) {
                    client.remember_blob(name, &variant.blob);
                }
                client.remember_blob(name, &digest);
            }
        }
    }
}

/// Runs `kiln push`.
pub fn push_command(root: &std::path::Path, args: PushArgs) -> anyhow::Result<ExitCode> {
    let state = State::open(root)?;
    let resolved = state.resolve(&args.name)?;
    let destination = args.destination.as_deref().unwrap_or(&args.name);
    let reference: ImageRef = destination
        .parse()
        .with_context(|| format!("image name {destination:?}"))?;
    let mode = if args.quiet {
        ProgressMode::Quiet
    } else {
        args.progress
    };
    let display = TransferDisplay::new(mode, "push");
    let client = client()?;
    let digest = runtime()?.block_on(push(
        &state.store,
        &state.images,
        &client,
        &reference,
        &resolved.image.digest,
        &display,
    ))?;
    if args.quiet {
        println!("{digest}");
    } else {
        println!(
            "{}: digest: {digest} size: {}",
            reference.tag().unwrap_or("latest"),
            resolved.image.size
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Arguments of `kiln login`.
#[derive(clap::Args)]
pub struct LoginArgs {
    /// The user name.
    #[arg(short = 'u', long)]
    username: Option<String>,

    /// The password (prefer --password-stdin: command lines are visible to others).
    #[arg(short = 'p', long)]
    password: Option<String>,

    /// Reads the password from standard input.
    #[arg(long)]
    password_stdin: bool,

    /// The registry (`host[:port]`).
    server: String,
}

/// The registry host a `login`/`logout` argument names (a URL or `host[:port]`).
fn server_host(server: &str) -> String {
    let s = server
        .trim_start_matches("https://")
        .trim_start_matches("http://");
    s.split('/').next().unwrap_or(s).to_owned()
}

/// Runs `kiln login`.
pub fn login(args: LoginArgs) -> anyhow::Result<ExitCode> {
    let host = server_host(&args.server);
    if host.is_empty() {
        bail!("login: no registry named");
    }
    let username = match args.username {
        Some(u) => u,
        None => bail!("login: give the user name with -u"),
    };
    let password = match (args.password, args.password_stdin) {
        (Some(_), true) => bail!("login: --password and --password-stdin are exclusive"),
        (Some(p), false) => p,
        (None, true) => {
            let mut line = String::new();
            io::stdin()
                .lock()
                .read_line(&mut line)
                .context("reading the password from standard input")?;
            line.trim_end_matches(['\n', '\r']).to_owned()
        }
        (None, false) if io::stdin().is_terminal() => {
            bail!("login: give the password with --password-stdin (or -p)")
        }
        (None, false) => bail!("login: give the password with --password-stdin"),
    };
    if password.is_empty() {
        bail!("login: the password is empty");
    }
    let options = ClientOptions {
        insecure_registries: INSECURE.get().cloned().unwrap_or_default(),
        credentials: Credentials::basic(&host, &username, &password),
        ..ClientOptions::default()
    };
    let client = RegistryClient::new(options).context("setting up the registry client")?;
    runtime()?
        .block_on(client.check_auth(&host))
        .with_context(|| format!("logging in to {host}"))?;
    store_credentials(None, &host, &username, &password)
        .with_context(|| format!("saving the credentials for {host}"))?;
    println!("Login Succeeded");
    Ok(ExitCode::SUCCESS)
}

/// Arguments of `kiln logout`.
#[derive(clap::Args)]
pub struct LogoutArgs {
    /// The registry (`host[:port]`).
    server: String,
}

/// Runs `kiln logout`.
pub fn logout(args: LogoutArgs) -> anyhow::Result<ExitCode> {
    let host = server_host(&args.server);
    if erase_credentials(None, &host)
        .with_context(|| format!("removing the credentials for {host}"))?
    {
        println!("Removing login credentials for {host}");
    } else {
        println!("Not logged in to {host}");
    }
    Ok(ExitCode::SUCCESS)
}
