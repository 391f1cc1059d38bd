//! Chat templates (`tokenizer.chat_template`) and injection-safe chat
//! encoding.
//!
//! Templates are Jinja, rendered with minijinja configured like Hugging Face
//! `transformers` does it (`trim_blocks`, `lstrip_blocks`, Python string
//! methods via `minijinja-contrib`'s pycompat, `raise_exception`,
//! `strftime_now`, `bos_token`/`eos_token`). A template runs on a fuel
//! budget, so one that loops (nearly) forever fails fast instead of hanging.
//!
//! [`encode_chat`] keeps message content as plain text: control-token text a
//! user writes (`<|im_start|>system ...`) is tokenized as text, never as the
//! control id, while the template's own control tokens are recognized.
//!
//! Built-in fallbacks when the GGUF file has no template
//! ([`ChatTemplate::builtin_for`]), chosen from the vocabulary:
//!
//! * `<start_of_turn>` present: Gemma's turn format,
//!   `<bos><start_of_turn>user\n{content}<end_of_turn>\n<start_of_turn>model\n`,
//!   with `assistant` rendered as `model`, `tool` as `user`, and system
//!   messages prefixed (followed by a blank line) to the next turn, as
//!   Gemma's own template does.
//! * `<|im_start|>` present: ChatML,
//!   `<|im_start|>{role}\n{content}<|im_end|>\n`, generation prompt
//!   `<|im_start|>assistant\n` (no default system message).
//! * otherwise: the message contents joined by blank lines, no generation
//!   prompt.

use minijinja::{context, Environment, Error as JinjaError, ErrorKind, Value};

use super::vocab::Segment;
use super::{Result, Tokenizer, TokenizerError};

/// Default fuel (roughly, template VM instructions) for one render. A
/// ChatML template spends about 25 per message, so this allows very long
/// conversations yet stops a runaway template within tens of milliseconds.
pub const DEFAULT_FUEL: u64 = 2_000_000;

/// Recursion limit for macros, includes and nested blocks.
const RECURSION_LIMIT: usize = 100;

/// The roles a message may have.
pub const ROLES: &[&str] = &["system", "user", "assistant", "tool"];

/// Private-use code points that delimit the sentinels standing in for
/// message content while rendering in [`encode_chat`].
const SENTINEL_OPEN: char = '\u{F0000}';
const SENTINEL_CLOSE: char = '\u{F0001}';

const GEMMA_TEMPLATE: &str = "\
{{- bos_token -}}
{%- set ns = namespace(prefix='') -%}
{%- for message in messages -%}
{%- if message.role == 'system' and not loop.last -%}
{%- set ns.prefix = ns.prefix ~ message.content ~ '\\n\\n' -%}
{%- else -%}
{{- '<start_of_turn>' ~ ('model' if message.role == 'assistant' else 'user') ~ '\\n' ~ ns.prefix ~ message.content ~ '<end_of_turn>\\n' -}}
{%- set ns.prefix = '' -%}
{%- endif -%}
{%- endfor -%}
{%- if add_generation_prompt -%}{{- '<start_of_turn>model\\n' -}}{%- endif -%}";

const CHATML_TEMPLATE: &str = "\
{%- for message in messages -%}
{{- '<|im_start|>' ~ message.role ~ '\\n' ~ message.content ~ '<|im_end|>\\n' -}}
{%- endfor -%}
{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}";

const PLAIN_TEMPLATE: &str = "\
{%- for message in messages -%}
{{- message.content -}}{%- if not loop.last -%}{{- '\\n\\n' -}}{%- endif -%}
{%- endfor -%}";

/// One chat message.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ChatMessage {
    /// `system`, `user`, `assistant` or `tool`.
    pub role: String,
    /// The message text.
    pub content: String,
}

impl ChatMessage {
    /// A message with the given role.
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        ChatMessage {
            role: role.into(),
            content: content.into(),
        }
    }

    /// A `system` message.
    pub fn system(content: impl Into<String>) -> Self {
        Self::new("system", content)
    }

    /// A `user` message.
    pub fn user(content: impl Into<String>) -> Self {
        Self::new("user", content)
    }

    /// An `assistant` message.
    pub fn assistant(content: impl Into<String>) -> Self {
        Self::new("assistant", content)
    }
}

/// Where a [`ChatTemplate`] came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TemplateKind {
    /// `tokenizer.chat_template` of the model file.
    FromFile,
    /// Source given to [`ChatTemplate::new`].
    Custom,
    /// Built-in Gemma turn format.
    BuiltinGemma,
    /// Built-in ChatML.
    BuiltinChatMl,
    /// Built-in plain concatenation.
    BuiltinPlain,
}

