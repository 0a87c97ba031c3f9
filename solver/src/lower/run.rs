//! `RUN` → an [`ExecOp`] over the stage's filesystem.
//!
//! As in BuildKit's `dispatchRun`: the shell form runs through SHELL; a lone heredoc
//! becomes the script the shell runs (or, with a `#!` line, a file mounted at
//! `/dev/pipes/` and executed); other heredoc forms are handed to the shell whole. The
//! environment is the stage's step environment — the configuration's Env plus the ARGs
//! declared so far — so an ARG affects the keys of the steps after its declaration
//! only. `--mount`s become extra inputs of the vertex; the proxy build arguments ride
//! along outside the key.

use kiln_parser::instructions::mount::{CacheSharing as MountSharing, Mount, MountType};
use kiln_parser::instructions::{
    CommandLine, Expandable, Instruction, NetworkMode as RunNetwork, RunInstruction, SecurityMode,
};
use kiln_parser::shell::Lex;

use super::config::{clean_path, join_path, owned_words, with_shell};
use super::copy::inline_document;
use super::history::{self, heredoc_summary, uppercase_command};
use super::stage::StageState;
use super::{Builder, LowerError, Place};
use crate::op::{CacheSharing, ExecMount, ExecOp, NetworkMode, Op};

/// Where a `#!` heredoc script is mounted.
const PIPES: &str = "/dev/pipes/";

/// Lowers `RUN` in stage `index`.
pub(crate) fn lower_run(
    builder: &mut Builder<'_>,
    state: &mut StageState,
    index: usize,
    instruction: &Instruction,
    run: &RunInstruction,
    at: &Place,
) -> Result<(), LowerError> {
    let mut inputs = vec![state.fs];
    let mut mounts = Vec::new();
    let mut display = instruction
        .original
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned();
    let args = match (&run.command, run.heredocs.as_slice()) {
        (CommandLine::Exec(args), []) => owned_words(args),
        (CommandLine::Exec(_), _) => return Err(LowerError::HeredocRun { at: at.clone() }),
        (CommandLine::Shell(command), []) => with_shell(state, command),
        (CommandLine::Shell(command), [doc, ..]) if is_lone_heredoc(command) => {
            display.push_str(&format!(" ({})", heredoc_summary(&doc.content)));
            if doc.content.starts_with("#!") {
                let content = doc.content.as_bytes().to_vec();
                let script = inline_document(builder, state, &doc.name, content, 0o755);
                inputs.push(script);
                mounts.push(ExecMount::Bind {
                    input: inputs.len() - 1,
                    source: "/".to_owned(),
                    target: PIPES.to_owned(),
                    readwrite: false,
                });
                with_shell(state, &format!("{PIPES}{}", doc.name))
            } else {
                with_shell(state, &doc.content)
            }
        }
        (CommandLine::Shell(command), docs) => {
            let mut script = command.to_string();
            for doc in docs {
                script.push('\n');
                script.push_str(&doc.content);
                script.push_str(&doc.name);
            }
            with_shell(state, &script)
        }
    };

    for mount in &run.mounts {
        let mount = match mount {
            Expandable::Literal(m) => m.clone(),
            Expandable::Deferred(spec) => Mount::parse_with(spec, |v| {
                builder
                    .lex
                    .process_word(v, &state.env)
                    .map_err(|e| e.to_string())
            })
            .map_err(|source| LowerError::Mount {
                at: at.clone(),
                source,
            })?,
        };
        mounts.push(exec_mount(builder, state, index, &mount, &mut inputs, at)?);
    }

    let name_lex = Lex::new(builder.lex.escape())
        .with_raw_quotes(true)
        .with_skip_unset_env(true);
    let shown = name_lex
        .process_word(&display, &state.env)
        .unwrap_or(display);
    let name = state.step_name(&uppercase_command(&shown));
    let mut exec = ExecOp {
        args: args.clone(),
        env: state.env.entries(),
        cwd: state.workdir().to_owned(),
        user: state.user().to_owned(),
        network: match run.network {
            RunNetwork::Default => builder.options.network,
            RunNetwork::None => NetworkMode::None,
            RunNetwork::Host => NetworkMode::Host,
        },
        insecure: run.security == SecurityMode::Insecure,
        mounts,
        hostname: builder.options.hostname.clone(),
        proxy_env: builder.proxy_env.clone(),
    };
    exec.normalise();
    let parent = state.fs;
    state.fs = builder
        .graph
        .add(Op::Exec(exec), inputs, state.meta(name, at));
    let message = history::run(&args, &state.args, &state.env);
    state.commit(
        &builder.created,
        format!("{message} # buildkit"),
        Some((state.fs, Some(parent))),
    );
    Ok(())
}

