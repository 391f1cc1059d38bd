//! Choosing the next token from logits: greedy or sampled (temperature,
//! top-k, top-p, min-p, repetition penalty), reproducible under a seed, with
//! the model's log-probabilities of the choice and its best alternatives.

/// Most top alternatives reported per token.
pub const MAX_TOP_LOGPROBS: usize = 20;

/// Sampling settings. The defaults are greedy decoding.
#[derive(Clone, Debug, PartialEq)]
pub struct SamplerConfig {
    /// 0 picks the most likely token (greedy); higher flattens the distribution.
    pub temperature: f32,
    /// Keep only the k most likely tokens (0 = off).
    pub top_k: usize,
    /// Keep the smallest set of tokens whose probability reaches p (1 = off).
    pub top_p: f32,
    /// Drop tokens less likely than min_p times the most likely one (0 = off).
    pub min_p: f32,
    /// Penalise tokens seen in the last `repeat_last_n` tokens (1 = off).
    pub repetition_penalty: f32,
    pub repeat_last_n: usize,
    /// Seed of the random generator; the same seed gives the same tokens.
    pub seed: u64,
    /// How many top alternatives to report with each token (0 to 20).
    pub top_logprobs: usize,
}

impl Default for SamplerConfig {
    fn default() -> Self {
        SamplerConfig {
            temperature: 0.0,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            repetition_penalty: 1.0,
            repeat_last_n: 64,
            seed: 0,
            top_logprobs: 0,
        }
    }
}

/// A sampling parameter outside its range.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("invalid sampling parameter {name} = {value}: {rule}")]
pub struct SamplerError {
    pub name: &'static str,
    pub value: String,
    pub rule: &'static str,
}

impl SamplerConfig {
    /// Checks every parameter; out-of-range values are errors, never clamped.
    pub fn validate(&self) -> Result<(), SamplerError> {
        let err = |name, value: String, rule| Err(SamplerError { name, value, rule });
        if !(self.temperature.is_finite() && self.temperature >= 0.0) {
            return err(
                "temperature",
                self.temperature.to_string(),
                "must be a finite number >= 0",
            );
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return err("top_p", self.top_p.to_string(), "must be in (0, 1]");
        }
        if !(self.min_p >= 0.0 && self.min_p < 1.0) {
            return err("min_p", self.min_p.to_string(), "must be in [0, 1)");
        }
        if !(self.repetition_penalty.is_finite() && self.repetition_penalty > 0.0) {
            return err(
                "repetition_penalty",
                self.repetition_penalty.to_string(),
                "must be a finite number > 0",
            );
        }
        if self.top_logprobs > MAX_TOP_LOGPROBS {
            return err(
                "top_logprobs",
                self.top_logprobs.to_string(),
                "must be at most 20",
            );
        }
        Ok(())
    }

    /// Whether this configuration always picks the most likely token.
    pub fn is_greedy(&self) -> bool {
        self.temperature == 0.0
    }
}

/// The token chosen at one step with its log-probability under the model
/// (before temperature and truncation) and the most likely alternatives.
#[derive(Clone, Debug, PartialEq)]
pub struct TokenChoice {
    pub token: u32,
    pub logprob: f32,
    pub top: Vec<(u32, f32)>,
}

/// A small, fast, reproducible generator (SplitMix64): the same seed gives
/// the same stream on every platform and version.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator starting from `seed`.
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn next_f32(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }
}

/// Picks tokens according to a [`SamplerConfig`].
#[derive(Clone, Debug)]
pub struct Sampler {
    config: SamplerConfig,
    rng: Rng,
    work: Vec<f32>,
    candidates: Vec<(u32, f32)>,
}

