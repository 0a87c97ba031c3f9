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

use std::time::Duration;

use serde::Serialize;

use crate::error::{ErrorKind, ParseError};
use crate::span::Span;
use crate::syntax::line::{RawHeredoc, RawNode, Text};
use crate::syntax::{self, CheckConfig, Directive, Keyword, NodeReader, Read};
use chmod::Chmod;
use flags::{Flags, Kind};
use mount::Mount;

/// A parsed Dockerfile.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Dockerfile {
    /// The parser directives, in order.
    pub directives: Vec<Directive>,
    /// The escape character (`\` or `` ` ``).
    pub escape: char,
    /// The `# check=` settings, when given.
    pub check: Option<CheckConfig>,
    /// ARG instructions before the first FROM.
    pub global_args: Vec<GlobalArg>,
    /// The build stages, in order.
    pub stages: Vec<Stage>,
}

impl Dockerfile {
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
pub struct GlobalArg {
    /// The declarations.
    pub arg: ArgInstruction,
    /// Where the instruction is.
    pub span: Span,
    /// The instruction's text.
    pub original: String,
}

/// One `FROM` and the instructions up to the next.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Stage {
    /// `AS <name>`, lowercased.
    pub name: Option<String>,
    /// The base image or stage, unexpanded.
    pub base: String,
    /// `--platform`, unexpanded.
    pub platform: Option<String>,
    /// The instructions after FROM.
    pub instructions: Vec<Instruction>,
    /// Where the FROM line is.
    pub span: Span,
    /// The FROM line's text.
    pub original: String,
}

/// One instruction with its place in the Dockerfile.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Instruction {
    /// What it does.
    pub command: Command,
    /// Where it is (keyword to the end of its last line or heredoc).
    pub span: Span,
    /// Its text (continuations joined), for display such as image history.
    pub original: String,
}

/// The instructions (FROM starts a [`Stage`] instead).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "instruction", content = "args", rename_all = "lowercase")]
pub enum Command {
    /// `RUN`.
    Run(RunInstruction),
    /// `CMD`.
    Cmd(CommandLine),
    /// `ENTRYPOINT`.
    Entrypoint(CommandLine),
    /// `SHELL`, always exec form.
    Shell(Vec<String>),
    /// `COPY`.
    Copy(CopyInstruction),
    /// `ADD`.
    Add(AddInstruction),
    /// `ENV`.
    Env(Vec<KeyValue>),
    /// `LABEL`.
    Label(Vec<KeyValue>),
    /// `ARG`.
    Arg(ArgInstruction),
    /// `EXPOSE` ports, sorted as BuildKit sorts them, unexpanded.
    Expose(Vec<String>),
    /// `VOLUME` paths, unexpanded.
    Volume(Vec<String>),
    /// `USER`, unexpanded.
    User(String),
    /// `WORKDIR`, unexpanded.
    Workdir(String),
    /// `STOPSIGNAL`, unexpanded.
    Stopsignal(String),
    /// `MAINTAINER` (deprecated, sets the author).
    Maintainer(String),
    /// `HEALTHCHECK`.
    Healthcheck(Healthcheck),
    /// `ONBUILD`.
    Onbuild(OnbuildInstruction),
}

/// A value checked now if literal, or kept for the solver to check after `$VAR`
/// expansion.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Expandable<T> {
    /// Written without variables, and valid.
    Literal(T),
    /// Holds a `$` reference: the raw text, to expand and then validate.
    Deferred(String),
}

/// How a command is given.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CommandLine {
    /// Shell form: run through the stage's SHELL (empty when no argument was given).
    Shell(String),
    /// Exec (JSON) form.
    Exec(Vec<String>),
}

/// A file given inline as a heredoc.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct InlineFile {
    /// The heredoc's delimiter, which names the file for COPY/ADD.
    pub name: String,
    /// The content, leading tabs already removed for `<<-`.
    pub content: String,
    /// `$VAR`s in the content are to be expanded (unquoted delimiter).
    pub expand: bool,
    /// The file descriptor before `<<` (0 when none).
    pub fd: u32,
}

/// `RUN`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RunInstruction {
    /// The command.
    pub command: CommandLine,
    /// Heredocs following the line, in order.
    pub heredocs: Vec<InlineFile>,
    /// `--mount`s.
    pub mounts: Vec<Expandable<Mount>>,
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
pub enum Source {
    /// A path, glob or URL, unexpanded.
    Path(String),
    /// An inline heredoc file.
    Heredoc(InlineFile),
}

