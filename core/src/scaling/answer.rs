//! Final answers of model outputs: extraction and normalization.
//!
//! Test-time scaling samples several reasoning traces and votes over their
//! final answers, so two traces that mean the same answer must give the same
//! string. [`extract`] finds the final answer of one output and [`normalize`]
//! puts a reference answer (from a task file) in the same canonical form, so
//! `extract(output, kind) == normalize(reference, kind)` is the correctness
//! check. `None` is an abstention: it never counts as a vote.
//!
//! Where the answer is taken from, highest priority first:
//! 1. the content of the last `\boxed{...}` (balanced braces);
//! 2. the text after the last "Answer:" / "The answer is" / "Final answer:"
//!    marker (any case, markdown bold allowed, anywhere in a line) that
//!    yields an answer of the kind;
//! 3. for [`AnswerKind::Number`] the last number of the text, for
//!    [`AnswerKind::Choice`] the last standalone option letter ("(B)", "B)",
//!    "option B", "answer is B"), for [`AnswerKind::Text`] the last non-empty
//!    line.
//!
//! Reasoning inside `<think>...</think>` is ignored; an unclosed `<think>`
//! means the model has not answered yet, and a `</think>` without an opening
//! tag (templates that open it in the prompt) ends the reasoning. Only the
//! last 16 KiB of what remains are read: final answers come last.
//!
//! Inside a box or after a marker, a number is the one after the last "="
//! ("x = 5"), else the first ("12 apples, 3 per box"); an aside in
//! parentheses after a number is skipped. A box that holds no plain number
//! (`2\sqrt{3}`, `\pi`, `10^3`) is an abstention, not a guess from the
//! reasoning. In free text, digits win over number words ("one" is also a
//! pronoun), and exponents ("cm^2") are no numbers.
//!
//! Canonical numbers are plain decimal strings: no sign for zero or positive
//! numbers, no leading zeros, no trailing fractional zeros, no separators
//! ("1,234.50" → "1234.5"); fractions are reduced ("6/8" → "3/4", "4/2" →
//! "2") and kept apart from decimals ("3/4" ≠ "0.75"). Not supported: mixed
//! numbers ("1 1/2"), scientific notation, decimal commas ("3,5").

use std::fmt;
use std::str::FromStr;

/// What kind of answer a task expects: decides how answers are found in an
/// output and how two answers are compared.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AnswerKind {
    /// A number: integers, decimals, fractions, percentages, amounts of
    /// money and number words ("twenty-one", "a dozen").
    Number,
    /// A multiple-choice option letter, A to E.
    Choice,
    /// Free text, compared after folding case and whitespace.
    Text,
}

impl AnswerKind {
    /// The name used in task files and options: "number", "choice" or "text".
    pub fn as_str(self) -> &'static str {
        match self {
            AnswerKind::Number => "number",
            AnswerKind::Choice => "choice",
            AnswerKind::Text => "text",
        }
    }
}

impl fmt::Display for AnswerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The error of parsing an [`AnswerKind`] from an unknown name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown answer kind {0:?} (expected number, choice or text)")]
pub struct UnknownAnswerKind(pub String);

impl FromStr for AnswerKind {
    type Err = UnknownAnswerKind;

    /// Parses "number", "choice" or "text" (any case, surrounding spaces ignored).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "number" => Ok(AnswerKind::Number),
            "choice" => Ok(AnswerKind::Choice),
            "text" => Ok(AnswerKind::Text),
            _ => Err(UnknownAnswerKind(s.to_string())),
        }
    }
}

/// The normalized final answer of a model's output, or `None` when it gave
/// none (an abstention, never a vote). See the module documentation for
/// where the answer is looked for.
pub fn extract(text: &str, kind: AnswerKind) -> Option<String> {
    let body = strip_think(text)?;
    let body = tail(&body, TAIL_BYTES);
    // A boxed answer is the model's explicit final answer: when it is no
    // answer of the kind (say `\boxed{2\sqrt{3}}` for a number), guessing
    // from the reasoning instead would only add noise to the vote.
    if let Some(content) = last_boxed(body) {
        return normalize_content(content, kind);
    }
    // Markers also occur in passing ("the answer is not obvious"), so a
    // marker that yields nothing gives way to an earlier one.
    for candidate in marker_candidates(body).into_iter().rev() {
        if let Some(answer) = normalize_content(candidate, kind) {
            return Some(answer);
        }
    }
    match kind {
        AnswerKind::Number => last_number(&clean_latex(body)),
        AnswerKind::Choice => find_choices(&clean_latex(body))
            .last()
            .map(|&(_, letter)| letter.to_string()),
        AnswerKind::Text => body
            .lines()
            .rev()
            .find(|line| !line.trim().is_empty())
            .and_then(normalize_text),
    }
}

/// The canonical form of a reference answer (from a task file), the same
/// normalization [`extract`] applies, so that `extract(output, kind) ==
/// normalize(reference, kind)` tells whether an output is correct. `None`
/// when the reference is no answer of the kind. A `\boxed{...}` reference is
/// unwrapped.
pub fn normalize(answer: &str, kind: AnswerKind) -> Option<String> {
    normalize_content(last_boxed(answer).unwrap_or(answer), kind)
}

fn normalize_content(s: &str, kind: AnswerKind) -> Option<String> {
    match kind {
        AnswerKind::Number => normalize_number(s),
        AnswerKind::Choice => normalize_choice(s),
        AnswerKind::Text => normalize_text(s),
    }
}

// ---------------------------------------------------------------------------
// Where the answer is

/// How much of the end of an output [`extract`] reads. Final answers come
/// last; the bound keeps the work on degenerate outputs (repetition loops,
/// thousands of unbalanced braces) small, as a few steps are quadratic in
/// the worst case.
const TAIL_BYTES: usize = 16 * 1024;

/// How deep [`clean_latex`] goes into nested groups.
const MAX_LATEX_DEPTH: usize = 16;

/// The last `max` bytes of `s` at most, starting at a line when one starts
/// within the last quarter of the cut, else at a character.
fn tail(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut start = s.len() - max;
    while !s.is_char_boundary(start) {
        start += 1;
    }
    let search_end = (start + max / 4).min(s.len());
    match s.as_bytes()[start..search_end]
        .iter()
        .position(|&b| b == b'\n')
    {
        Some(nl) => &s[start + nl + 1..],
        None => &s[start..],
    }
}