/// A compiled chat template.
pub struct ChatTemplate {
    env: Environment<'static>,
    kind: TemplateKind,
    bos_token: String,
    eos_token: String,
}

impl std::fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatTemplate")
            .field("kind", &self.kind)
            .field("bos_token", &self.bos_token)
            .field("eos_token", &self.eos_token)
            .finish()
    }
}

fn raise_exception(message: String) -> std::result::Result<Value, JinjaError> {
    Err(JinjaError::new(ErrorKind::InvalidOperation, message))
}

/// `strftime_now(format)` as used by Llama 3 style templates (UTC; supports
/// `%Y %y %m %d %e %b %B %a %A %H %M %S %j %%`).
fn strftime_now(format: String) -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    strftime(&format, secs)
}

/// `unix_secs` (UTC) formatted like C's `strftime` with the conversions
/// listed at [`strftime_now`].
pub fn strftime(format: &str, unix_secs: i64) -> String {
    const MONTHS: [&str; 12] = [
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ];
    const DAYS: [&str; 7] = [
        "Thursday",
        "Friday",
        "Saturday",
        "Sunday",
        "Monday",
        "Tuesday",
        "Wednesday",
    ];
    let days = unix_secs.div_euclid(86_400);
    let rem = unix_secs.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    let cumulative = [0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334];
    let yday = cumulative[(month - 1) as usize] + day + i64::from(leap && month > 2);
    let weekday = DAYS[days.rem_euclid(7) as usize];
    let month_name = MONTHS[(month - 1) as usize];

    let mut out = String::new();
    let mut chars = format.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('Y') => out.push_str(&year.to_string()),
            Some('y') => out.push_str(&format!("{:02}", year.rem_euclid(100))),
            Some('m') => out.push_str(&format!("{month:02}")),
            Some('d') => out.push_str(&format!("{day:02}")),
            Some('e') => out.push_str(&format!("{day:>2}")),
            Some('j') => out.push_str(&format!("{yday:03}")),
            Some('b') => out.push_str(&month_name[..3]),
            Some('B') => out.push_str(month_name),
            Some('a') => out.push_str(&weekday[..3]),
            Some('A') => out.push_str(weekday),
            Some('H') => out.push_str(&format!("{:02}", rem / 3600)),
            Some('M') => out.push_str(&format!("{:02}", rem / 60 % 60)),
            Some('S') => out.push_str(&format!("{:02}", rem % 60)),
            Some('%') => out.push('%'),
            Some(other) => {
                out.push('%');
                out.push(other);
            }
            None => out.push('%'),
        }
    }
    out
}

/// Formats a minijinja error with its detail and location on one line.
fn jinja_message(e: &JinjaError) -> String {
    let mut msg = e.to_string();
    if let Some(src) = e.template_source() {
        if let Some(line) = e.line().and_then(|l| src.lines().nth(l.saturating_sub(1))) {
            let line = line.trim();
            let line: String = line.chars().take(120).collect();
            msg.push_str(&format!(" near `{line}`"));
        }
    }
    msg
}

impl ChatTemplate {
    /// Compiles `source`. A template that does not parse is an error naming
    /// the problem and line.
    pub fn new(
        source: &str,
        bos_token: impl Into<String>,
        eos_token: impl Into<String>,
    ) -> Result<ChatTemplate> {
        Self::compile(
            source,
            TemplateKind::Custom,
            bos_token.into(),
            eos_token.into(),
        )
    }

    fn compile(
        source: &str,
        kind: TemplateKind,
        bos_token: String,
        eos_token: String,
    ) -> Result<ChatTemplate> {
        let mut env = Environment::new();
        // Hugging Face renders chat templates with these Jinja settings.
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        minijinja_contrib::add_to_environment(&mut env);
        env.add_function("raise_exception", raise_exception);
        env.add_function("strftime_now", strftime_now);
        env.set_fuel(Some(DEFAULT_FUEL));
        env.set_recursion_limit(RECURSION_LIMIT);
        env.add_template_owned("chat_template", source.to_string())
            .map_err(|e| TokenizerError::TemplateSyntax(jinja_message(&e)))?;
        Ok(ChatTemplate {
            env,
            kind,
            bos_token,
            eos_token,
        })
    }

