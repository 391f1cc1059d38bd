//! Test-time scaling on the real default model: the mechanics of each
//! strategy (how many samples, votes, early stopping, reproducibility), and
//! the few-shot prompt of base models.

mod common;

use common::{gemma3, smollm2};
use std::time::Duration;

use edgeloop_core::scaling::{
    solve, AnswerKind, Gate, Limits, PromptStyle, SolveOptions, Strategy,
};

fn options(strategy: Strategy) -> SolveOptions {
    SolveOptions {
        strategy,
        kind: AnswerKind::Number,
        max_tokens: 64,
        seed: 3,
        ..Default::default()
    }
}

#[test]
fn greedy_spends_one_sample() {
    let s = solve(smollm2(), "What is 7 + 5?", &options(Strategy::Greedy)).unwrap();
    assert_eq!(s.spend.samples, 1);
    assert_eq!(s.samples.len(), 1);
    assert_eq!(s.answer.as_deref(), Some("12"), "{:?}", s.samples[0].text);
    assert!(s.confidence > 0.0 && s.confidence <= 1.0);
    assert_eq!(s.spend.tokens, s.samples[0].tokens);
}

#[test]
fn self_consistency_votes_over_all_samples_and_is_reproducible() {
    let opts = options(Strategy::SelfConsistency { samples: 6 });
    let a = solve(smollm2(), "What is 7 + 5?", &opts).unwrap();
    assert_eq!(a.spend.samples, 6);
    // The answer is the most common extracted answer, its share the confidence.
    let votes = a.samples.iter().filter(|s| s.answer == a.answer).count();
    for s in &a.samples {
        if s.answer.is_some() {
            assert!(a.samples.iter().filter(|t| t.answer == s.answer).count() <= votes);
        }
    }
    let answered = a.samples.iter().filter(|s| s.answer.is_some()).count();
    assert!((a.confidence - votes as f64 / answered as f64).abs() < 1e-9);
    let b = solve(smollm2(), "What is 7 + 5?", &opts).unwrap();
    let texts = |s: &edgeloop_core::scaling::Solution| {
        s.samples.iter().map(|x| x.text.clone()).collect::<Vec<_>>()
    };
    assert_eq!(texts(&a), texts(&b), "same seed, same samples");
}

#[test]
fn best_of_n_picks_the_most_likely_answered_sample() {
    let s = solve(
        smollm2(),
        "What is 7 + 5?",
        &options(Strategy::BestOfN {
            samples: 5,
            judges: 0,
        }),
    )
    .unwrap();
    assert_eq!(s.spend.samples, 5);
    let best = s
        .samples
        .iter()
        .filter(|x| x.answer.is_some())
        .map(|x| x.mean_logprob)
        .fold(f32::NEG_INFINITY, f32::max);
    let chosen = s.samples.iter().find(|x| x.mean_logprob == best).unwrap();
    assert_eq!(s.answer, chosen.answer);
    assert!((s.confidence - (best as f64).exp()).abs() < 1e-6);
}

#[test]
fn best_of_n_ranks_distinct_answers_by_the_judges_verdicts() {
    let s = solve(
        smollm2(),
        "What is 8 + 6?",
        &options(Strategy::BestOfN {
            samples: 6,
            judges: 2,
        }),
    )
    .unwrap();
    let mut distinct: Vec<&String> = s.samples.iter().filter_map(|x| x.answer.as_ref()).collect();
    distinct.sort();
    distinct.dedup();
    assert_eq!(
        s.spend.judgements,
        2 * distinct.len(),
        "each answer judged twice"
    );
    let sampled: usize = s.samples.iter().map(|x| x.tokens).sum();
    assert!(s.spend.tokens > sampled, "judge tokens are counted");
    if !distinct.is_empty() {
        assert!(distinct.contains(&s.answer.as_ref().unwrap()));
        assert!([0.0, 0.5, 1.0].contains(&s.confidence), "{}", s.confidence);
    }
}