/// Removes `<think>...</think>` blocks (tags in any case; a closing tag
/// without an opening one ends reasoning begun in the prompt); `None` when
/// one is left open.
pub fn strip_think(text: &str) -> Option<String> {
    const OPEN: &str = "<think>";
    const CLOSE: &str = "</think>";
    // ASCII lowercasing keeps byte offsets, so positions in `lower` are
    // positions in `text`.
    let lower = text.to_ascii_lowercase();
    let mut out = String::with_capacity(text.len());
    let mut pos = 0;
    // Templates such as DeepSeek-R1's open `<think>` in the prompt: the reply
    // starts inside the reasoning and only closes it.
    if let Some(close) = lower.find(CLOSE) {
        if lower.find(OPEN).is_none_or(|open| open > close) {
            pos = close + CLOSE.len();
        }
    }
    loop {
        match lower[pos..].find(OPEN) {
            None => {
                out.push_str(&text[pos..]);
                return Some(out);
            }
            Some(open) => {
                out.push_str(&text[pos..pos + open]);
                // Keep the text on both sides from gluing into one token.
                out.push('\n');
                let inner = pos + open + OPEN.len();
                pos = inner + lower[inner..].find(CLOSE)? + CLOSE.len();
            }
        }
    }
}

/// The content of the last `\boxed{...}` (or `\fbox{...}`) with balanced
/// braces and something in it.
fn last_boxed(s: &str) -> Option<&str> {
    let mut best: Option<(usize, &str)> = None;
    for command in ["\\boxed", "\\fbox"] {
        let mut from = 0;
        while let Some(i) = s[from..].find(command) {
            let start = from + i;
            from = start + command.len();
            if let Some((inner, _)) = braced(s[from..].trim_start()) {
                if !inner.trim().is_empty() && best.is_none_or(|(at, _)| start > at) {
                    best = Some((start, inner));
                }
            }
        }
    }
    best.map(|(_, inner)| inner)
}

/// Splits `{inner}rest` into `inner` and `rest`, honouring nested and
/// escaped braces; `None` unless `s` starts with a balanced group.
fn braced(s: &str) -> Option<(&str, &str)> {
    let b = s.as_bytes();
    if b.first() != Some(&b'{') {
        return None;
    }
    let mut depth = 0usize;
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            // An escaped character (`\{`, `\}`) is no brace. Skipping one byte
            // of a multi-byte character is harmless: continuation bytes are
            // never braces, and slices are only cut at ASCII braces.
            b'\\' => i += 1,
            b'{' => depth += 1,
            b'}' => {
                depth -= 1;
                if depth == 0 {
                    return Some((&s[1..i], &s[i + 1..]));
                }
            }
            _ => {}
        }
        i += 1;
    }
    None
}

/// The text after each answer marker, in order of occurrence: the rest of
/// the marker's line (up to another marker), or the next line with something
/// in it when the marker ends its line ("**Final answer:**\n42").
fn marker_candidates(body: &str) -> Vec<&str> {
    let lower = body.to_ascii_lowercase();
    let b = lower.as_bytes();
    // (where a marker starts, where the text after it starts)
    let mut markers = Vec::new();
    let mut from = 0;
    while let Some(i) = lower[from..].find("answer") {
        let start = from + i;
        from = start + "answer".len();
        let word_before = start > 0 && b[start - 1].is_ascii_alphanumeric();
        let word_after = b.get(from).is_some_and(u8::is_ascii_alphanumeric);
        if word_before || word_after {
            continue;
        }
        let mut j = skip(b, from, |c| matches!(c, b'*' | b'_' | b' ' | b'\t'));
        if matches!(b.get(j), Some(b':' | b'=')) {
            j += 1;
        } else if lower[j..].starts_with("is")
            && !b.get(j + 2).is_some_and(u8::is_ascii_alphanumeric)
        {
            j += 2;
        } else {
            continue;
        }
        // Only ASCII bytes are skipped, so `j` is a character boundary.
        markers.push((
            start,
            skip(b, j, |c| matches!(c, b'*' | b'_' | b' ' | b'\t' | b':')),
        ));
    }
    let mut out = Vec::with_capacity(markers.len());
    for (k, &(_, j)) in markers.iter().enumerate() {
        // A candidate ends at its line's end or at the next marker, which
        // also keeps the work linear on one long line of markers.
        let stop = markers.get(k + 1).map_or(body.len(), |&(next, _)| next);
        let line_end = body[j..stop].find('\n').map_or(stop, |e| j + e);
        let rest = body[j..line_end].trim();
        if rest.chars().any(char::is_alphanumeric) {
            out.push(rest);
        } else if let Some(next) = body[line_end..stop]
            .lines()
            .find(|line| line.chars().any(char::is_alphanumeric))
        {
            out.push(next.trim());
        }
    }
    out
}

fn skip(b: &[u8], mut i: usize, pred: impl Fn(u8) -> bool) -> usize {
    while i < b.len() && pred(b[i]) {
        i += 1;
    }
    i
}

// ---------------------------------------------------------------------------
// LaTeX

/// Rewrites the LaTeX that models wrap around plain answers into plain text:
/// `\frac{3}{4}` → `3/4`, `\text{..}` and the like → their content, `\%`,
/// `\$`, `$` delimiters, spacing commands, `\left`/`\right` and degree signs
/// removed, `1{,}234` → `1,234`. Other commands (`\sqrt`, `\pi`, ...) are
/// kept, backslash included, so a number check can see them.
fn clean_latex(s: &str) -> String {
    clean_latex_nested(s, 0)
}

