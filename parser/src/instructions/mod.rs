//! The typed layer: raw [`Node`]s → stages of typed instructions with validated flags.
//!
//! Each instruction is checked by the rules of BuildKit's
//! `frontend/dockerfile/instructions/parse.go`: argument counts, the flags it declares
//! and their values, `ENV`/`LABEL` pairs, `FROM … AS name`, HEALTHCHECK durations,
//! heredoc sources of COPY/ADD, the ONBUILD trigger restrictions. Where BuildKit looks
//! at an instruction only later (after `$VAR` expansion), the value is validated here
//! when it is literal and kept as [`Expandable::Deferred`] text when it names a
//! variable, so the solver can finish the check with the build's ARG values.
//!
//! Arguments stay as written — quotes and `$VAR` references included — because their
//! meaning depends on ARG/ENV values only the solver knows; it expands them with
//! [`crate::shell`].
//!
//! Two BuildKit leniencies are kept on purpose so that every Dockerfile BuildKit accepts
//! parses here too: `ARG` and `STOPSIGNAL` ignore flags, and `HEALTHCHECK NONE` ignores
//! its flags.

pub mod chmod;
mod flags;
pub mod mount;
mod owned;

use std::borrow::Cow;
use std::time::Duration;

use serde::Serialize;

use crate::error::{ErrorKind, ParseError};
use crate::span::Span;
use crate::syntax::line::{LineText, RawHeredoc, RawNode, Text};
use crate::syntax::{self, CheckConfig, Directive, Keyword, NodeReader, Read};
use chmod::Chmod;
use flags::{Flags, Given, Kind, Name};
use mount::Mount;

/// A parsed Dockerfile.
///
/// Its text borrows from the Dockerfile text it was parsed from (`'a`) wherever it is
/// written there as is, which is almost everywhere: only text the parser had to make
/// (continuation lines joined, quotes, escapes or JSON decoded, `<<-` tabs removed) is
/// owned. [`Dockerfile::into_owned`] makes a copy free of the source.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Dockerfile<'a> {
    /// The parser directives, in order.
    pub directives: Vec<Directive>,
    /// The escape character (`\` or `` ` ``).
    pub escape: char,
    /// The `# check=` settings, when given.
    pub check: Option<CheckConfig>,
    /// ARG instructions before the first FROM.
    pub global_args: Vec<GlobalArg<'a>>,
    /// The build stages, in order.
    pub stages: Vec<Stage<'a>>,
}

impl Dockerfile<'_> {
    /// The `# syntax=` directive's value, when given.
    pub fn syntax(&self) -> Option<&str> {
        self.directives
            .iter()
            .find(|d| d.name == "syntax")
            .map(|d| d.value.as_str())
    }
}

/// An ARG before the first FROM: visible to FROM lines, and to stages that re-declare it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct GlobalArg<'a> {
    /// The declarations.
    pub arg: ArgInstruction<'a>,
    /// Where the instruction is.
    pub span: Span,
    /// The instruction's text.
    pub original: Cow<'a, str>,
}

/// One `FROM` and the instructions up to the next.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Stage<'a> {
    /// `AS <name>`, lowercased.
    pub name: Option<Cow<'a, str>>,
    /// The base image or stage, unexpanded.
    pub base: Cow<'a, str>,
    /// `--platform`, unexpanded.
    pub platform: Option<Cow<'a, str>>,
    /// The instructions after FROM.
    pub instructions: Vec<Instruction<'a>>,
    /// Where the FROM line is.
    pub span: Span,
    /// The FROM line's text.
    pub original: Cow<'a, str>,
}

/// One instruction with its place in the Dockerfile.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Instruction<'a> {
    /// What it does.
    pub command: Command<'a>,
    /// Where it is (keyword to the end of its last line or heredoc).
    pub span: Span,
    /// Its text (continuations joined), for display such as image history.
    pub original: Cow<'a, str>,
}