#[test]
fn confidence_stops_low_confidence_traces_early() {
    let run = |keep_percent| {
        let opts = options(Strategy::Confidence {
            warmup: 3,
            samples: 8,
            keep_percent,
            window: 4,
        });
        solve(
            smollm2(),
            "How many legs does a spider have? Explain.",
            &opts,
        )
        .unwrap()
    };
    let keep_all = run(100.0);
    let keep_none = run(0.0);
    assert_eq!(keep_all.spend.samples, 8);
    assert_eq!(keep_none.spend.samples, 8);
    // The warm-up traces are the same; a higher bar stops later traces sooner.
    assert_eq!(
        keep_all.samples[..3]
            .iter()
            .map(|s| &s.text)
            .collect::<Vec<_>>(),
        keep_none.samples[..3]
            .iter()
            .map(|s| &s.text)
            .collect::<Vec<_>>()
    );
    let later = |s: &edgeloop_core::scaling::Solution| {
        s.samples[3..].iter().map(|x| x.tokens).sum::<usize>()
    };
    assert!(
        later(&keep_none) < later(&keep_all),
        "{} vs {}",
        later(&keep_none),
        later(&keep_all)
    );
    let e = solve(
        smollm2(),
        "What is 1 + 1?",
        &options(Strategy::Confidence {
            warmup: 9,
            samples: 8,
            keep_percent: 90.0,
            window: 4,
        }),
    )
    .unwrap_err();
    assert!(e.to_string().contains("warmup"), "{e}");
}

#[test]
fn adaptive_draws_waves_and_stops_at_the_cap_or_when_settled() {
    let opts = options(Strategy::Adaptive {
        wave: 3,
        max_samples: 9,
        threshold: 0.95,
        window: None,
    });
    let s = solve(smollm2(), "What is 7 + 5?", &opts).unwrap();
    assert!(
        s.spend.samples.is_multiple_of(3) && s.spend.samples <= 9,
        "{} samples",
        s.spend.samples
    );
    // It stopped early only if the stopping rule held after that wave.
    if s.spend.samples < 9 {
        let mut counts: Vec<usize> = Vec::new();
        let mut seen: Vec<&str> = Vec::new();
        for a in s.samples.iter().filter_map(|x| x.answer.as_deref()) {
            match seen.iter().position(|&b| b == a) {
                Some(i) => counts[i] += 1,
                None => {
                    seen.push(a);
                    counts.push(1);
                }
            }
        }
        counts.sort_unstable_by(|a, b| b.cmp(a));
        assert!(edgeloop_core::scaling::vote::should_stop_adaptive(
            &counts, 0.95
        ));
    }
}

#[test]
fn auto_answers_confident_questions_at_greedy_cost_and_escalates_otherwise() {
    let confident = options(Strategy::Auto {
        gate: Gate::AnswerLine,
        confidence: 0.0,
        max_samples: 8,
        wave: 4,
        threshold: 0.95,
        agreement: 0.75,
    });
    let s = solve(smollm2(), "What is 7 + 5?", &confident).unwrap();
    assert_eq!(s.spend.samples, 1, "confident: one sample");
    let doubtful = options(Strategy::Auto {
        gate: Gate::AnswerLine,
        confidence: 1.0,
        max_samples: 4,
        wave: 2,
        threshold: 0.95,
        agreement: 1.0,
    });
    let s = solve(smollm2(), "What is 7 + 5?", &doubtful).unwrap();
    assert!(s.spend.samples > 1, "never confident: escalates");
    assert!(
        s.spend.samples <= 1 + 4 + 4,
        "greedy, the beam wave and at most max_samples votes: {:?}",
        s.spend
    );
    // Any agreement is enough: the policy stops after its beam wave, whose
    // hypotheses are its samples after the greedy one.
    let medium = options(Strategy::Auto {
        gate: Gate::AnswerLine,
        confidence: 1.0,
        max_samples: 4,
        wave: 4,
        threshold: 0.95,
        agreement: 0.0,
    });
    // A question whose greedy answer the beams overrule (9 against 14).
    let question = "What is 6 + 3?";
    let greedy = solve(smollm2(), question, &options(Strategy::Greedy)).unwrap();
    let s = solve(smollm2(), question, &medium).unwrap();
    assert!(
        s.spend.samples >= 2 && s.spend.samples <= 1 + 4,
        "{:?}",
        s.spend
    );
    let beam = solve(
        smollm2(),
        question,
        &options(Strategy::Beam {
            beams: 4,
            groups: 2,
            diversity: 0.5,
            judge: false,
        }),
    )
    .unwrap();
    assert_ne!(greedy.answer, beam.answer, "the beams disagree with greedy");
    assert_eq!(s.answer, beam.answer, "the wave's answer is the beam's");
    assert_eq!(
        s.spend.tokens,
        greedy.spend.tokens + beam.spend.tokens,
        "greedy plus the wave"
    );
}