/// [`clean_latex`] inside `depth` groups.
fn clean_latex_nested(s: &str, depth: usize) -> String {
    // Degenerate outputs can nest braces thousands deep: past any real
    // formula, leave the text as it is rather than overflow the stack.
    if depth > MAX_LATEX_DEPTH {
        return s.to_string();
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(pos) = rest.find(['\\', '{', '}', '^', '~', '°', '$']) {
        out.push_str(&rest[..pos]);
        rest = &rest[pos..];
        let c = rest.chars().next().unwrap_or_default();
        match c {
            '{' => {
                if let Some(r) = rest.strip_prefix("{,}") {
                    out.push(',');
                    rest = r;
                } else if let Some((inner, r)) = braced(rest) {
                    out.push_str(&clean_latex_nested(inner, depth + 1));
                    rest = r;
                } else {
                    rest = &rest[1..];
                }
            }
            '~' => {
                out.push(' ');
                rest = &rest[1..];
            }
            '^' => {
                let r = &rest[1..];
                match r
                    .strip_prefix("\\circ")
                    .or_else(|| r.strip_prefix("{\\circ}"))
                {
                    Some(r) => rest = r,
                    None => {
                        out.push('^');
                        rest = r;
                    }
                }
            }
            '\\' => rest = latex_command(&rest[1..], &mut out, depth),
            // '}', '$' and '°'
            _ => rest = &rest[c.len_utf8()..],
        }
    }
    out.push_str(rest);
    out
}

/// Handles one command (`s` starts after its backslash), writing its plain
/// form to `out`; returns the text after the command and its arguments.
fn latex_command<'a>(s: &'a str, out: &mut String, depth: usize) -> &'a str {
    let letters = s.bytes().take_while(u8::is_ascii_alphabetic).count();
    let (name, after) = match (letters, s.chars().next()) {
        (0, None) => return s,
        (0, Some(c)) => s.split_at(c.len_utf8()),
        _ => s.split_at(letters),
    };
    match name {
        "left" | "right" | "displaystyle" | "textstyle" | "big" | "Big" | "bigl" | "bigr"
        | "Bigl" | "Bigr" | "(" | ")" | "[" | "]" | "!" | "$" | "circ" | "degree" => after,
        "," | ";" | ":" | " " | "quad" | "qquad" => {
            out.push(' ');
            after
        }
        "%" | "{" | "}" | "&" | "#" | "_" => {
            out.push_str(name);
            after
        }
        "approx" => {
            out.push('≈');
            after
        }
        "text" | "textbf" | "textit" | "textrm" | "texttt" | "textnormal" | "mathrm" | "mathbf"
        | "mathit" | "mathtt" | "mbox" | "emph" | "operatorname" | "boxed" | "fbox" => {
            match braced(after.trim_start()) {
                Some((inner, r)) => {
                    out.push_str(&clean_latex_nested(inner, depth + 1));
                    r
                }
                None => after,
            }
        }
        "frac" | "dfrac" | "tfrac" | "cfrac" => {
            if let Some((num, den, r)) = two_args(after) {
                let num: String = clean_latex_nested(num, depth + 1)
                    .split_whitespace()
                    .collect();
                let den: String = clean_latex_nested(den, depth + 1)
                    .split_whitespace()
                    .collect();
                if is_integer(&num) && is_integer(&den) {
                    // "2\frac{1}{2}" must not read as 21/2.
                    if out.ends_with(|c: char| c.is_ascii_digit()) {
                        out.push(' ');
                    }
                    out.push_str(&num);
                    out.push('/');
                    out.push_str(&den);
                    return r;
                }
            }
            out.push('\\');
            out.push_str(name);
            after
        }
        _ => {
            out.push('\\');
            out.push_str(name);
            after
        }
    }
}

/// The two arguments of `\frac`: each a braced group or a single character
/// (`\frac34`).
fn two_args(s: &str) -> Option<(&str, &str, &str)> {
    fn arg(s: &str) -> Option<(&str, &str)> {
        let s = s.trim_start();
        if s.starts_with('{') {
            return braced(s);
        }
        let c = s.chars().next().filter(|c| *c != '\\' && *c != '}')?;
        Some(s.split_at(c.len_utf8()))
    }
    let (a, rest) = arg(s)?;
    let (b, rest) = arg(rest)?;
    Some((a, b, rest))
}

fn is_integer(s: &str) -> bool {
    let digits = s.strip_prefix(['-', '+', '−']).unwrap_or(s);
    !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
}

// ---------------------------------------------------------------------------
// Numbers

/// Normalizes the content of a box, answer line or reference as a number.
fn normalize_number(s: &str) -> Option<String> {
    let cleaned = clean_latex(s);
    let mut seg = cleaned.as_str();
    // "12 (3 × 4 = 12)": an aside after the answer must not hide it.
    if let Some(p) = seg.find('(') {
        if !scan_numbers(&seg[..p]).is_empty() {
            seg = &seg[..p];
        }
    }
    // "x = 5", "3 × 4 = 12": the value is what follows the last equals sign.
    if let Some((e, c)) = seg.char_indices().rfind(|&(_, c)| c == '=' || c == '≈') {
        seg = &seg[e + c.len_utf8()..];
    }
    // What is left must be a plain number, not `2\sqrt{3}`, `\pi` or `10^3`;
    // a power of a unit ("12 cm^2") is fine.
    let cs: Vec<char> = seg.chars().collect();
    let power_of_number = (1..cs.len())
        .any(|i| cs[i] == '^' && (cs[i - 1].is_ascii_digit() || matches!(cs[i - 1], ')' | '.')));
    if seg.contains('\\') || power_of_number {
        return None;
    }
    scan_numbers(seg).into_iter().next().map(|n| n.value)
}

/// The last number of free text. Digits win over number words: words such as
/// "one" also occur as pronouns ("this one"), so they count only in a text
/// without any digits ("twenty-one apples").
fn last_number(s: &str) -> Option<String> {
    let found = scan_numbers(s);
    found
        .iter()
        .rev()
        .find(|n| n.digits)
        .or(found.last())
        .map(|n| n.value.clone())
}

/// A number found in text, in canonical form.
struct FoundNumber {
    value: String,
    /// Written with digits, not words.
    digits: bool,
}