/// The instructions (FROM starts a [`Stage`] instead).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "instruction", content = "args", rename_all = "lowercase")]
pub enum Command<'a> {
    /// `RUN`.
    Run(Box<RunInstruction<'a>>),
    /// `CMD`.
    Cmd(CommandLine<'a>),
    /// `ENTRYPOINT`.
    Entrypoint(CommandLine<'a>),
    /// `SHELL`, always exec form.
    Shell(Vec<Cow<'a, str>>),
    /// `COPY`.
    Copy(Box<CopyInstruction<'a>>),
    /// `ADD`.
    Add(Box<AddInstruction<'a>>),
    /// `ENV`.
    Env(Vec<KeyValue<'a>>),
    /// `LABEL`.
    Label(Vec<KeyValue<'a>>),
    /// `ARG`.
    Arg(ArgInstruction<'a>),
    /// `EXPOSE` ports, sorted as BuildKit sorts them, unexpanded.
    Expose(Vec<Cow<'a, str>>),
    /// `VOLUME` paths, unexpanded.
    Volume(Vec<Cow<'a, str>>),
    /// `USER`, unexpanded.
    User(Cow<'a, str>),
    /// `WORKDIR`, unexpanded.
    Workdir(Cow<'a, str>),
    /// `STOPSIGNAL`, unexpanded.
    Stopsignal(Cow<'a, str>),
    /// `MAINTAINER` (deprecated, sets the author).
    Maintainer(Cow<'a, str>),
    /// `HEALTHCHECK`.
    Healthcheck(Healthcheck<'a>),
    /// `ONBUILD`.
    Onbuild(OnbuildInstruction<'a>),
}

/// A value checked now if literal, or kept for the solver to check after `$VAR`
/// expansion.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Expandable<'a, T> {
    /// Written without variables, and valid.
    Literal(T),
    /// Holds a `$` reference: the raw text, to expand and then validate.
    Deferred(Cow<'a, str>),
}

/// How a command is given.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CommandLine<'a> {
    /// Shell form: run through the stage's SHELL (empty when no argument was given).
    Shell(Cow<'a, str>),
    /// Exec (JSON) form.
    Exec(Vec<Cow<'a, str>>),
}

/// A file given inline as a heredoc.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct InlineFile<'a> {
    /// The heredoc's delimiter, which names the file for COPY/ADD.
    pub name: Cow<'a, str>,
    /// The content, leading tabs already removed for `<<-`.
    pub content: Cow<'a, str>,
    /// `$VAR`s in the content are to be expanded (unquoted delimiter).
    pub expand: bool,
    /// The file descriptor before `<<` (0 when none).
    pub fd: u32,
}

/// `RUN`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RunInstruction<'a> {
    /// The command.
    pub command: CommandLine<'a>,
    /// Heredocs following the line, in order.
    pub heredocs: Vec<InlineFile<'a>>,
    /// `--mount`s.
    pub mounts: Vec<Expandable<'a, Mount<'a>>>,
    /// `--network`.
    pub network: NetworkMode,
    /// `--security`.
    pub security: SecurityMode,
}

/// `RUN --network`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum NetworkMode {
    /// The builder's default network.
    #[default]
    Default,
    /// No network.
    None,
    /// The host's network.
    Host,
}

/// `RUN --security`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SecurityMode {
    /// The usual container sandbox.
    #[default]
    Sandbox,
    /// Full privileges.
    Insecure,
}

/// A COPY or ADD source.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Source<'a> {
    /// A path, glob or URL, unexpanded.
    Path(Cow<'a, str>),
    /// An inline heredoc file.
    Heredoc(InlineFile<'a>),
}

/// What COPY and ADD have in common.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FileTransfer<'a> {
    /// The sources, in order.
    pub sources: Vec<Source<'a>>,
    /// The destination, unexpanded.
    pub dest: Cow<'a, str>,
    /// `--chown`, unexpanded.
    pub chown: Option<Cow<'a, str>>,
    /// `--chmod`.
    pub chmod: Option<Expandable<'a, Chmod>>,
    /// `--link`.
    pub link: bool,
    /// `--exclude` patterns.
    pub excludes: Vec<Cow<'a, str>>,
}

/// `COPY`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CopyInstruction<'a> {
    /// Sources, destination and the shared flags.
    #[serde(flatten)]
    pub files: FileTransfer<'a>,
    /// `--from`, unexpanded.
    pub from: Option<Cow<'a, str>>,
    /// `--parents`.
    pub parents: bool,
}

/// `ADD`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AddInstruction<'a> {
    /// Sources, destination and the shared flags.
    #[serde(flatten)]
    pub files: FileTransfer<'a>,
    /// `--checksum`.
    pub checksum: Option<Cow<'a, str>>,
    /// `--keep-git-dir`.
    pub keep_git_dir: bool,
    /// `--unpack`, when given.
    pub unpack: Option<bool>,
}

/// An ENV or LABEL pair, unexpanded (quotes included).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct KeyValue<'a> {
    /// The name.
    pub key: Cow<'a, str>,
    /// The value.
    pub value: Cow<'a, str>,
    /// Written in the legacy `KEY value` form.
    pub legacy: bool,
}

/// `ARG`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ArgInstruction<'a> {
    /// The declarations, in order.
    pub args: Vec<ArgDecl<'a>>,
}

/// One `name[=default]` of an ARG.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ArgDecl<'a> {
    /// The name.
    pub name: Cow<'a, str>,
    /// The default, unexpanded.
    pub default: Option<Cow<'a, str>>,
}

/// `HEALTHCHECK`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Healthcheck<'a> {
    /// `HEALTHCHECK NONE`: disable any inherited check.
    None,
    /// `HEALTHCHECK [flags] CMD …`.
    Check(Box<HealthConfig<'a>>),
}

/// A health check; zero durations and retries mean "the default".
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct HealthConfig<'a> {
    /// `["CMD", args…]` (exec form) or `["CMD-SHELL", command]`.
    pub test: Vec<Cow<'a, str>>,
    /// `--interval`.
    pub interval: Duration,
    /// `--timeout`.
    pub timeout: Duration,
    /// `--start-period`.
    pub start_period: Duration,
    /// `--start-interval`.
    pub start_interval: Duration,
    /// `--retries`.
    pub retries: u32,
}

/// `ONBUILD`: a trigger kept as text, parsed when a child image builds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct OnbuildInstruction<'a> {
    /// The trigger's text (heredoc bodies appended as BuildKit does).
    pub expression: Cow<'a, str>,
}

/// Parses `text` to the typed Dockerfile, typing each node as the syntax layer reads
/// it. A syntax error anywhere wins over a typing error, as when the whole syntax tree
/// is read first.
pub(crate) fn build(text: &str) -> Result<Dockerfile<'_>, ParseError> {
    let mut reader = NodeReader::new(text)?;
    let mut global_args = Vec::new();
    let mut stages: Vec<Stage> = Vec::new();
    // The current stage's instructions, moved into it in one allocation when it ends.
    let mut current = Vec::new();
    let mut failed = None;
    // The flags of the instruction being typed, reused from one to the next.
    let mut given = Vec::new();
    while let Some(read) = reader.next_node()? {
        if failed.is_some() {
            continue;
        }
        let Read { node, text } = read;
        let command = match typed(node, text, &mut given) {
            Ok(Typed::From {
                name,
                base,
                platform,
            }) => {
                finish_stage(&mut stages, &mut current);
                stages.push(Stage {
                    name,
                    base,
                    platform,
                    instructions: Vec::new(),
                    span: node.span,
                    original: text.whole(),
                });
                continue;
            }
            Ok(Typed::Command(command)) => command,
            Err(e) => {
                failed = Some(e);
                continue;
            }
        };
        match (stages.last_mut(), command) {
            (Some(_), command) => current.push(Instruction {
                command,
                span: node.span,
                original: text.whole(),
            }),
            (None, Command::Arg(arg)) => global_args.push(GlobalArg {
                arg,
                span: node.span,
                original: text.whole(),
            }),
            (None, _) => {
                failed = Some(ParseError::new(ErrorKind::NoBuildStage, node.keyword_span));
            }
        }
    }
    reader.finish()?;
    if let Some(e) = failed {
        return Err(e);
    }
    finish_stage(&mut stages, &mut current);
    let check = reader
        .directives
        .iter()
        .find(|d| d.name == "check")
        .map(|d| CheckConfig::parse(&d.value).unwrap_or_default());
    Ok(Dockerfile {
        directives: reader.directives,
        escape: reader.escape,
        check,
        global_args,
        stages,
    })
}

/// Moves the instructions gathered in `current` into the last stage, in a vector of
/// their exact size.
fn finish_stage<'a>(stages: &mut [Stage<'a>], current: &mut Vec<Instruction<'a>>) {
    if let Some(stage) = stages.last_mut() {
        stage.instructions = Vec::with_capacity(current.len());
        stage.instructions.append(current);
    }
}

enum Typed<'src> {
    From {
        name: Option<Cow<'src, str>>,
        base: Cow<'src, str>,
        platform: Option<Cow<'src, str>>,
    },
    Command(Command<'src>),
}

/// The typed instruction of the raw node `node`, whose text ranges point into the
/// logical line `text` (and heredoc ranges into its source). Strings the node already
/// owns are moved out of it; `given` is room for its flags.
fn typed<'src>(
    node: &mut RawNode,
    text: LineText<'_, 'src>,
    given: &mut Vec<Given>,
) -> Result<Typed<'src>, ParseError> {
    let at = node.keyword_span;
    let err = |kind| ParseError::new(kind, at);
    let no_flags = |instruction, node: &RawNode| flags::none(instruction, &node.flags, text);
    let one = |instruction, node: &mut RawNode| match node.args.as_mut_slice() {
        [one] => Ok(text.cow(one)),
        _ => Err(err(ErrorKind::ExactlyOneArgument { instruction })),
    };
    let at_least_one = |instruction, node: &RawNode| match node.args.is_empty() {
        true => Err(err(ErrorKind::AtLeastOneArgument { instruction })),
        false => Ok(()),
    };
    let command = match node.kind {
        Keyword::From => return from(node, text, given),
        Keyword::Run => Command::Run(Box::new(run(node, text, given)?)),
        Keyword::Cmd => {
            no_flags("CMD", node)?;
            Command::Cmd(command_line(&mut node.args, node.json, text))
        }
        Keyword::Entrypoint => {
            no_flags("ENTRYPOINT", node)?;
            Command::Entrypoint(command_line(&mut node.args, node.json, text))
        }
        Keyword::Shell => {
            no_flags("SHELL", node)?;
            at_least_one("SHELL", node)?;
            match command_line(&mut node.args, node.json, text) {
                CommandLine::Exec(v) => Command::Shell(v),
                CommandLine::Shell(_) => return Err(err(ErrorKind::ShellNotJson)),
            }
        }
        Keyword::Copy => Command::Copy(Box::new(copy(node, text, given)?)),
        Keyword::Add => Command::Add(Box::new(add(node, text, given)?)),
        Keyword::Env => {
            no_flags("ENV", node)?;
            Command::Env(key_values(node, text, "ENV")?)
        }
        Keyword::Label => {
            no_flags("LABEL", node)?;
            Command::Label(key_values(node, text, "LABEL")?)
        }
        Keyword::Arg => Command::Arg(arg(node, text)?),
        Keyword::Expose => {
            at_least_one("EXPOSE", node)?;
            no_flags("EXPOSE", node)?;
            let mut ports: Vec<_> = node.args.iter_mut().map(|a| text.cow(a)).collect();
            ports.sort();
            Command::Expose(ports)
        }
        Keyword::Volume => {
            at_least_one("VOLUME", node)?;
            no_flags("VOLUME", node)?;
            let volumes = node
                .args
                .iter_mut()
                .map(|volume| {
                    let written = text.get(volume);
                    let start = written.len() - written.trim_start().len();
                    let end = start + written.trim().len();
                    text.cow(&mut volume.part(Text::Slice(start, end)))
                })
                .collect::<Vec<_>>();
            if volumes.iter().any(|v| v.is_empty()) {
                return Err(err(ErrorKind::EmptyVolume));
            }
            Command::Volume(volumes)
        }
        Keyword::User => {
            let user = one("USER", node)?;
            no_flags("USER", node)?;
            Command::User(user)
        }
        Keyword::Workdir => {
            let dir = one("WORKDIR", node)?;
            no_flags("WORKDIR", node)?;
            Command::Workdir(dir)
        }
        Keyword::Stopsignal => Command::Stopsignal(one("STOPSIGNAL", node)?),
        Keyword::Maintainer => {
            let who = one("MAINTAINER", node)?;
            no_flags("MAINTAINER", node)?;
            Command::Maintainer(who)
        }
        Keyword::Healthcheck => Command::Healthcheck(healthcheck(node, text, given)?),
        Keyword::Onbuild => Command::Onbuild(onbuild(node, text)?),
        Keyword::Unknown => {
            return Err(err(ErrorKind::UnknownInstruction {
                keyword: node.keyword(text.line).to_owned(),
            }));
        }
    };
    Ok(Typed::Command(command))
}

fn from<'src>(
    node: &mut RawNode,
    text: LineText<'_, 'src>,
    given: &mut Vec<Given>,
) -> Result<Typed<'src>, ParseError> {
    let err = |kind| ParseError::new(kind, node.keyword_span);
    let name = match node.args.as_mut_slice() {
        [_] => None,
        [_, as_, name] if text.get(as_).eq_ignore_ascii_case("as") => {
            let written = text.get(name);
            // Lowercased as Go's `strings.ToLower` does: borrowed when that changes
            // nothing.
            let lower = match (
                written.is_ascii(),
                written.bytes().any(|b| b.is_ascii_uppercase()),
            ) {
                (true, false) => text.cow(name),
                (true, true) => Cow::Owned(written.to_ascii_lowercase()),
                (false, _) => Cow::Owned(written.to_lowercase()),
            };
            let mut chars = lower.chars();
            let valid = chars.next().is_some_and(|c| c.is_ascii_lowercase())
                && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "-_.".contains(c));
            if !valid {
                return Err(err(ErrorKind::InvalidStageName {
                    name: text.get(name).to_owned(),
                }));
            }
            Some(lower)
        }
        _ => return Err(err(ErrorKind::FromArguments)),
    };
    let flags = Flags::parse(
        "FROM",
        &node.flags,
        given,
        text,
        &[(Name::Platform, Kind::Value)],
    )?;
    let platform = flags.string(Name::Platform);
    Ok(Typed::From {
        name,
        base: text.cow(&mut node.args[0]),
        platform,
    })
}