#[test]
fn auto_with_two_beams_runs_only_the_second_group_of_beam_at_2() {
    let question = "What is 6 + 3?";
    let led = options(Strategy::Auto {
        gate: Gate::Trace,
        confidence: 2.0,
        max_samples: 2,
        wave: 4,
        threshold: 0.95,
        agreement: 0.0,
    });
    let s = solve(smollm2(), question, &led).unwrap();
    let greedy = solve(smollm2(), question, &options(Strategy::Greedy)).unwrap();
    let beam = solve(
        smollm2(),
        question,
        &options(Strategy::Beam {
            beams: 2,
            groups: 2,
            diversity: 0.5,
            judge: false,
        }),
    )
    .unwrap();
    assert_eq!(s.spend.samples, 2, "the greedy trace and one hypothesis");
    assert_eq!(s.samples[0].text, greedy.samples[0].text);
    assert!(
        beam.samples.iter().any(|b| b.text == s.samples[1].text),
        "the led group's hypothesis is beam@2's second group's: {:?} among {:?}",
        s.samples[1].text,
        beam.samples
    );
    assert_eq!(s.answer, beam.answer);
    assert!(
        s.spend.tokens < greedy.spend.tokens + beam.spend.tokens,
        "the greedy trace is not decoded twice: {} vs {} + {}",
        s.spend.tokens,
        greedy.spend.tokens,
        beam.spend.tokens
    );
}

#[test]
fn bad_strategy_settings_are_errors() {
    assert!(Strategy::parse("beam-of-gold", 4)
        .unwrap_err()
        .to_string()
        .contains("unknown strategy"));
    let e = solve(
        smollm2(),
        "What is 1 + 1?",
        &options(Strategy::SelfConsistency { samples: 0 }),
    )
    .unwrap_err();
    assert!(e.to_string().contains("sample count 0"), "{e}");
    let e = solve(smollm2(), "   ", &options(Strategy::Greedy)).unwrap_err();
    assert!(e.to_string().contains("empty prompt"), "{e}");
}

#[test]
fn budget_forcing_appends_wait_when_thinking_ends_early() {
    let s = solve(
        smollm2(),
        "What is 7 + 5?",
        &options(Strategy::Budget {
            min_thinking: 40,
            max_thinking: 160,
            max_waits: 3,
        }),
    )
    .unwrap();
    let t = s
        .thinking
        .expect("the budget strategy reports its thinking");
    let text = &s.samples[0].text;
    assert!(t.waits >= 1, "a short answer is extended: {text:?}");
    assert_eq!(text.matches("\nWait").count(), t.waits, "{text:?}");
    assert!(t.thinking_tokens >= 40 || t.waits == 3, "{t:?}");
    assert!(t.thinking_tokens <= 160, "{t:?}");
    // Thinking ends with the delimiter, then the model answers.
    let tail = &text[text.rfind("\nAnswer:").expect("the answer line")..];
    assert!(s.answer.is_some(), "{tail:?}");
    assert_eq!(s.spend.tokens, s.samples[0].tokens);
}

#[test]
fn budget_forcing_ends_thinking_at_the_maximum() {
    let s = solve(
        smollm2(),
        "A shop sells 12 apples a day for 9 days. How many apples is that?",
        &SolveOptions {
            instruction: Some("Explain your reasoning in detail before answering.".into()),
            ..options(Strategy::Budget {
                min_thinking: 0,
                max_thinking: 6,
                max_waits: 2,
            })
        },
    )
    .unwrap();
    let t = s.thinking.unwrap();
    assert!(t.forced_end, "{t:?}");
    assert_eq!(t.thinking_tokens, 6);
    assert_eq!(t.waits, 0);
    let text = &s.samples[0].text;
    assert!(
        text.contains("\nAnswer:"),
        "the delimiter is forced: {text:?}"
    );
    // Only the short answer follows the forced delimiter.
    assert!(s.spend.tokens <= 6 + 32, "{}", s.spend.tokens);
}