/// All numbers of `s`, in order.
fn scan_numbers(s: &str) -> Vec<FoundNumber> {
    let cs: Vec<char> = s.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < cs.len() {
        // An exponent ("cm^2", "10^{3}") is no number of its own.
        if cs[i] == '^' {
            i += 1;
            if cs.get(i) == Some(&'{') {
                while i < cs.len() && cs[i] != '}' {
                    i += 1;
                }
            } else {
                if matches!(cs.get(i), Some('-' | '+' | '−')) {
                    i += 1;
                }
                while i < cs.len() && cs[i].is_ascii_alphanumeric() {
                    i += 1;
                }
            }
            continue;
        }
        if cs[i].is_ascii_alphabetic() {
            match word_number(&cs, i) {
                Some((end, value)) => {
                    out.push(FoundNumber {
                        value,
                        digits: false,
                    });
                    i = end;
                }
                None => {
                    while i < cs.len() && cs[i].is_ascii_alphabetic() {
                        i += 1;
                    }
                }
            }
            continue;
        }
        match digit_number(&cs, i) {
            Some((end, value)) => {
                if let Some(value) = value {
                    out.push(FoundNumber {
                        value,
                        digits: true,
                    });
                }
                i = end;
            }
            None => i += 1,
        }
    }
    out
}

fn digits_at(cs: &[char], mut i: usize, into: &mut String) -> usize {
    while let Some(&c) = cs.get(i).filter(|c| c.is_ascii_digit()) {
        into.push(c);
        i += 1;
    }
    i
}

fn is_digit_at(cs: &[char], i: usize) -> bool {
    cs.get(i).is_some_and(|c| c.is_ascii_digit())
}

/// A number written with digits starting at `cs[i]`: its end and canonical
/// value (`None` for a fraction over zero), or `None` when none starts here.
fn digit_number(cs: &[char], i: usize) -> Option<(usize, Option<String>)> {
    let mut j = i;
    let mut neg = false;
    if matches!(cs[j], '-' | '+' | '−') {
        // "x-5" and "3-4" are differences and ranges, not negative numbers.
        if i > 0 && cs[i - 1].is_alphanumeric() {
            return None;
        }
        neg = cs[j] != '+';
        j += 1;
    }
    let mut int = String::new();
    j = digits_at(cs, j, &mut int);
    // ".5" is a number, but not the ".3" of "1.2.3".
    let bare_fraction =
        cs.get(j) == Some(&'.') && is_digit_at(cs, j + 1) && !(i > 0 && cs[i - 1].is_ascii_digit());
    if int.is_empty() && !bare_fraction {
        return None;
    }
    // Thousands separators: a first group of one to three digits, then
    // groups of exactly three behind one kind of separator.
    if (1..=3).contains(&int.len()) {
        let mut sep = None;
        while let Some(&s) = cs.get(j) {
            let is_sep = matches!(s, ',' | ' ' | '\u{a0}' | '\u{2009}' | '\u{202f}');
            let group = (1..=3).all(|k| is_digit_at(cs, j + k)) && !is_digit_at(cs, j + 4);
            if !is_sep || !group || sep.is_some_and(|x| x != s) {
                break;
            }
            sep = Some(s);
            j = digits_at(cs, j + 1, &mut int);
        }
    }
    let mut frac = String::new();
    if cs.get(j) == Some(&'.') && is_digit_at(cs, j + 1) {
        j = digits_at(cs, j + 1, &mut frac);
    }
    if frac.is_empty() && cs.get(j) == Some(&'/') {
        let mut k = j + 1;
        let den_neg = matches!(cs.get(k), Some('-' | '−'));
        if den_neg {
            k += 1;
        }
        let mut den = String::new();
        let end = digits_at(cs, k, &mut den);
        if !den.is_empty() {
            return Some((end, canonical_fraction(neg != den_neg, &int, &den)));
        }
    }
    // "5 million", "1.5 thousand".
    let mut k = j;
    while cs.get(k) == Some(&' ') {
        k += 1;
    }
    if k > j {
        let word_end = k + cs[k..]
            .iter()
            .take_while(|c| c.is_ascii_alphabetic())
            .count();
        let word: String = cs[k..word_end].iter().collect();
        let zeros = match word.to_ascii_lowercase().as_str() {
            "hundred" => 2,
            "thousand" => 3,
            "million" => 6,
            "billion" => 9,
            _ => 0,
        };
        if zeros > 0 {
            for _ in 0..zeros {
                int.push(if frac.is_empty() { '0' } else { frac.remove(0) });
            }
            j = word_end;
        }
    }
    Some((j, Some(canonical_decimal(neg, &int, &frac))))
}

fn canonical_decimal(neg: bool, int: &str, frac: &str) -> String {
    let int = int.trim_start_matches('0');
    let frac = frac.trim_end_matches('0');
    if int.is_empty() && frac.is_empty() {
        return "0".to_string();
    }
    let mut s = String::with_capacity(int.len() + frac.len() + 3);
    if neg {
        s.push('-');
    }
    s.push_str(if int.is_empty() { "0" } else { int });
    if !frac.is_empty() {
        s.push('.');
        s.push_str(frac);
    }
    s
}

/// The reduced fraction `num/den`, an integer when it is one; `None` over zero.
fn canonical_fraction(neg: bool, num: &str, den: &str) -> Option<String> {
    let num = num.trim_start_matches('0');
    let den = den.trim_start_matches('0');
    if den.is_empty() {
        return None;
    }
    if num.is_empty() {
        return Some("0".to_string());
    }
    let sign = if neg { "-" } else { "" };
    let (n, d) = match (num.parse::<u128>(), den.parse::<u128>()) {
        (Ok(n), Ok(d)) => {
            let g = gcd(n, d);
            (n / g, d / g)
        }
        // Too long to reduce: rare enough to compare unreduced.
        _ => return Some(format!("{sign}{num}/{den}")),
    };
    Some(if d == 1 {
        format!("{sign}{n}")
    } else {
        format!("{sign}{n}/{d}")
    })
}

fn gcd(mut a: u128, mut b: u128) -> u128 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Word {
    Minus,
    A,
    Zero,
    Unit(u64),
    Teen(u64),
    Tens(u64),
    Hundred,
    Scale(u64),
    Dozen,
    And,
}

