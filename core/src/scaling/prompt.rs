//! How [`super::solve`] puts a question to the model: as a chat turn for
//! instruction-tuned models, or as the next item of a few worked examples
//! for base models, which continue text rather than answer turns.

use std::fmt;
use std::str::FromStr;

use super::AnswerKind;
use crate::engine::Engine;
use crate::tokenizer::TemplateKind;

/// The form of the prompt `solve` builds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PromptStyle {
    /// [`PromptStyle::Chat`] when the model file carries a chat template
    /// (instruction-tuned models do), else [`PromptStyle::FewShot`].
    #[default]
    Auto,
    /// The question and the answer instruction as one user turn of the
    /// model's chat template.
    Chat,
    /// Plain text: a few worked questions, each ending with an `Answer:`
    /// line, then the question. Generation stops at the blank line that
    /// would start the next example.
    FewShot,
}

impl PromptStyle {
    /// The names [`PromptStyle::from_str`] knows.
    pub const NAMES: [&'static str; 3] = ["auto", "chat", "few-shot"];

    /// `Chat` or `FewShot` for `engine` (see [`PromptStyle::Auto`]).
    pub fn resolve(self, engine: &Engine) -> PromptStyle {
        match self {
            PromptStyle::Auto => match engine.template().kind() {
                TemplateKind::FromFile | TemplateKind::Custom => PromptStyle::Chat,
                _ => PromptStyle::FewShot,
            },
            other => other,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            PromptStyle::Auto => "auto",
            PromptStyle::Chat => "chat",
            PromptStyle::FewShot => "few-shot",
        }
    }
}

impl fmt::Display for PromptStyle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for PromptStyle {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(PromptStyle::Auto),
            "chat" => Ok(PromptStyle::Chat),
            "few-shot" => Ok(PromptStyle::FewShot),
            other => Err(format!(
                "unknown prompt style {other:?} (known: {})",
                PromptStyle::NAMES.join(", ")
            )),
        }
    }
}

/// Where a few-shot continuation ends: the blank line before the next
/// example, or the next example's question written without one.
pub const FEW_SHOT_STOPS: [&str; 2] = ["\n\n", "\nQuestion:"];

/// Worked examples for numeric answers: a line of working, then the answer.
/// Sums, differences with positive, zero and negative results, and word
/// problems: with fewer kinds, a base model copies the nearest example's
/// form (Gemma 3 270M gave every difference as negative when the only
/// subtraction shown had a negative result).
const NUMBER_EXAMPLES: &str = "\
Question: What is 4 + 3?
4 + 3 = 7.
Answer: 7

Question: What is 8 - 5?
8 - 5 = 3.
Answer: 3

Question: What is 6 + 9?
6 + 9 = 15.
Answer: 15

Question: What is 2 - 9?
2 - 9 = -7.
Answer: -7

Question: What is 7 - 7?
7 - 7 = 0.
Answer: 0

Question: Lena has 12 shells and finds 5 more on the beach. How many shells does she have?
12 + 5 = 17.
Answer: 17

Question: Omar had 15 cards and lost 6. How many cards does he have left?
15 - 6 = 9.
Answer: 9

Question: A ticket costs 6 dollars. How much do 3 tickets cost?
3 * 6 = 18.
Answer: 18

";

/// Worked examples for multiple-choice answers.
const CHOICE_EXAMPLES: &str = "\
Question: Which of these is a fruit?
A) carrot B) apple C) potato D) onion
An apple is a fruit.
Answer: B

Question: Which number is the largest?
A) 12 B) 7 C) 31 D) 25
31 is larger than 25, 12 and 7.
Answer: C

";

/// Worked examples for short text answers.
const TEXT_EXAMPLES: &str = "\
Question: What is the capital of France?
The capital of France is Paris.
Answer: Paris

Question: What colour is a clear daytime sky?
A clear sky in daytime is blue.
Answer: blue

";

/// The few-shot prompt for `question`: `instruction` (when not empty) as a
/// first line, the worked examples for `kind`, then the question.
pub fn few_shot(question: &str, kind: AnswerKind, instruction: Option<&str>) -> String {
    let examples = match kind {
        AnswerKind::Number => NUMBER_EXAMPLES,
        AnswerKind::Choice => CHOICE_EXAMPLES,
        AnswerKind::Text => TEXT_EXAMPLES,
    };
    let mut text = String::new();
    if let Some(i) = instruction.map(str::trim).filter(|i| !i.is_empty()) {
        text.push_str(i);
        text.push_str("\n\n");
    }
    text.push_str(examples);
    text.push_str("Question: ");
    text.push_str(question.trim());
    text.push('\n');
    text
}

/// `text` up to the first of `stops`.
pub fn cut_at_stop<'t>(text: &'t str, stops: &[String]) -> &'t str {
    let end = stops
        .iter()
        .filter_map(|s| text.find(s.as_str()))
        .min()
        .unwrap_or(text.len());
    &text[..end]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scaling::extract;

    #[test]
    fn names_round_trip() {
        for name in PromptStyle::NAMES {
            assert_eq!(name.parse::<PromptStyle>().unwrap().as_str(), name);
        }
        assert!("plain"
            .parse::<PromptStyle>()
            .unwrap_err()
            .contains("few-shot"));
    }

    #[test]
    fn every_example_answers_in_the_extracted_form() {
        for (examples, kind) in [
            (NUMBER_EXAMPLES, AnswerKind::Number),
            (CHOICE_EXAMPLES, AnswerKind::Choice),
            (TEXT_EXAMPLES, AnswerKind::Text),
        ] {
            for example in examples.split("\n\n").filter(|e| !e.is_empty()) {
                let (_, body) = example.split_once('\n').unwrap();
                let stated = example.rsplit("Answer: ").next().unwrap();
                assert_eq!(
                    extract(body, kind).as_deref(),
                    crate::scaling::normalize(stated, kind).as_deref(),
                    "{example}"
                );
            }
        }
    }

    #[test]
    fn the_question_comes_last_and_the_instruction_first() {
        let p = few_shot("  What is 1 + 1? ", AnswerKind::Number, Some("Be brief."));
        assert!(p.starts_with("Be brief.\n\nQuestion: What is 4 + 3?"));
        assert!(p.ends_with("\n\nQuestion: What is 1 + 1?\n"));
        assert!(!few_shot("q", AnswerKind::Text, Some(" ")).starts_with('\n'));
    }

    #[test]
    fn text_is_cut_at_the_earliest_stop() {
        let stops: Vec<String> = FEW_SHOT_STOPS.iter().map(|s| s.to_string()).collect();
        assert_eq!(
            cut_at_stop("4.\nAnswer: 4\n\nQuestion: x", &stops),
            "4.\nAnswer: 4"
        );
        assert_eq!(cut_at_stop("Answer: 4\nQuestion: x", &stops), "Answer: 4");
        assert_eq!(cut_at_stop("Answer: 4", &stops), "Answer: 4");
        assert_eq!(cut_at_stop("Answer: 4", &[]), "Answer: 4");
    }
}