/// What COPY and ADD have in common.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FileTransfer {
    /// The sources, in order.
    pub sources: Vec<Source>,
    /// The destination, unexpanded.
    pub dest: String,
    /// `--chown`, unexpanded.
    pub chown: Option<String>,
    /// `--chmod`.
    pub chmod: Option<Expandable<Chmod>>,
    /// `--link`.
    pub link: bool,
    /// `--exclude` patterns.
    pub excludes: Vec<String>,
}

/// `COPY`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CopyInstruction {
    /// Sources, destination and the shared flags.
    #[serde(flatten)]
    pub files: FileTransfer,
    /// `--from`, unexpanded.
    pub from: Option<String>,
    /// `--parents`.
    pub parents: bool,
}

/// `ADD`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AddInstruction {
    /// Sources, destination and the shared flags.
    #[serde(flatten)]
    pub files: FileTransfer,
    /// `--checksum`.
    pub checksum: Option<String>,
    /// `--keep-git-dir`.
    pub keep_git_dir: bool,
    /// `--unpack`, when given.
    pub unpack: Option<bool>,
}

/// An ENV or LABEL pair, unexpanded (quotes included).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct KeyValue {
    /// The name.
    pub key: String,
    /// The value.
    pub value: String,
    /// Written in the legacy `KEY value` form.
    pub legacy: bool,
}

/// `ARG`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ArgInstruction {
    /// The declarations, in order.
    pub args: Vec<ArgDecl>,
}

/// One `name[=default]` of an ARG.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ArgDecl {
    /// The name.
    pub name: String,
    /// The default, unexpanded.
    pub default: Option<String>,
}

/// `HEALTHCHECK`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Healthcheck {
    /// `HEALTHCHECK NONE`: disable any inherited check.
    None,
    /// `HEALTHCHECK [flags] CMD …`.
    Check(HealthConfig),
}