/// BuildKit's `handleJSONArgs`: exec form as is, shell form joined into one string.
fn command_line<'src>(
    args: &mut [Text],
    json: bool,
    text: LineText<'_, 'src>,
) -> CommandLine<'src> {
    match json {
        true => CommandLine::Exec(args.iter_mut().map(|a| text.cow(a)).collect()),
        false => CommandLine::Shell(joined(args, text)),
    }
}

/// The texts joined with single spaces (borrowed when there is one).
fn joined<'src>(args: &mut [Text], text: LineText<'_, 'src>) -> Cow<'src, str> {
    if let [one] = args {
        return text.cow(one);
    }
    let mut out = String::new();
    for (i, arg) in args.iter().enumerate() {
        if i > 0 {
            out.push(' ');
        }
        out.push_str(text.get(arg));
    }
    Cow::Owned(out)
}

/// A heredoc body as a file: `<<-` tabs removed when `chomp`.
fn inline_content<'src>(doc: &RawHeredoc, chomp: bool, text: LineText<'_, 'src>) -> Cow<'src, str> {
    let content = text.source(doc.content);
    match chomp {
        true => syntax::heredoc::chomp(content),
        false => Cow::Borrowed(content),
    }
}

/// A literal `--mount` value parsed, its text borrowed from the source when the value
/// is.
fn parse_mount(spec: Cow<'_, str>) -> Result<Mount<'_>, mount::MountError> {
    match spec {
        Cow::Borrowed(spec) => Mount::parse(spec),
        Cow::Owned(spec) => Mount::parse(&spec).map(Mount::into_owned),
    }
}

fn run<'src>(
    node: &mut RawNode,
    text: LineText<'_, 'src>,
    given: &mut Vec<Given>,
) -> Result<RunInstruction<'src>, ParseError> {
    let flags = Flags::parse(
        "RUN",
        &node.flags,
        given,
        text,
        &[
            (Name::Mount, Kind::List),
            (Name::Network, Kind::Value),
            (Name::Security, Kind::Value),
        ],
    )?;
    let mounts = flags
        .list(Name::Mount)
        .map(|(spec, written, span)| {
            let located = |e: mount::MountError| ParseError::new(e.into(), span);
            if written.contains('$') {
                mount::check_unexpanded(written).map_err(located)?;
                Ok(Expandable::Deferred(spec))
            } else {
                parse_mount(spec).map(Expandable::Literal).map_err(located)
            }
        })
        .collect::<Result<_, ParseError>>()?;
    let network = match flags.value(Name::Network) {
        None | Some(("default", _)) => NetworkMode::Default,
        Some(("none", _)) => NetworkMode::None,
        Some(("host", _)) => NetworkMode::Host,
        Some((value, span)) => {
            return Err(ParseError::new(
                ErrorKind::FlagValue {
                    flag: "network",
                    value: value.to_owned(),
                    expected: "default, none or host",
                },
                span,
            ));
        }
    };
    let security = match flags.value(Name::Security) {
        None | Some(("sandbox", _)) => SecurityMode::Sandbox,
        Some(("insecure", _)) => SecurityMode::Insecure,
        Some((value, span)) => {
            return Err(ParseError::new(
                ErrorKind::FlagValue {
                    flag: "security",
                    value: value.to_owned(),
                    expected: "sandbox or insecure",
                },
                span,
            ));
        }
    };
    Ok(RunInstruction {
        command: command_line(&mut node.args, node.json, text),
        heredocs: node
            .heredocs
            .iter_mut()
            .map(|d| InlineFile {
                content: inline_content(d, d.chomp, text),
                name: text.cow(&mut d.name),
                expand: d.expand,
                fd: d.fd,
            })
            .collect(),
        mounts,
        network,
        security,
    })
}