    /// The template of the model file if it has one, else the built-in
    /// fallback for the vocabulary ([`ChatTemplate::builtin_for`]).
    pub fn for_tokenizer(tok: &Tokenizer) -> Result<ChatTemplate> {
        match tok.chat_template_source() {
            Some(src) if !src.trim().is_empty() => {
                let (bos, eos) = special_texts(tok);
                Self::compile(src, TemplateKind::FromFile, bos, eos)
            }
            _ => Self::builtin_for(tok),
        }
    }

    /// The built-in template for the vocabulary: Gemma turns when
    /// `<start_of_turn>` exists, else ChatML when `<|im_start|>` exists, else
    /// plain concatenation (see the module documentation).
    pub fn builtin_for(tok: &Tokenizer) -> Result<ChatTemplate> {
        let (bos, eos) = special_texts(tok);
        let (src, kind) = if tok.token_id("<start_of_turn>").is_some() {
            (GEMMA_TEMPLATE, TemplateKind::BuiltinGemma)
        } else if tok.token_id("<|im_start|>").is_some() {
            (CHATML_TEMPLATE, TemplateKind::BuiltinChatMl)
        } else {
            (PLAIN_TEMPLATE, TemplateKind::BuiltinPlain)
        };
        Self::compile(src, kind, bos, eos)
    }

    /// Replaces the fuel budget of one render (see [`DEFAULT_FUEL`]).
    pub fn with_fuel(mut self, fuel: u64) -> ChatTemplate {
        self.env.set_fuel(Some(fuel));
        self
    }

    /// Where this template came from.
    pub fn kind(&self) -> TemplateKind {
        self.kind
    }

    /// Renders `messages`; with `add_generation_prompt`, the template appends
    /// the header of the assistant's next turn. Roles must be system, user,
    /// assistant or tool.
    pub fn render(&self, messages: &[ChatMessage], add_generation_prompt: bool) -> Result<String> {
        check_roles(messages)?;
        self.render_unchecked(messages, add_generation_prompt, None)
    }

    /// Like [`ChatTemplate::render`], with `enable_thinking` set for templates
    /// that read it (Qwen3: `false` closes an empty `<think>` block in the
    /// generation prompt so the model answers directly). `None` leaves it
    /// undefined, the template's default.
    pub fn render_with_thinking(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
        thinking: Option<bool>,
    ) -> Result<String> {
        check_roles(messages)?;
        self.render_unchecked(messages, add_generation_prompt, thinking)
    }

    fn render_unchecked(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
        thinking: Option<bool>,
    ) -> Result<String> {
        let tmpl = self
            .env
            .get_template("chat_template")
            .map_err(|e| TokenizerError::TemplateRender(jinja_message(&e)))?;
        let base = context! {
            messages => Value::from_serialize(messages),
            add_generation_prompt => add_generation_prompt,
            bos_token => self.bos_token.as_str(),
            eos_token => self.eos_token.as_str(),
        };
        let ctx = match thinking {
            Some(on) => context! { enable_thinking => on, ..base },
            None => base,
        };
        tmpl.render(ctx)
            .map_err(|e| TokenizerError::TemplateRender(jinja_message(&e)))
    }
}

fn special_texts(tok: &Tokenizer) -> (String, String) {
    let text = |id: Option<u32>| {
        id.and_then(|id| tok.token_str(id))
            .unwrap_or_default()
            .to_string()
    };
    (text(tok.bos_id()), text(tok.eos_id()))
}

fn check_roles(messages: &[ChatMessage]) -> Result<()> {
    for (index, m) in messages.iter().enumerate() {
        if !ROLES.contains(&m.role.as_str()) {
            return Err(TokenizerError::InvalidRole {
                role: m.role.clone(),
                index,
            });
        }
    }
    Ok(())
}

/// A piece of rendered skeleton: template text or the place of a message's
/// content.
enum Part<'a> {
    Template(&'a str),
    Content(usize),
}

