//! Showing untrusted text: agents choose every string in a pending action, so before a person
//! reads one, characters that hide or reorder text are made visible, and nothing is ever
//! interpreted as markup by the front ends (they print or insert text, never HTML).

use std::fmt::Write as _;

/// `text` with every invisible, formatting or bidirectional control character (and every C0/C1
/// control except newline and tab) replaced by a visible marker such as `[U+202E RLO]`.
pub fn visible(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match marker(c) {
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
    out
}

/// Whether `text` holds anything [`visible`] would mark.
pub fn has_hidden(text: &str) -> bool {
    text.chars().any(|c| marker(c).is_some())
}

/// The short name of a character that must be shown, or `None` for ordinary text.
fn marker(c: char) -> Option<&'static str> {
    Some(match c {
        '\n' | '\t' => return None,
        '\u{202A}' => "LRE",
        '\u{202B}' => "RLE",
        '\u{202C}' => "PDF",
        '\u{202D}' => "LRO",
        '\u{202E}' => "RLO",
        '\u{2066}' => "LRI",
        '\u{2067}' => "RLI",
        '\u{2068}' => "FSI",
        '\u{2069}' => "PDI",
        '\u{200E}' => "LRM",
        '\u{200F}' => "RLM",
        '\u{061C}' => "ALM",
        '\u{200B}' => "ZWSP",
        '\u{200C}' => "ZWNJ",
        '\u{200D}' => "ZWJ",
        '\u{2060}' => "WJ",
        '\u{FEFF}' => "BOM",
        '\u{00AD}' => "SHY",
        '\u{034F}' => "CGJ",
        '\u{180E}' => "MVS",
        '\u{2028}' => "LSEP",
        '\u{2029}' => "PSEP",
        '\u{2800}' => "BRAILLE BLANK",
        '\u{180B}'..='\u{180D}' | '\u{180F}' => "FVS",
        '\u{1D173}'..='\u{1D17A}' => "",
        '\u{115F}' | '\u{1160}' | '\u{3164}' | '\u{FFA0}' => "FILLER",
        c if c.is_control() => "",
        '\u{2061}'..='\u{2064}' | '\u{206A}'..='\u{206F}' | '\u{FFF9}'..='\u{FFFB}' => "",
        '\u{E0000}'..='\u{E007F}' => "TAG",
        '\u{FE00}'..='\u{FE0F}' | '\u{E0100}'..='\u{E01EF}' => "VS",
        _ => return None,
    })
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
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Review {
    pub id: String,
    pub status: String,
    pub agent: String,
    /// Human first, then each delegating agent, ending with the agent that asks.
    pub delegation: Vec<String>,
    pub tool: String,
    pub action: String,
    pub intent: String,
    /// The arguments, keys and strings made visible; structure kept.
    pub arguments: serde_json::Value,
    pub data_domain: Option<String>,
    pub classification: Vec<String>,
    pub policy_id: String,
    pub policy_reason: String,
    pub audience: String,
    pub requested_at: String,
    pub expires_at: String,
    /// Short fingerprint of the action hash, to compare with what the agent's side shows.
    pub fingerprint: String,
    /// Whether the action hash matches what is shown (a mismatch is never approvable).
    pub hash_matches: bool,
    /// Whether any field held invisible or bidirectional control characters.
    pub hidden_characters: bool,
}

impl Review {
    pub fn of(pending: &countersign_protocol::PendingAction, status: &str) -> Self {
        let mut hidden = false;
        let mut show = |text: &str| {
            hidden |= has_hidden(text);
            visible(text)
        };
        let mut delegation = vec![show(&pending.subject.id)];
        if let Some(chain) = &pending.actor.act {
            let mut links: Vec<String> = chain.links().iter().map(|id| show(id.as_str())).collect();
            links.reverse();
            delegation.extend(links);
        }
        let agent = show(pending.actor.id.as_str());
        delegation.push(agent.clone());
        let mut hidden_in_arguments = false;
        let arguments = visible_json(
            &serde_json::Value::Object(pending.context.arguments.clone()),
            &mut hidden_in_arguments,
        );
        let data = pending.context.data.as_ref();
        let mut review = Self {
            id: show(&pending.id),
            status: status.to_owned(),
            agent,
            delegation,
            tool: show(&pending.resource.id),
            action: show(&pending.action.name),
            intent: show(&pending.context.intent),
            arguments,
            data_domain: data.map(|d| show(&d.domain)),
            classification: data
                .map(|d| d.classification.iter().map(|c| show(c)).collect())
                .unwrap_or_default(),
            policy_id: show(&pending.policy.id),
            policy_reason: show(&pending.policy.reason),
            audience: show(&pending.audience),
            requested_at: pending.created_at.as_str().to_owned(),
            expires_at: pending.expires_at.as_str().to_owned(),
            fingerprint: pending.action_hash.fingerprint(),
            hash_matches: pending.verify_hash(),
            hidden_characters: false,
        };
        review.hidden_characters = hidden || hidden_in_arguments;
        review
    }
}

/// `value` with every key and string made visible.
fn visible_json(value: &serde_json::Value, hidden: &mut bool) -> serde_json::Value {
    use serde_json::Value;
    match value {
        Value::String(s) => {
            *hidden |= has_hidden(s);
            Value::String(visible(s))
        }
        Value::Array(items) => {
            Value::Array(items.iter().map(|v| visible_json(v, hidden)).collect())
        }
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| {
                    *hidden |= has_hidden(k);
                    (visible(k), visible_json(v, hidden))
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
        assert_eq!(visible("line\nnext\ttab"), "line\nnext\ttab");
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
    fn markup_is_escaped_and_clipping_marks_the_cut() {
        assert_eq!(escape_markup("<b>&</b>"), "&lt;b&gt;&amp;&lt;/b&gt;");
        assert_eq!(clip("abcdef", 4), "abc…");
        assert_eq!(clip("abc", 4), "abc");
    }
}
