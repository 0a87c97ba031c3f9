//! Parse errors: what went wrong, and where.
//!
//! Every error is a [`ParseError`]: an [`ErrorKind`] saying what is wrong, with structured
//! fields, plus the [`Span`] of the offending text. The error carries no copy of the
//! Dockerfile; the CLI attaches the source (and its file name) when it renders the
//! diagnostic, so parsing stays cheap and free of I/O concerns.

use crate::instructions::chmod::ChmodError;
use crate::instructions::mount::MountError;
use crate::span::Span;

/// A Dockerfile that cannot be parsed, with the place that makes it so.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {}: {kind}", span.line)]
pub struct ParseError {
    /// What is wrong.
    pub kind: ErrorKind,
    /// Where it is wrong.
    pub span: Span,
}

impl ParseError {
    pub(crate) fn new(kind: ErrorKind, span: Span) -> ParseError {
        ParseError { kind, span }
    }
}

impl miette::Diagnostic for ParseError {
    fn code<'a>(&'a self) -> Option<Box<dyn std::fmt::Display + 'a>> {
        Some(Box::new("kiln::parse"))
    }

    fn labels(&self) -> Option<Box<dyn Iterator<Item = miette::LabeledSpan> + '_>> {
        let label = miette::LabeledSpan::new_with_span(None, self.span);
        Some(Box::new(std::iter::once(label)))
    }
}

