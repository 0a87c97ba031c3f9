//! `COPY` and `ADD` → a [`FileOp`] of [`CopyAction`]s over the stage's filesystem.
//!
//! As in BuildKit's `dispatchCopy`: each source becomes one copy action reading from
//! its own input — the build context (one vertex shared by every step), another stage
//! or image (`--from`), a download (`ADD <url>` → [`SourceOp::Http`]), or a heredoc
//! written by an internal [`FileAction::Mkfile`] step. The destination is resolved
//! against WORKDIR keeping its trailing slash. `--link` lowers the actions over an
//! empty tree and merges the result onto the stage, so the layer does not depend on
//! what is below it (not with `--chmod`, which BuildKit also lowers without the merge).

use kiln_image::Digest;
use kiln_parser::instructions::chmod::Chmod as ParsedChmod;
use kiln_parser::instructions::{
    AddInstruction, CopyInstruction, Expandable, FileTransfer, Instruction, Source,
};
use kiln_parser::shell::Lex;

use super::config::{clean_path, owned_words};
use super::history::uppercase_command;
use super::stage::StageState;
use super::{Builder, LowerError, Place, expand_in};
use crate::graph::VertexId;
use crate::op::{Chmod, CopyAction, FileAction, FileOp, MergeOp, Op, OpMetadata, Owner, SourceOp};

/// Lowers `COPY` in stage `index`.
pub(crate) fn lower_copy(
    builder: &mut Builder<'_>,
    state: &mut StageState,
    index: usize,
    instruction: &Instruction,
    copy: &CopyInstruction,
    at: &Place,
) -> Result<(), LowerError> {
    let from = match &copy.from {
        Some(from) => Some(builder.vertex_named(from, true, index, &state.display, at)?),
        None => None,
    };
    lower_transfer(
        builder,
        state,
        instruction,
        &copy.files,
        Transfer {
            add: false,
            from,
            parents: copy.parents,
            checksum: None,
            unpack: None,
        },
        at,
    )
}

/// Lowers `ADD`.
pub(crate) fn lower_add(
    builder: &mut Builder<'_>,
    state: &mut StageState,
    instruction: &Instruction,
    add: &AddInstruction,
    at: &Place,
) -> Result<(), LowerError> {
    let checksum = match &add.checksum {
        Some(raw) => Some(expand_in(builder, state, raw, at)?),
        None => None,
    };
    lower_transfer(
        builder,
        state,
        instruction,
        &add.files,
        Transfer {
            add: true,
            from: None,
            parents: false,
            checksum,
            unpack: add.unpack,
        },
        at,
    )
}

/// What differs between COPY and ADD.
struct Transfer {
    add: bool,
    from: Option<VertexId>,
    parents: bool,
    checksum: Option<String>,
    unpack: Option<bool>,
}

