//! Reading a judge's verdict: `[[Y]]` accepts, `[[N]]` rejects.

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

/// `text` without its `<think>...</think>` blocks; `None` when one is left
/// open. A `</think>` without an opening tag ends reasoning that started in
/// the prompt.
pub fn strip_think(text: &str) -> Option<String> {
    const OPEN: &str = "<think>";
    const CLOSE: &str = "</think>";
    let mut text = text;
    if let (Some(close), open) = (text.find(CLOSE), text.find(OPEN)) {
        if open.is_none_or(|o| o > close) {
            text = &text[close + CLOSE.len()..];
        }
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(open) = rest.find(OPEN) {
        out.push_str(&rest[..open]);
        let inner = &rest[open + OPEN.len()..];
        let close = inner.find(CLOSE)?;
        rest = &inner[close + CLOSE.len()..];
    }
    out.push_str(rest);
    Some(out)
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
            strip_think("a<think>b</think>c<think>d</think>e").as_deref(),
            Some("ace")
        );
    }
}