/// Sources, destination and the flags COPY and ADD share.
fn file_transfer<'src>(
    args: &mut Vec<Text>,
    heredocs: &[RawHeredoc],
    at: Span,
    text: LineText<'_, 'src>,
    instruction: &'static str,
    flags: &Flags<'_, 'src>,
) -> Result<FileTransfer<'src>, ParseError> {
    let err = |kind| ParseError::new(kind, at);
    let Some(mut dest) = args.pop() else {
        return Err(err(ErrorKind::NoDestination { instruction }));
    };
    if syntax::heredoc::parse_marker(text.get(&dest)).is_some() {
        return Err(err(ErrorKind::HeredocDestination { instruction }));
    }
    let dest = text.cow(&mut dest);
    let sources = args
        .iter_mut()
        .map(
            |source| match syntax::heredoc::parse_marker(text.get(source)) {
                Some(marker) => {
                    let mut name = source.part(marker.name);
                    let doc = heredocs
                        .iter()
                        .rev()
                        .find(|d| text.get(&d.name) == text.get(&name));
                    Source::Heredoc(match doc {
                        Some(doc) => InlineFile {
                            name: text.cow(&mut name),
                            content: inline_content(doc, marker.chomp, text),
                            expand: doc.expand,
                            fd: doc.fd,
                        },
                        None => InlineFile {
                            name: text.cow(&mut name),
                            content: Cow::Borrowed(""),
                            expand: marker.expand,
                            fd: marker.fd,
                        },
                    })
                }
                None => Source::Path(text.cow(source)),
            },
        )
        .collect();
    let chmod = match flags.value(Name::Chmod) {
        None | Some(("", _)) => None,
        Some((value, _)) if value.contains('$') => {
            flags.string(Name::Chmod).map(Expandable::Deferred)
        }
        Some((value, span)) => Some(Expandable::Literal(
            value
                .parse::<Chmod>()
                .map_err(|e| ParseError::new(e.into(), span))?,
        )),
    };
    Ok(FileTransfer {
        sources,
        dest,
        chown: flags.string(Name::Chown),
        chmod,
        link: flags.bool(Name::Link).unwrap_or(false),
        excludes: flags.list(Name::Exclude).map(|(v, _, _)| v).collect(),
    })
}

