//! Scoring one model with one strategy on a task set: accuracy and the
//! compute it took.

use anyhow::Result;
use edgeloop_core::scaling::{self, SolveOptions};
use edgeloop_core::Engine;
use serde::Serialize;

use crate::tasks::Task;

/// A model's results with one strategy on a task set.
#[derive(Clone, Debug, Serialize)]
pub struct Score {
    pub strategy: String,
    pub questions: usize,
    pub accuracy: f64,
    pub mean_samples: f64,
    pub mean_tokens: f64,
    pub mean_wall_secs: f64,
    /// Per question: the normalized answer, if one was found.
    pub answers: Vec<Option<String>>,
    /// Per question: whether the answer was right.
    pub correct: Vec<bool>,
}

/// Solves every task with `options`, calling `tick` after each.
pub fn score(
    engine: &Engine,
    tasks: &[Task],
    label: &str,
    options: &SolveOptions,
    tick: &mut dyn FnMut(),
) -> Result<Score> {
    let (mut samples, mut tokens, mut wall) = (0usize, 0usize, 0f64);
    let mut answers = Vec::with_capacity(tasks.len());
    let mut correct = Vec::with_capacity(tasks.len());
    for task in tasks {
        let s = scaling::solve(engine, &task.question, options)?;
        correct.push(task.is_answered_by(&s.answer, options.kind));
        samples += s.spend.samples;
        tokens += s.spend.tokens;
        wall += s.spend.wall_secs;
        answers.push(s.answer);
        tick();
    }
    let q = tasks.len().max(1) as f64;
    Ok(Score {
        strategy: label.to_string(),
        questions: tasks.len(),
        accuracy: correct.iter().filter(|&&c| c).count() as f64 / q,
        mean_samples: samples as f64 / q,
        mean_tokens: tokens as f64 / q,
        mean_wall_secs: wall / q,
        answers,
        correct,
    })
}
