//! Voting over sampled answers and the rules that stop sampling early.
//!
//! [`Vote`] tallies the (normalized) answers of sampled traces, each with a
//! weight: 1 for plain self-consistency, a trace confidence for weighted
//! voting. The stopping rules decide when more samples are unlikely to
//! change the winner:
//! - Adaptive-Consistency (Aggarwal et al. 2023), Beta criterion:
//!   [`adaptive_stop_probability`], [`should_stop_adaptive`];
//! - Early-Stopping Self-Consistency (Li et al. 2024), window criterion:
//!   [`window_agrees`];
//! - DeepConf (Fu et al. 2025) confidence of traces: [`token_confidence`],
//!   [`lowest_window_mean`], [`percentile_threshold`].

use std::collections::HashMap;

/// A weighted tally of answers. Abstentions (no answer) are counted apart
/// and never win.
#[derive(Clone, Debug, Default)]
pub struct Vote {
    /// One entry per distinct answer, in the order first seen.
    entries: Vec<Entry>,
    /// Answer → position in `entries`.
    index: HashMap<String, usize>,
    abstentions: usize,
}

#[derive(Clone, Debug)]
struct Entry {
    answer: String,
    count: usize,
    weight: f64,
}

impl Vote {
    /// An empty tally.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one vote: `answer` with `weight`, or an abstention when `answer`
    /// is `None` (its weight is ignored). A weight that is negative or not a
    /// number counts as 0 (the vote still counts in [`Vote::counts`]):
    /// weights come from model confidences, and one bad value must not poison
    /// every comparison.
    pub fn add(&mut self, answer: Option<&str>, weight: f64) {
        let Some(answer) = answer else {
            self.abstentions += 1;
            return;
        };
        let weight = if weight >= 0.0 { weight } else { 0.0 };
        let i = match self.index.get(answer) {
            Some(&i) => i,
            None => {
                self.index.insert(answer.to_string(), self.entries.len());
                self.entries.push(Entry {
                    answer: answer.to_string(),
                    count: 0,
                    weight: 0.0,
                });
                self.entries.len() - 1
            }
        };
        self.entries[i].count += 1;
        self.entries[i].weight += weight;
    }

    /// The answer with the highest total weight and that weight; among equal
    /// weights the answer seen first. `None` when nothing but abstentions
    /// (or nothing) was added.
    pub fn winner(&self) -> Option<(String, f64)> {
        self.top().map(|e| (e.answer.clone(), e.weight))
    }

    fn top(&self) -> Option<&Entry> {
        // Strictly greater: the first seen keeps a tie.
        self.entries
            .iter()
            .fold(None, |best: Option<&Entry>, e| match best {
                Some(b) if b.weight >= e.weight => Some(b),
                _ => Some(e),
            })
    }

    /// Every answer with its number of votes and total weight, by weight
    /// (highest first), equal weights in the order first seen.
    pub fn counts(&self) -> Vec<(String, usize, f64)> {
        let mut entries: Vec<&Entry> = self.entries.iter().collect();
        // A stable sort keeps the first-seen order among equal weights.
        entries.sort_by(|a, b| b.weight.total_cmp(&a.weight));
        entries
            .into_iter()
            .map(|e| (e.answer.clone(), e.count, e.weight))
            .collect()
    }

    /// The numbers of votes of the answers, largest first: the input of
    /// [`should_stop_adaptive`], which counts votes, not weights.
    pub fn counts_desc(&self) -> Vec<usize> {
        let mut counts: Vec<usize> = self.entries.iter().map(|e| e.count).collect();
        counts.sort_unstable_by(|a, b| b.cmp(a));
        counts
    }

    /// The winner's share of the total weight of answers (abstentions
    /// excluded), in [0, 1]; 0 when there is no answer or no weight.
    pub fn share(&self) -> f64 {
        let total: f64 = self.entries.iter().map(|e| e.weight).sum();
        match self.top() {
            Some(top) if total > 0.0 => top.weight / total,
            _ => 0.0,
        }
    }

