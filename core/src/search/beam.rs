//! Beam search over the batched decode path, with length normalization and
//! diverse beam groups (Vijayakumar et al. 2018).
//!
//! Every live beam owns one KV slot of the session; all live beams run in
//! one forward pass per step. A beam with several children keeps its slot
//! for the first and is copied for the others; a beam with none releases
//! its slot at once, so the memory held never exceeds one slot per live
//! beam plus the prompt's.

use std::ops::ControlFlow;

use crate::error::{Error, Result};
use crate::model::BatchToken;
use crate::scaling::prompt::cut_at_stop;
use crate::session::{CancelToken, FinishReason, Session, MAX_PARALLEL};
use crate::tokenizer::Tokenizer;

/// Settings of [`beam_search`].
#[derive(Clone, Debug)]
pub struct BeamOptions {
    /// Live beams in all (a multiple of `groups`).
    pub beams: usize,
    /// Diverse beam search groups; beams are split evenly among them. A
    /// group's choice of a token at a step lowers that token's score for
    /// the later groups at the same step by `diversity`.
    pub groups: usize,
    /// Penalty per earlier group that chose the same token (Hamming
    /// diversity); 0 makes the groups independent beam searches.
    pub diversity: f32,
    /// Hypotheses are ranked by `logprob / tokens^length_penalty`: 0 ranks
    /// by total log-likelihood (favouring short ones), 1 by the mean.
    pub length_penalty: f32,
    /// Most tokens per hypothesis.
    pub max_tokens: usize,
    /// A beam whose text reaches one of these is finished, its text ending
    /// before it.
    pub stop_strings: Vec<String>,
    /// The path of a group searched before this one (e.g. a greedy trace
    /// already decoded): its token at each step counts against the same
    /// token for every group, as an earlier group's choice would. Empty:
    /// none.
    pub leader: Vec<u32>,
    pub cancel: Option<CancelToken>,
}

impl Default for BeamOptions {
    fn default() -> Self {
        BeamOptions {
            beams: 4,
            groups: 1,
            diversity: 0.5,
            length_penalty: 1.0,
            max_tokens: 256,
            stop_strings: Vec::new(),
            leader: Vec::new(),
            cancel: None,
        }
    }
}

impl BeamOptions {
    fn validate(&self) -> Result<()> {
        if self.beams == 0 || self.beams > MAX_PARALLEL {
            return Err(Error::Invalid(format!(
                "beam count {} is out of range (1 to {MAX_PARALLEL})",
                self.beams
            )));
        }
        if self.groups == 0 || !self.beams.is_multiple_of(self.groups) {
            return Err(Error::Invalid(format!(
                "{} beams cannot be split into {} equal groups",
                self.beams, self.groups
            )));
        }
        if !(self.diversity.is_finite() && self.diversity >= 0.0) {
            return Err(Error::Invalid(format!(
                "diversity penalty {} must be a finite number >= 0",
                self.diversity
            )));
        }
        if !(self.length_penalty.is_finite() && self.length_penalty >= 0.0) {
            return Err(Error::Invalid(format!(
                "length penalty {} must be a finite number >= 0",
                self.length_penalty
            )));
        }
        if self.max_tokens == 0 {
            return Err(Error::ZeroMaxTokens);
        }
        Ok(())
    }

    /// The ranking score of a hypothesis.
    fn normalized(&self, logprob: f32, tokens: usize) -> f32 {
        logprob / (tokens.max(1) as f32).powf(self.length_penalty)
    }
}

/// One finished beam.
#[derive(Clone, Debug)]
pub struct Hypothesis {
    pub text: String,
    /// Its tokens, without the end-of-turn token that finished it (with the
    /// one that reached a stop string).
    pub tokens: Vec<u32>,
    /// Sum of the log-probabilities of its tokens and, when the model ended
    /// it, of that end-of-turn token.
    pub logprob: f32,
    /// `logprob` normalized by length (see [`BeamOptions::length_penalty`]).
    pub score: f32,
    pub group: usize,
    /// `Stop` when the model ended it, `StopString` at a stop string,
    /// `Length` at `max_tokens`, `Cancelled` when the search was stopped
    /// early.
    pub finish: FinishReason,
}

/// How a search used the session's KV slots.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BeamStats {
    /// Decode steps (forward passes after the prompt).
    pub steps: usize,
    /// Tokens chosen over all beams and steps, pruned beams' included.
    pub tokens: usize,
    /// Slots copied from a parent beam.
    pub forks: usize,
    /// Slots released (pruned beams and, at the end, the survivors).
    pub releases: usize,
    /// Most slots held at once, besides the prompt's.
    pub peak_slots: usize,
}

/// The result of [`beam_search`]: hypotheses best first.
#[derive(Clone, Debug)]
pub struct BeamResult {
    pub hypotheses: Vec<Hypothesis>,
    pub stats: BeamStats,
}

