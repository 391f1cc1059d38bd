//! Development task sets with known answers, made by edgeloop itself:
//! arithmetic at a chosen difficulty and short word problems.
//! One JSON object per line: `{"question": "...", "answer": "..."}`.

use anyhow::{bail, Result};
use clap::{Args, Subcommand};
use edgeloop_core::sampler::Rng;
use edgeloop_core::scaling::{normalize, AnswerKind};
use serde::{Deserialize, Serialize};

/// A question with its reference answer.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Task {
    pub question: String,
    /// Empty for unlabeled seed questions.
    #[serde(default)]
    pub answer: String,
}

impl Task {
    /// Whether `answer` (as the strategies return it, normalized) is this
    /// task's answer.
    pub fn is_answered_by(&self, answer: &Option<String>, kind: AnswerKind) -> bool {
        answer.is_some() && *answer == normalize(&self.answer, kind)
    }
}

#[derive(Subcommand)]
pub enum TasksCommand {
    /// Generate a task set (JSONL on stdout).
    Gen {
        #[command(subcommand)]
        kind: GenKind,
    },
}

#[derive(Subcommand)]
pub enum GenKind {
    /// `a OP b` with D-digit operands.
    Arithmetic(ArithmeticArgs),
    /// Counting objects, money and time in one or two steps.
    Word(WordArgs),
}

#[derive(Args)]
pub struct ArithmeticArgs {
    /// Digits per operand (1 to 9).
    #[arg(long, default_value_t = 1)]
    digits: u32,
    /// Operations: add, sub, mul.
    #[arg(long, value_delimiter = ',', default_value = "add,sub")]
    ops: Vec<String>,
    #[arg(short, default_value_t = 50)]
    n: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

#[derive(Args)]
pub struct WordArgs {
    #[arg(short, default_value_t = 50)]
    n: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

/// Draws from a seeded generator, so a task set is reproducible.
struct Draw(Rng);

impl Draw {
    /// Uniform in lo..=hi.
    fn range(&mut self, lo: i64, hi: i64) -> i64 {
        lo + (self.0.next_u64() % (hi - lo + 1) as u64) as i64
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[(self.0.next_u64() % items.len() as u64) as usize]
    }
}

/// Arithmetic questions.
pub fn arithmetic(digits: u32, ops: &[String], n: usize, seed: u64) -> Result<Vec<Task>> {
    if !(1..=9).contains(&digits) {
        bail!("--digits {digits} is out of range (1 to 9)");
    }
    if ops.is_empty() {
        bail!("--ops is empty (choose from add, sub, mul)");
    }
    for op in ops {
        if !["add", "sub", "mul"].contains(&op.as_str()) {
            bail!("unknown operation {op:?} (choose from add, sub, mul)");
        }
    }
    let lo = if digits == 1 {
        0
    } else {
        10i64.pow(digits - 1)
    };
    let hi = 10i64.pow(digits) - 1;
    let mut rng = Draw(Rng::new(seed));
    Ok((0..n)
        .map(|_| {
            let (a, b) = (rng.range(lo, hi), rng.range(lo, hi));
            let (sym, value) = match rng.pick(ops).as_str() {
                "add" => ("+", a + b),
                "sub" => ("-", a - b),
                _ => ("*", a * b),
            };
            Task {
                question: format!("What is {a} {sym} {b}?"),
                answer: value.to_string(),
            }
        })
        .collect())
}

/// Short word problems about counting, money and time.
pub fn word(n: usize, seed: u64) -> Vec<Task> {
    const NAMES: &[&str] = &[
        "Anna", "Ben", "Chloe", "David", "Emma", "Farid", "Grace", "Hugo",
    ];
    const THINGS: &[&str] = &[
        "apples", "marbles", "books", "pencils", "stickers", "cookies",
    ];
    let mut rng = Draw(Rng::new(seed));
    (0..n)
        .map(|_| {
            let name = *rng.pick(NAMES);
            match rng.range(0, 3) {
                0 => {
                    let (a, b) = (rng.range(2, 20), rng.range(2, 20));
                    let thing = rng.pick(THINGS);
                    Task {
                        question: format!("{name} has {a} {thing} and gets {b} more. How many {thing} does {name} have now?"),
                        answer: (a + b).to_string(),
                    }
                }
                1 => {
                    let (a, b) = (rng.range(10, 40), rng.range(1, 9));
                    let thing = rng.pick(THINGS);
                    Task {
                        question: format!("{name} had {a} {thing} and gave away {b}. How many {thing} are left?"),
                        answer: (a - b).to_string(),
                    }
                }
                2 => {
                    let (price, count) = (rng.range(1, 9), rng.range(2, 9));
                    Task {
                        question: format!("A notebook costs {price} dollars. How many dollars does {name} pay for {count} notebooks?"),
                        answer: (price * count).to_string(),
                    }
                }
                _ => {
                    let (start, hours) = (rng.range(1, 8), rng.range(1, 4));
                    Task {
                        question: format!("{name} starts reading at {start} o'clock and reads for {hours} hours. At what hour does {name} stop?"),
                        answer: (start + hours).to_string(),
                    }
                }
            }
        })
        .collect()
}

pub fn run(cmd: &TasksCommand) -> Result<()> {
    let TasksCommand::Gen { kind } = cmd;
    let tasks = match kind {
        GenKind::Arithmetic(a) => arithmetic(a.digits, &a.ops, a.n, a.seed)?,
        GenKind::Word(w) => word(w.n, w.seed),
    };
    for t in tasks {
        println!("{}", serde_json::to_string(&t)?);
    }
    Ok(())
}

/// Reads a JSONL task file; errors name the line.
pub fn read(path: &std::path::Path) -> Result<Vec<Task>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("reading {}: {e}", path.display()))?;
    let mut tasks = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let t: Task = serde_json::from_str(line).map_err(|e| {
            anyhow::anyhow!(
                "{}:{}: not a {{\"question\", \"answer\"}} object: {e}",
                path.display(),
                i + 1
            )
        })?;
        tasks.push(t);
    }
    if tasks.is_empty() {
        bail!("{} holds no tasks", path.display());
    }
    Ok(tasks)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arithmetic_is_reproducible_and_correct() {
        let ops = vec!["add".to_string(), "sub".into(), "mul".into()];
        let a = arithmetic(2, &ops, 30, 5).unwrap();
        assert_eq!(a, arithmetic(2, &ops, 30, 5).unwrap());
        assert_ne!(a, arithmetic(2, &ops, 30, 6).unwrap());
        for t in &a {
            let parts: Vec<&str> = t
                .question
                .trim_start_matches("What is ")
                .trim_end_matches('?')
                .split(' ')
                .collect();
            let (x, y): (i64, i64) = (parts[0].parse().unwrap(), parts[2].parse().unwrap());
            assert!((10..100).contains(&x) && (10..100).contains(&y));
            let v = match parts[1] {
                "+" => x + y,
                "-" => x - y,
                _ => x * y,
            };
            assert_eq!(t.answer, v.to_string());
        }
        assert!(arithmetic(0, &ops, 1, 0).is_err());
        assert!(arithmetic(1, &["div".into()], 1, 0).is_err());
    }

    #[test]
    fn word_problems_have_numeric_answers() {
        let w = word(40, 1);
        assert_eq!(w.len(), 40);
        assert!(w.iter().all(|t| t.answer.parse::<i64>().is_ok()));
    }
}