/// A health check; zero durations and retries mean "the default".
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct HealthConfig {
    /// `["CMD", args…]` (exec form) or `["CMD-SHELL", command]`.
    pub test: Vec<String>,
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
pub struct OnbuildInstruction {
    /// The trigger's text (heredoc bodies appended as BuildKit does).
    pub expression: String,
}

/// Parses `text` to the typed Dockerfile, typing each node as the syntax layer reads
/// it. A syntax error anywhere wins over a typing error, as when the whole syntax tree
/// is read first.
pub(crate) fn build(text: &str) -> Result<Dockerfile, ParseError> {
    let mut reader = NodeReader::new(text);
    let mut global_args = Vec::new();
    let mut stages: Vec<Stage> = Vec::new();
    // The current stage's instructions, moved into it in one allocation when it ends.
    let mut current = Vec::new();
    let mut failed = None;
    while let Some(read) = reader.next_node()? {
        if failed.is_some() {
            continue;
        }
        let Read { node, line, src } = read;
        let command = match typed(node, line, src) {
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
                    original: line.to_owned(),
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
                original: line.to_owned(),
            }),
            (None, Command::Arg(arg)) => global_args.push(GlobalArg {
                arg,
                span: node.span,
                original: line.to_owned(),
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
fn finish_stage(stages: &mut [Stage], current: &mut Vec<Instruction>) {
    if let Some(stage) = stages.last_mut() {
        stage.instructions = Vec::with_capacity(current.len());
        stage.instructions.append(current);
    }
}

enum Typed {
    From {
        name: Option<String>,
        base: String,
        platform: Option<String>,
    },
    Command(Command),
}

/// The typed instruction of the raw node `node`, whose text ranges point into the
/// logical line `line` and heredoc ranges into the source `src`. Strings the node
/// already owns are moved out of it.
fn typed(node: &mut RawNode, line: &str, src: &str) -> Result<Typed, ParseError> {
    let at = node.keyword_span;
    let err = |kind| ParseError::new(kind, at);
    let no_flags =
        |instruction, node: &RawNode| Flags::parse(instruction, &node.flags, line, &[]).map(drop);
    let one = |instruction, node: &mut RawNode| match node.args.as_mut_slice() {
        [one] => Ok(one.take(line)),
        _ => Err(err(ErrorKind::ExactlyOneArgument { instruction })),
    };
    let at_least_one = |instruction, node: &RawNode| match node.args.is_empty() {
        true => Err(err(ErrorKind::AtLeastOneArgument { instruction })),
        false => Ok(()),
    };
    let command = match node.kind {
        Keyword::From => return from(node, line),
        Keyword::Run => Command::Run(run(node, line, src)?),
        Keyword::Cmd => {
            no_flags("CMD", node)?;
            Command::Cmd(command_line(&mut node.args, node.json, line))
        }
        Keyword::Entrypoint => {
            no_flags("ENTRYPOINT", node)?;
            Command::Entrypoint(command_line(&mut node.args, node.json, line))
        }
        Keyword::Shell => {
            no_flags("SHELL", node)?;
            at_least_one("SHELL", node)?;
            match command_line(&mut node.args, node.json, line) {
                CommandLine::Exec(v) => Command::Shell(v),
                CommandLine::Shell(_) => return Err(err(ErrorKind::ShellNotJson)),
            }
        }
        Keyword::Copy => Command::Copy(copy(node, line, src)?),
        Keyword::Add => Command::Add(add(node, line, src)?),
        Keyword::Env => {
            no_flags("ENV", node)?;
            Command::Env(key_values(node, line, "ENV")?)
        }
        Keyword::Label => {
            no_flags("LABEL", node)?;
            Command::Label(key_values(node, line, "LABEL")?)
        }
        Keyword::Arg => Command::Arg(arg(node, line)?),
        Keyword::Expose => {
            at_least_one("EXPOSE", node)?;
            no_flags("EXPOSE", node)?;
            let mut ports: Vec<String> = node.args.iter_mut().map(|a| a.take(line)).collect();
            ports.sort();
            Command::Expose(ports)
        }
        Keyword::Volume => {
            at_least_one("VOLUME", node)?;
            no_flags("VOLUME", node)?;
            let volumes = node
                .args
                .iter()
                .map(|v| v.get(line).trim().to_owned())
                .collect::<Vec<_>>();
            if volumes.iter().any(String::is_empty) {
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
        Keyword::Healthcheck => Command::Healthcheck(healthcheck(node, line)?),
        Keyword::Onbuild => Command::Onbuild(onbuild(node, line, src)?),
        Keyword::Unknown => {
            return Err(err(ErrorKind::UnknownInstruction {
                keyword: node.keyword(line).to_owned(),
            }));
        }
    };
    Ok(Typed::Command(command))
}

fn from(node: &mut RawNode, line: &str) -> Result<Typed, ParseError> {
    let err = |kind| ParseError::new(kind, node.keyword_span);
    let name = match node.args.as_slice() {
        [_] => None,
        [_, as_, name] if as_.get(line).eq_ignore_ascii_case("as") => {
            let name = name.get(line);
            let lower = name.to_lowercase();
            let mut chars = lower.chars();
            let valid = chars.next().is_some_and(|c| c.is_ascii_lowercase())
                && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "-_.".contains(c));
            if !valid {
                return Err(err(ErrorKind::InvalidStageName {
                    name: name.to_owned(),
                }));
            }
            Some(lower)
        }
        _ => return Err(err(ErrorKind::FromArguments)),
    };
    let flags = Flags::parse("FROM", &node.flags, line, &[("platform", Kind::Value)])?;
    Ok(Typed::From {
        name,
        base: node.args[0].take(line),
        platform: flags.string("platform"),
    })
}

/// BuildKit's `handleJSONArgs`: exec form as is, shell form joined into one string.
fn command_line(args: &mut [Text], json: bool, line: &str) -> CommandLine {
    match (json, args) {
        (true, args) => CommandLine::Exec(args.iter_mut().map(|a| a.take(line)).collect()),
        (false, [one]) => CommandLine::Shell(one.take(line)),
        (false, args) => CommandLine::Shell(join(args, line)),
    }
}

/// The texts joined with single spaces.
fn join(args: &[Text], line: &str) -> String {
    let mut out = String::new();
    for (i, arg) in args.iter().enumerate() {
        if i > 0 {
            out.push(' ');
        }
        out.push_str(arg.get(line));
    }
    out
}

/// A heredoc body as a file: `<<-` tabs removed when `chomp`.
fn inline_content(doc: &RawHeredoc, chomp: bool, src: &str) -> String {
    let content = &src[doc.content.0..doc.content.1];
    if chomp {
        syntax::heredoc::chomp(content)
    } else {
        content.to_owned()
    }
}

fn run(node: &mut RawNode, line: &str, src: &str) -> Result<RunInstruction, ParseError> {
    let flags = Flags::parse(
        "RUN",
        &node.flags,
        line,
        &[
            ("mount", Kind::List),
            ("network", Kind::Value),
            ("security", Kind::Value),
        ],
    )?;
    let mounts = flags
        .list("mount")
        .map(|(spec, span)| {
            let located = |e: mount::MountError| ParseError::new(e.into(), span);
            if spec.contains('$') {
                mount::check_unexpanded(spec).map_err(located)?;
                Ok(Expandable::Deferred(spec.to_owned()))
            } else {
                Mount::parse(spec).map(Expandable::Literal).map_err(located)
            }
        })
        .collect::<Result<_, ParseError>>()?;
    let network = match flags.value("network") {
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
    let security = match flags.value("security") {
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
        command: command_line(&mut node.args, node.json, line),
        heredocs: node
            .heredocs
            .iter_mut()
            .map(|d| InlineFile {
                content: inline_content(d, d.chomp, src),
                name: std::mem::take(&mut d.name),
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
fn file_transfer(
    args: &mut Vec<Text>,
    heredocs: &[RawHeredoc],
    at: Span,
    (line, src): (&str, &str),
    instruction: &'static str,
    flags: &Flags,
) -> Result<FileTransfer, ParseError> {
    let err = |kind| ParseError::new(kind, at);
    let Some(mut dest) = args.pop() else {
        return Err(err(ErrorKind::NoDestination { instruction }));
    };
    let dest = dest.take(line);
    if syntax::heredoc::parse_marker(&dest).is_some() {
        return Err(err(ErrorKind::HeredocDestination { instruction }));
    }
    let sources = args
        .iter_mut()
        .map(
            |source| match syntax::heredoc::parse_marker(source.get(line)) {
                Some(marker) => {
                    let doc = heredocs.iter().rev().find(|d| d.name == marker.name);
                    Source::Heredoc(match doc {
                        Some(doc) => InlineFile {
                            name: marker.name,
                            content: inline_content(doc, marker.chomp, src),
                            expand: doc.expand,
                            fd: doc.fd,
                        },
                        None => InlineFile {
                            name: marker.name,
                            content: String::new(),
                            expand: marker.expand,
                            fd: marker.fd,
                        },
                    })
                }
                None => Source::Path(source.take(line)),
            },
        )
        .collect();
    let chmod = match flags.value("chmod") {
        None | Some(("", _)) => None,
        Some((value, _)) if value.contains('$') => Some(Expandable::Deferred(value.to_owned())),
        Some((value, span)) => Some(Expandable::Literal(
            value
                .parse::<Chmod>()
                .map_err(|e| ParseError::new(e.into(), span))?,
        )),
    };
    Ok(FileTransfer {
        sources,
        dest,
        chown: flags.string("chown"),
        chmod,
        link: flags.bool("link").unwrap_or(false),
        excludes: flags.list("exclude").map(|(v, _)| v.to_owned()).collect(),
    })
}

fn copy(node: &mut RawNode, line: &str, src: &str) -> Result<CopyInstruction, ParseError> {
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
        line,
        &[
            ("exclude", Kind::List),
            ("parents", Kind::Bool),
            ("chown", Kind::Value),
            ("from", Kind::Value),
            ("chmod", Kind::Value),
            ("link", Kind::Bool),
        ],
    )?;
    let files = file_transfer(
        &mut node.args,
        &node.heredocs,
        node.keyword_span,
        (line, src),
        "COPY",
        &flags,
    )?;
    Ok(CopyInstruction {
        files,
        from: flags.string("from"),
        parents: flags.bool("parents").unwrap_or(false),
    })
}

fn add(node: &mut RawNode, line: &str, src: &str) -> Result<AddInstruction, ParseError> {
    if node.args.len() < 2 {
        return Err(ParseError::new(
            ErrorKind::NoDestination { instruction: "ADD" },
            node.keyword_span,
        ));
    }
    let flags = Flags::parse(
        "ADD",
        &node.flags,
        line,
        &[
            ("exclude", Kind::List),
            ("chown", Kind::Value),
            ("chmod", Kind::Value),
            ("link", Kind::Bool),
            ("keep-git-dir", Kind::Bool),
            ("checksum", Kind::Value),
            ("unpack", Kind::Bool),
        ],
    )?;
    let files = file_transfer(
        &mut node.args,
        &node.heredocs,
        node.keyword_span,
        (line, src),
        "ADD",
        &flags,
    )?;
    Ok(AddInstruction {
        files,
        checksum: flags.string("checksum"),
        keep_git_dir: flags.bool("keep-git-dir").unwrap_or(false),
        unpack: flags.bool("unpack"),
    })
}

fn key_values(
    node: &mut RawNode,
    line: &str,
    instruction: &'static str,
) -> Result<Vec<KeyValue>, ParseError> {
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
        if key.get(line).is_empty() {
            return Err(err(ErrorKind::BlankName { instruction }));
        }
        pairs.push(KeyValue {
            key: key.take(line),
            value: value.take(line),
            legacy: sep.get(line).is_empty(),
        });
    }
    Ok(pairs)
}

fn arg(node: &RawNode, line: &str) -> Result<ArgInstruction, ParseError> {
    let err = |kind| ParseError::new(kind, node.keyword_span);
    if node.args.is_empty() {
        return Err(err(ErrorKind::AtLeastOneArgument { instruction: "ARG" }));
    }
    let args = node
        .args
        .iter()
        .map(|word| match word.get(line).split_once('=') {
            Some(("", _)) => Err(err(ErrorKind::BlankName { instruction: "ARG" })),
            Some((name, default)) => Ok(ArgDecl {
                name: name.to_owned(),
                default: Some(default.to_owned()),
            }),
            None => Ok(ArgDecl {
                name: word.get(line).to_owned(),
                default: None,
            }),
        })
        .collect::<Result<_, _>>()?;
    Ok(ArgInstruction { args })
}

fn duration(flags: &Flags, flag: &'static str) -> Result<Duration, ParseError> {
    let Some((value, span)) = flags.value(flag) else {
        return Ok(Duration::ZERO);
    };
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

fn healthcheck(node: &mut RawNode, line: &str) -> Result<Healthcheck, ParseError> {
    let at = node.keyword_span;
    let err = |kind| ParseError::new(kind, at);
    let Some((kind, rest)) = node.args.split_first_mut() else {
        return Err(err(ErrorKind::AtLeastOneArgument {
            instruction: "HEALTHCHECK",
        }));
    };
    let kind = Uppercase::of(kind.get(line));
    if kind == "NONE" {
        if !rest.is_empty() {
            return Err(err(ErrorKind::HealthcheckNoneArguments));
        }
        return Ok(Healthcheck::None);
    }
    let flags = Flags::parse(
        "HEALTHCHECK",
        &node.flags,
        line,
        &[
            ("interval", Kind::Value),
            ("timeout", Kind::Value),
            ("start-period", Kind::Value),
            ("start-interval", Kind::Value),
            ("retries", Kind::Value),
        ],
    )?;
    if kind != "CMD" {
        return Err(err(ErrorKind::HealthcheckType {
            kind: kind.into_string(),
        }));
    }
    let test = match (node.json, rest.is_empty()) {
        (_, true) => return Err(err(ErrorKind::HealthcheckMissingCommand)),
        (true, false) => std::iter::once("CMD".to_owned())
            .chain(rest.iter_mut().map(|a| a.take(line)))
            .collect(),
        (false, false) => vec!["CMD-SHELL".to_owned(), join(rest, line)],
    };
    let retries = match flags.value("retries") {
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
    Ok(Healthcheck::Check(HealthConfig {
        test,
        interval: duration(&flags, "interval")?,
        timeout: duration(&flags, "timeout")?,
        start_period: duration(&flags, "start-period")?,
        start_interval: duration(&flags, "start-interval")?,
        retries,
    }))
}

fn onbuild(node: &RawNode, line: &str, src: &str) -> Result<OnbuildInstruction, ParseError> {
    let err = |kind| ParseError::new(kind, node.keyword_span);
    let Some(trigger) = &node.trigger else {
        return Err(err(ErrorKind::AtLeastOneArgument {
            instruction: "ONBUILD",
        }));
    };
    Flags::parse("ONBUILD", &node.flags, line, &[])?;
    let keyword = Uppercase::of(trigger.keyword(line).trim());
    if keyword == "ONBUILD" {
        return Err(err(ErrorKind::OnbuildChained));
    }
    if keyword == "MAINTAINER" || keyword == "FROM" {
        return Err(err(ErrorKind::OnbuildTrigger {
            trigger: keyword.into_string(),
        }));
    }
    let trimmed = node.original(line).trim_start();
    let mut expression = trimmed
        .get(..7)
        .filter(|k| k.eq_ignore_ascii_case("onbuild"))
        .map_or(trimmed, |_| trimmed[7..].trim_start())
        .to_owned();
    for doc in &node.heredocs {
        expression.push('\n');
        expression.push_str(&src[doc.content.0..doc.content.1]);
        expression.push_str(&doc.name);
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