/// A live beam: the slot holding its keys and values (all its tokens but
/// the last, which the next forward pass computes).
#[derive(Clone, Debug)]
struct Beam {
    slot: usize,
    tokens: Vec<u32>,
    logprob: f32,
}

/// A beam's continuation considered at one step.
#[derive(Clone, Copy, Debug)]
struct Candidate {
    /// Index of the parent in the group's live beams (`usize::MAX`: the prompt).
    parent: usize,
    token: u32,
    /// Parent's log-probability plus the token's.
    logprob: f32,
    /// `logprob` less the diversity penalty: the order of selection.
    rank: f32,
}

/// Slot numbers: slot 0 is the prompt, the others are handed out and
/// taken back as beams come and go.
struct Slots {
    free: Vec<usize>,
    next: usize,
    held: Vec<usize>,
    stats: BeamStats,
}

impl Slots {
    fn take(&mut self) -> usize {
        let slot = self.free.pop().unwrap_or_else(|| {
            self.next += 1;
            self.next
        });
        self.held.push(slot);
        self.stats.peak_slots = self.stats.peak_slots.max(self.held.len());
        slot
    }

    fn give_back(&mut self, session: &mut Session<'_>, slot: usize) {
        session.state_mut().release(slot);
        self.held.retain(|&s| s != slot);
        self.stats.releases += 1;
        self.free.push(slot);
    }

    /// Releases every slot still held.
    fn give_back_all(&mut self, session: &mut Session<'_>) {
        while let Some(&slot) = self.held.last() {
            self.give_back(session, slot);
        }
    }
}

/// Searches for the most likely continuations of `prompt` with
/// `options.beams` beams. `on_step` sees the number of live beams after
/// each step; `ControlFlow::Break` ends the search, the live beams becoming
/// hypotheses. Slot 0 keeps the prompt afterwards; every other slot is
/// released, whether the search ends normally or with an error.
pub fn beam_search(
    session: &mut Session<'_>,
    prompt: &[u32],
    options: &BeamOptions,
    on_step: &mut dyn FnMut(usize) -> ControlFlow<()>,
) -> Result<BeamResult> {
    options.validate()?;
    if prompt.is_empty() {
        return Err(Error::EmptyPrompt);
    }
    let engine = session.engine();
    let context = engine.context_size();
    if prompt.len() + options.max_tokens > context {
        return Err(Error::ContextOverflow {
            prompt: prompt.len(),
            max_tokens: options.max_tokens,
            context,
        });
    }
    let capacity = prompt.len() + options.max_tokens;
    engine.check_memory(prompt.len() + options.beams * capacity)?;

    let mut slots = Slots {
        free: Vec::new(),
        next: 0,
        held: Vec::new(),
        stats: BeamStats::default(),
    };
    let result = search(session, prompt, options, capacity, &mut slots, on_step);
    // Whatever happened, no slot but the prompt's stays held.
    slots.give_back_all(session);
    let done = result?;
    let tokenizer = engine.tokenizer();
    let mut hypotheses: Vec<Hypothesis> = done.into_iter().flatten().collect();
    for h in &mut hypotheses {
        h.text = tokenizer.decode(&h.tokens, true)?;
        let end = cut_at_stop(&h.text, &options.stop_strings).len();
        h.text.truncate(end);
    }
    hypotheses.sort_by(|a, b| b.score.total_cmp(&a.score));
    Ok(BeamResult {
        hypotheses,
        stats: slots.stats,
    })
}