fn copy<'src>(
    node: &mut RawNode,
    text: LineText<'_, 'src>,
    given: &mut Vec<Given>,
) -> Result<CopyInstruction<'src>, ParseError> {
    if node.args.len() < 2 {
        return Err(ParseError::new(
            ErrorKind::NoDestination {
                instruction: "COPY",
            },
            node.keyword_span,
        ));
    }
    let flags = Flags::parse(
        "COPY",
        &node.flags,
        given,
        text,
        &[
            (Name::Exclude, Kind::List),
            (Name::Parents, Kind::Bool),
            (Name::Chown, Kind::Value),
            (Name::From, Kind::Value),
            (Name::Chmod, Kind::Value),
            (Name::Link, Kind::Bool),
        ],
    )?;
    let files = file_transfer(
        &mut node.args,
        &node.heredocs,
        node.keyword_span,
        text,
        "COPY",
        &flags,
    )?;
    Ok(CopyInstruction {
        files,
        from: flags.string(Name::From),
        parents: flags.bool(Name::Parents).unwrap_or(false),
    })
}

fn add<'src>(
    node: &mut RawNode,
    text: LineText<'_, 'src>,
    given: &mut Vec<Given>,
) -> Result<AddInstruction<'src>, ParseError> {
    if node.args.len() < 2 {
        return Err(ParseError::new(
            ErrorKind::NoDestination { instruction: "ADD" },
            node.keyword_span,
        ));
    }
    let flags = Flags::parse(
        "ADD",
        &node.flags,
        given,
        text,
        &[
            (Name::Exclude, Kind::List),
            (Name::Chown, Kind::Value),
            (Name::Chmod, Kind::Value),
            (Name::Link, Kind::Bool),
            (Name::KeepGitDir, Kind::Bool),
            (Name::Checksum, Kind::Value),
            (Name::Unpack, Kind::Bool),
        ],
    )?;
    let files = file_transfer(
        &mut node.args,
        &node.heredocs,
        node.keyword_span,
        text,
        "ADD",
        &flags,
    )?;
    Ok(AddInstruction {
        files,
        checksum: flags.string(Name::Checksum),
        keep_git_dir: flags.bool(Name::KeepGitDir).unwrap_or(false),
        unpack: flags.bool(Name::Unpack),
    })
}

