//! Showing untrusted text: agents choose every string in a pending action, so before a person
//! reads one, characters that hide or reorder text are made visible, and nothing is ever
//! interpreted as markup by the front ends (they print or insert text, never HTML).

use crate::history::ItemStatus;
use std::fmt::Write as _;

/// `text` with every invisible, formatting or bidirectional control character, every control
/// character and every line or paragraph break replaced by a visible marker such as
/// `[U+202E RLO]` or `[U+000A LF]`, and, in a word that mixes look-alike scripts (a Cyrillic
/// `а` in a Latin name), each letter of the odd script marked too (`[U+0430 CYRILLIC]`). A
/// value can then never start a line of the review, hide, or pass for another. Only the tab
/// stays, since it cannot begin a line.
///
/// Text that imitates a marker has its bracket marked (`[U+005B LEFT SQUARE BRACKET]U+202E
/// RLO]`), so every `[U+…]` in the result is a real marker: a reader (and the app's UI, which
/// styles markers) can tell them from what the agent wrote.
pub fn visible(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for word in words(text) {
        let odd = odd_script(word);
        for (at, c) in word.char_indices() {
            let name = match marker(c) {
                Some((_, name)) => Some(name),
                None if imitates_marker(word, at) => Some(FORGED),
                None => odd
                    .and_then(|base| script(c).filter(|s| *s != base))
                    .map(Script::name),
            };
            match name {
                Some(name) => {
                    let _ = write!(
                        out,
                        "[U+{:04X}{}{name}]",
                        u32::from(c),
                        if name.is_empty() { "" } else { " " }
                    );
                }
                None => out.push(c),
            }
        }
    }
    out
}

/// Whether `text` holds anything that hides or disguises text: a character [`visible`] marks
/// as hidden, a word that mixes look-alike scripts, or text imitating a marker. (Line breaks
/// are marked too, but are not hidden: they are reported by [`has_breaks`].)
pub fn has_hidden(text: &str) -> bool {
    text.chars()
        .any(|c| matches!(marker(c), Some((Kind::Hidden, _))))
        || words(text).any(|w| odd_script(w).is_some())
        || text.contains(MARKER_START)
}

/// How every marker begins.
const MARKER_START: &str = "[U+";

/// The name of a `[` that begins text imitating a marker.
const FORGED: &str = "LEFT SQUARE BRACKET";

/// Whether the `[` at `at` in `word` begins text that reads like a marker.
fn imitates_marker(word: &str, at: usize) -> bool {
    word.get(at..)
        .is_some_and(|rest| rest.starts_with(MARKER_START))
}

/// One example of every marker [`visible`] can write: each named character, each script, the
/// unnamed form and a forged bracket. The UI's marker pattern is tested against these (the
/// desktop app's bindings test writes them to `ui/src/lib/bindings/markers.json`), so the two
/// cannot drift apart.
pub fn marker_examples() -> Vec<String> {
    let mut examples: Vec<String> = Vec::new();
    let mut seen: Vec<&'static str> = Vec::new();
    for c in (0..=0x10_FFFF).filter_map(char::from_u32) {
        if let Some((_, name)) = marker(c)
            && !seen.contains(&name)
        {
            seen.push(name);
            examples.push(visible(&c.to_string()));
        }
    }
    for word in [
        "p\u{0430}y",
        "\u{043F}\u{0440}o",
        "\u{03A9}mega",
        "ab\u{0531}",
        "ab\u{13A0}",
    ] {
        let shown = visible(word);
        let at = shown.find(MARKER_START).unwrap_or_default();
        let end = shown[at..].find(']').map_or(shown.len(), |e| at + e + 1);
        examples.push(shown[at..end].to_owned());
    }
    examples.push(format!("[U+005B {FORGED}]"));
    examples
}

/// Whether `text` holds a line or paragraph break (shown as a marker, kept inside its field).
pub fn has_breaks(text: &str) -> bool {
    text.chars()
        .any(|c| matches!(marker(c), Some((Kind::Break, _))))
}

/// What a marked character is.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Invisible, formatting, direction-changing or control.
    Hidden,
    /// Starts a new line.
    Break,
}