/// The search proper: each group's hypotheses. The slots of the beams
/// still live are left for the caller to release.
fn search(
    session: &mut Session<'_>,
    prompt: &[u32],
    options: &BeamOptions,
    capacity: usize,
    slots: &mut Slots,
    on_step: &mut dyn FnMut(usize) -> ControlFlow<()>,
) -> Result<Vec<Vec<Hypothesis>>> {
    let first = session.logits_after(prompt)?.to_vec();
    let vocab = first.len();
    let mut groups: Vec<Vec<Beam>> = vec![Vec::new(); options.groups];
    let mut done: Vec<Vec<Hypothesis>> = vec![Vec::new(); options.groups];
    let per_group = options.beams / options.groups;
    let tokenizer = session.engine().tokenizer();
    let stop_ids = tokenizer.stop_ids();
    let mut logits: Vec<f32> = first;
    let mut batch: Vec<BatchToken> = Vec::new();
    // Row of each live beam's logits in `logits` (by group, then beam);
    // before the first step every beam reads the prompt's row 0.
    let mut rows: Vec<Vec<usize>> = vec![vec![0]; options.groups];
    let mut open = vec![true; options.groups];
    for step in 0..options.max_tokens {
        let mut chosen_at_step: Vec<u32> = options.leader.get(step).copied().into_iter().collect();
        let mut next: Vec<Vec<(usize, u32, f32)>> = Vec::with_capacity(options.groups);
        for g in 0..options.groups {
            if !open[g] {
                next.push(Vec::new());
                continue;
            }
            let parents: Vec<(f32, usize)> = if step == 0 {
                vec![(0.0, 0)]
            } else {
                groups[g]
                    .iter()
                    .zip(&rows[g])
                    .map(|(b, &r)| (b.logprob, r))
                    .collect()
            };
            let mut candidates: Vec<Candidate> = Vec::new();
            for (p, &(base, row)) in parents.iter().enumerate() {
                let lp = log_softmax_top(&logits[row * vocab..(row + 1) * vocab], 2 * per_group);
                for (token, l) in lp {
                    let penalty = options.diversity
                        * chosen_at_step.iter().filter(|&&t| t == token).count() as f32;
                    candidates.push(Candidate {
                        parent: if step == 0 { usize::MAX } else { p },
                        token,
                        logprob: base + l,
                        rank: base + l - penalty,
                    });
                }
            }
            candidates.sort_by(|a, b| b.rank.total_cmp(&a.rank));
            let mut picked: Vec<(usize, u32, f32)> = Vec::new();
            for (rank, c) in candidates.iter().enumerate() {
                if picked.len() == per_group {
                    break;
                }
                let ends = stop_ids.contains(&c.token);
                let reaches = !ends
                    && reaches_stop(
                        tokenizer,
                        &groups[g],
                        c.parent,
                        c.token,
                        &options.stop_strings,
                    )?;
                if ends || reaches {
                    // An end among the group's best few finishes a hypothesis.
                    if rank < per_group {
                        let mut tokens = parent_tokens(&groups[g], c.parent);
                        let finish = if reaches {
                            tokens.push(c.token);
                            FinishReason::StopString
                        } else {
                            FinishReason::Stop
                        };
                        let n = tokens.len();
                        done[g].push(Hypothesis {
                            text: String::new(),
                            tokens,
                            logprob: c.logprob,
                            score: options.normalized(c.logprob, n),
                            group: g,
                            finish,
                        });
                    }
                    continue;
                }
                picked.push((c.parent, c.token, c.logprob));
                chosen_at_step.push(c.token);
            }
            keep_best(&mut done[g], per_group);
            // The group is finished once it holds enough hypotheses that
            // no live beam ranks above the worst of them.
            let best_live = picked
                .iter()
                .map(|&(parent, _, lp)| options.normalized(lp, parent_len(&groups[g], parent) + 1))
                .fold(f32::NEG_INFINITY, f32::max);
            if picked.is_empty()
                || (done[g].len() == per_group
                    && done[g].last().is_some_and(|w| w.score >= best_live))
            {
                open[g] = false;
                picked.clear();
            }
            next.push(picked);
        }

        // Hand out slots: parents without children are released first, so
        // that no more slots than beams are ever held; then a parent's
        // first child keeps the parent's slot and the others get copies.
        let mut kept: Vec<Vec<bool>> = Vec::with_capacity(options.groups);
        for g in 0..options.groups {
            let mut has_child = vec![false; groups[g].len()];
            for &(parent, _, _) in &next[g] {
                if let Some(h) = has_child.get_mut(parent) {
                    *h = true;
                }
            }
            for (beam, &h) in groups[g].iter().zip(&has_child) {
                if !h {
                    slots.give_back(session, beam.slot);
                }
            }
            // `true`: the slot is still the parent's, for its first child.
            kept.push(has_child);
        }
        batch.clear();
        for g in 0..options.groups {
            let old = std::mem::take(&mut groups[g]);
            let mut beams = Vec::with_capacity(next[g].len());
            for &(parent, token, logprob) in &next[g] {
                let (slot, mut tokens) = if parent == usize::MAX {
                    let slot = slots.take();
                    session.state_mut().fork(0, slot, prompt.len(), capacity)?;
                    slots.stats.forks += 1;
                    (slot, Vec::new())
                } else if std::mem::take(&mut kept[g][parent]) {
                    (old[parent].slot, old[parent].tokens.clone())
                } else {
                    let slot = slots.take();
                    let from = old[parent].slot;
                    let len = session.state_mut().len(from);
                    session.state_mut().fork(from, slot, len, capacity)?;
                    slots.stats.forks += 1;
                    (slot, old[parent].tokens.clone())
                };
                tokens.push(token);
                beams.push(Beam {
                    slot,
                    tokens,
                    logprob,
                });
            }
            rows[g] = (batch.len()..batch.len() + beams.len()).collect();
            batch.extend(beams.iter().map(|b| BatchToken {
                token: *b.tokens.last().expect("a beam has a token"),
                pos: prompt.len() + b.tokens.len() - 1,
                seq: b.slot,
            }));
            groups[g] = beams;
        }
        let live = batch.len();
        slots.stats.tokens += live;
        let cancelled = options.cancel.as_ref().is_some_and(|c| c.is_cancelled());
        if live == 0 {
            return Ok(done);
        }
        if cancelled || on_step(live).is_break() || step + 1 == options.max_tokens {
            let finish = if step + 1 == options.max_tokens {
                FinishReason::Length
            } else {
                FinishReason::Cancelled
            };
            for (g, beams) in groups.iter().enumerate() {
                for b in beams {
                    done[g].push(Hypothesis {
                        text: String::new(),
                        tokens: b.tokens.clone(),
                        logprob: b.logprob,
                        score: options.normalized(b.logprob, b.tokens.len()),
                        group: g,
                        finish,
                    });
                }
                keep_best(&mut done[g], per_group);
            }
            return Ok(done);
        }
        logits = session.forward_slots(&batch)?.to_vec();
        slots.stats.steps += 1;
    }
    Ok(done)
}

