//! The state of one stage while its instructions are lowered.
//!
//! BuildKit keeps an LLB state (filesystem, environment, directory, user) beside the
//! image configuration being written; a stage built on another stage starts from a
//! copy of both. The same split is kept here: [`StageState::fs`] and
//! [`StageState::env`] are what the next step runs over, [`StageState::image`] is what
//! the result will say about itself. Step numbering (`[build 2/5]`) and history
//! entries are recorded here too, since both advance with every instruction.

use kiln_image::ImageConfig;
use kiln_image::config::History;

use super::args::{DeclaredArg, Vars};
use super::history::COMMENT;
use super::{LayerStep, Place};
use crate::graph::VertexId;
use crate::op::OpMetadata;

/// One stage being lowered.
#[derive(Clone, Debug)]
pub(crate) struct StageState {
    /// `AS name`, when declared.
    pub(crate) name: Option<String>,
    /// The name shown in progress (`build`, `stage-1`, or empty for a lone stage).
    pub(crate) display: String,
    /// The current filesystem.
    pub(crate) fs: VertexId,
    /// The image configuration, history included.
    pub(crate) image: ImageConfig,
    /// The step environment: the config's Env plus the declared ARGs with values.
    pub(crate) env: Vars,
    /// The ARGs declared so far (those of a base stage first).
    pub(crate) args: Vec<DeclaredArg>,
    /// The layer-producing history entries so far.
    pub(crate) layers: Vec<LayerStep>,
    /// The image the stage's filesystem starts from, if any.
    pub(crate) base: Option<VertexId>,
    /// How many history entries at the start came with that image.
    pub(crate) inherited_history: usize,
    /// Steps numbered so far and in all.
    pub(crate) step: usize,
    pub(crate) total: usize,
    /// Whether the instruction being lowered is an ONBUILD trigger.
    pub(crate) in_trigger: bool,
    /// Whether the stage's steps bypass the cache.
    pub(crate) ignore_cache: bool,
    /// Whether CMD was set in this stage (ENTRYPOINT then keeps it).
    pub(crate) cmd_set: bool,
}

impl StageState {
    /// The working directory of the next step.
    pub(crate) fn workdir(&self) -> &str {
        self.image
            .config
            .working_dir
            .as_deref()
            .filter(|d| !d.is_empty())
            .unwrap_or("/")
    }

    /// The user of the next step, as written.
    pub(crate) fn user(&self) -> &str {
        self.image.config.user.as_deref().unwrap_or_default()
    }

    /// BuildKit's `prefixCommand`: numbers the next step and prefixes its name.
    pub(crate) fn step_name(&mut self, text: &str) -> String {
        if self.total == 0 {
            return text.to_owned();
        }
        self.step += 1;
        numbered(&self.display, self.step, self.total, self.in_trigger, text)
    }

    /// Display metadata for a step of this stage.
    pub(crate) fn meta(&self, name: String, at: &Place) -> OpMetadata {
        OpMetadata {
            name,
            stage: self.name.clone(),
            line: Some(at.line),
            ignore_cache: self.ignore_cache,
        }
    }

    /// Appends a history entry; `layer` is the vertex holding the step's result and
    /// the one its layer is a diff against (`None`: against an empty tree).
    pub(crate) fn commit(
        &mut self,
        created: &str,
        message: String,
        layer: Option<(VertexId, Option<VertexId>)>,
    ) {
        self.image.history.push(History {
            created: Some(created.to_owned()),
            created_by: Some(message),
            author: None,
            comment: Some(COMMENT.to_owned()),
            empty_layer: layer.is_none(),
        });
        if let Some((vertex, parent)) = layer {
            self.layers.push(LayerStep {
                history: self.image.history.len() - 1,
                vertex,
                parent,
            });
        }
    }
}

/// `[display step/total] text`, the step number padded to the width of the total, with
/// `ONBUILD ` before the text of a fired trigger.
pub(crate) fn numbered(
    display: &str,
    step: usize,
    total: usize,
    trigger: bool,
    text: &str,
) -> String {
    let width = total.to_string().len();
    let mut out = String::from("[");
    if !display.is_empty() {
        out.push_str(display);
        out.push(' ');
    }
    out.push_str(&format!("{step:>width$}/{total}] "));
    if trigger {
        out.push_str("ONBUILD ");
    }
    out + text
}
