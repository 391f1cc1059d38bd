//! AdamW with decoupled weight decay, global gradient-norm clipping and a
//! linear warm-up followed by a cosine decay. Written over candle tensors
//! rather than taken from candle-nn because a resumable run must save and
//! restore the moment estimates, which candle-nn's `AdamW` keeps private.

use std::collections::BTreeMap;

use candle_core::backprop::GradStore;
use candle_core::{Tensor, Var};
use serde::{Deserialize, Serialize};

use crate::error::Result;

/// AdamW hyper-parameters.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct AdamWConfig {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
    /// Gradients are scaled down so their global L2 norm is at most this
    /// (0 disables clipping).
    pub max_grad_norm: f64,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        AdamWConfig {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
            max_grad_norm: 1.0,
        }
    }
}

/// The learning rate at `step` (0-based) of `total`: linear warm-up from
/// `peak / warmup` to `peak` over `warmup` steps, then a cosine decay to
/// `peak * min_ratio` at the last step.
pub fn learning_rate(step: usize, total: usize, warmup: usize, peak: f64, min_ratio: f64) -> f64 {
    if step < warmup {
        return peak * (step + 1) as f64 / warmup as f64;
    }
    let decay = total.saturating_sub(warmup).max(1);
    let progress = ((step - warmup) as f64 / decay as f64).min(1.0);
    let cosine = 0.5 * (1.0 + (std::f64::consts::PI * progress).cos());
    peak * (min_ratio + (1.0 - min_ratio) * cosine)
}

/// The optimizer's state: first and second moments per variable and the
/// number of updates made.
pub struct AdamW {
    config: AdamWConfig,
    moments: BTreeMap<String, (Tensor, Tensor)>,
    steps: usize,
}

impl AdamW {
    /// A fresh optimizer for `vars` (moments at zero).
    pub fn new(vars: &BTreeMap<String, Var>, config: AdamWConfig) -> Result<Self> {
        let mut moments = BTreeMap::new();
        for (name, v) in vars {
            moments.insert(name.clone(), (v.zeros_like()?, v.zeros_like()?));
        }
        Ok(AdamW {
            config,
            moments,
            steps: 0,
        })
    }

    /// Number of updates made so far.
    pub fn steps(&self) -> usize {
        self.steps
    }

    /// The moments as named tensors (`m.NAME`, `v.NAME`) for a checkpoint.
    pub fn state(&self) -> BTreeMap<String, Tensor> {
        let mut out = BTreeMap::new();
        for (name, (m, v)) in &self.moments {
            out.insert(format!("m.{name}"), m.clone());
            out.insert(format!("v.{name}"), v.clone());
        }
        out
    }

    /// Restores moments saved by [`AdamW::state`] after `steps` updates.
    /// Returns the name of the first moment missing or misshapen, if any.
    pub fn restore(
        &mut self,
        state: &BTreeMap<String, Tensor>,
        steps: usize,
    ) -> std::result::Result<(), String> {
        for (name, (m, v)) in self.moments.iter_mut() {
            for (prefix, slot) in [("m", &mut *m), ("v", &mut *v)] {
                let key = format!("{prefix}.{name}");
                match state.get(&key) {
                    Some(t) if t.dims() == slot.dims() => *slot = t.clone(),
                    Some(_) => return Err(format!("optimizer state {key:?} has the wrong shape")),
                    None => return Err(format!("optimizer state {key:?} is missing")),
                }
            }
        }
        self.steps = steps;
        Ok(())
    }

    /// One update of every variable that has a gradient, at learning rate
    /// `lr`. Returns the global gradient norm before clipping.
    pub fn step(
        &mut self,
        vars: &BTreeMap<String, Var>,
        grads: &GradStore,
        lr: f64,
    ) -> Result<f64> {
        let c = self.config;
        let mut sq = 0f64;
        for v in vars.values() {
            if let Some(g) = grads.get(v) {
                sq += g.sqr()?.sum_all()?.to_scalar::<f32>()? as f64;
            }
        }
        let norm = sq.sqrt();
        let clip = if c.max_grad_norm > 0.0 && norm > c.max_grad_norm {
            c.max_grad_norm / (norm + 1e-6)
        } else {
            1.0
        };
        self.steps += 1;
        let t = self.steps as i32;
        let bias1 = 1.0 - c.beta1.powi(t);
        let bias2 = 1.0 - c.beta2.powi(t);
        for (name, var) in vars {
            let Some(g) = grads.get(var) else { continue };
            let g = if clip < 1.0 { (g * clip)? } else { g.clone() };
            let (m, v) = self
                .moments
                .get_mut(name)
                .expect("moments exist for every variable");
            *m = ((&*m * c.beta1)? + (&g * (1.0 - c.beta1))?)?;
            *v = ((&*v * c.beta2)? + (g.sqr()? * (1.0 - c.beta2))?)?;
            let update = ((&*m / bias1)? / ((&*v / bias2)?.sqrt()? + c.eps)?)?;
            let decayed = if c.weight_decay > 0.0 {
                (var.as_tensor() * (1.0 - lr * c.weight_decay))?
            } else {
                var.as_tensor().clone()
            };
            var.set(&(decayed - (update * lr)?)?)?;
        }
        Ok(norm)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_warms_up_then_decays_to_the_floor() {
        let lr = |s| learning_rate(s, 100, 10, 1e-3, 0.1);
        assert!((lr(0) - 1e-4).abs() < 1e-12);
        assert!((lr(9) - 1e-3).abs() < 1e-12);
        assert!(lr(50) < lr(20) && lr(20) < lr(10));
        assert!((lr(100) - 1e-4).abs() < 1e-12);
    }
}