/// The runs of `text` between whitespace, with the whitespace as runs of its own.
fn words(text: &str) -> impl Iterator<Item = &str> {
    let mut rest = text;
    std::iter::from_fn(move || {
        let first = rest.chars().next()?;
        let space = first.is_whitespace();
        let end = rest
            .char_indices()
            .find(|(_, c)| c.is_whitespace() != space)
            .map_or(rest.len(), |(i, _)| i);
        let (word, tail) = rest.split_at(end);
        rest = tail;
        Some(word)
    })
}

/// The scripts whose letters pass for one another.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Script {
    Latin,
    Greek,
    Cyrillic,
    Armenian,
    Cherokee,
}

fn script(c: char) -> Option<Script> {
    Some(match c {
        'A'..='Z' | 'a'..='z' => Script::Latin,
        '\u{00C0}'..='\u{024F}' if c != '\u{00D7}' && c != '\u{00F7}' => Script::Latin,
        '\u{1E00}'..='\u{1EFF}' | '\u{2C60}'..='\u{2C7F}' | '\u{A720}'..='\u{A7FF}' => {
            Script::Latin
        }
        '\u{0370}'..='\u{03FF}' | '\u{1F00}'..='\u{1FFF}' => Script::Greek,
        '\u{0400}'..='\u{052F}'
        | '\u{1C80}'..='\u{1C8F}'
        | '\u{2DE0}'..='\u{2DFF}'
        | '\u{A640}'..='\u{A69F}' => Script::Cyrillic,
        '\u{0531}'..='\u{058F}' => Script::Armenian,
        '\u{13A0}'..='\u{13FF}' | '\u{AB70}'..='\u{ABBF}' => Script::Cherokee,
        _ => return None,
    })
}

impl Script {
    fn name(self) -> &'static str {
        match self {
            Self::Latin => "LATIN",
            Self::Greek => "GREEK",
            Self::Cyrillic => "CYRILLIC",
            Self::Armenian => "ARMENIAN",
            Self::Cherokee => "CHEROKEE",
        }
    }
}

/// For a word that mixes look-alike scripts, the script its other letters are measured against
/// (the most frequent; Latin on a tie); `None` for a word of one script.
fn odd_script(word: &str) -> Option<Script> {
    let mut counts: Vec<(Script, usize)> = Vec::new();
    for s in word.chars().filter_map(script) {
        match counts.iter_mut().find(|(k, _)| *k == s) {
            Some((_, n)) => *n += 1,
            None => counts.push((s, 1)),
        }
    }
    if counts.len() < 2 {
        return None;
    }
    counts.sort_by_key(|(s, n)| (std::cmp::Reverse(*n), *s != Script::Latin));
    counts.first().map(|(s, _)| *s)
}

/// The marker of a character that must be shown, or `None` for ordinary text.
fn marker(c: char) -> Option<(Kind, &'static str)> {
    let hidden = |name| Some((Kind::Hidden, name));
    match c {
        '\t' => None,
        '\n' => Some((Kind::Break, "LF")),
        '\r' => Some((Kind::Break, "CR")),
        '\u{000B}' => Some((Kind::Break, "VT")),
        '\u{000C}' => Some((Kind::Break, "FF")),
        '\u{0085}' => Some((Kind::Break, "NEL")),
        '\u{2028}' => Some((Kind::Break, "LSEP")),
        '\u{2029}' => Some((Kind::Break, "PSEP")),
        '\u{202A}' => hidden("LRE"),
        '\u{202B}' => hidden("RLE"),
        '\u{202C}' => hidden("PDF"),
        '\u{202D}' => hidden("LRO"),
        '\u{202E}' => hidden("RLO"),
        '\u{2066}' => hidden("LRI"),
        '\u{2067}' => hidden("RLI"),
        '\u{2068}' => hidden("FSI"),
        '\u{2069}' => hidden("PDI"),
        '\u{200E}' => hidden("LRM"),
        '\u{200F}' => hidden("RLM"),
        '\u{061C}' => hidden("ALM"),
        '\u{200B}' => hidden("ZWSP"),
        '\u{200C}' => hidden("ZWNJ"),
        '\u{200D}' => hidden("ZWJ"),
        '\u{2060}' => hidden("WJ"),
        '\u{FEFF}' => hidden("BOM"),
        '\u{00AD}' => hidden("SHY"),
        '\u{034F}' => hidden("CGJ"),
        '\u{180E}' => hidden("MVS"),
        '\u{2800}' => hidden("BRAILLE BLANK"),
        '\u{180B}'..='\u{180D}' | '\u{180F}' => hidden("FVS"),
        '\u{1D173}'..='\u{1D17A}' => hidden(""),
        '\u{115F}' | '\u{1160}' | '\u{3164}' | '\u{FFA0}' => hidden("FILLER"),
        c if c.is_control() => hidden(""),
        '\u{2061}'..='\u{2064}' | '\u{206A}'..='\u{206F}' | '\u{FFF9}'..='\u{FFFB}' => hidden(""),
        '\u{E0000}'..='\u{E007F}' => hidden("TAG"),
        '\u{FE00}'..='\u{FE0F}' | '\u{E0100}'..='\u{E01EF}' => hidden("VS"),
        _ => None,
    }
}