fn key_values<'src>(
    node: &mut RawNode,
    text: LineText<'_, 'src>,
    instruction: &'static str,
) -> Result<Vec<KeyValue<'src>>, ParseError> {
    let at = node.keyword_span;
    let err = |kind| ParseError::new(kind, at);
    if node.args.is_empty() {
        return Err(err(ErrorKind::AtLeastOneArgument { instruction }));
    }
    let mut pairs = Vec::with_capacity(node.args.len() / 3);
    let mut words = node.args.iter_mut();
    while let Some(key) = words.next() {
        let (Some(value), Some(sep)) = (words.next(), words.next()) else {
            return Err(err(ErrorKind::AtLeastOneArgument { instruction }));
        };
        if text.get(key).is_empty() {
            return Err(err(ErrorKind::BlankName { instruction }));
        }
        pairs.push(KeyValue {
            key: text.cow(key),
            value: text.cow(value),
            legacy: text.get(sep).is_empty(),
        });
    }
    Ok(pairs)
}

fn arg<'src>(
    node: &mut RawNode,
    text: LineText<'_, 'src>,
) -> Result<ArgInstruction<'src>, ParseError> {
    let err = |kind| ParseError::new(kind, node.keyword_span);
    if node.args.is_empty() {
        return Err(err(ErrorKind::AtLeastOneArgument { instruction: "ARG" }));
    }
    let args = node
        .args
        .iter_mut()
        .map(|word| {
            let written = text.get(word);
            match written.find('=') {
                Some(0) => Err(err(ErrorKind::BlankName { instruction: "ARG" })),
                Some(eq) => {
                    let len = written.len();
                    Ok(ArgDecl {
                        name: text.cow(&mut word.part(Text::Slice(0, eq))),
                        default: Some(text.cow(&mut word.part(Text::Slice(eq + 1, len)))),
                    })
                }
                None => Ok(ArgDecl {
                    name: text.cow(word),
                    default: None,
                }),
            }
        })
        .collect::<Result<_, _>>()?;
    Ok(ArgInstruction { args })
}