/// Whether `token` after the parent beam's tokens completes one of
/// `stops` (a stop string within the parent alone would have ended it).
fn reaches_stop(
    tokenizer: &Tokenizer,
    beams: &[Beam],
    parent: usize,
    token: u32,
    stops: &[String],
) -> Result<bool> {
    if stops.is_empty() {
        return Ok(false);
    }
    // A tail long enough to hold the longest stop string: every token but
    // a control token spells at least one byte.
    let longest = stops.iter().map(String::len).max().unwrap_or(0);
    let parent = beams.get(parent).map_or(&[][..], |b| b.tokens.as_slice());
    let from = parent.len().saturating_sub(longest + 4);
    let mut tail = parent[from..].to_vec();
    tail.push(token);
    let text = tokenizer.decode(&tail, true)?;
    Ok(stops.iter().any(|s| text.contains(s.as_str())))
}

/// Tokens of the parent beam (none for the prompt).
fn parent_tokens(beams: &[Beam], parent: usize) -> Vec<u32> {
    beams
        .get(parent)
        .map_or_else(Vec::new, |b| b.tokens.clone())
}

fn parent_len(beams: &[Beam], parent: usize) -> usize {
    beams.get(parent).map_or(0, |b| b.tokens.len())
}

/// Keeps the `n` best hypotheses, best first.
fn keep_best(done: &mut Vec<Hypothesis>, n: usize) {
    done.sort_by(|a, b| b.score.total_cmp(&a.score));
    done.truncate(n);
}

/// The `k` most likely tokens with their log-probabilities, most likely first.
pub(crate) fn log_softmax_top(logits: &[f32], k: usize) -> Vec<(u32, f32)> {
    let lse = log_sum_exp(logits);
    crate::sampler::top_k(logits, k)
        .into_iter()
        .map(|(t, l)| (t, l - lse))
        .collect()
}

/// `ln Σ exp(x)`, computed stably.
pub(crate) fn log_sum_exp(x: &[f32]) -> f32 {
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if !max.is_finite() {
        return max;
    }
    let sum: f64 = x.iter().map(|&v| ((v - max) as f64).exp()).sum();
    max + sum.ln() as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_softmax_top_gives_normalized_log_probabilities() {
        let x = [1.0f32, 3.0, 2.0, -1.0];
        let top = log_softmax_top(&x, 2);
        let z: f32 = x.iter().map(|v| v.exp()).sum();
        assert_eq!(top[0].0, 1);
        assert_eq!(top[1].0, 2);
        assert!((top[0].1 - (3f32.exp() / z).ln()).abs() < 1e-6);
        assert!((top[1].1 - (2f32.exp() / z).ln()).abs() < 1e-6);
    }

    #[test]
    fn options_are_checked() {
        let bad = [
            BeamOptions {
                beams: 0,
                ..Default::default()
            },
            BeamOptions {
                beams: 6,
                groups: 4,
                ..Default::default()
            },
            BeamOptions {
                diversity: f32::NAN,
                ..Default::default()
            },
            BeamOptions {
                length_penalty: -1.0,
                ..Default::default()
            },
            BeamOptions {
                max_tokens: 0,
                ..Default::default()
            },
        ];
        for o in bad {
            assert!(o.validate().is_err(), "{o:?}");
        }
        assert!(BeamOptions::default().validate().is_ok());
    }

    #[test]
    fn length_penalty_ranks_by_mean_or_sum() {
        let mean = BeamOptions::default();
        assert_eq!(mean.normalized(-4.0, 4), -1.0);
        let sum = BeamOptions {
            length_penalty: 0.0,
            ..Default::default()
        };
        assert_eq!(sum.normalized(-4.0, 4), -4.0);
    }
}
