//! Reading a judge's verdict: `[[Y]]` accepts, `[[N]]` rejects.

use crate::scaling::answer::strip_think;

/// The verdict of a judge's text: the last `[[Y]]` or `[[N]]` (spaces inside
/// the brackets, lower case and `YES`/`NO` allowed) outside `<think>`
/// blocks. `None` when there is none; an unclosed `<think>` has none.
pub fn parse_verdict(text: &str) -> Option<bool> {
    let visible = strip_think(text)?;
    let mut verdict = None;
    let mut rest = visible.as_str();
    while let Some(open) = rest.find("[[") {
        let after = &rest[open + 2..];
        if let Some(close) = after.find("]]") {
            let word = after[..close].trim().to_ascii_uppercase();
            match word.as_str() {
                "Y" | "YES" => verdict = Some(true),
                "N" | "NO" => verdict = Some(false),
                _ => {}
            }
        }
        rest = after;
    }
    verdict
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_verdict_counts() {
        assert_eq!(parse_verdict("Looks right. [[Y]]"), Some(true));
        assert_eq!(
            parse_verdict("[[Y]] no wait, 3 + 4 is 7. [[N]]"),
            Some(false)
        );
        assert_eq!(parse_verdict("[[ yes ]]"), Some(true));
        assert_eq!(parse_verdict("[[n]]"), Some(false));
        assert_eq!(parse_verdict("[[maybe]] [[Y]] [[perhaps]]"), Some(true));
    }

    #[test]
    fn no_verdict_is_none() {
        assert_eq!(parse_verdict(""), None);
        assert_eq!(parse_verdict("The answer is correct."), None);
        assert_eq!(parse_verdict("[[Y"), None);
        assert_eq!(parse_verdict("[Y]"), None);
        assert_eq!(parse_verdict("[[maybe]]"), None);
    }

    #[test]
    fn reasoning_in_think_blocks_is_ignored() {
        assert_eq!(parse_verdict("<think>[[N]] hmm</think> [[Y]]"), Some(true));
        assert_eq!(parse_verdict("<think>[[Y]] still thinking"), None);
        assert_eq!(parse_verdict("thought [[N]]</think>[[Y]]"), Some(true));
        assert_eq!(parse_verdict("<think>[[Y]]</think> no verdict"), None);
        assert_eq!(
            parse_verdict("a<think>[[N]]</think>[[Y]]<think>[[N]]</think>e"),
            Some(true)
        );
    }
}