fn duration(flags: &Flags, flag: Name) -> Result<Duration, ParseError> {
    let Some((value, span)) = flags.value(flag) else {
        return Ok(Duration::ZERO);
    };
    let flag = flag.as_str();
    if value.is_empty() {
        return Ok(Duration::ZERO);
    }
    let err = |kind| ParseError::new(kind, span);
    let nanos = crate::golang::parse_duration(value).ok_or_else(|| {
        err(ErrorKind::InvalidDuration {
            flag,
            value: value.to_owned(),
        })
    })?;
    match u64::try_from(nanos) {
        Ok(0) => Ok(Duration::ZERO),
        Ok(n) if n >= 1_000_000 => Ok(Duration::from_nanos(n)),
        _ => Err(err(ErrorKind::DurationTooShort { flag })),
    }
}

fn healthcheck<'src>(
    node: &mut RawNode,
    text: LineText<'_, 'src>,
    given: &mut Vec<Given>,
) -> Result<Healthcheck<'src>, ParseError> {
    let at = node.keyword_span;
    let err = |kind| ParseError::new(kind, at);
    let Some((kind, rest)) = node.args.split_first_mut() else {
        return Err(err(ErrorKind::AtLeastOneArgument {
            instruction: "HEALTHCHECK",
        }));
    };
    let kind = Uppercase::of(text.get(kind));
    if kind == "NONE" {
        if !rest.is_empty() {
            return Err(err(ErrorKind::HealthcheckNoneArguments));
        }
        return Ok(Healthcheck::None);
    }
    let flags = Flags::parse(
        "HEALTHCHECK",
        &node.flags,
        given,
        text,
        &[
            (Name::Interval, Kind::Value),
            (Name::Timeout, Kind::Value),
            (Name::StartPeriod, Kind::Value),
            (Name::StartInterval, Kind::Value),
            (Name::Retries, Kind::Value),
        ],
    )?;
    if kind != "CMD" {
        return Err(err(ErrorKind::HealthcheckType {
            kind: kind.into_string(),
        }));
    }
    let test = match (node.json, rest.is_empty()) {
        (_, true) => return Err(err(ErrorKind::HealthcheckMissingCommand)),
        (true, false) => std::iter::once(Cow::Borrowed("CMD"))
            .chain(rest.iter_mut().map(|a| text.cow(a)))
            .collect(),
        (false, false) => vec![Cow::Borrowed("CMD-SHELL"), joined(rest, text)],
    };
    let retries = match flags.value(Name::Retries) {
        None | Some(("", _)) => 0,
        Some((value, span)) => {
            let n: i32 = value.parse().map_err(|_| {
                ParseError::new(
                    ErrorKind::InvalidRetries {
                        value: value.to_owned(),
                    },
                    span,
                )
            })?;
            u32::try_from(n).map_err(|_| {
                ParseError::new(
                    ErrorKind::NegativeRetries {
                        value: i64::from(n),
                    },
                    span,
                )
            })?
        }
    };
    Ok(Healthcheck::Check(Box::new(HealthConfig {
        test,
        interval: duration(&flags, Name::Interval)?,
        timeout: duration(&flags, Name::Timeout)?,
        start_period: duration(&flags, Name::StartPeriod)?,
        start_interval: duration(&flags, Name::StartInterval)?,
        retries,
    })))
}