    /// The number of votes with an answer (abstentions excluded).
    pub fn n_votes(&self) -> usize {
        self.entries.iter().map(|e| e.count).sum()
    }

    /// The number of abstentions: samples that gave no answer.
    pub fn n_abstentions(&self) -> usize {
        self.abstentions
    }
}

/// Adaptive-Consistency's Beta stopping criterion: the probability that the
/// leading answer (`v1` votes) is more likely than the runner-up (`v2`
/// votes), P[p1 > p2] under a uniform prior, which equals
/// P[Binomial(v1 + v2 + 1, 1/2) ≤ v1]. Exact up to rounding for any counts
/// (exact steps for small counts, log-space sums for n > 1000, no overflow);
/// `p(v1, v2) + p(v2, v1) = 1`.
pub fn adaptive_stop_probability(v1: usize, v2: usize) -> f64 {
    let n = v1.saturating_add(v2).saturating_add(1);
    // Sum the smaller tail (the terms below n/2) and use the symmetry of
    // Binomial(n, 1/2): P[X ≤ v1] = 1 − P[X ≤ n − 1 − v1] = 1 − P[X ≤ v2].
    if v1 >= v2 {
        1.0 - binomial_half_cdf(n, v2)
    } else {
        binomial_half_cdf(n, v1)
    }
}

/// P[Binomial(n, 1/2) ≤ m].
fn binomial_half_cdf(n: usize, m: usize) -> f64 {
    if m >= n {
        return 1.0;
    }
    if n <= 1000 {
        // C(n, k) / 2^n by exact steps while C(n, k) < 2^53 (n up to about
        // 55), so that thresholds such as 1/2 or 57/64 are met exactly; a
        // rounding per step beyond. 2^-n is a normal f64 up to n = 1022.
        let mut term = 0.5f64.powi(n as i32);
        let mut sum = term;
        for k in 0..m {
            term = term * (n - k) as f64 / (k + 1) as f64;
            sum += term;
        }
        return sum.min(1.0);
    }
    binomial_half_cdf_log(n, m)
}

/// P[Binomial(n, 1/2) ≤ m] for `m < n`, in log space.
fn binomial_half_cdf_log(n: usize, m: usize) -> f64 {
    // ln(C(n, k) / 2^n), k = 0..=m, summed with a running log-sum-exp:
    // 2^-n underflows from n = 1075, the log never does.
    let mut log_term = -(n as f64) * std::f64::consts::LN_2;
    let (mut max, mut sum) = (log_term, 1.0f64);
    for k in 0..m {
        log_term += ((n - k) as f64).ln() - ((k + 1) as f64).ln();
        if log_term > max {
            sum = sum * (max - log_term).exp() + 1.0;
            max = log_term;
        } else {
            sum += (log_term - max).exp();
        }
    }
    (max.exp() * sum).min(1.0)
}

/// Whether Adaptive-Consistency stops sampling: the probability of
/// [`adaptive_stop_probability`] for the two largest vote counts reaches
/// `threshold` (0.95 in the paper). `counts_desc` holds the votes per answer
/// (the order does not matter); the runner-up has 0 votes when there is one
/// answer; `false` when there are no votes.
pub fn should_stop_adaptive(counts_desc: &[usize], threshold: f64) -> bool {
    let (mut first, mut second) = (0, 0);
    for &c in counts_desc {
        if c > first {
            (first, second) = (c, first);
        } else if c > second {
            second = c;
        }
    }
    first > 0 && adaptive_stop_probability(first, second) >= threshold
}

/// Early-Stopping Self-Consistency's window criterion: whether the last
/// `window` answers all exist and are equal. `false` for a window of 0 or
/// longer than the answers.
pub fn window_agrees(answers: &[Option<String>], window: usize) -> bool {
    if window == 0 || answers.len() < window {
        return false;
    }
    let tail = &answers[answers.len() - window..];
    match &tail[0] {
        Some(first) => tail.iter().all(|a| a.as_ref() == Some(first)),
        None => false,
    }
}

