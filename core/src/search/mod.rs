//! Search over the token tree at test time: beam search on the batched
//! decode path ([`beam`]) and a beam over reasoning steps guided by the
//! model's own judgement of each partial solution ([`step`], scored by
//! [`judge`]). The scaling strategies `beam` and `step-search` wrap them.

pub mod beam;
pub mod judge;
pub mod step;

pub use beam::{beam_search, BeamOptions, BeamResult, BeamStats, Hypothesis};
pub use judge::{Judgement, StepJudge, STEP_JUDGE_PROMPT};
pub use step::{step_search, Partial, Problem, StepOptions, StepResult, StepStats};