fn number_word(w: &str) -> Option<Word> {
    const UNITS: [&str; 9] = [
        "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
    ];
    const TEENS: [&str; 10] = [
        "ten",
        "eleven",
        "twelve",
        "thirteen",
        "fourteen",
        "fifteen",
        "sixteen",
        "seventeen",
        "eighteen",
        "nineteen",
    ];
    const TENS: [&str; 8] = [
        "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety",
    ];
    let index = |list: &[&str]| list.iter().position(|x| *x == w).map(|p| p as u64);
    Some(match w {
        "minus" | "negative" => Word::Minus,
        "a" => Word::A,
        "zero" => Word::Zero,
        "hundred" => Word::Hundred,
        "thousand" => Word::Scale(1_000),
        "million" => Word::Scale(1_000_000),
        "billion" => Word::Scale(1_000_000_000),
        "dozen" => Word::Dozen,
        "and" => Word::And,
        _ => {
            if let Some(p) = index(&UNITS) {
                Word::Unit(p + 1)
            } else if let Some(p) = index(&TEENS) {
                Word::Teen(p + 10)
            } else {
                Word::Tens((index(&TENS)? + 2) * 10)
            }
        }
    })
}

/// A number written in words starting at `cs[i]` ("twenty-one", "one hundred
/// and five", "a dozen", "minus three"): the end of its last word and its
/// value. The words must make a well-formed number; "five three" is two.
fn word_number(cs: &[char], i: usize) -> Option<(usize, String)> {
    // The previous word, or Start; what may follow depends on it.
    #[derive(Clone, Copy, PartialEq, Eq)]
    enum Last {
        Start,
        Minus,
        A,
        Zero,
        Unit,
        Teen,
        Tens,
        Hundred,
        Scale,
        Dozen,
        And,
    }
    let (mut total, mut current, mut scale_cap) = (0u64, 0u64, u64::MAX);
    let mut neg = false;
    let mut last = Last::Start;
    let mut best = None;
    let mut j = i;
    loop {
        let end = j + cs[j..]
            .iter()
            .take_while(|c| c.is_ascii_alphabetic())
            .count();
        let word: String = cs[j..end].iter().map(|c| c.to_ascii_lowercase()).collect();
        let Some(w) = number_word(&word) else { break };
        use Last::*;
        last = match (w, last) {
            (Word::Minus, Start) => {
                neg = true;
                Minus
            }
            (Word::A, Start | Minus) => A,
            (Word::Zero, Start | Minus) => Zero,
            (Word::Unit(u), Start | Minus | Tens | Hundred | Scale | And) => {
                current += u;
                Unit
            }
            (Word::Teen(v), Start | Minus | Hundred | Scale | And) => {
                current += v;
                Teen
            }
            (Word::Tens(v), Start | Minus | Hundred | Scale | And) => {
                current += v;
                Tens
            }
            (Word::Hundred, Unit | Teen | A) if current < 100 => {
                current = current.max(1) * 100;
                Hundred
            }
            (Word::Scale(s), Unit | Teen | Tens | Hundred | A) if s < scale_cap => {
                total += current.max(1) * s;
                current = 0;
                scale_cap = s;
                Scale
            }
            (Word::Dozen, Unit | Teen | Tens | A) if total == 0 && current < 100 => {
                current = current.max(1) * 12;
                Dozen
            }
            (Word::And, Hundred | Scale) => And,
            _ => break,
        };
        if matches!(last, Zero | Unit | Teen | Tens | Hundred | Scale | Dozen) {
            best = Some((end, total + current));
        }
        // Words of one number are joined by one hyphen or by spaces.
        let mut k = end;
        if cs.get(k) == Some(&'-') {
            k += 1;
        } else {
            while matches!(cs.get(k), Some(' ' | '\t')) {
                k += 1;
            }
        }
        if k == end || !cs.get(k).is_some_and(|c| c.is_ascii_alphabetic()) {
            break;
        }
        j = k;
    }
    let (end, value) = best?;
    Some((
        end,
        if neg && value != 0 {
            format!("-{value}")
        } else {
            value.to_string()
        },
    ))
}

// ---------------------------------------------------------------------------
// Choices and text

fn is_choice_letter(c: char) -> bool {
    matches!(c, 'A'..='E')
}

/// Normalizes the content of a box, answer line or reference as an option
/// letter: "B", "(b)", "B) 42", "option C", "**D**", "I'd pick E".
fn normalize_choice(s: &str) -> Option<String> {
    let cleaned = clean_latex(s);
    let mut t = cleaned
        .trim_matches(|c: char| c.is_whitespace() || matches!(c, '*' | '_' | '`' | '"' | '\''));
    for keyword in ["option", "choice", "letter"] {
        if t.get(..keyword.len())
            .is_some_and(|head| head.eq_ignore_ascii_case(keyword))
        {
            t = t[keyword.len()..].trim_start_matches(|c: char| c.is_whitespace() || c == ':');
        }
    }
    let t = t.trim_start_matches(['(', '[', '*', ' ']);
    let mut chars = t.chars();
    let first = chars.next()?;
    let next = chars.next();
    if is_choice_letter(first) && !next.is_some_and(char::is_alphanumeric) {
        return Some(first.to_string());
    }
    // Lowercase only when nothing else follows ("b", "b)", "c."): "a" and
    // "e.g." are words too.
    let upper = first.to_ascii_uppercase();
    if first.is_ascii_lowercase() && is_choice_letter(upper) {
        let rest = &t[1..];
        let only_punct = rest
            .chars()
            .all(|c| c.is_whitespace() || c.is_ascii_punctuation());
        if only_punct || matches!(next, Some(')' | ']')) {
            return Some(upper.to_string());
        }
    }
    if let Some(&(_, letter)) = find_choices(t).first() {
        return Some(letter.to_string());
    }
    // "I'd pick E": the last standalone capital, but not the article in
    // "A train ...".
    let cs: Vec<char> = t.chars().collect();
    (0..cs.len())
        .rev()
        .find(|&i| {
            let standalone = (i == 0 || !cs[i - 1].is_alphanumeric())
                && !cs.get(i + 1).is_some_and(|c| c.is_alphanumeric());
            let article = cs[i] == 'A'
                && cs.get(i + 1) == Some(&' ')
                && cs.get(i + 2).is_some_and(|c| c.is_lowercase());
            is_choice_letter(cs[i]) && standalone && !article
        })
        .map(|i| cs[i].to_string())
}

