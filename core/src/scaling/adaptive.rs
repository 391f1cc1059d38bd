//! `adaptive`: Adaptive-Consistency's stopping rule (and the early-stopping
//! window) over waves of parallel samples.

use super::run::{check_samples, Run};
use super::vote;
use crate::error::{Error, Result};

impl Run<'_, '_> {
    pub(super) fn adaptive(
        &mut self,
        wave: usize,
        max_samples: usize,
        threshold: f64,
        window: Option<usize>,
    ) -> Result<(Option<String>, f64)> {
        check_samples(max_samples)?;
        if wave == 0 {
            return Err(Error::Invalid("wave size must be at least 1".into()));
        }
        if !(0.5..1.0).contains(&threshold) {
            return Err(Error::Invalid(format!(
                "stopping threshold {threshold} must be in [0.5, 1)"
            )));
        }
        while self.samples.len() < max_samples && !self.exhausted() {
            self.wave(wave.min(max_samples - self.samples.len()))?;
            let counts: Vec<usize> = self.vote.counts().iter().map(|c| c.1).collect();
            let answers: Vec<Option<String>> =
                self.samples.iter().map(|s| s.answer.clone()).collect();
            if vote::should_stop_adaptive(&counts, threshold)
                || window.is_some_and(|w| vote::window_agrees(&answers, w))
            {
                break;
            }
        }
        Ok(self.verdict())
    }
}
