//! The self-verification cascade on the real default model: stage order,
//! unanimous votes, verdict parsing, reproducibility, and bad settings.

mod common;

use common::smollm2;
use edgeloop_core::scaling::{solve, SolveOptions, Strategy};
use edgeloop_core::verify::{
    parse_verdict, verify, verify_solution, Candidate, Stage, VerifyOptions,
};

fn options(stages: &[Stage], votes: usize) -> VerifyOptions {
    VerifyOptions {
        stages: stages.to_vec(),
        votes,
        max_tokens: 48,
        ..VerifyOptions::for_engine(smollm2())
    }
}

fn candidate<'a>(answer: &'a str, share: Option<f64>) -> Candidate<'a> {
    Candidate {
        question: "What is 7 + 5?",
        answer,
        reasoning: "7 + 5 = 12",
        vote_share: share,
    }
}

#[test]
fn agreement_alone_judges_the_vote_share_without_the_model() {
    let o = options(&[Stage::Agreement], 3);
    let low = verify(smollm2(), &candidate("12", Some(0.4)), &o).unwrap();
    assert!(!low.accepted);
    assert_eq!(low.votes.len(), 1);
    assert_eq!(low.votes[0].stage, "agreement");
    assert_eq!(low.spend.samples, 0, "no judgement was generated");
    let high = verify(smollm2(), &candidate("12", Some(0.75)), &o).unwrap();
    assert!(high.accepted);
    // Without votes (a single greedy answer) the stage does not apply.
    let none = verify(smollm2(), &candidate("12", None), &o).unwrap();
    assert!(none.accepted && none.votes.is_empty());
}

#[test]
fn the_cascade_runs_in_order_stops_at_the_first_rejection_and_needs_every_vote() {
    let o = options(&Stage::ALL, 2);
    for answer in ["12", "15"] {
        let v = verify(smollm2(), &candidate(answer, Some(1.0)), &o).unwrap();
        let order: Vec<&str> = Stage::ALL.iter().map(|s| s.name()).collect();
        let mut seen: Vec<&str> = Vec::new();
        for vote in &v.votes {
            if seen.last() != Some(&vote.stage.as_str()) {
                seen.push(&vote.stage);
            }
        }
        assert_eq!(seen, order[..seen.len()], "stages run in cascade order");
        for stage in &seen[1..] {
            let n = v.votes.iter().filter(|x| x.stage == *stage).count();
            assert_eq!(n, 2, "{stage}: one vote per judge");
        }
        for vote in &v.votes[1..] {
            assert_eq!(vote.verdict, parse_verdict(&vote.judge_text), "{vote:?}");
        }
        let last = seen.last().unwrap();
        let last_ok = v
            .votes
            .iter()
            .filter(|x| x.stage == *last)
            .all(|x| x.verdict == Some(true));
        if v.accepted {
            assert_eq!(seen.len(), 4, "accepted: every stage ran");
            assert!(v.votes.iter().all(|x| x.verdict == Some(true)));
        } else {
            assert!(!last_ok, "the cascade stops at the stage that rejected");
        }
        assert!(v.spend.samples >= (seen.len() as u64 - 1) * 2);
        assert!(v.spend.tokens > 0);
        let again = verify(smollm2(), &candidate(answer, Some(1.0)), &o).unwrap();
        assert_eq!(again.votes, v.votes, "same seed, same judgements");
    }
}

#[test]
fn a_solution_without_an_answer_is_rejected() {
    let s = solve(
        smollm2(),
        "Say hello.",
        &SolveOptions {
            strategy: Strategy::Greedy,
            instruction: Some(String::new()),
            max_tokens: 8,
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(s.answer, None, "{:?}", s.samples[0].text);
    let v = verify_solution(smollm2(), "Say hello.", &s, &options(&Stage::ALL, 3)).unwrap();
    assert!(!v.accepted);
    assert_eq!(v.spend.samples, 0);
}

#[test]
fn bad_settings_are_errors() {
    let e = verify(smollm2(), &candidate("12", None), &options(&Stage::ALL, 0)).unwrap_err();
    assert!(e.to_string().contains("verifier votes 0"), "{e}");
    let e = Stage::parse("vibes").unwrap_err();
    assert!(
        e.to_string().contains("unknown verifier stage \"vibes\""),
        "{e}"
    );
    let o = VerifyOptions {
        min_share: 1.5,
        ..options(&Stage::ALL, 3)
    };
    let e = verify(smollm2(), &candidate("12", Some(0.9)), &o).unwrap_err();
    assert!(e.to_string().contains("agreement threshold 1.5"), "{e}");
}
