//! Copies of the AST that own all their text (`'static`), for consumers that keep
//! instructions longer than the Dockerfile text they were parsed from (ONBUILD triggers
//! parsed from text of their own, for one).
//!
//! The AST borrows its text from the source so that parsing allocates little; the
//! [`IntoOwned`] trait walks it once and copies what is borrowed. Only the top-level
//! types expose it, as inherent `into_owned` methods.

use std::borrow::Cow;

use super::{
    AddInstruction, ArgDecl, ArgInstruction, Command, CommandLine, CopyInstruction, Dockerfile,
    Expandable, FileTransfer, GlobalArg, HealthConfig, Healthcheck, InlineFile, Instruction,
    KeyValue, OnbuildInstruction, RunInstruction, Source, Stage,
};
use crate::instructions::chmod::Chmod;
use crate::instructions::mount::Mount;

/// A value whose borrowed text can be copied to make it `'static`.
pub(super) trait IntoOwned {
    /// The same type with text of its own.
    type Owned: 'static;

    /// Copies whatever is borrowed.
    fn into_owned(self) -> Self::Owned;
}

/// `value` with text of its own.
fn own<T: IntoOwned>(value: T) -> T::Owned {
    value.into_owned()
}

impl IntoOwned for Cow<'_, str> {
    type Owned = Cow<'static, str>;

    fn into_owned(self) -> Cow<'static, str> {
        match self {
            Cow::Borrowed(text) => Cow::Owned(text.to_owned()),
            Cow::Owned(text) => Cow::Owned(text),
        }
    }
}

impl<T: IntoOwned> IntoOwned for Vec<T> {
    type Owned = Vec<T::Owned>;

    fn into_owned(self) -> Vec<T::Owned> {
        self.into_iter().map(own).collect()
    }
}

impl<T: IntoOwned> IntoOwned for Box<T> {
    type Owned = Box<T::Owned>;

    fn into_owned(self) -> Box<T::Owned> {
        Box::new(own(*self))
    }
}

impl<T: IntoOwned> IntoOwned for Option<T> {
    type Owned = Option<T::Owned>;

    fn into_owned(self) -> Option<T::Owned> {
        self.map(own)
    }
}

impl IntoOwned for Chmod {
    type Owned = Chmod;

    fn into_owned(self) -> Chmod {
        self
    }
}

impl IntoOwned for Mount<'_> {
    type Owned = Mount<'static>;

    fn into_owned(self) -> Mount<'static> {
        Mount::into_owned(self)
    }
}

impl<T: IntoOwned> IntoOwned for Expandable<'_, T> {
    type Owned = Expandable<'static, T::Owned>;

    fn into_owned(self) -> Self::Owned {
        match self {
            Expandable::Literal(value) => Expandable::Literal(own(value)),
            Expandable::Deferred(text) => Expandable::Deferred(own(text)),
        }
    }
}

impl IntoOwned for Dockerfile<'_> {
    type Owned = Dockerfile<'static>;

    fn into_owned(self) -> Dockerfile<'static> {
        Dockerfile {
            directives: self.directives,
            escape: self.escape,
            check: self.check,
            global_args: own(self.global_args),
            stages: own(self.stages),
        }
    }
}

impl IntoOwned for GlobalArg<'_> {
    type Owned = GlobalArg<'static>;

    fn into_owned(self) -> GlobalArg<'static> {
        GlobalArg {
            arg: own(self.arg),
            span: self.span,
            original: own(self.original),
        }
    }
}

impl IntoOwned for Stage<'_> {
    type Owned = Stage<'static>;

    fn into_owned(self) -> Stage<'static> {
        Stage {
            name: own(self.name),
            base: own(self.base),
            platform: own(self.platform),
            instructions: own(self.instructions),
            span: self.span,
            original: own(self.original),
        }
    }
}

impl IntoOwned for Instruction<'_> {
    type Owned = Instruction<'static>;

    fn into_owned(self) -> Instruction<'static> {
        Instruction {
            command: own(self.command),
            span: self.span,
            original: own(self.original),
        }
    }
}

impl IntoOwned for Command<'_> {
    type Owned = Command<'static>;

    fn into_owned(self) -> Command<'static> {
        match self {
            Command::Run(run) => Command::Run(own(run)),
            Command::Cmd(line) => Command::Cmd(own(line)),
            Command::Entrypoint(line) => Command::Entrypoint(own(line)),
            Command::Shell(words) => Command::Shell(own(words)),
            Command::Copy(copy) => Command::Copy(own(copy)),
            Command::Add(add) => Command::Add(own(add)),
            Command::Env(pairs) => Command::Env(own(pairs)),
            Command::Label(pairs) => Command::Label(own(pairs)),
            Command::Arg(arg) => Command::Arg(own(arg)),
            Command::Expose(ports) => Command::Expose(own(ports)),
            Command::Volume(paths) => Command::Volume(own(paths)),
            Command::User(user) => Command::User(own(user)),
            Command::Workdir(dir) => Command::Workdir(own(dir)),
            Command::Stopsignal(signal) => Command::Stopsignal(own(signal)),
            Command::Maintainer(who) => Command::Maintainer(own(who)),
            Command::Healthcheck(check) => Command::Healthcheck(own(check)),
            Command::Onbuild(onbuild) => Command::Onbuild(own(onbuild)),
        }
    }
}