/// Whether the command is nothing but a heredoc marker (`<<EOF`, `<<-"EOF"`).
fn is_lone_heredoc(command: &str) -> bool {
    let word = command.trim();
    let rest = word.trim_start_matches(|c: char| c.is_ascii_digit());
    !word.contains(char::is_whitespace)
        && rest
            .strip_prefix("<<")
            .is_some_and(|r| !r.trim_start_matches('-').is_empty() && !r.contains('<'))
}

/// One `--mount` as an [`ExecMount`], adding the input it reads to `inputs`.
fn exec_mount(
    builder: &mut Builder<'_>,
    state: &StageState,
    index: usize,
    mount: &Mount,
    inputs: &mut Vec<crate::graph::VertexId>,
    at: &Place,
) -> Result<ExecMount, LowerError> {
    let raw_target = mount.target.as_deref().unwrap_or_default().to_owned();
    let target = clean_path(&join_path(state.workdir(), &raw_target));
    let unsupported = |feature| LowerError::Unsupported {
        at: at.clone(),
        feature,
    };
    match mount.kind {
        MountType::Ssh => return Err(unsupported("RUN --mount=type=ssh")),
        MountType::Secret => {
            let id = mount
                .source
                .as_deref()
                .or(mount.id.as_deref())
                .filter(|id| !id.is_empty())
                .map_or_else(|| base_name(&raw_target), str::to_owned);
            let target = match (&mount.target, &mount.env) {
                (Some(t), _) => Some(t.to_string()),
                (None, Some(_)) => None,
                (None, None) => Some(format!("/run/secrets/{}", base_name(&id))),
            };
            return Ok(ExecMount::Secret {
                id,
                target,
                env: mount.env.as_deref().map(str::to_owned),
                required: mount.required,
                mode: mount.mode.unwrap_or(0o400),
                uid: mount.uid.unwrap_or(0),
                gid: mount.gid.unwrap_or(0),
            });
        }
        _ => {}
    }
    if target == "/" {
        return Err(LowerError::MountTarget {
            at: at.clone(),
            target: raw_target,
        });
    }
    match mount.kind {
        MountType::Tmpfs => Ok(ExecMount::Tmpfs {
            target,
            size: mount.size,
        }),
        MountType::Cache => {
            if mount.from.is_some() {
                return Err(unsupported("a cache mount seeded from another state"));
            }
            Ok(ExecMount::Cache {
                id: mount
                    .id
                    .as_deref()
                    .map_or_else(|| raw_target.clone(), str::to_owned),
                target,
                sharing: match mount.sharing {
                    None | Some(MountSharing::Shared) => CacheSharing::Shared,
                    Some(MountSharing::Private) => CacheSharing::Private,
                    Some(MountSharing::Locked) => CacheSharing::Locked,
                },
                readonly: mount.read_only,
                uid: mount.uid.unwrap_or(0),
                gid: mount.gid.unwrap_or(0),
                mode: mount.mode.unwrap_or(0o755),
            })
        }
        _ => {
            let vertex = match &mount.from {
                Some(from) => builder.vertex_named(from, false, index, &state.display, at)?,
                None => builder.context(),
            };
            inputs.push(vertex);
            Ok(ExecMount::Bind {
                input: inputs.len() - 1,
                source: clean_path(&format!("/{}", mount.source.as_deref().unwrap_or_default())),
                target,
                readwrite: !mount.read_only,
            })
        }
    }
}

/// Go's `path.Base`.
fn base_name(path: &str) -> String {
    let trimmed = path.trim_end_matches('/');
    match trimmed.rsplit_once('/') {
        Some((_, base)) => base.to_owned(),
        None if trimmed.is_empty() && path.starts_with('/') => "/".to_owned(),
        None if trimmed.is_empty() => ".".to_owned(),
        None => trimmed.to_owned(),
    }
}