/// Splits the skeleton rendered with sentinels into template text and
/// content slots, checking that each message's sentinel appears exactly once.
fn split_skeleton(skeleton: &str, n_messages: usize) -> Result<Vec<Part<'_>>> {
    let mut parts = Vec::new();
    let mut counts = vec![0usize; n_messages];
    let mut rest = skeleton;
    while let Some(open) = rest.find(SENTINEL_OPEN) {
        if open > 0 {
            parts.push(Part::Template(&rest[..open]));
        }
        let after = &rest[open + SENTINEL_OPEN.len_utf8()..];
        let close = after.find(SENTINEL_CLOSE).ok_or_else(|| {
            TokenizerError::TemplateAltered("a content placeholder was cut by the template".into())
        })?;
        let index: usize = after[..close]
            .parse()
            .ok()
            .filter(|&i| i < n_messages)
            .ok_or_else(|| {
                TokenizerError::TemplateAltered(
                    "a content placeholder was modified by the template".into(),
                )
            })?;
        counts[index] += 1;
        parts.push(Part::Content(index));
        rest = &after[close + SENTINEL_CLOSE.len_utf8()..];
    }
    if rest.contains(SENTINEL_CLOSE) {
        return Err(TokenizerError::TemplateAltered(
            "a content placeholder was cut by the template".into(),
        ));
    }
    if !rest.is_empty() {
        parts.push(Part::Template(rest));
    }
    if let Some((i, &c)) = counts.iter().enumerate().find(|(_, &c)| c != 1) {
        return Err(TokenizerError::TemplateAltered(format!(
            "the content of message {i} is rendered {c} times (expected exactly once)"
        )));
    }
    Ok(parts)
}

