//! Search at test time on the real default model: beam bookkeeping (slots
//! forked and freed, scores that match a teacher-forced recomputation),
//! diverse groups, the one-pass step judge and reproducible step search;
//! beams ending at stop strings on the base model.

mod common;

use std::ops::ControlFlow;

use common::{gemma3, smollm2};
use edgeloop_core::scaling::prompt::{few_shot, FEW_SHOT_STOPS};
use edgeloop_core::scaling::{solve, AnswerKind, PromptStyle, SolveOptions, Strategy};
use edgeloop_core::search::{
    beam_search, step_search, BeamOptions, BeamResult, Problem, StepJudge, StepOptions,
};
use edgeloop_core::tokenizer::ChatMessage;
use edgeloop_core::{Engine, FinishReason, GenerateOptions, Prompt};

const QUESTION: &str = "What is 7 + 5?";

fn prompt(engine: &Engine) -> Vec<u32> {
    engine
        .encode_chat(&[ChatMessage::user(QUESTION)], None)
        .unwrap()
}

fn search(options: &BeamOptions) -> (BeamResult, usize, usize) {
    let engine = smollm2();
    let ids = prompt(engine);
    let mut session = engine.session();
    session.logits_after(&ids).unwrap();
    let before = session.kv_bytes();
    let r = beam_search(&mut session, &ids, options, &mut |_| {
        ControlFlow::Continue(())
    })
    .unwrap();
    assert_eq!(
        session.cached_tokens(),
        ids.as_slice(),
        "slot 0 keeps the prompt"
    );
    (r, before, session.kv_bytes())
}

/// Log-probability of `tokens` after `prompt`, teacher-forced from an
/// empty cache; with `ended`, plus that of the likeliest end-of-turn token
/// after them.
fn forced_logprob(engine: &Engine, prompt: &[u32], tokens: &[u32], ended: bool) -> f32 {
    let all: Vec<u32> = [prompt, tokens].concat();
    let logits = engine.session().logits_all(&all).unwrap();
    let vocab = logits.len() / all.len();
    let logprob = |pos: usize, t: u32| {
        let row = &logits[pos * vocab..(pos + 1) * vocab];
        let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let lse = max + row.iter().map(|&v| (v - max).exp()).sum::<f32>().ln();
        row[t as usize] - lse
    };
    let mut sum: f32 = (0..tokens.len())
        .map(|k| logprob(prompt.len() - 1 + k, tokens[k]))
        .sum();
    if ended {
        let end = engine.tokenizer().stop_ids();
        sum += end
            .iter()
            .map(|&t| logprob(all.len() - 1, t))
            .fold(f32::NEG_INFINITY, f32::max);
    }
    sum
}

fn ended(h: &edgeloop_core::search::Hypothesis) -> bool {
    h.finish == FinishReason::Stop
}

#[test]
fn beam_search_releases_every_slot_it_forks() {
    let options = BeamOptions {
        beams: 4,
        groups: 2,
        max_tokens: 24,
        ..Default::default()
    };
    let (r, before, after) = search(&options);
    assert_eq!(after, before, "only the prompt's cache is left");
    let s = r.stats;
    assert!(s.forks >= 4, "{s:?}");
    assert_eq!(s.releases, s.forks, "every slot taken is given back: {s:?}");
    assert!(s.peak_slots <= 4, "never more slots than beams: {s:?}");
    assert!(!r.hypotheses.is_empty() && r.hypotheses.len() <= 4);
}

#[test]
fn one_beam_is_greedy_decoding() {
    let engine = smollm2();
    let ids = prompt(engine);
    let options = BeamOptions {
        beams: 1,
        groups: 1,
        length_penalty: 0.0,
        max_tokens: 32,
        ..Default::default()
    };
    let (r, _, _) = search(&options);
    let greedy = engine
        .session()
        .generate(
            &ids,
            &GenerateOptions {
                max_tokens: 32,
                ..Default::default()
            },
            &mut |_| ControlFlow::Continue(()),
        )
        .unwrap();
    let h = &r.hypotheses[0];
    let tokens: Vec<u32> = greedy.tokens.iter().map(|t| t.token).collect();
    assert_eq!(h.tokens, tokens);
    assert_eq!(h.text, greedy.text);
    assert_eq!(ended(h), greedy.finish_reason == FinishReason::Stop);
    let mut lp: f32 = greedy.tokens.iter().map(|t| t.logprob).sum();
    if ended(h) {
        // The end-of-turn token's own log-probability.
        lp += forced_logprob(engine, &ids, &h.tokens, true)
            - forced_logprob(engine, &ids, &h.tokens, false);
    }
    assert!((h.logprob - lp).abs() < 1e-2, "{} vs {lp}", h.logprob);
}