impl IntoOwned for CommandLine<'_> {
    type Owned = CommandLine<'static>;

    fn into_owned(self) -> CommandLine<'static> {
        match self {
            CommandLine::Shell(command) => CommandLine::Shell(own(command)),
            CommandLine::Exec(words) => CommandLine::Exec(own(words)),
        }
    }
}

impl IntoOwned for InlineFile<'_> {
    type Owned = InlineFile<'static>;

    fn into_owned(self) -> InlineFile<'static> {
        InlineFile {
            name: own(self.name),
            content: own(self.content),
            expand: self.expand,
            fd: self.fd,
        }
    }
}

impl IntoOwned for RunInstruction<'_> {
    type Owned = RunInstruction<'static>;

    fn into_owned(self) -> RunInstruction<'static> {
        RunInstruction {
            command: own(self.command),
            heredocs: own(self.heredocs),
            mounts: own(self.mounts),
            network: self.network,
            security: self.security,
        }
    }
}

impl IntoOwned for Source<'_> {
    type Owned = Source<'static>;

    fn into_owned(self) -> Source<'static> {
        match self {
            Source::Path(path) => Source::Path(own(path)),
            Source::Heredoc(file) => Source::Heredoc(own(file)),
        }
    }
}

impl IntoOwned for FileTransfer<'_> {
    type Owned = FileTransfer<'static>;

    fn into_owned(self) -> FileTransfer<'static> {
        FileTransfer {
            sources: own(self.sources),
            dest: own(self.dest),
            chown: own(self.chown),
            chmod: own(self.chmod),
            link: self.link,
            excludes: own(self.excludes),
        }
    }
}

impl IntoOwned for CopyInstruction<'_> {
    type Owned = CopyInstruction<'static>;

    fn into_owned(self) -> CopyInstruction<'static> {
        CopyInstruction {
            files: own(self.files),
            from: own(self.from),
            parents: self.parents,
        }
    }
}

impl IntoOwned for AddInstruction<'_> {
    type Owned = AddInstruction<'static>;

    fn into_owned(self) -> AddInstruction<'static> {
        AddInstruction {
            files: own(self.files),
            checksum: own(self.checksum),
            keep_git_dir: self.keep_git_dir,
            unpack: self.unpack,
        }
    }
}

impl IntoOwned for KeyValue<'_> {
    type Owned = KeyValue<'static>;

    fn into_owned(self) -> KeyValue<'static> {
        KeyValue {
            key: own(self.key),
            value: own(self.value),
            legacy: self.legacy,
        }
    }
}

impl IntoOwned for ArgInstruction<'_> {
    type Owned = ArgInstruction<'static>;

    fn into_owned(self) -> ArgInstruction<'static> {
        ArgInstruction {
            args: own(self.args),
        }
    }
}

impl IntoOwned for ArgDecl<'_> {
    type Owned = ArgDecl<'static>;

    fn into_owned(self) -> ArgDecl<'static> {
        ArgDecl {
            name: own(self.name),
            default: own(self.default),
        }
    }
}

impl IntoOwned for Healthcheck<'_> {
    type Owned = Healthcheck<'static>;

    fn into_owned(self) -> Healthcheck<'static> {
        match self {
            Healthcheck::None => Healthcheck::None,
            Healthcheck::Check(config) => Healthcheck::Check(own(config)),
        }
    }
}

impl IntoOwned for HealthConfig<'_> {
    type Owned = HealthConfig<'static>;

    fn into_owned(self) -> HealthConfig<'static> {
        HealthConfig {
            test: own(self.test),
            interval: self.interval,
            timeout: self.timeout,
            start_period: self.start_period,
            start_interval: self.start_interval,
            retries: self.retries,
        }
    }
}

impl IntoOwned for OnbuildInstruction<'_> {
    type Owned = OnbuildInstruction<'static>;

    fn into_owned(self) -> OnbuildInstruction<'static> {
        OnbuildInstruction {
            expression: own(self.expression),
        }
    }
}

impl Dockerfile<'_> {
    /// The same Dockerfile with text of its own, free of the source.
    pub fn into_owned(self) -> Dockerfile<'static> {
        IntoOwned::into_owned(self)
    }
}

impl Stage<'_> {
    /// The same stage with text of its own, free of the source.
    pub fn into_owned(self) -> Stage<'static> {
        IntoOwned::into_owned(self)
    }
}

impl Instruction<'_> {
    /// The same instruction with text of its own, free of the source.
    pub fn into_owned(self) -> Instruction<'static> {
        IntoOwned::into_owned(self)
    }
}

impl Command<'_> {
    /// The same command with text of its own, free of the source.
    pub fn into_owned(self) -> Command<'static> {
        IntoOwned::into_owned(self)
    }
}