/// Escapes `<`, `>` and `&` for notification servers that read a markup subset in bodies.
pub fn escape_markup(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            c => out.push(c),
        }
    }
    out
}

/// At most `max` characters of `text`, with an ellipsis when cut (for notifications only; the
/// review shows everything).
pub fn clip(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let mut out: String = text.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// Everything a person needs to judge a pending action, with every agent-chosen string made
/// [`visible`]. The command line prints it; the desktop app renders the same fields as text.
///
/// It shows every member the action hash binds ([`BOUND_MEMBERS`] maps each to its field; a
/// test walks the action's schema and fails on a member without a place here), and it says
/// where each fact comes from: what the broker established (the agent, from its credential; the
/// human it acts for, its configured owner; the tool catalog's facts) apart from what the agent
/// merely claims (its delegation chain, the data it says it touches, its properties) and what
/// the tool's server claims about its tool (MCP annotations).
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub struct Review {
    pub id: String,
    pub status: ItemStatus,
    /// The human the call is made for: `subject.id`, which the broker checked is the agent's
    /// configured owner.
    pub subject: String,
    /// `subject.type`.
    pub subject_type: String,
    /// `subject.properties`, as the agent sent them (its claims), made visible.
    #[cfg_attr(feature = "ts", ts(type = "unknown"))]
    pub subject_properties: Option<serde_json::Value>,
    /// The agent that asks, as the broker authenticated it.
    pub agent: String,
    /// Human first, then each delegating agent, ending with the agent that asks.
    pub delegation: Vec<String>,
    /// Whether the broker verified the delegation chain; otherwise it is the agent's claim.
    pub delegation_verified: bool,
    pub tool: String,
    /// `resource.type`.
    pub resource_type: String,
    /// `resource.properties`, as the agent sent them, made visible.
    #[cfg_attr(feature = "ts", ts(type = "unknown"))]
    pub resource_properties: Option<serde_json::Value>,
    pub action: String,
    /// `action.properties`, as the agent sent them, made visible.
    #[cfg_attr(feature = "ts", ts(type = "unknown"))]
    pub action_properties: Option<serde_json::Value>,
    pub intent: String,
    /// The arguments, keys and strings made visible; structure kept.
    #[cfg_attr(feature = "ts", ts(type = "unknown"))]
    pub arguments: serde_json::Value,
    /// The data domain the agent says the call touches (its claim).
    pub data_domain: Option<String>,
    /// The data classes the agent says the call touches (its claim).
    pub classification: Vec<String>,
    /// What the tool's server says about the tool (MCP annotations: read-only, destructive,
    /// …), one claim per line: the server's own, unverified claims, never the broker's facts.
    pub server_claims: Vec<String>,
    /// What the broker's tool catalog says of the tool (what policy decided on), if listed.
    pub catalog: Option<CatalogFacts>,
    pub policy_id: String,
    pub policy_reason: String,
    pub audience: String,
    pub requested_at: String,
    pub expires_at: String,
    /// Short fingerprint of the action hash, to compare with what the agent's side shows.
    pub fingerprint: String,
    /// Whether the action hash matches what is shown (a mismatch is never approvable).
    pub hash_matches: bool,
    /// Whether any field held invisible or bidirectional control characters, or a word that
    /// mixes look-alike scripts.
    pub hidden_characters: bool,
    /// Whether any field held a line break (shown as a marker, kept inside its field).
    pub line_breaks: bool,
}

/// The broker's tool-catalog facts, as shown.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub struct CatalogFacts {
    pub domain: Option<String>,
    pub classification: Vec<String>,
    pub risk: Option<String>,
}

