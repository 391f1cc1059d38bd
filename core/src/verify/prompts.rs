//! The judge prompts of the verifier, in one place.
//!
//! Each prompt is a template with `{question}`, `{answer}`, `{reasoning}`
//! and (cycle-consistency only) `{inferred}` placeholders. The built-in set
//! is chosen per model family; a TOML file with the same keys overrides any
//! of them.

use std::path::Path;

use serde::Deserialize;

use crate::error::{Error, Result};

/// The prompts of every verifier stage.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JudgePrompts {
    /// Cycle-consistency, step 1: infer the question from the response.
    pub infer_question: String,
    /// Cycle-consistency, step 2: do the inferred and original questions match?
    pub cycle: String,
    /// Factuality: strict search for wrong facts, numbers or logic.
    pub factuality: String,
    /// Correctness: solve independently, then judge the answer.
    pub correctness: String,
}

/// Overrides read from a file; missing keys keep the built-in prompt.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Overrides {
    infer_question: Option<String>,
    cycle: Option<String>,
    factuality: Option<String>,
    correctness: Option<String>,
}

const VERDICT: &str = "End your reply with [[Y]] if it is, or [[N]] if it is not.";

impl JudgePrompts {
    /// The built-in prompts for a model family (`general.architecture`).
    /// Models that think in tags are asked for a short reply after thinking;
    /// the others get the same prompts in plain form.
    pub fn for_family(architecture: &str) -> Self {
        let brief = match architecture {
            "qwen3" => " Keep the final reply short.",
            _ => "",
        };
        JudgePrompts {
            infer_question: format!(
                "Here is a response to a question.\n\nResponse:\n{{reasoning}}\n\nFinal answer: {{answer}}\n\n\
                 What question was most likely asked? Write only that question.{brief}"
            ),
            cycle: format!(
                "Question A: {{question}}\nQuestion B: {{inferred}}\nAnswer: {{answer}}\n\n\
                 Do questions A and B ask the same thing, and does the answer respond to question A? {VERDICT}{brief}"
            ),
            factuality: format!(
                "Question: {{question}}\n\nProposed solution:\n{{reasoning}}\n\nFinal answer: {{answer}}\n\n\
                 Check the solution strictly for wrong facts, wrong numbers, wrong formulas or logical flaws. \
                 Is it free of errors? {VERDICT}{brief}"
            ),
            correctness: format!(
                "Question: {{question}}\n\nProposed answer: {{answer}}\n\n\
                 First work out your own solution to the question. Then judge whether the proposed answer \
                 is fully correct. {VERDICT}{brief}"
            ),
        }
    }

    /// The prompts of `family` with the keys set in the TOML file at `path`
    /// replaced.
    pub fn with_overrides(mut self, path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::Invalid(format!("judge prompts {}: {e}", path.display())))?;
        let o: Overrides = toml::from_str(&text)
            .map_err(|e| Error::Invalid(format!("judge prompts {}: {e}", path.display())))?;
        let fields = [
            (o.infer_question, &mut self.infer_question, "infer_question"),
            (o.cycle, &mut self.cycle, "cycle"),
            (o.factuality, &mut self.factuality, "factuality"),
            (o.correctness, &mut self.correctness, "correctness"),
        ];
        for (value, slot, key) in fields {
            if let Some(v) = value {
                if v.trim().is_empty() {
                    return Err(Error::Invalid(format!(
                        "judge prompts {}: {key} is empty",
                        path.display()
                    )));
                }
                *slot = v;
            }
        }
        Ok(self)
    }
}

/// Fills the verifier placeholders of `template`.
pub(crate) fn fill(
    template: &str,
    question: &str,
    answer: &str,
    reasoning: &str,
    inferred: &str,
) -> String {
    fill_with(
        template,
        &[
            ("{question}", question),
            ("{answer}", answer),
            ("{reasoning}", reasoning),
            ("{inferred}", inferred),
        ],
    )
}

/// Replaces each `(placeholder, value)` of `values` in `template`, in one
/// pass, so placeholder-like text inside the values stays as it is.
pub(crate) fn fill_with(template: &str, values: &[(&str, &str)]) -> String {
    let mut out =
        String::with_capacity(template.len() + values.iter().map(|(_, v)| v.len()).sum::<usize>());
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open..];
        let (value, len) = values
            .iter()
            .find(|(key, _)| after.starts_with(key))
            .map_or(("{", 1), |(key, v)| (*v, key.len()));
        out.push_str(value);
        rest = &after[len..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_filled_once() {
        let t = "Q: {question} A: {answer} R: {reasoning} I: {inferred} {other}";
        assert_eq!(
            fill(t, "q {answer}", "a", "r", "i"),
            "Q: q {answer} A: a R: r I: i {other}"
        );
    }

    #[test]
    fn overrides_replace_only_the_keys_given() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("judge.toml");
        std::fs::write(
            &path,
            "factuality = \"Is {answer} right? [[Y]] or [[N]]\"\n",
        )
        .unwrap();
        let base = JudgePrompts::for_family("llama");
        let p = base.clone().with_overrides(&path).unwrap();
        assert_eq!(p.factuality, "Is {answer} right? [[Y]] or [[N]]");
        assert_eq!(p.cycle, base.cycle);
        std::fs::write(&path, "factuallity = \"typo\"\n").unwrap();
        let e = base.clone().with_overrides(&path).unwrap_err().to_string();
        assert!(e.contains("factuallity"), "{e}");
        std::fs::write(&path, "cycle = \" \"\n").unwrap();
        let e = base.with_overrides(&path).unwrap_err().to_string();
        assert!(e.contains("cycle is empty"), "{e}");
    }
}
