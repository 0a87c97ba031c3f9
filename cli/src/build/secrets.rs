//! `--secret id=…,src=…` / `--secret id=…,env=…`: values a RUN step may read through
//! `--mount=type=secret`, which never enter a layer, a cache key, the history or the
//! progress output.
//!
//! A file secret is bind-mounted read-only from where it is; an environment secret that
//! a step mounts as a file is written to a private file (mode 0400) in a directory kiln
//! removes when the build ends. Neither path is ever inside a step's upper directory,
//! so nothing of a secret can reach a layer.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;

use anyhow::{Context as _, bail};
use kiln_solver::op::ExecMount;

#[derive(Debug, Clone)]
enum Source {
    File(PathBuf),
    Env(String),
}

/// The build's secrets.
#[derive(Debug)]
pub struct Secrets {
    sources: BTreeMap<String, Source>,
    dir: tempfile::TempDir,
}

impl Secrets {
    /// Parses `--secret` values.
    pub fn parse(specs: &[String]) -> anyhow::Result<Secrets> {
        let mut sources = BTreeMap::new();
        for spec in specs {
            let mut id = None;
            let mut source = None;
            for field in spec.split(',') {
                let (key, value) = field.split_once('=').unwrap_or((field, ""));
                match key {
                    "id" => id = Some(value.to_owned()),
                    "src" | "source" => source = Some(Source::File(PathBuf::from(value))),
                    "env" => source = Some(Source::Env(value.to_owned())),
                    "type" if value == "file" || value == "env" => {}
                    _ => {
                        bail!("--secret {spec:?}: unknown field {key:?} (expected id, src or env)")
                    }
                }
            }
            let id = id
                .filter(|id| !id.is_empty())
                .with_context(|| format!("--secret {spec:?} has no id"))?;
            // As BuildKit: with neither src nor env, the environment variable named by
            // the id, else a file of that name.
            let source = source.unwrap_or_else(|| {
                if std::env::var_os(&id).is_some() {
                    Source::Env(id.clone())
                } else {
                    Source::File(PathBuf::from(&id))
                }
            });
            if let Source::File(path) = &source
                && !path.is_file()
            {
                bail!(
                    "--secret {spec:?}: {} is not a readable file",
                    path.display()
                );
            }
            sources.insert(id, source);
        }
        Ok(Secrets {
            sources,
            dir: tempfile::Builder::new().prefix("kiln-secrets-").tempdir()?,
        })
    }

    /// The host file holding secret `id`, or `None` when it was not given and is not
    /// required.
    pub fn file(&self, id: &str, required: bool) -> anyhow::Result<Option<PathBuf>> {
        match self.sources.get(id) {
            Some(Source::File(path)) => Ok(Some(path.clone())),
            Some(Source::Env(var)) => {
                let value = std::env::var(var).with_context(|| {
                    format!("secret {id}: environment variable {var} is not set")
                })?;
                let path = self
                    .dir
                    .path()
                    .join(kiln_image::Digest::of(id.as_bytes()).hex());
                if !path.exists() {
                    let mut file = fs::OpenOptions::new()
                        .write(true)
                        .create_new(true)
                        .mode(0o400)
                        .open(&path)?;
                    file.write_all(value.as_bytes())?;
                }
                Ok(Some(path))
            }
            None if required => bail!("secret {id} is required but was not given with --secret"),
            None => Ok(None),
        }
    }

    /// Environment variables for the secrets `mounts` ask to see as `env=`.
    pub fn env_for(&self, mounts: &[ExecMount]) -> anyhow::Result<Vec<(String, String)>> {
        let mut env = Vec::new();
        for mount in mounts {
            let ExecMount::Secret {
                id,
                env: Some(name),
                required,
                ..
            } = mount
            else {
                continue;
            };
            let Some(path) = self.file(id, *required)? else {
                continue;
            };
            let value = fs::read_to_string(&path)
                .with_context(|| format!("reading secret {id} from {}", path.display()))?;
            env.push((name.clone(), value));
        }
        Ok(env)
    }
}