/// Where the review shows each member the action hash binds: `(member path, Review field)`.
/// Paths name the JSON members of `{subject, actor, action, resource, context}`; a member holding
/// free-form JSON (properties, arguments) or the recursive delegation chain is listed once.
pub const BOUND_MEMBERS: &[(&str, &str)] = &[
    ("subject.type", "subject_type"),
    ("subject.id", "subject"),
    ("subject.properties", "subject_properties"),
    ("actor.id", "agent"),
    ("actor.act", "delegation"),
    ("action.name", "action"),
    ("action.properties", "action_properties"),
    ("resource.type", "resource_type"),
    ("resource.id", "tool"),
    ("resource.properties", "resource_properties"),
    ("context.intent", "intent"),
    ("context.arguments", "arguments"),
    ("context.data.domain", "data_domain"),
    ("context.data.classification", "classification"),
    ("context.annotations", "server_claims"),
];

impl Review {
    pub fn of(pending: &countersign_protocol::PendingAction, status: ItemStatus) -> Self {
        let mut hidden = false;
        let mut breaks = false;
        let mut show = |text: &str| {
            hidden |= has_hidden(text);
            breaks |= has_breaks(text);
            visible(text)
        };
        let subject = show(&pending.subject.id);
        let mut delegation = vec![subject.clone()];
        if let Some(chain) = &pending.actor.act {
            let mut links: Vec<String> = chain.links().iter().map(|id| show(id.as_str())).collect();
            links.reverse();
            delegation.extend(links);
        }
        let agent = show(pending.actor.id.as_str());
        delegation.push(agent.clone());
        let data = pending.context.data.as_ref();
        let mut review = Self {
            id: show(&pending.id),
            status,
            subject,
            subject_type: show(&pending.subject.kind),
            subject_properties: None,
            agent,
            delegation,
            delegation_verified: pending.delegation
                == countersign_protocol::action::Delegation::VerifiedByBroker,
            tool: show(&pending.resource.id),
            resource_type: show(&pending.resource.kind),
            resource_properties: None,
            action: show(&pending.action.name),
            action_properties: None,
            intent: show(&pending.context.intent),
            arguments: serde_json::Value::Null,
            data_domain: data.map(|d| show(&d.domain)),
            classification: data
                .map(|d| d.classification.iter().map(|c| show(c)).collect())
                .unwrap_or_default(),
            server_claims: pending
                .context
                .annotations
                .as_ref()
                .map(|a| a.claims().iter().map(|c| show(c)).collect())
                .unwrap_or_default(),
            catalog: pending.catalog.as_ref().map(|c| CatalogFacts {
                domain: c.domain.as_deref().map(&mut show),
                classification: c.classification.iter().map(|x| show(x)).collect(),
                risk: c.risk.map(|r| r.as_str().to_owned()),
            }),
            policy_id: show(&pending.policy.id),
            policy_reason: show(&pending.policy.reason),
            audience: show(&pending.audience),
            requested_at: pending.created_at.as_str().to_owned(),
            expires_at: pending.expires_at.as_str().to_owned(),
            fingerprint: pending.action_hash.fingerprint(),
            hash_matches: pending.verify_hash(),
            hidden_characters: false,
            line_breaks: false,
        };
        let mut flags = (hidden, breaks);
        let mut object = |map: Option<&serde_json::Map<String, serde_json::Value>>| {
            map.map(|m| visible_json(&serde_json::Value::Object(m.clone()), &mut flags))
        };
        review.arguments = object(Some(&pending.context.arguments)).unwrap_or_default();
        review.subject_properties = object(pending.subject.properties.as_ref());
        review.action_properties = object(pending.action.properties.as_ref());
        review.resource_properties = object(pending.resource.properties.as_ref());
        (review.hidden_characters, review.line_breaks) = flags;
        review
    }
}

/// `value` with every key and string made visible; `flags` gathers (hidden, line breaks).
/// A JSON value with every key and string made [`visible`], structure kept.
pub fn visible_value(value: &serde_json::Value) -> serde_json::Value {
    visible_json(value, &mut (false, false))
}

