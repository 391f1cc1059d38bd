//! Greedy merging of adjacent symbols, the loop both encoders share: the
//! adjacent pair with the greatest key merges first (the leftmost of equal
//! keys), then the pairs it now forms with its neighbours are considered,
//! until no pair merges. O(n log n): a heap of candidate pairs over a
//! linked list of the symbols, so one very long word cannot stall it.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

const NONE: usize = usize::MAX;

/// Merges `symbols` in place. `pair(left, right)` says whether two adjacent
/// symbols merge: `Some((key, merged))`, greater keys first. It must give
/// the same answer for the same two symbols.
pub(crate) fn merge_pairs<S: Copy, K: Ord + Copy>(
    symbols: &mut Vec<S>,
    mut pair: impl FnMut(S, S) -> Option<(K, S)>,
) {
    let n = symbols.len();
    if n < 2 {
        return;
    }
    let mut next: Vec<usize> = (1..=n).map(|i| if i == n { NONE } else { i }).collect();
    let mut prev: Vec<usize> = (0..n).map(|i| i.checked_sub(1).unwrap_or(NONE)).collect();
    let mut alive = vec![true; n];
    // (key, leftmost first, position of the pair's left symbol); entries
    // made stale by a neighbour's merge are skipped when popped.
    let mut heap = BinaryHeap::new();
    for i in 0..n - 1 {
        if let Some((key, _)) = pair(symbols[i], symbols[i + 1]) {
            heap.push((key, Reverse(i)));
        }
    }
    while let Some((key, Reverse(i))) = heap.pop() {
        let j = next[i];
        if !alive[i] || j == NONE {
            continue;
        }
        match pair(symbols[i], symbols[j]) {
            Some((k, merged)) if k == key => symbols[i] = merged,
            _ => continue,
        }
        alive[j] = false;
        next[i] = next[j];
        if next[i] != NONE {
            prev[next[i]] = i;
        }
        if prev[i] != NONE {
            if let Some((k, _)) = pair(symbols[prev[i]], symbols[i]) {
                heap.push((k, Reverse(prev[i])));
            }
        }
        if next[i] != NONE {
            if let Some((k, _)) = pair(symbols[i], symbols[next[i]]) {
                heap.push((k, Reverse(i)));
            }
        }
    }
    let mut k = 0;
    for i in 0..n {
        if alive[i] {
            symbols[k] = symbols[i];
            k += 1;
        }
    }
    symbols.truncate(k);
}
