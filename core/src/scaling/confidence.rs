//! `confidence`: DeepConf online — warm-up traces set a bar, later traces
//! stop when their sliding-window confidence falls below it, and the rest
//! vote weighted by confidence.

use std::ops::ControlFlow;

use super::run::{check_samples, Run};
use super::vote;
use crate::error::{Error, Result};
use crate::session::Generation;

impl Run<'_, '_> {
    pub(super) fn confidence(
        &mut self,
        warmup: usize,
        samples: usize,
        keep_percent: f64,
        window: usize,
    ) -> Result<(Option<String>, f64)> {
        check_samples(samples)?;
        if warmup == 0 || warmup > samples || window == 0 || !(0.0..=100.0).contains(&keep_percent)
        {
            return Err(Error::Invalid(format!(
                "confidence strategy needs 1 <= warmup ({warmup}) <= samples ({samples}), window >= 1 ({window}) and keep_percent in [0, 100] ({keep_percent})"
            )));
        }
        const TOP: usize = 5;
        let confidences = |g: &Generation| -> Vec<f32> {
            g.tokens
                .iter()
                .map(|t| vote::token_confidence(&t.top.iter().map(|x| x.1).collect::<Vec<_>>()))
                .collect()
        };
        // Warm-up: complete traces set the bar.
        let warm = self.draw(warmup, TOP, &mut |_, _| ControlFlow::Continue(()))?;
        let scores: Vec<f32> = warm
            .iter()
            .map(|g| vote::lowest_window_mean(&confidences(g), window))
            .collect();
        let threshold = vote::percentile_threshold(&scores, keep_percent);
        for (g, score) in warm.into_iter().zip(scores) {
            self.record(g, Some(score.max(0.0) as f64));
        }
        // The rest stop as soon as a window falls below the bar.
        let rest = samples - warmup;
        if rest > 0 {
            let mut running: Vec<Vec<f32>> = vec![Vec::new(); rest];
            let out = self.draw(rest, TOP, &mut |i, ev| {
                let c = &mut running[i];
                c.push(vote::token_confidence(
                    &ev.token.top.iter().map(|x| x.1).collect::<Vec<_>>(),
                ));
                if c.len() >= window
                    && c[c.len() - window..].iter().sum::<f32>() / (window as f32) < threshold
                {
                    ControlFlow::Break(())
                } else {
                    ControlFlow::Continue(())
                }
            })?;
            for g in out {
                let stopped = g.finish_reason == crate::session::FinishReason::Cancelled;
                let score = vote::lowest_window_mean(&confidences(&g), window);
                self.record(g, (!stopped).then_some(score.max(0.0) as f64));
            }
        }
        Ok(self.verdict())
    }
}