fn lower_transfer(
    builder: &mut Builder<'_>,
    state: &mut StageState,
    instruction: &Instruction,
    files: &FileTransfer,
    transfer: Transfer,
    at: &Place,
) -> Result<(), LowerError> {
    let keyword = if transfer.add { "ADD" } else { "COPY" };
    let problem = |problem| LowerError::Transfer {
        at: at.clone(),
        problem,
    };
    let dest_raw = expand_in(builder, state, &files.dest, at)?;
    let dest = destination(state.workdir(), &dest_raw);
    let chown = match &files.chown {
        Some(raw) => {
            let value = expand_in(builder, state, raw, at)?;
            match value.as_str() {
                "" => None,
                v => Some((
                    value.clone(),
                    Owner::parse(v).ok_or_else(|| LowerError::Chown {
                        at: at.clone(),
                        value: value.clone(),
                    })?,
                )),
            }
        }
        None => None,
    };
    let chmod = match &files.chmod {
        None => None,
        Some(Expandable::Literal(c)) => {
            Some((flag_text(&instruction.original, "chmod"), c.clone()))
        }
        Some(Expandable::Deferred(raw)) => {
            let value = expand_in(builder, state, raw, at)?;
            let parsed: ParsedChmod = value.parse().map_err(|source| LowerError::Chmod {
                at: at.clone(),
                source,
            })?;
            Some((value, parsed))
        }
    };
    let mode = chmod.as_ref().map(|(_, c)| match c {
        ParsedChmod::Octal(m) => Chmod::Octal(*m),
        ParsedChmod::Symbolic(s) => Chmod::Symbolic(s.clone()),
    });
    let owner = chown.as_ref().map(|(_, o)| o.clone());

    let mut paths = Vec::new();
    let mut docs = Vec::new();
    for source in &files.sources {
        match source {
            Source::Path(raw) => paths.push(expand_in(builder, state, raw, at)?),
            Source::Heredoc(doc) => docs.push(doc),
        }
    }
    if transfer.checksum.is_some() {
        if !transfer.add {
            return Err(problem("checksum can't be specified for COPY"));
        }
        if paths.len() != 1 || !docs.is_empty() {
            return Err(problem("checksum can't be specified for multiple sources"));
        }
        if !is_url(&paths[0]) {
            return Err(problem("checksum requires HTTP(S) or Git sources"));
        }
    }

    let link = files.link && chmod.is_none();
    // With --link the actions apply to an empty tree: no base input.
    let mut inputs: Vec<VertexId> = if link { Vec::new() } else { vec![state.fs] };
    let input_of = |inputs: &mut Vec<VertexId>, vertex: VertexId| match inputs
        .iter()
        .position(|v| *v == vertex)
    {
        Some(i) => i,
        None => {
            inputs.push(vertex);
            inputs.len() - 1
        }
    };
    let copy = |input: usize, sources: Vec<String>, wildcard: bool| CopyAction {
        input,
        sources,
        dest: dest.clone(),
        owner: owner.clone(),
        mode: mode.clone(),
        allow_wildcard: wildcard,
        allow_empty_wildcard: wildcard,
        dir_contents_only: wildcard,
        unpack: false,
        parents: false,
        excludes: owned_words(&files.excludes),
    };
    let mut actions = Vec::new();
    for path in &paths {
        if is_git(path) {
            return Err(LowerError::Unsupported {
                at: at.clone(),
                feature: "a git source",
            });
        }
        if is_url(path) {
            if !transfer.add {
                return Err(problem("source can't be a URL for COPY"));
            }
            let checksum = match &transfer.checksum {
                Some(value) => {
                    Some(
                        value
                            .parse::<Digest>()
                            .map_err(|source| LowerError::Checksum {
                                at: at.clone(),
                                value: value.clone(),
                                source,
                            })?,
                    )
                }
                None => None,
            };
            let filename = url_file_name(path);
            let download = builder.graph.add(
                Op::Source(SourceOp::Http {
                    url: path.clone(),
                    checksum,
                    filename: filename.clone(),
                }),
                Vec::new(),
                OpMetadata {
                    name: format!("{keyword} {path}"),
                    stage: state.name.clone(),
                    line: Some(at.line),
                    ignore_cache: state.ignore_cache,
                },
            );
            let input = input_of(&mut inputs, download);
            let mut action = copy(input, vec![format!("/{filename}")], false);
            action.unpack = transfer.unpack.unwrap_or(false);
            actions.push(FileAction::Copy(action));
            continue;
        }
        let vertex = match transfer.from {
            Some(v) => v,
            None => builder.context(),
        };
        let input = input_of(&mut inputs, vertex);
        let source = if transfer.parents {
            match path.split_once("/./") {
                Some((parent, rest)) => {
                    format!(
                        "{}/./{}",
                        clean_path(&format!("/{parent}")),
                        clean_path(&format!("/{rest}")).trim_start_matches('/')
                    )
                }
                None => clean_path(&format!("/{path}")),
            }
        } else {
            clean_path(&format!("/{path}"))
        };
        let mut action = copy(input, vec![source], true);
        action.unpack = transfer.unpack.unwrap_or(transfer.add);
        action.parents = transfer.parents;
        actions.push(FileAction::Copy(action));
    }
    for doc in &docs {
        let data = if doc.expand {
            let raw_lex = Lex::new('\\').with_skip_process_quotes(true);
            raw_lex
                .process_word(&doc.content, &state.env)
                .map_err(|source| LowerError::Expand {
                    at: at.clone(),
                    word: doc.content.to_string(),
                    source,
                })?
        } else {
            doc.content.to_string()
        };
        let file = inline_document(builder, state, &doc.name, data.into_bytes(), 0o644);
        let input = input_of(&mut inputs, file);
        actions.push(FileAction::Copy(copy(
            input,
            vec![format!("/{}", doc.name)],
            false,
        )));
    }

    let shown = Lex::new(builder.lex.escape())
        .process_word(&instruction.original, &state.env)
        .unwrap_or_else(|_| instruction.original.to_string());
    let shown = uppercase_command(shown.lines().next().unwrap_or_default());
    let name = state.step_name(&shown);
    let parent = state.fs;
    let layer = if link {
        let layer = builder.graph.add(
            Op::File(FileOp {
                has_base: false,
                actions,
            }),
            inputs,
            state.meta(name.clone(), at),
        );
        state.step -= 1;
        let merge_name = state.step_name(&format!("LINK {shown}"));
        state.fs = builder.graph.add(
            Op::Merge(MergeOp { inputs: 2 }),
            vec![parent, layer],
            state.meta(merge_name, at),
        );
        (layer, None)
    } else {
        state.fs = builder.graph.add(
            Op::File(FileOp {
                has_base: true,
                actions,
            }),
            inputs,
            state.meta(name, at),
        );
        (state.fs, Some(parent))
    };

    let mut message = String::from(keyword);
    if transfer.parents {
        message.push_str(" --parents");
    }
    if let Some((text, _)) = &chown {
        message.push_str(&format!(" --chown={text}"));
    }
    if let Some((text, _)) = &chmod {
        message.push_str(&format!(" --chmod={text}"));
    }
    for path in &paths {
        message.push_str(&format!(" {path}"));
    }
    for doc in &docs {
        message.push_str(&format!(" <<{}", doc.name));
    }
    message.push_str(&format!(" {dest_raw} # buildkit"));
    state.commit(&builder.created, message, Some(layer));
    Ok(())
}