impl Sampler {
    /// A sampler; fails when a parameter is out of range.
    pub fn new(config: SamplerConfig) -> Result<Self, SamplerError> {
        config.validate()?;
        let rng = Rng(config.seed);
        Ok(Sampler {
            config,
            rng,
            work: Vec::new(),
            candidates: Vec::new(),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &SamplerConfig {
        &self.config
    }

    /// Chooses the next token from `logits`; `history` holds the tokens so
    /// far (for the repetition penalty).
    pub fn sample(&mut self, logits: &[f32], history: &[u32]) -> TokenChoice {
        let c = &self.config;
        self.work.clear();
        self.work.extend_from_slice(logits);
        if c.repetition_penalty != 1.0 {
            let start = history.len().saturating_sub(c.repeat_last_n);
            for &t in &history[start..] {
                if let Some(l) = self.work.get_mut(t as usize) {
                    // As llama.cpp: shrink positive logits, push negative ones further down.
                    *l = if *l > 0.0 {
                        *l / c.repetition_penalty
                    } else {
                        *l * c.repetition_penalty
                    };
                }
            }
        }
        let (greedy, n_top) = (c.is_greedy(), c.top_logprobs);
        let token = if greedy {
            argmax(&self.work)
        } else {
            self.sample_from_work()
        };
        let norm = crate::model::ops::log_sum_exp(logits);
        let top = if n_top > 0 {
            top_k(logits, n_top)
                .into_iter()
                .map(|(t, l)| (t, l - norm))
                .collect()
        } else {
            Vec::new()
        };
        TokenChoice {
            token,
            logprob: logits[token as usize] - norm,
            top,
        }
    }

    fn sample_from_work(&mut self) -> u32 {
        let c = &self.config;
        let inv_t = 1.0 / c.temperature;
        let max = self.work.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        // Probabilities up to a constant factor; min-p is a threshold on them.
        let floor = if c.min_p > 0.0 { c.min_p } else { 0.0 };
        self.candidates.clear();
        for (i, &l) in self.work.iter().enumerate() {
            let p = ((l - max) * inv_t).exp();
            if p >= floor && p > 0.0 {
                self.candidates.push((i as u32, p));
            }
        }
        if c.top_k > 0 && c.top_k < self.candidates.len() {
            self.candidates
                .select_nth_unstable_by(c.top_k - 1, |a, b| b.1.total_cmp(&a.1));
            self.candidates.truncate(c.top_k);
        }
        if c.top_p < 1.0 {
            self.candidates.sort_unstable_by(|a, b| b.1.total_cmp(&a.1));
            let total: f32 = self.candidates.iter().map(|x| x.1).sum();
            let mut cum = 0.0;
            let mut keep = self.candidates.len();
            for (i, x) in self.candidates.iter().enumerate() {
                cum += x.1;
                if cum >= c.top_p * total {
                    keep = i + 1;
                    break;
                }
            }
            self.candidates.truncate(keep);
        }
        let total: f32 = self.candidates.iter().map(|x| x.1).sum();
        let mut r = self.rng.next_f32() * total;
        for &(t, p) in &self.candidates {
            if r < p {
                return t;
            }
            r -= p;
        }
        self.candidates
            .last()
            .map(|x| x.0)
            .unwrap_or_else(|| argmax(&self.work))
    }
}

/// Index of the largest value (the first one on ties).
pub fn argmax(x: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &v) in x.iter().enumerate() {
        if v > x[best] {
            best = i;
        }
    }
    best as u32
}

/// The `k` largest values with their indices, largest first.
pub fn top_k(x: &[f32], k: usize) -> Vec<(u32, f32)> {
    let mut v: Vec<(u32, f32)> = Vec::with_capacity(k + 1);
    for (i, &l) in x.iter().enumerate() {
        if v.len() < k || l > v[v.len() - 1].1 {
            let at = v.partition_point(|e| e.1 >= l);
            v.insert(at, (i as u32, l));
            v.truncate(k);
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn logits() -> Vec<f32> {
        vec![1.0, 3.0, 2.0, -1.0, 2.5, 0.0]
    }

    #[test]
    fn greedy_picks_argmax_with_logprobs() {
        let mut s = Sampler::new(SamplerConfig {
            top_logprobs: 3,
            ..Default::default()
        })
        .unwrap();
        let c = s.sample(&logits(), &[]);
        assert_eq!(c.token, 1);
        assert_eq!(c.top.iter().map(|t| t.0).collect::<Vec<_>>(), vec![1, 4, 2]);
        let total: f32 = logits().iter().map(|l| l.exp()).sum();
        assert!((c.logprob - (3f32.exp() / total).ln()).abs() < 1e-5);
    }

    #[test]
    fn same_seed_same_tokens_and_top_k_restricts() {
        let cfg = SamplerConfig {
            temperature: 1.5,
            top_k: 2,
            seed: 42,
            ..Default::default()
        };
        let run = |cfg: &SamplerConfig| {
            let mut s = Sampler::new(cfg.clone()).unwrap();
            (0..200)
                .map(|_| s.sample(&logits(), &[]).token)
                .collect::<Vec<_>>()
        };
        let a = run(&cfg);
        assert_eq!(a, run(&cfg));
        assert!(a.iter().all(|&t| t == 1 || t == 4));
        assert!(a.contains(&1) && a.contains(&4));
        let b = run(&SamplerConfig { seed: 43, ..cfg });
        assert_ne!(a, b);
    }

    #[test]
    fn top_p_and_min_p_cut_the_tail() {
        let mut s = Sampler::new(SamplerConfig {
            temperature: 1.0,
            top_p: 0.4,
            ..Default::default()
        })
        .unwrap();
        // Token 1 alone holds 46% of the probability.
        assert!((0..100).all(|_| s.sample(&logits(), &[]).token == 1));
        let mut s = Sampler::new(SamplerConfig {
            temperature: 1.0,
            min_p: 0.5,
            ..Default::default()
        })
        .unwrap();
        assert!((0..200).all(|_| matches!(s.sample(&logits(), &[]).token, 1 | 4)));
    }

    #[test]
    fn repetition_penalty_changes_the_greedy_choice() {
        let mut s = Sampler::new(SamplerConfig {
            repetition_penalty: 2.0,
            ..Default::default()
        })
        .unwrap();
        assert_eq!(s.sample(&logits(), &[1]).token, 4);
    }

    #[test]
    fn out_of_range_parameters_are_errors() {
        for (cfg, name) in [
            (
                SamplerConfig {
                    temperature: -0.1,
                    ..Default::default()
                },
                "temperature",
            ),
            (
                SamplerConfig {
                    temperature: f32::NAN,
                    ..Default::default()
                },
                "temperature",
            ),
            (
                SamplerConfig {
                    top_p: 1.5,
                    ..Default::default()
                },
                "top_p",
            ),
            (
                SamplerConfig {
                    top_p: 0.0,
                    ..Default::default()
                },
                "top_p",
            ),
            (
                SamplerConfig {
                    min_p: 1.0,
                    ..Default::default()
                },
                "min_p",
            ),
            (
                SamplerConfig {
                    repetition_penalty: 0.0,
                    ..Default::default()
                },
                "repetition_penalty",
            ),
            (
                SamplerConfig {
                    top_logprobs: 21,
                    ..Default::default()
                },
                "top_logprobs",
            ),
        ] {
            let e = Sampler::new(cfg).unwrap_err();
            assert_eq!(e.name, name);
            assert!(e.to_string().contains(name));
        }
    }
}