/// DeepConf's token confidence: minus the mean of the log-probabilities of
/// the top-k candidates at one position; high when the model is sure.
/// Non-finite log-probabilities (a `-inf` for a candidate masked to zero)
/// are skipped, since one would make the confidence infinite; 0 when none is
/// left.
pub fn token_confidence(top_logprobs: &[f32]) -> f32 {
    let (sum, n) = top_logprobs
        .iter()
        .filter(|l| l.is_finite())
        .fold((0.0f64, 0usize), |(s, n), &l| (s + f64::from(l), n + 1));
    if n == 0 {
        0.0
    } else {
        (-sum / n as f64) as f32
    }
}

/// DeepConf's lowest group confidence of a trace: the lowest mean of token
/// confidences over sliding windows of `window` tokens, the mean of all of
/// them when the trace is shorter than a window, `f32::INFINITY` for an
/// empty trace (nothing to cut it for). A window of 0 counts as 1.
pub fn lowest_window_mean(confidences: &[f32], window: usize) -> f32 {
    if confidences.is_empty() {
        return f32::INFINITY;
    }
    let window = window.max(1);
    if confidences.len() <= window {
        let sum: f64 = confidences.iter().map(|&c| f64::from(c)).sum();
        return (sum / confidences.len() as f64) as f32;
    }
    // A running sum in f64: its drift over a long trace stays far below f32
    // precision.
    let mut sum: f64 = confidences[..window].iter().map(|&c| f64::from(c)).sum();
    let mut lowest = sum;
    for i in window..confidences.len() {
        sum += f64::from(confidences[i]) - f64::from(confidences[i - window]);
        lowest = lowest.min(sum);
    }
    (lowest / window as f64) as f32
}