#[test]
fn limits_stop_the_search() {
    let capped = SolveOptions {
        limits: Limits {
            max_tokens: Some(24),
            max_wall: None,
        },
        ..options(Strategy::Adaptive {
            wave: 4,
            max_samples: 16,
            threshold: 0.99,
            window: None,
        })
    };
    let s = solve(smollm2(), "What is 17 * 23?", &capped).unwrap();
    assert!(s.spend.limited);
    // Each running sample may finish the token it was sampling.
    assert!(s.spend.tokens <= 24 + 4, "{}", s.spend.tokens);
    assert!(s.spend.samples <= 8, "no wave starts after the cap");

    let timed = SolveOptions {
        limits: Limits {
            max_tokens: None,
            max_wall: Some(Duration::from_millis(1)),
        },
        ..options(Strategy::SelfConsistency { samples: 4 })
    };
    let s = solve(smollm2(), "What is 17 * 23?", &timed).unwrap();
    assert!(s.spend.limited);
    assert!(s.spend.tokens <= 4 * 2, "{}", s.spend.tokens);
}

/// A base model (its file has no chat template) is asked with worked
/// examples, under every kind of strategy; its samples end where the next
/// example would start.
#[test]
fn base_models_continue_worked_examples_and_stop_before_the_next() {
    let question = "Tom has 5 apples and gets 2 more. How many apples does Tom have now?";
    let strategies = [
        Strategy::Greedy,
        Strategy::SelfConsistency { samples: 2 },
        Strategy::Beam {
            beams: 2,
            groups: 1,
            diversity: 0.0,
            judge: true,
        },
        Strategy::StepSearch {
            candidates: 2,
            keep: 1,
            max_steps: 4,
            step_tokens: 16,
        },
        Strategy::Budget {
            min_thinking: 4,
            max_thinking: 24,
            max_waits: 1,
        },
    ];
    for strategy in strategies {
        let opts = SolveOptions {
            max_tokens: 48,
            ..options(strategy.clone())
        };
        let s = solve(gemma3(), question, &opts).unwrap();
        assert!(
            s.prompt.starts_with("Question: What is 4 + 3?\n"),
            "{strategy:?}"
        );
        assert!(s.prompt.ends_with(&format!("\n\nQuestion: {question}\n")));
        // Greedy gets it right; every strategy reaches an answer line.
        if strategy == Strategy::Greedy {
            assert_eq!(s.answer.as_deref(), Some("7"), "{:?}", s.samples);
        }
        assert!(s.answer.is_some(), "{strategy:?}: {:?}", s.samples);
        for sample in &s.samples {
            assert!(
                !sample.text.contains("\n\n") && !sample.text.contains("\nQuestion:"),
                "{strategy:?}: {:?}",
                sample.text
            );
        }
        // Stopped at the answer, far below the token cap (budget forcing
        // thinks for a set number of tokens first).
        if !matches!(strategy, Strategy::Budget { .. }) {
            let cap = 24 * s.samples.len().max(1);
            assert!(s.spend.tokens < cap, "{strategy:?}: {:?}", s.spend);
        }
    }
    // The same model asked as a chat turn, when the caller says so.
    let chat = SolveOptions {
        max_tokens: 8,
        prompt_style: PromptStyle::Chat,
        ..options(Strategy::Greedy)
    };
    let s = solve(gemma3(), question, &chat).unwrap();
    assert!(s.prompt.contains("<start_of_turn>user\n"), "{:?}", s.prompt);
    // A model whose file has a chat template is asked in its chat format.
    let s = solve(smollm2(), question, &options(Strategy::Greedy)).unwrap();
    assert!(s.prompt.contains("<|im_start|>user\n"), "{:?}", s.prompt);
}