/// Standalone option letters in free text, with their byte positions, in
/// order: "(B)", "[b]", "B)", "**B**", "option B", "choice B", "answer is B",
/// "answer: B", "is B." (ending a clause), and a line that is only a letter.
fn find_choices(s: &str) -> Vec<(usize, char)> {
    let cs: Vec<(usize, char)> = s.char_indices().collect();
    let at = |i: usize| cs.get(i).map(|&(_, c)| c);
    let mut out = Vec::new();
    for i in 0..cs.len() {
        let c = cs[i].1;
        let prev = i.checked_sub(1).and_then(at);
        let next = at(i + 1);
        if let (Some(l), true) = (next, matches!(c, '(' | '[')) {
            let close = if c == '(' { ')' } else { ']' };
            let upper = l.to_ascii_uppercase();
            if l.is_ascii_alphabetic() && is_choice_letter(upper) && at(i + 2) == Some(close) {
                out.push((cs[i + 1].0, upper));
                continue;
            }
        }
        if is_choice_letter(c)
            && !prev.is_some_and(|p| p.is_alphanumeric() || p == '(' || p == '[')
            && (next == Some(')') || (prev == Some('*') && next == Some('*')))
        {
            out.push((cs[i].0, c));
        }
    }
    let lower = s.to_ascii_lowercase();
    let b = lower.as_bytes();
    for keyword in ["option", "choice", "answer", "is"] {
        let mut from = 0;
        while let Some(p) = lower[from..].find(keyword) {
            let start = from + p;
            from = start + keyword.len();
            if start > 0 && b[start - 1].is_ascii_alphanumeric()
                || b.get(from).is_some_and(u8::is_ascii_alphanumeric)
            {
                continue;
            }
            let mut j = skip(b, from, |c| matches!(c, b'*' | b'_' | b' ' | b'\t' | b':'));
            if keyword != "is"
                && lower[j..].starts_with("is")
                && !b.get(j + 2).is_some_and(u8::is_ascii_alphanumeric)
            {
                j = skip(b, j + 2, |c| matches!(c, b'*' | b'_' | b' ' | b'\t' | b':'));
            }
            j = skip(b, j, |c| matches!(c, b'(' | b'['));
            let letter = s[j..].chars().next();
            let after = s[j..].chars().nth(1);
            if let Some(l) = letter {
                // After a bare "is" only a letter that ends the clause ("the
                // right one is C."), not "is A good idea".
                let ends = match after {
                    None => true,
                    Some(a) => (keyword != "is" && !a.is_alphanumeric()) || ".,;!?)\n*".contains(a),
                };
                let upper_ok = is_choice_letter(l) && ends;
                let lower_ok = l.is_ascii_lowercase()
                    && is_choice_letter(l.to_ascii_uppercase())
                    && matches!(after, Some(')' | ']'));
                if upper_ok || lower_ok {
                    out.push((j, l.to_ascii_uppercase()));
                }
            }
        }
    }
    let mut offset = 0;
    for line in s.split('\n') {
        let t = line.trim_matches(|c: char| c.is_whitespace() || "*_#.:()[]".contains(c));
        let mut chars = t.chars();
        if let (Some(l), None) = (chars.next(), chars.next()) {
            if is_choice_letter(l) {
                out.push((offset + (t.as_ptr() as usize - line.as_ptr() as usize), l));
            }
        }
        offset += line.len() + 1;
    }
    out.sort_unstable();
    out.dedup();
    out
}