fn onbuild<'src>(
    node: &RawNode,
    text: LineText<'_, 'src>,
) -> Result<OnbuildInstruction<'src>, ParseError> {
    let err = |kind| ParseError::new(kind, node.keyword_span);
    let Some(trigger) = &node.trigger else {
        return Err(err(ErrorKind::AtLeastOneArgument {
            instruction: "ONBUILD",
        }));
    };
    flags::none("ONBUILD", &node.flags, text)?;
    let keyword = Uppercase::of(trigger.keyword(text.line).trim());
    if keyword == "ONBUILD" {
        return Err(err(ErrorKind::OnbuildChained));
    }
    if keyword == "MAINTAINER" || keyword == "FROM" {
        return Err(err(ErrorKind::OnbuildTrigger {
            trigger: keyword.into_string(),
        }));
    }
    let trimmed = node.original(text.line).trim_start();
    let trigger = trimmed
        .get(..7)
        .filter(|k| k.eq_ignore_ascii_case("onbuild"))
        .map_or(trimmed, |_| trimmed[7..].trim_start());
    // The trigger's text is a suffix of the instruction's.
    let end = node.original.1;
    let mut expression = text.slice(end - trigger.len(), end);
    for doc in &node.heredocs {
        let expression = expression.to_mut();
        expression.push('\n');
        expression.push_str(text.source(doc.content));
        expression.push_str(text.get(&doc.name));
    }
    Ok(OnbuildInstruction { expression })
}

/// A word in uppercase (Unicode-wise, as Go's `strings.ToUpper`), compared without
/// allocating when it is ASCII.
enum Uppercase<'a> {
    /// ASCII, to compare ignoring case.
    Ascii(&'a str),
    Other(String),
}

impl<'a> Uppercase<'a> {
    fn of(word: &'a str) -> Uppercase<'a> {
        match word.is_ascii() {
            true => Uppercase::Ascii(word),
            false => Uppercase::Other(word.to_uppercase()),
        }
    }

    fn into_string(self) -> String {
        match self {
            Uppercase::Ascii(word) => word.to_ascii_uppercase(),
            Uppercase::Other(word) => word,
        }
    }
}

/// Comparison with an uppercase ASCII word.
impl PartialEq<&str> for Uppercase<'_> {
    fn eq(&self, other: &&str) -> bool {
        match self {
            Uppercase::Ascii(word) => word.eq_ignore_ascii_case(other),
            Uppercase::Other(word) => word == other,
        }
    }
}