/// DeepConf's online threshold: from the scores (lowest window means) of
/// warm-up traces, the score below which a later trace is cut so that about
/// `keep_top_percent` percent of traces survive: the (100 −
/// `keep_top_percent`)th percentile, interpolated linearly like NumPy's
/// default (keep 10% → the 90th percentile). `keep_top_percent` is clamped
/// to [0, 100]; NaN scores are ignored; `f32::NEG_INFINITY` (cut nothing)
/// when no score is left.
pub fn percentile_threshold(scores: &[f32], keep_top_percent: f64) -> f32 {
    let mut sorted: Vec<f64> = scores
        .iter()
        .filter(|s| !s.is_nan())
        .map(|&s| f64::from(s))
        .collect();
    if sorted.is_empty() {
        return f32::NEG_INFINITY;
    }
    sorted.sort_by(f64::total_cmp);
    let keep = if keep_top_percent.is_nan() {
        100.0
    } else {
        keep_top_percent.clamp(0.0, 100.0)
    };
    let rank = (100.0 - keep) / 100.0 * (sorted.len() - 1) as f64;
    let lo = rank.floor() as usize;
    let hi = (rank.ceil() as usize).min(sorted.len() - 1);
    let t = rank - lo as f64;
    // Skip the interpolation when it is not needed: with infinite scores it
    // would compute inf − inf.
    if t == 0.0 || sorted[lo] == sorted[hi] {
        return sorted[lo] as f32;
    }
    (sorted[lo] + (sorted[hi] - sorted[lo]) * t) as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-12 * b.abs().max(1.0)
    }

    #[test]
    fn empty_vote() {
        let v = Vote::new();
        assert_eq!(v.winner(), None);
        assert!(v.counts().is_empty());
        assert_eq!(v.share(), 0.0);
        assert_eq!((v.n_votes(), v.n_abstentions()), (0, 0));
    }

    #[test]
    fn majority_with_abstentions() {
        let mut v = Vote::new();
        for a in [Some("4"), None, Some("5"), Some("4"), None, Some("4")] {
            v.add(a, 1.0);
        }
        assert_eq!(v.winner(), Some(("4".to_string(), 3.0)));
        assert_eq!(
            v.counts(),
            vec![("4".to_string(), 3, 3.0), ("5".to_string(), 1, 1.0)]
        );
        assert_eq!((v.n_votes(), v.n_abstentions()), (4, 2));
        assert!(close(v.share(), 0.75));
        assert_eq!(v.counts_desc(), vec![3, 1]);
    }

    #[test]
    fn only_abstentions() {
        let mut v = Vote::new();
        v.add(None, 5.0);
        v.add(None, 1.0);
        assert_eq!(v.winner(), None);
        assert_eq!(v.share(), 0.0);
        assert_eq!((v.n_votes(), v.n_abstentions()), (0, 2));
    }

    #[test]
    fn weights_beat_counts() {
        let mut v = Vote::new();
        v.add(Some("a"), 0.2);
        v.add(Some("a"), 0.2);
        v.add(Some("b"), 0.9);
        assert_eq!(v.winner(), Some(("b".to_string(), 0.9)));
        assert_eq!(v.counts()[0], ("b".to_string(), 1, 0.9));
        assert_eq!(v.counts()[1].1, 2);
        assert!(close(v.share(), 0.9 / 1.3));
        // Adaptive stopping still sees vote counts.
        assert_eq!(v.counts_desc(), vec![2, 1]);
    }

    #[test]
    fn ties_go_to_the_first_seen() {
        let mut v = Vote::new();
        for a in ["x", "y", "z", "z", "y", "x"] {
            v.add(Some(a), 1.0);
        }
        assert_eq!(v.winner(), Some(("x".to_string(), 2.0)));
        let order: Vec<String> = v.counts().into_iter().map(|c| c.0).collect();
        assert_eq!(order, ["x", "y", "z"]);
        let mut w = Vote::new();
        w.add(Some("late"), 1.0);
        w.add(Some("early?"), 2.0);
        w.add(Some("late"), 1.0);
        assert_eq!(w.winner().unwrap().0, "late");
    }

    #[test]
    fn bad_weights_count_as_zero() {
        let mut v = Vote::new();
        v.add(Some("a"), f64::NAN);
        v.add(Some("b"), -3.0);
        v.add(Some("c"), 0.5);
        assert_eq!(v.winner(), Some(("c".to_string(), 0.5)));
        assert_eq!(v.n_votes(), 3);
        assert!(close(v.share(), 1.0));
        let mut z = Vote::new();
        z.add(Some("a"), 0.0);
        assert_eq!(z.winner(), Some(("a".to_string(), 0.0)));
        assert_eq!(z.share(), 0.0);
    }

    #[test]
    fn adaptive_closed_forms() {
        let cases = [
            (0, 0, 1.0 / 2.0),
            (1, 0, 3.0 / 4.0),
            (3, 0, 15.0 / 16.0),
            (4, 0, 31.0 / 32.0),
            (5, 0, 63.0 / 64.0),
            (4, 1, 57.0 / 64.0),
            (1, 1, 1.0 / 2.0),
            (2, 1, 11.0 / 16.0),
            // P[Bin(8, .5) ≤ 5] = (1 + 8 + 28 + 56 + 70 + 56) / 256.
            (5, 2, 219.0 / 256.0),
            (0, 3, 1.0 / 16.0),
            (1, 4, 7.0 / 64.0),
        ];
        for (v1, v2, want) in cases {
            let got = adaptive_stop_probability(v1, v2);
            assert!(close(got, want), "p({v1}, {v2}) = {got}, want {want}");
        }
    }

    #[test]
    fn adaptive_symmetry_and_monotonicity() {
        for v1 in 0..40 {
            for v2 in 0..40 {
                let p = adaptive_stop_probability(v1, v2);
                let q = adaptive_stop_probability(v2, v1);
                assert!(close(p + q, 1.0), "p({v1},{v2}) + p({v2},{v1}) = {}", p + q);
                assert!(adaptive_stop_probability(v1 + 1, v2) > p);
                if v2 > 0 {
                    assert!(adaptive_stop_probability(v1, v2 - 1) > p);
                }
            }
        }
    }

    #[test]
    fn adaptive_large_counts() {
        // Exact sums: P[Bin(1001, .5) ≤ 500] = 1/2 by symmetry.
        assert!(close(adaptive_stop_probability(500, 500), 0.5));
        // Far beyond 2^-1074: no underflow to NaN, sensible limits.
        let p = adaptive_stop_probability(2000, 0);
        assert_eq!(p, 1.0);
        assert_eq!(adaptive_stop_probability(0, 2000), 0.0);
        // A product of binomial terms checked against an independent sum in
        // f64 for n = 1001 (the terms stay above 2^-1074 there).
        let (v1, v2) = (520usize, 480usize);
        let n = v1 + v2 + 1;
        let mut term = 0.5f64.powi(n as i32);
        let mut direct = 0.0;
        for k in 0..=v1 {
            direct += term;
            term *= (n - k) as f64 / (k + 1) as f64;
        }
        let got = adaptive_stop_probability(v1, v2);
        assert!((got - direct).abs() < 1e-10, "{got} vs {direct}");
        assert!(got > 0.8 && got < 1.0);
    }

    #[test]
    fn log_space_sum_matches_exact_steps() {
        for n in [1usize, 2, 7, 40, 333, 999, 1000] {
            for m in [0, n / 3, n / 2, n.saturating_sub(2)] {
                if m >= n {
                    continue;
                }
                let (exact, log) = (binomial_half_cdf(n, m), binomial_half_cdf_log(n, m));
                let tol = 1e-12 * exact.max(f64::MIN_POSITIVE);
                assert!((exact - log).abs() <= tol, "n={n} m={m}: {exact} vs {log}");
            }
        }
    }

    #[test]
    fn should_stop_uses_the_two_largest() {
        assert!(!should_stop_adaptive(&[], 0.95));
        assert!(!should_stop_adaptive(&[0, 0], 0.95));
        assert!(!should_stop_adaptive(&[3], 0.95)); // 15/16 < 0.95
        assert!(should_stop_adaptive(&[4], 0.95)); // 31/32
        assert!(should_stop_adaptive(&[5, 0], 0.95));
        assert!(!should_stop_adaptive(&[4, 1], 0.95)); // 57/64
        assert!(should_stop_adaptive(&[4, 1], 57.0 / 64.0)); // reaching it is enough
                                                             // Order does not matter; a third answer does not count.
        assert_eq!(
            should_stop_adaptive(&[1, 6, 2, 1], 0.95),
            should_stop_adaptive(&[6, 2], 0.95)
        );
        assert!(should_stop_adaptive(&[1, 1, 1], 0.5));
        assert!(!should_stop_adaptive(&[1, 1, 1], 0.51));
        assert!(!should_stop_adaptive(&[9], f64::NAN));
    }

    #[test]
    fn window_rule() {
        let s = |x: &str| Some(x.to_string());
        let answers = vec![s("1"), None, s("2"), s("2"), s("2")];
        assert!(window_agrees(&answers, 3));
        assert!(window_agrees(&answers, 1));
        assert!(!window_agrees(&answers, 4));
        assert!(!window_agrees(&answers, 0));
        assert!(!window_agrees(&answers, 6));
        assert!(!window_agrees(&[None, None], 2));
        assert!(!window_agrees(&[s("2"), None], 2));
        assert!(!window_agrees(&[s("2"), s("3")], 2));
        assert!(!window_agrees(&[], 1));
    }

    #[test]
    fn token_confidence_is_minus_mean_logprob() {
        assert!((token_confidence(&[-0.5, -1.5, -4.0]) - 2.0).abs() < 1e-6);
        assert_eq!(token_confidence(&[0.0]), 0.0);
        assert_eq!(token_confidence(&[]), 0.0);
        assert!((token_confidence(&[-1.0, f32::NEG_INFINITY, -3.0]) - 2.0).abs() < 1e-6);
        // Sure tokens (one candidate near log 1, the rest far below) score
        // higher than unsure ones (candidates alike).
        let sure = token_confidence(&[-0.01, -9.0, -10.0]);
        let unsure = token_confidence(&[-1.1, -1.1, -1.1]);
        assert!(sure > unsure);
    }

    #[test]
    fn lowest_window() {
        let c = [5.0, 5.0, 1.0, 2.0, 6.0, 6.0];
        assert!((lowest_window_mean(&c, 2) - 1.5).abs() < 1e-6);
        assert!((lowest_window_mean(&c, 3) - 8.0 / 3.0).abs() < 1e-6);
        assert!((lowest_window_mean(&c, 1) - 1.0).abs() < 1e-6);
        assert!((lowest_window_mean(&c, 0) - 1.0).abs() < 1e-6);
        // Shorter than a window: the mean of all.
        assert!((lowest_window_mean(&c, 6) - 25.0 / 6.0).abs() < 1e-6);
        assert!((lowest_window_mean(&c, 100) - 25.0 / 6.0).abs() < 1e-6);
        assert_eq!(lowest_window_mean(&[], 4), f32::INFINITY);
        // Long traces: the running sum stays exact enough.
        let mut long = vec![3.0f32; 100_000];
        long[70_000..70_010].fill(1.0);
        assert!((lowest_window_mean(&long, 10) - 1.0).abs() < 1e-4);
        assert!((lowest_window_mean(&long, 20) - 2.0).abs() < 1e-4);
    }

    #[test]
    fn percentile_like_numpy() {
        let scores: Vec<f32> = (1..=10).map(|x| x as f32).collect();
        // numpy.percentile(range(1, 11), 90) == 9.1
        assert!((percentile_threshold(&scores, 10.0) - 9.1).abs() < 1e-5);
        // numpy.percentile(range(1, 11), 10) == 1.9
        assert!((percentile_threshold(&scores, 90.0) - 1.9).abs() < 1e-5);
        assert_eq!(percentile_threshold(&scores, 50.0), 5.5);
        assert_eq!(percentile_threshold(&scores, 100.0), 1.0);
        assert_eq!(percentile_threshold(&scores, 0.0), 10.0);
        assert_eq!(percentile_threshold(&scores, 250.0), 1.0);
        assert_eq!(percentile_threshold(&scores, -5.0), 10.0);
        // Order of the warm-up scores does not matter.
        let mut shuffled = scores.clone();
        shuffled.reverse();
        shuffled.swap(2, 7);
        assert_eq!(
            percentile_threshold(&shuffled, 10.0),
            percentile_threshold(&scores, 10.0)
        );
        assert_eq!(percentile_threshold(&[7.0], 10.0), 7.0);
        assert_eq!(percentile_threshold(&[], 10.0), f32::NEG_INFINITY);
        assert_eq!(percentile_threshold(&[f32::NAN], 10.0), f32::NEG_INFINITY);
        assert_eq!(percentile_threshold(&[f32::NAN, 2.0, 4.0], 50.0), 3.0);
        assert_eq!(
            percentile_threshold(&[1.0, f32::INFINITY, f32::INFINITY], 10.0),
            f32::INFINITY
        );
    }

    #[test]
    fn deepconf_pipeline() {
        // Warm-up traces scored by their lowest window; keep the top 10%:
        // only traces scoring at least the threshold survive.
        let traces: Vec<Vec<f32>> = (0..10)
            .map(|i| vec![10.0, 1.0 + i as f32, 1.0 + i as f32, 10.0])
            .collect();
        let scores: Vec<f32> = traces.iter().map(|t| lowest_window_mean(t, 2)).collect();
        assert_eq!(scores[0], 1.0);
        let bar = percentile_threshold(&scores, 10.0);
        let kept = scores.iter().filter(|&&s| s >= bar).count();
        assert_eq!(kept, 1);
    }
}