/// The ways a Dockerfile can be malformed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ErrorKind {
    /// Nothing but comments, blank lines and directives.
    #[error("file with no instructions")]
    NoInstructions,
    /// A Dockerfile of 4 GiB or more, whose offsets would not fit a [`Span`].
    #[error("dockerfile larger than the maximum of {max} bytes")]
    TooLarge {
        /// The largest accepted text, in bytes.
        max: usize,
    },
    /// A physical line longer than BuildKit's scanner accepts.
    #[error("dockerfile line greater than max allowed size of {max}")]
    LineTooLong {
        /// The largest accepted line, in bytes.
        max: usize,
    },
    /// A parser directive given twice.
    #[error("only one {name} parser directive can be used")]
    DuplicateDirective {
        /// The directive's (lowercased) name.
        name: String,
    },
    /// `# escape=` with something other than a backslash or a backtick.
    #[error("invalid escape token '{value}' does not match ` or \\")]
    InvalidEscape {
        /// The value given.
        value: String,
    },
    /// A `# check=` option that is not `skip=…` or `error=<bool>`.
    #[error("invalid check option {option:?}")]
    InvalidCheckOption {
        /// The offending option.
        option: String,
    },
    /// A heredoc whose terminator never comes.
    #[error("unterminated heredoc {name:?}")]
    UnterminatedHeredoc {
        /// The heredoc's delimiter word.
        name: String,
    },
    /// A keyword that is not one of the Dockerfile instructions.
    #[error("unknown instruction: {keyword}")]
    UnknownInstruction {
        /// The keyword as written.
        keyword: String,
    },
    /// An instruction other than ARG before the first FROM.
    #[error("no build stage in current context")]
    NoBuildStage,
    /// A JSON array holding something other than strings.
    #[error("when using json array syntax, arrays must be comprised of strings only")]
    NotStringArray,
    /// An instruction given no argument where it needs some.
    #[error("{instruction} requires at least one argument")]
    AtLeastOneArgument {
        /// The instruction, uppercase.
        instruction: &'static str,
    },
    /// An instruction given other than one argument.
    #[error("{instruction} requires exactly one argument")]
    ExactlyOneArgument {
        /// The instruction, uppercase.
        instruction: &'static str,
    },
    /// COPY or ADD with a single argument.
    #[error(
        "{instruction} requires at least two arguments, but only one was provided; destination could not be determined"
    )]
    NoDestination {
        /// The instruction, uppercase.
        instruction: &'static str,
    },
    /// Legacy `ENV key` / `LABEL key` without a value.
    #[error("{instruction} must have two arguments")]
    LegacyPairWithoutValue {
        /// The instruction, uppercase.
        instruction: &'static str,
    },
    /// A `key=value` list with a word lacking `=`.
    #[error("syntax error - can't find = in {word:?}; must be of the form: name=value")]
    MissingEquals {
        /// The word without `=`.
        word: String,
    },
    /// `=value` with an empty name.
    #[error("{instruction} names can not be blank")]
    BlankName {
        /// The instruction, uppercase.
        instruction: &'static str,
    },
    /// FROM with a wrong number of words.
    #[error("FROM requires either one or three arguments")]
    FromArguments,
    /// `FROM image AS <name>` with an invalid name.
    #[error(
        "invalid name for build stage: {name:?}, name can't start with a number or contain symbols"
    )]
    InvalidStageName {
        /// The name as written.
        name: String,
    },
    /// `ONBUILD ONBUILD`.
    #[error("chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed")]
    OnbuildChained,
    /// `ONBUILD FROM` or `ONBUILD MAINTAINER`.
    #[error("{trigger} isn't allowed as an ONBUILD trigger")]
    OnbuildTrigger {
        /// The trigger instruction, uppercase.
        trigger: String,
    },
    /// A heredoc used as the destination of COPY or ADD.
    #[error("{instruction} cannot accept a heredoc as a destination")]
    HeredocDestination {
        /// The instruction, uppercase.
        instruction: &'static str,
    },
    /// SHELL in shell form.
    #[error("SHELL requires the arguments to be in JSON form")]
    ShellNotJson,
    /// `VOLUME ""` or a blank JSON element.
    #[error("VOLUME specified can not be an empty string")]
    EmptyVolume,
    /// `HEALTHCHECK NONE something`.
    #[error("HEALTHCHECK NONE takes no arguments")]
    HealthcheckNoneArguments,
    /// `HEALTHCHECK CMD` without a command.
    #[error("missing command after HEALTHCHECK CMD")]
    HealthcheckMissingCommand,
    /// `HEALTHCHECK <type>` for a type other than CMD and NONE.
    #[error("unknown type {kind:?} in HEALTHCHECK (try CMD)")]
    HealthcheckType {
        /// The type given, uppercase.
        kind: String,
    },
    /// A duration flag that Go's `time.ParseDuration` would reject.
    #[error("invalid duration {value:?} for --{flag}")]
    InvalidDuration {
        /// The flag name.
        flag: &'static str,
        /// The value given.
        value: String,
    },
    /// A positive duration under one millisecond.
    #[error("interval {flag:?} cannot be less than 1ms")]
    DurationTooShort {
        /// The flag name.
        flag: &'static str,
    },
    /// `--retries` that is not a 32-bit integer.
    #[error("invalid value {value:?} for --retries")]
    InvalidRetries {
        /// The value given.
        value: String,
    },
    /// `--retries` below zero.
    #[error("--retries cannot be negative ({value})")]
    NegativeRetries {
        /// The value given.
        value: i64,
    },
    /// A flag the instruction does not take.
    #[error("unknown flag: --{flag} for {instruction}")]
    UnknownFlag {
        /// The instruction, uppercase.
        instruction: &'static str,
        /// The flag name, without dashes.
        flag: String,
    },
    /// A single-valued flag given twice.
    #[error("duplicate flag specified: --{flag}")]
    DuplicateFlag {
        /// The flag name, without dashes.
        flag: String,
    },
    /// A value flag without `=value`, or a boolean flag with `=` and nothing after.
    #[error("missing a value on flag: --{flag}")]
    FlagMissingValue {
        /// The flag name, without dashes.
        flag: String,
    },
    /// A boolean flag with a value other than true/false.
    #[error("expecting boolean value for flag --{flag}, not: {value}")]
    FlagNotBool {
        /// The flag name, without dashes.
        flag: String,
        /// The value given.
        value: String,
    },
    /// A flag whose value is not one of the allowed words.
    #[error("unsupported value {value:?} for --{flag} (expected {expected})")]
    FlagValue {
        /// The flag name, without dashes.
        flag: &'static str,
        /// The value given.
        value: String,
        /// The allowed values.
        expected: &'static str,
    },
    /// A bad `RUN --mount` value.
    #[error("invalid --mount: {0}")]
    Mount(#[from] MountError),
    /// A bad `--chmod` value.
    #[error(transparent)]
    Chmod(#[from] ChmodError),
}