fn visible_json(value: &serde_json::Value, flags: &mut (bool, bool)) -> serde_json::Value {
    use serde_json::Value;
    let mut text = |s: &str| {
        flags.0 |= has_hidden(s);
        flags.1 |= has_breaks(s);
        visible(s)
    };
    match value {
        Value::String(s) => Value::String(text(s)),
        Value::Array(items) => Value::Array(items.iter().map(|v| visible_json(v, flags)).collect()),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| {
                    flags.0 |= has_hidden(k);
                    flags.1 |= has_breaks(k);
                    (visible(k), visible_json(v, flags))
                })
                .collect(),
        ),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hidden_and_direction_characters_become_visible() {
        assert_eq!(visible("pay \u{202E}gpj.exe"), "pay [U+202E RLO]gpj.exe");
        assert_eq!(visible("a\u{200B}b\u{FEFF}"), "a[U+200B ZWSP]b[U+FEFF BOM]");
        assert_eq!(visible("bell\u{7}"), "bell[U+0007]");
        // A line break cannot start a line of the review: it is shown, inside its field.
        assert_eq!(visible("line\nnext\ttab"), "line[U+000A LF]next\ttab");
        assert_eq!(visible("a\r\nb"), "a[U+000D CR][U+000A LF]b");
        assert!(has_breaks("a\nb") && !has_hidden("a\nb"));
        assert_eq!(visible("<script>é 日本"), "<script>é 日本");
        assert!(has_hidden("\u{2067}x\u{2069}") && !has_hidden("plain"));
        // Line and paragraph separators break a line where a reader sees none; blank
        // look-alikes and invisible selectors hide text.
        assert_eq!(visible("a\u{2028}b"), "a[U+2028 LSEP]b");
        assert_eq!(
            visible("\u{2800}\u{180B}\u{1D173}"),
            "[U+2800 BRAILLE BLANK][U+180B FVS][U+1D173]"
        );
    }

    #[test]
    fn words_mixing_look_alike_scripts_are_marked() {
        // A Cyrillic a in a Latin name.
        assert_eq!(visible("p\u{0430}ypal.com"), "p[U+0430 CYRILLIC]ypal.com");
        assert!(has_hidden("p\u{0430}ypal"));
        // A Latin o in a Cyrillic word: the odd one out is marked.
        assert_eq!(
            visible("\u{043F}\u{0440}o"),
            "\u{043F}\u{0440}[U+006F LATIN]"
        );
        // Whole words in different scripts are ordinary text.
        assert_eq!(visible("Привет world"), "Привет world");
        assert!(!has_hidden("Привет world Müller 日本語"));
        assert_eq!(visible("Ωmega"), "[U+03A9 GREEK]mega");
    }

    #[test]
    fn text_imitating_a_marker_cannot_pass_for_one() {
        assert_eq!(
            visible("refund [U+202E RLO] now"),
            "refund [U+005B LEFT SQUARE BRACKET]U+202E RLO] now"
        );
        assert!(has_hidden("a [U+200B ZWSP] b"));
        // Brackets that do not begin a marker are ordinary text.
        assert_eq!(visible("[x] [U] [u+1]"), "[x] [U] [u+1]");
        assert!(!has_hidden("[x] [U] [u+1]"));
    }

    /// Every example is one whole marker, and every marker form is among them.
    #[test]
    fn marker_examples_cover_every_marker_form() {
        let examples = marker_examples();
        for example in &examples {
            assert!(
                example.starts_with("[U+") && example.ends_with(']'),
                "{example}"
            );
            assert_eq!(example.matches('[').count(), 1, "{example}");
        }
        for expected in [
            "[U+2800 BRAILLE BLANK]",
            "[U+0000]",
            "[U+000A LF]",
            "[U+0430 CYRILLIC]",
            "[U+006F LATIN]",
            "[U+03A9 GREEK]",
            "[U+005B LEFT SQUARE BRACKET]",
            "[U+E0000 TAG]",
            "[U+0531 ARMENIAN]",
            "[U+13A0 CHEROKEE]",
        ] {
            assert!(
                examples.iter().any(|e| e == expected),
                "{expected} in {examples:?}"
            );
        }
    }

    #[test]
    fn markup_is_escaped_and_clipping_marks_the_cut() {
        assert_eq!(escape_markup("<b>&</b>"), "&lt;b&gt;&amp;&lt;/b&gt;");
        assert_eq!(clip("abcdef", 4), "abc…");
        assert_eq!(clip("abc", 4), "abc");
    }
}
