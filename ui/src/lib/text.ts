// Showing untrusted text: folding long values, line-break opportunities, and the markers the
// engine put where hidden characters were. Rendered as text, never as HTML (text.test.ts).

/** A long value folded for display: the head, and how much more there is. Never cut: the
 * caller shows `full` when the person unfolds it. */
export interface Folded {
  head: string;
  full: string;
  folded: boolean;
  hiddenChars: number;
}

export function fold(text: string, limit = 240): Folded {
  const chars = Array.from(text);
  if (chars.length <= limit) return { head: text, full: text, folded: false, hiddenChars: 0 };
  return {
    head: chars.slice(0, limit).join(""),
    full: text,
    folded: true,
    hiddenChars: chars.length - limit,
  };
}

/** The text cut into pieces of at most `size` characters, never inside a character or before
 * a combining mark, so the view can offer a line break between them: a 200 KB value without a
 * space otherwise takes the webview tens of seconds to lay out. Joined, the pieces are the text. */
export function pieces(text: string, size = 64): string[] {
  if (text.length <= size) return [text];
  const unit = new RegExp(`(?:[\\s\\S](?:[\\p{M}\\uFE0F]|\\u200D[\\s\\S])*){1,${size}}`, "gu");
  return text.match(unit) ?? [text];
}

/** A piece of displayed text: plain, or a marker the engine put where a hidden or
 * direction-changing character was (`[U+202E RLO]`). Rendered as text, never as HTML. */
export interface Segment {
  text: string;
  marker: boolean;
}

// Names may have several words (`[U+2800 BRAILLE BLANK]`); look-alike letters are marked with
// their script (`[U+0430 CYRILLIC]`), line breaks with theirs (`[U+000A LF]`).
const MARKER = /\[U\+[0-9A-F]{4,6}(?: [A-Z]+)*\]/g;

export function segments(text: string): Segment[] {
  const out: Segment[] = [];
  let last = 0;
  for (const match of text.matchAll(MARKER)) {
    const at = match.index ?? 0;
    if (at > last) out.push({ text: text.slice(last, at), marker: false });
    out.push({ text: match[0], marker: true });
    last = at + match[0].length;
  }
  if (last < text.length) out.push({ text: text.slice(last), marker: false });
  return out;
}
