//! `kiln import ROOTFS.tar NAME`: a root filesystem tarball becomes a one-layer image, as
//! `docker import` makes one.
//!
//! The tarball (plain, gzip or zstd) is decompressed, hashed for the diff ID and
//! recompressed with gzip in the same pass, straight into the content store. The config
//! is what Docker writes for an import: the host's platform, the layer's diff ID, and a
//! single history entry with no command and the comment `Imported from -` (Docker's
//! daemon always receives the tarball as a stream, whatever the client was given), or
//! the `--message`. `--change` takes Dockerfile instructions that set config fields.

use std::fs::File;
use std::io::{self, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use flate2::write::GzEncoder;
use jiff::Timestamp;
use kiln_image::config::{History, ImageConfig};
use kiln_image::oci_spec::image::{Descriptor, MediaType};
use kiln_image::{Compression, Digester, ImageRef, Platform};
use kiln_parser::Command as Instr;
use kiln_parser::instructions::CommandLine;

use crate::state::{State, store_image};

/// `kiln import`.
#[derive(clap::Args)]
pub struct ImportArgs {
    /// Dockerfile instruction to apply to the config (CMD, ENTRYPOINT, ENV, LABEL,
    /// USER, WORKDIR); may be repeated.
    #[arg(short, long, value_name = "INSTRUCTION")]
    change: Vec<String>,
    /// History comment instead of `Imported from -`.
    #[arg(short, long)]
    message: Option<String>,
    /// The root filesystem tarball (`-` for standard input).
    file: PathBuf,
    /// The image's name, `repository[:tag]`.
    name: String,
}

/// Runs `kiln import`.
pub fn run(root: &Path, args: ImportArgs) -> anyhow::Result<ExitCode> {
    let name: ImageRef = args
        .name
        .parse()
        .with_context(|| format!("invalid image name {:?}", args.name))?;
    let mut config = ImageConfig::for_platform(&Platform::host());
    for change in &args.change {
        apply_change(&mut config, change)?;
    }
    let state = State::open(root)?;
    let content = state.store.content();

    let input: Box<dyn Read + Send> = if args.file.as_os_str() == "-" {
        Box::new(io::stdin())
    } else {
        Box::new(BufReader::new(
            File::open(&args.file).with_context(|| format!("opening {}", args.file.display()))?,
        ))
    };
    let (_, mut tar) = Compression::decompress(input)
        .with_context(|| format!("reading {}", args.file.display()))?;
    let mut tee = Digester::tee(GzEncoder::new(
        content.writer()?,
        flate2::Compression::new(Compression::Gzip.default_level() as u32),
    ));
    io::copy(&mut tar, &mut tee).with_context(|| format!("reading {}", args.file.display()))?;
    let (gz, diff_id, _) = tee.finish();
    let (layer, layer_size) = gz.finish()?.commit(None)?;

    let created = Timestamp::now().to_string();
    config.created = Some(created.clone());
    config.rootfs.diff_ids = vec![diff_id];
    config.history = vec![History {
        created: Some(created),
        comment: Some(
            args.message
                .clone()
                .unwrap_or_else(|| "Imported from -".to_owned()),
        ),
        ..History::default()
    }];
    let image = store_image(
        content,
        &config,
        vec![Descriptor::new(
            MediaType::ImageLayerGzip,
            layer_size,
            &layer,
        )],
    )?;
    state
        .images
        .update(|images| images.tag(name, image.clone(), Timestamp::now()))?;
    writeln!(io::stdout(), "{}", image.config)?;
    Ok(ExitCode::SUCCESS)
}

/// Applies one `--change` instruction to the config.
fn apply_change(config: &mut ImageConfig, change: &str) -> anyhow::Result<()> {
    let text = format!("FROM scratch\n{change}\n");
    let dockerfile = kiln_parser::parse(&text)
        .map_err(|e| anyhow::anyhow!("{e}"))
        .with_context(|| format!("invalid --change {change:?}"))?;
    let stage = dockerfile.stages.into_iter().next();
    let instructions = stage.map(|s| s.instructions).unwrap_or_default();
    let [instruction] = instructions.as_slice() else {
        bail!("--change {change:?} must be exactly one instruction");
    };
    let command_line = |line: &CommandLine| match line {
        CommandLine::Exec(args) => args.iter().map(|arg| arg.to_string()).collect(),
        CommandLine::Shell(cmd) => vec!["/bin/sh".to_owned(), "-c".to_owned(), cmd.to_string()],
    };
    let c = &mut config.config;
    match &instruction.command {
        Instr::Cmd(line) => c.cmd = Some(command_line(line)),
        Instr::Entrypoint(line) => c.entrypoint = Some(command_line(line)),
        Instr::Env(pairs) => {
            for kv in pairs {
                c.set_env_var(&kv.key, &kv.value);
            }
        }
        Instr::Label(pairs) => {
            let labels = c.labels.get_or_insert_with(Default::default);
            for kv in pairs {
                labels.insert(kv.key.to_string(), kv.value.to_string());
            }
        }
        Instr::User(user) => c.user = Some(user.to_string()),
        Instr::Workdir(dir) => c.working_dir = Some(dir.to_string()),
        _ => bail!(
            "--change {change:?}: only CMD, ENTRYPOINT, ENV, LABEL, USER and WORKDIR can be changed"
        ),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_set_config_fields() {
        let mut config = ImageConfig::default();
        apply_change(&mut config, r#"CMD ["/bin/sh"]"#).unwrap();
        apply_change(&mut config, "ENTRYPOINT echo hi").unwrap();
        apply_change(&mut config, "ENV A=1 B=2").unwrap();
        apply_change(&mut config, "WORKDIR /srv").unwrap();
        let c = &config.config;
        assert_eq!(c.cmd, Some(vec!["/bin/sh".to_owned()]));
        assert_eq!(
            c.entrypoint,
            Some(vec!["/bin/sh".into(), "-c".into(), "echo hi".into()])
        );
        assert_eq!(c.env_var("B"), Some("2"));
        assert_eq!(c.working_dir.as_deref(), Some("/srv"));
        assert!(apply_change(&mut config, "RUN true").is_err());
    }
}