/// Normalizes free text: trimmed, lowercased, whitespace collapsed, and
/// without wrapping markdown (`**`, backticks), quotes or a trailing period.
fn normalize_text(s: &str) -> Option<String> {
    let cleaned;
    let mut t = s;
    if t.contains('\\') {
        cleaned = clean_latex(t);
        t = &cleaned;
    }
    let wrapper = |c: char| c.is_whitespace() || matches!(c, '*' | '`' | '"' | '“' | '”');
    let t = t
        .trim_start_matches(wrapper)
        .trim_end_matches(|c| wrapper(c) || c == '.');
    let out = t
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase();
    (!out.is_empty()).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use AnswerKind::{Choice, Number, Text};

    fn num(s: &str) -> Option<String> {
        extract(s, Number)
    }

    fn some(s: &str) -> Option<String> {
        Some(s.to_string())
    }

    #[test]
    fn kind_names_round_trip() {
        for kind in [Number, Choice, Text] {
            assert_eq!(kind.as_str().parse::<AnswerKind>(), Ok(kind));
            assert_eq!(kind.to_string(), kind.as_str());
        }
        assert_eq!(" Choice ".parse::<AnswerKind>(), Ok(Choice));
        assert!("letter".parse::<AnswerKind>().is_err());
        let err = "letter".parse::<AnswerKind>().unwrap_err().to_string();
        assert!(err.contains("letter") && err.contains("number"), "{err}");
    }

    #[test]
    fn kind_serde_names_are_lowercase() {
        // serde_json is not a dependency here: check the derive through the
        // simplest self-describing format there is, a unit variant name.
        use serde::de::value::{Error, StrDeserializer};
        use serde::de::IntoDeserializer;
        use serde::Deserialize;
        let de: StrDeserializer<Error> = "choice".into_deserializer();
        assert_eq!(AnswerKind::deserialize(de), Ok(Choice));
        let de: StrDeserializer<Error> = "Choice".into_deserializer();
        assert!(AnswerKind::deserialize(de).is_err());
    }

    #[test]
    fn examples_from_the_issue() {
        assert_eq!(num("The answer is 1,234."), some("1234"));
        assert_eq!(num("\\boxed{\\frac{3}{4}}"), some("3/4"));
        assert_eq!(num("x = -5 and then 7, so Answer: 12"), some("12"));
        assert_eq!(num("<think>maybe 3</think> It is 4"), some("4"));
        assert_eq!(num("<think>maybe 3, or 4"), None);
        assert_eq!(num("no idea"), None);
        assert_eq!(num("twenty-one apples"), some("21"));
    }

    #[test]
    fn number_forms() {
        let cases = [
            ("42", "42"),
            ("-7", "-7"),
            ("−7", "-7"),
            ("+7", "7"),
            ("-0", "0"),
            ("-0.00", "0"),
            ("007", "7"),
            ("3.50", "3.5"),
            ("2.0", "2"),
            (".5", "0.5"),
            ("1,234", "1234"),
            ("1,234,567.890", "1234567.89"),
            ("1 234", "1234"),
            ("1\u{202f}234", "1234"),
            ("1{,}234", "1234"),
            ("1\\,234", "1234"),
            ("6/8", "3/4"),
            ("-6/8", "-3/4"),
            ("3/-4", "-3/4"),
            ("4/2", "2"),
            ("0/5", "0"),
            ("50%", "50"),
            ("50\\%", "50"),
            ("$12", "12"),
            ("\\$12.00", "12"),
            ("€3.5", "3.5"),
            ("12.", "12"),
            ("12!", "12"),
            ("90^\\circ", "90"),
            ("90°", "90"),
            ("$-\\frac{3}{4}$", "-3/4"),
            ("\\dfrac{10}{4}", "5/2"),
            ("\\frac34", "3/4"),
            ("\\frac{-2}{6}", "-1/3"),
            ("\\left(-5\\right)", "-5"),
            ("\\text{5 apples}", "5"),
            ("12 cm^2", "12"),
            ("$12 \\text{ cm}^2$", "12"),
            ("5 million", "5000000"),
            ("1.5 thousand", "1500"),
            ("x = 5", "5"),
            ("3 \\times 4 = 12", "12"),
            ("12 (since 3 x 4 = 12 and 2 = 2)", "12"),
            ("\\approx 3.14", "3.14"),
            (
                "123456789012345678901234567890",
                "123456789012345678901234567890",
            ),
        ];
        for (input, want) in cases {
            assert_eq!(normalize(input, Number), some(want), "{input:?}");
        }
    }

    #[test]
    fn number_words() {
        let cases = [
            ("zero", "0"),
            ("seven", "7"),
            ("Twelve", "12"),
            ("nineteen", "19"),
            ("forty", "40"),
            ("twenty-one", "21"),
            ("twenty one", "21"),
            ("ninety-nine", "99"),
            ("one hundred", "100"),
            ("a hundred", "100"),
            ("one hundred and five", "105"),
            ("three hundred twenty-two", "322"),
            ("two thousand and twenty-four", "2024"),
            ("twelve thousand three hundred forty-five", "12345"),
            ("a thousand", "1000"),
            ("fifteen hundred", "1500"),
            ("a dozen", "12"),
            ("two dozen", "24"),
            ("minus three", "-3"),
            ("five million", "5000000"),
        ];
        for (input, want) in cases {
            assert_eq!(normalize(input, Number), some(want), "{input:?}");
        }
        // Two numbers, not one: the first counts in an answer.
        assert_eq!(normalize("five three", Number), some("5"));
        assert_eq!(normalize("a lot", Number), None);
        assert_eq!(normalize("someone", Number), None);
    }

    #[test]
    fn non_numbers() {
        for input in [
            "",
            "no idea",
            "2\\sqrt{3}",
            "\\pi",
            "10^3",
            "3/0",
            "\\frac{x}{2}",
        ] {
            assert_eq!(normalize(input, Number), None, "{input:?}");
        }
    }

    #[test]
    fn equal_numbers_compare_equal() {
        let same = [
            "1234",
            "1,234",
            "1 234",
            "$1,234.00",
            "\\boxed{1234}",
            "one thousand two hundred thirty-four",
        ];
        for s in same {
            assert_eq!(normalize(s, Number), some("1234"), "{s:?}");
        }
        assert_ne!(normalize("3/4", Number), normalize("0.75", Number));
    }

    #[test]
    fn boxed_wins() {
        assert_eq!(
            num("Answer: 5. Let me check... \\boxed{6} and the final answer is 7"),
            some("6")
        );
        assert_eq!(num("\\boxed{1} then \\boxed{2}"), some("2"));
        assert_eq!(num("So $\\boxed{\\dfrac{14}{4}}$."), some("7/2"));
        assert_eq!(num("\\boxed{x = 2{,}024}"), some("2024"));
        assert_eq!(num("nested \\boxed{\\text{\\{5\\}}}"), some("5"));
        // A box that is no number is an abstention, not a guess.
        assert_eq!(num("3 + 4 = 7 \\boxed{2\\sqrt{3}}"), None);
        // An unbalanced or empty box is no box.
        assert_eq!(num("\\boxed{} Answer: 8"), some("8"));
        assert_eq!(num("Answer: 8 \\boxed{9"), some("8"));
    }

    #[test]
    fn answer_markers() {
        assert_eq!(num("Some work 3 + 4.\nAnswer: 7"), some("7"));
        assert_eq!(num("**Answer:** $1,234"), some("1234"));
        assert_eq!(num("**Answer**: 15 apples"), some("15"));
        assert_eq!(num("Final Answer: The final answer is 3.50."), some("3.5"));
        assert_eq!(num("ANSWER: -2"), some("-2"));
        assert_eq!(num("the answer is: 9"), some("9"));
        assert_eq!(num("**Final answer:**\n\n42\n"), some("42"));
        // A later marker with no number gives way to an earlier one.
        assert_eq!(num("Answer: 12\nI hope this answer is helpful"), some("12"));
        // "answers" and "answered" are no markers; the last number counts.
        assert_eq!(num("All answers: 3 and then 5"), some("5"));
        // A marker in passing that yields nothing: fall back to the text.
        assert_eq!(
            num("The answer is not obvious.\n3 + 4 = 7, so 7 boxes."),
            some("7")
        );
        assert_eq!(num("Answer: twenty one"), some("21"));
        // Several markers on one line; "answer" inside an answer is no marker.
        assert_eq!(num("Answer: 5 answer: 6"), some("6"));
        assert_eq!(
            extract("Answer: a question-answer pair", Text),
            some("a question-answer pair")
        );
    }

    #[test]
    fn last_number_fallback() {
        assert_eq!(num("First 3, then 4, so we get 5 apples."), some("5"));
        assert_eq!(num("The total is -12.50 dollars"), some("-12.5"));
        assert_eq!(num("From 3-4 hours"), some("4"));
        assert_eq!(num("it costs $1,000,000 in total"), some("1000000"));
        // Digits beat words: "one" is also a pronoun.
        assert_eq!(num("It is 12, the right one"), some("12"));
        assert_eq!(num("half of \\frac{1}{2} is \\frac{1}{4}"), some("1/4"));
        // Exponents are no numbers of their own.
        assert_eq!(num("The area is 12 cm^2"), some("12"));
        assert_eq!(num("that is 10^{3} m^-1 times 4"), some("4"));
    }

    #[test]
    fn think_blocks() {
        assert_eq!(num("<think>Answer: 3</think>\n\nAnswer: 4"), some("4"));
        assert_eq!(num("<THINK>\\boxed{3}</THINK> \\boxed{4}"), some("4"));
        // The template opened <think>: the reply only closes it.
        assert_eq!(num("so 3? </think> It is 4"), some("4"));
        assert_eq!(num("<think>a</think> 1 <think>b</think> 2"), some("2"));
        assert_eq!(num("<think>a</think> 1 <think>b"), None);
        assert_eq!(num("<think>3</think>"), None);
        assert_eq!(extract("<think>Paris?", Text), None);
        assert_eq!(extract("<think>(B)", Choice), None);
    }

    #[test]
    fn choices() {
        let cases = [
            ("The answer is (B).", "B"),
            ("I think it's option C", "C"),
            ("Answer: D) 42", "D"),
            ("so the answer is E", "E"),
            ("\\boxed{A}", "A"),
            ("\\boxed{\\text{(c)}}", "C"),
            ("Looking at the options, B) fits best.", "B"),
            ("The correct choice is **D**", "D"),
            ("Hmm.\n\nB\n", "B"),
            ("(A) is wrong, (C) is right", "C"),
            ("**Answer:** I'd pick E.", "E"),
            ("<think>(A)</think> The answer is B", "B"),
            ("A) 12\nB) 15\nC) 18\nD) 20\nThe right one is C.", "C"),
            ("So it is D", "D"),
        ];
        for (input, want) in cases {
            assert_eq!(extract(input, Choice), some(want), "{input:?}");
        }
        assert_eq!(extract("A train leaves at 5 pm.", Choice), None);
        assert_eq!(extract("This is A good idea, is it not?", Choice), None);
        assert_eq!(extract("no idea", Choice), None);
        // Only A to E.
        assert_eq!(extract("The answer is (F)", Choice), None);
    }

    #[test]
    fn choice_references() {
        for (input, want) in [
            ("B", "B"),
            ("b", "B"),
            (" (c) ", "C"),
            ("[d]", "D"),
            ("e.", "E"),
            ("option A", "A"),
            ("C) 42", "C"),
        ] {
            assert_eq!(normalize(input, Choice), some(want), "{input:?}");
        }
        assert_eq!(normalize("banana", Choice), None);
        assert_eq!(normalize("", Choice), None);
    }

    #[test]
    fn text_answers() {
        let cases = [
            ("Answer: Paris.", "paris"),
            (
                "Let me think.\nThe capital is\n  New   York City.  \n\n",
                "new york city",
            ),
            ("\\boxed{\\text{Blue Whale}}", "blue whale"),
            ("**Final answer:** **Mount Everest**", "mount everest"),
            ("The answer is \"Hamlet\".", "hamlet"),
        ];
        for (input, want) in cases {
            assert_eq!(extract(input, Text), some(want), "{input:?}");
        }
        assert_eq!(extract("", Text), None);
        assert_eq!(extract("  \n ", Text), None);
        assert_eq!(normalize("  Mount\tEverest. ", Text), some("mount everest"));
        assert_eq!(normalize("...", Text), None);
    }

    #[test]
    fn extract_matches_normalize() {
        let pairs = [
            ("Total: 3 boxes of 4 makes \\boxed{12}", "12", Number),
            ("The answer is $0.50", "0.5", Number),
            ("So 6/8 of them, i.e. Answer: 6/8", "3/4", Number),
            ("Answer: 25%", "25", Number),
            ("I'd say a dozen.", "12", Number),
            ("Answer: (b)", "B", Choice),
            ("The answer is Paris.", "paris", Text),
        ];
        for (output, reference, kind) in pairs {
            let got = extract(output, kind);
            assert!(got.is_some(), "{output:?}");
            assert_eq!(
                got,
                normalize(reference, kind),
                "{output:?} vs {reference:?}"
            );
        }
    }

    #[test]
    fn no_panics_on_odd_input() {
        let odd = [
            "\\",
            "\\boxed",
            "\\boxed{",
            "}{",
            "\\frac{",
            "\\frac{1}",
            "answer",
            "answer is",
            "Answer:",
            "(",
            "-",
            "−",
            "1,",
            "1 ,234",
            "/5",
            "5/",
            "é ü 漢字 5 漢字",
            "answer: 漢字",
            "<think>",
            "</think>",
            "a-",
            "twenty-",
            "\\text",
            "^",
        ];
        for s in odd {
            for kind in [Number, Choice, Text] {
                let _ = extract(s, kind);
                let _ = normalize(s, kind);
            }
        }
        assert_eq!(num("é ü 漢字 5 漢字"), some("5"));
    }

    #[test]
    fn degenerate_outputs() {
        // Nesting far deeper than any formula must not overflow the stack of
        // a test thread (2 MiB).
        let deep = format!("{}5{}", "{".repeat(50_000), "}".repeat(50_000));
        let _ = extract(&deep, Number);
        let _ = normalize(&deep, Number);
        let boxes = format!("{}7{}", "\\boxed{".repeat(20_000), "}".repeat(20_000));
        let _ = extract(&boxes, Number);
        // Only the end of a long output is read: the answer is there.
        let long = format!("{}\nAnswer: 42", "Step: 7 + 8 = 15.\n".repeat(20_000));
        assert_eq!(num(&long), some("42"));
        let long = format!("\\boxed{{1}}\n{}The total is 9.", "blah ".repeat(10_000));
        assert_eq!(num(&long), some("9"));
        assert_eq!(tail("aaaa\nbbbbbbbbbbbbbbb", 16), "bbbbbbbbbbbbbbb");
        assert_eq!(tail("aaaaaaaaaaa\nbbbbbbbb", 16), "aaaaaaa\nbbbbbbbb");
        assert_eq!(tail("漢字", 1), "");
        assert_eq!(tail("漢字", 4), "字");
        assert_eq!(tail("short", 100), "short");
    }
}