/// Finds, for each content slot, whether the template rendered the content
/// as is or trimmed (`| trim`, `.strip()`), such that the skeleton with the
/// contents filled in equals the real rendering. Returns `None` if no
/// choice matches.
fn match_contents(parts: &[Part<'_>], messages: &[ChatMessage], real: &str) -> Option<Vec<bool>> {
    // Depth-first search over (part, position) states with an explicit
    // stack (conversations can be long). Each state is entered once, so this
    // is linear in parts x text length at worst; in practice it never
    // backtracks.
    struct Frame {
        part: usize,
        pos: usize,
        next: usize,
    }
    let mut trimmed = vec![false; messages.len()];
    let mut seen = std::collections::HashSet::new();
    let mut stack = vec![Frame {
        part: 0,
        pos: 0,
        next: 0,
    }];
    while let Some(frame) = stack.last_mut() {
        if frame.part == parts.len() {
            if frame.pos == real.len() {
                return Some(trimmed);
            }
            stack.pop();
            continue;
        }
        // The alternatives for this part: its text, and for content also the
        // trimmed text when trimming changes it.
        let alternative = match parts[frame.part] {
            Part::Template(t) => (frame.next == 0).then_some((t, None)),
            Part::Content(i) => {
                let raw = messages[i].content.as_str();
                let trim = raw.trim();
                match frame.next {
                    0 => Some((raw, Some((i, false)))),
                    1 if trim.len() != raw.len() => Some((trim, Some((i, true)))),
                    _ => None,
                }
            }
        };
        let Some((text, mark)) = alternative else {
            stack.pop();
            continue;
        };
        frame.next += 1;
        if !real[frame.pos..].starts_with(text) {
            continue;
        }
        if let Some((i, t)) = mark {
            trimmed[i] = t;
        }
        let next = Frame {
            part: frame.part + 1,
            pos: frame.pos + text.len(),
            next: 0,
        };
        if seen.insert((next.part, next.pos)) {
            stack.push(next);
        }
    }
    None
}

/// Renders `messages` with `tmpl` and tokenizes the result so that message
/// content stays plain text.
///
/// The template is rendered twice: once with each content replaced by a
/// unique sentinel (private-use characters around the message index), once
/// with the real contents. The sentinel rendering must contain every
/// sentinel exactly once, and filling the contents (as is, or trimmed where
/// the template trims) into it must reproduce the real rendering; otherwise
/// the template altered content (e.g. a content-dependent branch or filter)
/// and the call fails with [`TokenizerError::TemplateAltered`]. The text is
/// then tokenized as a whole, with control tokens recognized only in the
/// template's own text.
///
/// The result is a complete prompt: BOS is prepended when
/// [`Tokenizer::add_bos`] is set and the template did not already emit it.
pub fn encode_chat(
    tok: &Tokenizer,
    tmpl: &ChatTemplate,
    messages: &[ChatMessage],
    add_generation_prompt: bool,
) -> Result<Vec<u32>> {
    encode_chat_with_thinking(tok, tmpl, messages, add_generation_prompt, None)
}

/// [`encode_chat`] with `enable_thinking` passed to the template (see
/// [`ChatTemplate::render_with_thinking`]).
pub fn encode_chat_with_thinking(
    tok: &Tokenizer,
    tmpl: &ChatTemplate,
    messages: &[ChatMessage],
    add_generation_prompt: bool,
    thinking: Option<bool>,
) -> Result<Vec<u32>> {
    check_roles(messages)?;
    let placeholders: Vec<ChatMessage> = messages
        .iter()
        .enumerate()
        .map(|(i, m)| {
            ChatMessage::new(
                m.role.clone(),
                format!("{SENTINEL_OPEN}{i}{SENTINEL_CLOSE}"),
            )
        })
        .collect();
    let skeleton = tmpl.render_unchecked(&placeholders, add_generation_prompt, thinking)?;
    let parts = split_skeleton(&skeleton, messages.len())?;
    let real = tmpl.render_unchecked(messages, add_generation_prompt, thinking)?;
    let trimmed = match_contents(&parts, messages, &real).ok_or_else(|| {
        TokenizerError::TemplateAltered(
            "the template transforms message content (a filter or a content-dependent branch), \
             so content and template text cannot be separated"
                .into(),
        )
    })?;

    let segments: Vec<Segment<'_>> = parts
        .iter()
        .map(|p| match *p {
            Part::Template(t) => Segment::trusted(t),
            Part::Content(i) => {
                let c = messages[i].content.as_str();
                Segment::plain(if trimmed[i] { c.trim() } else { c })
            }
        })
        .collect();
    let mut ids = tok.encode_segments(&segments)?;
    if tok.add_bos() {
        if let Some(bos) = tok.bos_id() {
            if ids.first() != Some(&bos) {
                ids.insert(0, bos);
            }
        }
    }
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strftime_formats() {
        // 2024-07-26 13:05:09 UTC, a Friday.
        let t = 1_722_000_000 - 1_722_000_000 % 86_400 + 13 * 3600 + 5 * 60 + 9;
        assert_eq!(strftime("%d %b %Y", t), "26 Jul 2024");
        assert_eq!(
            strftime("%Y-%m-%d %H:%M:%S %A %j %%", t),
            "2024-07-26 13:05:09 Friday 208 %"
        );
        assert_eq!(strftime("%B %e", 0), "January  1");
    }

    #[test]
    fn syntax_error_is_reported_at_construction() {
        let err = ChatTemplate::new("{% for m in messages %}{{ m.content }", "", "")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("chat template does not parse"), "{err}");
    }

    #[test]
    fn runaway_templates_fail_fast() {
        let start = std::time::Instant::now();
        for src in [
            "{% for i in range(1000000000) %}{% endfor %}",
            "{% for i in range(100000) %}{% for j in range(100000) %}{{ i }}{% endfor %}{% endfor %}",
            "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}",
        ] {
            let t = ChatTemplate::new(src, "", "").unwrap();
            let err = t.render(&[ChatMessage::user("hi")], true).unwrap_err();
            assert!(matches!(err, TokenizerError::TemplateRender(_)), "{src}: {err}");
        }
        assert!(
            start.elapsed().as_secs_f64() < 5.0,
            "took {:?}",
            start.elapsed()
        );
    }

    #[test]
    fn raise_exception_and_pycompat() {
        let t = ChatTemplate::new(
            "{% if messages[0].role != 'user' %}{{ raise_exception('first must be user') }}{% endif %}\
             {{ messages[0].content.strip().upper() }}{{ messages[0].content.startswith(' a') }}",
            "<s>",
            "</s>",
        )
        .unwrap();
        assert_eq!(
            t.render(&[ChatMessage::user(" ab ")], false).unwrap(),
            "ABTrue"
        );
        let err = t
            .render(&[ChatMessage::assistant("x")], false)
            .unwrap_err()
            .to_string();
        assert!(err.contains("first must be user"), "{err}");
    }

    #[test]
    fn roles_are_checked() {
        let t = ChatTemplate::new(CHATML_TEMPLATE, "", "").unwrap();
        let err = t
            .render(&[ChatMessage::new("root", "x")], false)
            .unwrap_err();
        assert!(
            matches!(err, TokenizerError::InvalidRole { index: 0, .. }),
            "{err}"
        );
    }

    #[test]
    fn skeleton_checks() {
        let s = format!("a{SENTINEL_OPEN}0{SENTINEL_CLOSE}b{SENTINEL_OPEN}1{SENTINEL_CLOSE}");
        assert_eq!(split_skeleton(&s, 2).unwrap().len(), 4);
        assert!(split_skeleton(&s, 3).is_err()); // message 2 missing
        let twice = format!("{SENTINEL_OPEN}0{SENTINEL_CLOSE}{SENTINEL_OPEN}0{SENTINEL_CLOSE}");
        assert!(split_skeleton(&twice, 1).is_err());
        let cut = format!("{SENTINEL_OPEN}0");
        assert!(split_skeleton(&cut, 1).is_err());
    }
}