#[test]
fn beam_scores_match_a_teacher_forced_recomputation_and_repeat() {
    let engine = smollm2();
    let ids = prompt(engine);
    let options = BeamOptions {
        beams: 4,
        groups: 2,
        max_tokens: 24,
        ..Default::default()
    };
    let (a, _, _) = search(&options);
    let (b, _, _) = search(&options);
    let toks = |r: &BeamResult| {
        r.hypotheses
            .iter()
            .map(|h| h.tokens.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(toks(&a), toks(&b), "beam search is deterministic");
    for w in a.hypotheses.windows(2) {
        assert!(w[0].score >= w[1].score, "best first");
    }
    for h in &a.hypotheses {
        // Each beam's keys and values came through forks of other beams'
        // slots; a wrong copy would change the model's probabilities.
        let forced = forced_logprob(engine, &ids, &h.tokens, ended(h));
        assert!(
            (h.logprob - forced).abs() < 0.02 * h.tokens.len() as f32 + 0.05,
            "beam {:?}: {} searched vs {forced} recomputed",
            h.text,
            h.logprob
        );
        assert!((h.score - h.logprob / h.tokens.len() as f32).abs() < 1e-5);
    }
}

#[test]
fn diverse_groups_do_not_share_their_first_tokens() {
    let options = BeamOptions {
        beams: 4,
        groups: 2,
        diversity: 100.0,
        max_tokens: 12,
        ..Default::default()
    };
    let (r, _, _) = search(&options);
    let first = |g: usize| -> Vec<u32> {
        r.hypotheses
            .iter()
            .filter(|h| h.group == g)
            .map(|h| h.tokens[0])
            .collect()
    };
    let (g0, g1) = (first(0), first(1));
    assert!(!g0.is_empty() && !g1.is_empty(), "{:?}", r.hypotheses);
    assert!(g1.iter().all(|t| !g0.contains(t)), "{g0:?} vs {g1:?}");
}

#[test]
fn a_search_led_by_the_first_groups_path_is_the_second_group() {
    // Twelve tokens, too few for the answer to end: both groups of one
    // beam run to the length limit, the first one greedy all the way.
    let two = BeamOptions {
        beams: 2,
        groups: 2,
        diversity: 2.0,
        max_tokens: 12,
        ..Default::default()
    };
    let (r, _, _) = search(&two);
    let group = |g: usize| r.hypotheses.iter().find(|h| h.group == g).unwrap();
    assert_eq!(group(0).finish, FinishReason::Length);
    let led = BeamOptions {
        beams: 1,
        groups: 1,
        leader: group(0).tokens.clone(),
        ..two.clone()
    };
    let (l, _, _) = search(&led);
    assert_eq!(l.hypotheses.len(), 1);
    assert_eq!(l.hypotheses[0].tokens, group(1).tokens);
    assert_eq!(l.hypotheses[0].logprob, group(1).logprob);
    assert_ne!(
        group(1).tokens[0],
        group(0).tokens[0],
        "the penalty applies"
    );
    // Without a leader the lone beam is greedy: the first group's path.
    let alone = BeamOptions {
        leader: Vec::new(),
        ..led
    };
    let (a, _, _) = search(&alone);
    assert_eq!(a.hypotheses[0].tokens, group(0).tokens);
}

#[test]
fn the_step_judge_reads_its_verdict_from_one_forward_pass() {
    let engine = smollm2();
    let judge = StepJudge::new(engine, PromptStyle::Auto).unwrap();
    let mut session = engine.session();
    let partial = "7 + 5 = 12";
    let passes = session.forward_passes();
    let j = judge.judge(&mut session, QUESTION, partial).unwrap();
    assert_eq!(session.forward_passes() - passes, 1, "one forward pass");
    let ids = judge.prompt(engine, QUESTION, partial).unwrap();
    assert_eq!(j.computed_tokens, ids.len());
    assert!(j.p_yes > 0.0 && j.p_yes < 1.0);
    // The same probability from the full teacher-forced logits.
    let logits = engine.session().logits_all(&ids).unwrap();
    let vocab = logits.len() / ids.len();
    let last = &logits[(ids.len() - 1) * vocab..];
    assert!((judge.p_yes(last) - j.p_yes).abs() < 1e-3);
    // A longer partial reuses the cached judge prompt up to where it differs.
    let longer = "7 + 5 = 12\nAnswer: 12";
    let passes = session.forward_passes();
    let k = judge.judge(&mut session, QUESTION, longer).unwrap();
    assert_eq!(session.forward_passes() - passes, 1);
    let longer_ids = judge.prompt(engine, QUESTION, longer).unwrap();
    assert!(k.computed_tokens < longer_ids.len() / 2, "{k:?}");
}

#[test]
fn step_search_is_reproducible_and_judges_each_candidate_once() {
    let engine = smollm2();
    let ids = prompt(engine);
    let judge = StepJudge::new(engine, PromptStyle::Auto).unwrap();
    let options = StepOptions {
        candidates: 4,
        keep: 2,
        max_steps: 3,
        step_tokens: 24,
        max_tokens: 96,
        seed: 11,
        ..Default::default()
    };
    let run = || {
        let (mut s, mut j) = (engine.session(), engine.session());
        step_search(
            &mut s,
            &mut j,
            &judge,
            Problem {
                question: QUESTION,
                prompt: &ids,
                is_complete: &|t| t.contains("Answer:") && t.ends_with('\n'),
            },
            &options,
            &mut || ControlFlow::Continue(()),
        )
        .unwrap()
    };
    let (a, b) = (run(), run());
    let texts = |r: &edgeloop_core::search::StepResult| {
        r.kept.iter().map(|p| p.text.clone()).collect::<Vec<_>>()
    };
    assert_eq!(texts(&a), texts(&b), "same seed, same search");
    let s = a.stats;
    assert!(s.rounds >= 1 && s.rounds <= 3, "{s:?}");
    assert!(s.judged <= s.rounds * 4 && s.judged >= 4, "{s:?}");
    assert!(a.kept.len() <= 2);
    for p in &a.kept {
        assert!(p.steps <= s.rounds && p.tokens.len() <= 96);
    }
    for w in a.kept.windows(2) {
        assert!(w[0].score >= w[1].score);
    }
}

#[test]
fn search_strategies_answer_through_solve() {
    for strategy in [
        Strategy::Beam {
            beams: 2,
            groups: 1,
            diversity: 0.0,
            judge: true,
        },
        Strategy::StepSearch {
            candidates: 2,
            keep: 1,
            max_steps: 3,
            step_tokens: 32,
        },
    ] {
        let options = SolveOptions {
            strategy: strategy.clone(),
            kind: AnswerKind::Number,
            max_tokens: 64,
            seed: 5,
            ..Default::default()
        };
        let a = solve(smollm2(), QUESTION, &options).unwrap();
        let b = solve(smollm2(), QUESTION, &options).unwrap();
        assert_eq!(a.answer, b.answer, "{strategy:?}");
        assert!(
            a.spend.tokens > 0 && a.spend.scored_tokens > 0,
            "{:?}",
            a.spend
        );
        assert!(!a.samples.is_empty());
    }
}

#[test]
fn beams_end_at_a_stop_string_with_the_token_that_reached_it() {
    // The base model continues worked examples; a beam ends where the next
    // example would start.
    let engine = gemma3();
    let text = few_shot("What is 3 + 5?", AnswerKind::Number, None);
    let ids = engine.encode(&Prompt::Text(text)).unwrap();
    let options = BeamOptions {
        beams: 2,
        groups: 1,
        diversity: 0.0,
        max_tokens: 32,
        stop_strings: FEW_SHOT_STOPS.map(String::from).to_vec(),
        ..Default::default()
    };
    let r = beam_search(&mut engine.session(), &ids, &options, &mut |_| {
        ControlFlow::Continue(())
    })
    .unwrap();
    let stopped: Vec<_> = r
        .hypotheses
        .iter()
        .filter(|h| h.finish == FinishReason::StopString)
        .collect();
    assert!(!stopped.is_empty(), "{:?}", r.hypotheses);
    for h in stopped {
        let full = engine.tokenizer().decode(&h.tokens, true).unwrap();
        assert!(full.starts_with(&h.text), "{full:?} vs {:?}", h.text);
        assert!(FEW_SHOT_STOPS.iter().any(|s| full.contains(s)), "{full:?}");
        assert!(FEW_SHOT_STOPS.iter().all(|s| !h.text.contains(s)));
        assert!(h.text.contains("Answer:"), "{:?}", h.text);
        // The token that reached the stop string is scored with the beam.
        let forced = forced_logprob(engine, &ids, &h.tokens, false);
        assert!(
            (h.logprob - forced).abs() < 0.02 * h.tokens.len() as f32 + 0.05,
            "{} searched vs {forced} recomputed",
            h.logprob
        );
        assert!((h.score - h.logprob / h.tokens.len() as f32).abs() < 1e-5);
    }
}