/// BuildKit's `pathRelativeToWorkingDir`: absolute, cleaned, a trailing slash kept
/// (`.` and the empty path mean the working directory itself, as a directory).
fn destination(workdir: &str, dest: &str) -> String {
    let dest = if dest.is_empty() || dest == "." {
        "./"
    } else {
        dest
    };
    let joined = if dest.starts_with('/') {
        dest.to_owned()
    } else {
        format!("{}/{dest}", workdir.trim_end_matches('/'))
    };
    let cleaned = clean_path(&joined);
    let dir = joined.ends_with('/') || joined.ends_with("/.");
    if dir && cleaned != "/" {
        format!("{cleaned}/")
    } else {
        cleaned
    }
}

/// A literal flag's value as written in the instruction (`--chmod=0755` → `0755`), for
/// the history entry, which BuildKit writes with the user's spelling.
fn flag_text(original: &str, flag: &str) -> String {
    let prefix = format!("--{flag}=");
    original
        .split_whitespace()
        .find_map(|word| word.strip_prefix(&prefix))
        .unwrap_or_default()
        .to_owned()
}

fn is_url(path: &str) -> bool {
    path.starts_with("http://") || path.starts_with("https://")
}

/// Git sources as BuildKit tells them from plain URLs: `git@…`, `git://…`, and
/// `http(s)://…` ending in `.git` (optionally followed by `#ref`).
fn is_git(path: &str) -> bool {
    let without_fragment = path.split('#').next().unwrap_or_default();
    path.starts_with("git@")
        || path.starts_with("git://")
        || (is_url(path) && without_fragment.ends_with(".git"))
}

/// The file name a download is stored under: the URL path's last element, or
/// `__unnamed__`.
fn url_file_name(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let path = rest
        .split(['?', '#'])
        .next()
        .unwrap_or_default()
        .split_once('/')
        .map_or("", |(_, p)| p);
    match path.trim_end_matches('/').rsplit('/').next() {
        Some(name) if !name.is_empty() && name != "." => name.to_owned(),
        _ => "__unnamed__".to_owned(),
    }
}

/// A filesystem holding one heredoc as `/<name>`, for COPY/ADD heredoc sources and
/// `#!` RUN heredocs.
pub(crate) fn inline_document(
    builder: &mut Builder<'_>,
    state: &StageState,
    name: &str,
    data: Vec<u8>,
    mode: u32,
) -> VertexId {
    builder.graph.add(
        Op::File(FileOp {
            has_base: false,
            actions: vec![FileAction::Mkfile {
                path: format!("/{name}"),
                data,
                mode,
                owner: None,
            }],
        }),
        Vec::new(),
        OpMetadata {
            name: "[internal] preparing inline document".to_owned(),
            ignore_cache: state.ignore_cache,
            ..OpMetadata::default()
        },
    )
}
