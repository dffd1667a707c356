//! Message text under Telegram's rules: escaping for `parse_mode=HTML` and splitting a long HTML
//! text into messages Telegram accepts (at most [`MESSAGE_LIMIT`] characters, tags balanced).
//!
//! Telegram counts a message's length after parsing its entities, so a part whose *source* fits
//! the limit always fits. Lengths are counted in UTF-16 code units, never fewer than characters,
//! so a part is accepted whichever of the two Telegram's counter uses.

/// Longest text of one message (`sendMessage`, `editMessageText`).
pub const MESSAGE_LIMIT: usize = 4096;
/// Longest caption of a photo (`sendPhoto`).
pub const CAPTION_LIMIT: usize = 1024;

/// `text` made safe inside HTML text: `<`, `>` and `&` become entities (the core's escaping,
/// which the bot's answers use too).
pub use albra_core::bot::render::escape as html_escape;

/// `text` made safe inside a double-quoted HTML attribute (an `<a href="…">`): as
/// [`html_escape`], and `"` becomes `&quot;`.
pub fn html_attr_escape(text: &str) -> String {
    html_escape(text).replace('"', "&quot;")
}

/// Length as Telegram may count it (see the module docs).
pub fn tg_len(text: &str) -> usize {
    text.encode_utf16().count()
}

/// One indivisible piece of HTML source: a split never falls inside one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Token<'a> {
    /// `<b>`, `<a href="…">`: the tag name and the whole tag text (reopened in the next part).
    Open(&'a str, &'a str),
    /// `</b>`: the tag name and the whole tag text.
    Close(&'a str, &'a str),
    /// One character, or one entity (`&amp;`, `&#39;`).
    Text(&'a str),
}

impl<'a> Token<'a> {
    fn source(&self) -> &'a str {
        match self {
            Token::Open(_, s) | Token::Close(_, s) | Token::Text(s) => s,
        }
    }
}

/// Cuts HTML source into tags, entities and single characters. A `<` or `&` that starts no
/// complete tag or entity is a character of its own (Telegram would refuse a stray `<`; the
/// splitter keeps it as it is and the answer names the fault).
fn tokens(html: &str) -> Vec<Token<'_>> {
    let mut out = Vec::new();
    let mut rest = html;
    while let Some(c) = rest.chars().next() {
        let len = match c {
            '<' => rest.find('>').map(|e| e + 1).filter(|&e| e > 2),
            '&' => rest
                .find(';')
                .filter(|&e| {
                    e > 1
                        && e <= 10
                        && rest[1..e]
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || c == '#')
                })
                .map(|e| e + 1),
            _ => None,
        };
        let Some(len) = len else {
            out.push(Token::Text(&rest[..c.len_utf8()]));
            rest = &rest[c.len_utf8()..];
            continue;
        };
        let piece = &rest[..len];
        out.push(tag_token(piece).unwrap_or(Token::Text(piece)));
        rest = &rest[len..];
    }
    out
}

/// A tag's token, or `None` for an entity.
fn tag_token(piece: &str) -> Option<Token<'_>> {
    let inner = piece.strip_prefix('<')?.strip_suffix('>')?;
    if let Some(name) = inner.strip_prefix('/') {
        return Some(Token::Close(name.trim(), piece));
    }
    let name = inner
        .split(|c: char| c.is_whitespace())
        .next()
        .unwrap_or("");
    Some(Token::Open(name, piece))
}

/// The tags open at some point of the text, innermost last.
#[derive(Clone, Default)]
struct OpenTags<'a> {
    tags: Vec<(&'a str, &'a str)>,
    /// Length of the closing tags (`</b>`) that would end a part here.
    closers: usize,
}

impl<'a> OpenTags<'a> {
    fn apply(&mut self, token: Token<'a>) {
        match token {
            Token::Open(name, tag) => {
                self.tags.push((name, tag));
                self.closers += closer_len(name);
            }
            Token::Close(name, _) => {
                if let Some(at) = self.tags.iter().rposition(|(n, _)| *n == name) {
                    for (n, _) in self.tags.drain(at..) {
                        self.closers -= closer_len(n);
                    }
                }
            }
            Token::Text(_) => {}
        }
    }
    fn reopen(&self) -> String {
        self.tags.iter().map(|(_, tag)| *tag).collect()
    }
    fn close(&self) -> String {
        self.tags
            .iter()
            .rev()
            .map(|(n, _)| format!("</{n}>"))
            .collect()
    }
}

fn closer_len(name: &str) -> usize {
    tg_len(name) + 3
}

/// Splits HTML source into messages of at most `limit` characters, in order.
///
/// A part ends after the last line break that fits in its second half, or else after the last
/// token that fits (a line longer than half a message). Tags open at a split are closed at the end of the part and
/// reopened (with their attributes) at the start of the next, so each part parses on its own; no
/// text is lost or repeated. A text that fits is returned as it is.
///
/// Should a single tag, or the tags to reopen, leave no room at all (never with Telegram's tags
/// and limit), the part takes one token beyond the limit rather than loop forever; Telegram then
/// refuses it and the error says so.
pub fn split_html(html: &str, limit: usize) -> Vec<String> {
    if tg_len(html) <= limit {
        return vec![html.to_string()];
    }
    let tokens = tokens(html);
    let mut parts = Vec::new();
    let mut open = OpenTags::default();
    let mut start = 0;
    while start < tokens.len() {
        let (end, after) = part_end(&tokens, start, &open, limit);
        let mut part = open.reopen();
        part.extend(tokens[start..end].iter().map(Token::source));
        part.push_str(&after.close());
        parts.push(part);
        open = after;
        start = end;
    }
    parts
}

/// Where the part starting at `start` ends (exclusive), and the tags open there.
fn part_end<'a>(
    tokens: &[Token<'a>],
    start: usize,
    open: &OpenTags<'a>,
    limit: usize,
) -> (usize, OpenTags<'a>) {
    let mut len = tg_len(&open.reopen());
    let mut state = open.clone();
    let mut fit = None;
    let mut line_fit = None;
    for (i, token) in tokens.iter().enumerate().skip(start) {
        len += tg_len(token.source());
        if len > limit {
            break;
        }
        state.apply(*token);
        if len + state.closers <= limit {
            fit = Some((i + 1, state.clone()));
            // A line break early in the part would leave a short (perhaps blank) message.
            if *token == Token::Text("\n") && len * 2 >= limit {
                line_fit = Some((i + 1, state.clone()));
            }
        }
    }
    line_fit.or(fit).unwrap_or_else(|| {
        let mut state = open.clone();
        state.apply(tokens[start]);
        (start + 1, state)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn escapes_the_three_specials_and_quotes_in_attributes() {
        assert_eq!(html_escape("a<b> & \"c\""), "a&lt;b&gt; &amp; \"c\"");
        assert_eq!(html_attr_escape("x\"<&"), "x&quot;&lt;&amp;");
        assert_eq!(html_escape("plain ✓"), "plain ✓");
    }

    #[test]
    fn short_text_is_one_part() {
        assert_eq!(split_html("<b>hi</b>", 4096), vec!["<b>hi</b>"]);
    }

    #[test]
    fn splits_on_line_boundaries() {
        let text = "aaaa\nbbbb\ncccc\n";
        assert_eq!(split_html(text, 11), vec!["aaaa\nbbbb\n", "cccc\n"]);
    }

    #[test]
    fn a_long_line_is_cut_but_never_inside_an_entity() {
        let parts = split_html("ab&amp;cd", 4);
        assert_eq!(parts, vec!["ab", "&amp;", "cd"]);
    }

    #[test]
    fn open_tags_are_closed_and_reopened() {
        let parts = split_html("<b>one\n<i>two\nthree</i></b>", 24);
        assert_eq!(
            parts,
            vec!["<b>one\n<i>two\n</i></b>", "<b><i>three</i></b>"]
        );
        // No line break in the second half: cut after the last token that fits.
        let parts = split_html("<b>one\n<i>two\nthree</i></b>", 20);
        assert_eq!(
            parts,
            vec![
                "<b>one\n<i>tw</i></b>",
                "<b><i>o\nthre</i></b>",
                "<b><i>e</i></b>"
            ]
        );
        let link = split_html("<a href=\"https://x.y/?a=1&amp;b=2\">abcdefghij</a>", 50);
        assert!(link
            .iter()
            .all(|p| p.starts_with("<a href=\"https://x.y/?a=1&amp;b=2\">")));
        assert!(link.iter().all(|p| tg_len(p) <= 50), "{link:?}");
    }

    #[test]
    fn counts_utf16_units() {
        // 😀 is one character and two UTF-16 units.
        let parts = split_html(&"😀".repeat(5), 4);
        assert_eq!(parts, vec!["😀😀", "😀😀", "😀"]);
    }

    /// The text of an HTML source without its tags (entities kept as written).
    fn plain(html: &str) -> String {
        tokens(html)
            .into_iter()
            .filter_map(|t| match t {
                Token::Text(s) => Some(s),
                _ => None,
            })
            .collect()
    }

    /// True when every tag closes the innermost open one and none is left open.
    fn balanced(html: &str) -> bool {
        let mut stack = Vec::new();
        for t in tokens(html) {
            match t {
                Token::Open(name, _) => stack.push(name),
                Token::Close(name, _) if stack.pop() != Some(name) => return false,
                _ => {}
            }
        }
        stack.is_empty()
    }

    /// Well-formed HTML as the operator surface writes it: escaped text, line breaks and nested
    /// Telegram tags (links with attributes among them).
    fn html() -> impl Strategy<Value = String> {
        let text = "[a-z <>&\"é😀\n]{0,40}".prop_map(|s| html_escape(&s));
        text.prop_recursive(3, 64, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 1..6).prop_map(|v| v.concat()),
                (
                    prop_oneof![Just("b"), Just("i"), Just("code"), Just("u")],
                    inner.clone()
                )
                    .prop_map(|(t, s)| format!("<{t}>{s}</{t}>")),
                inner.prop_map(|s| format!("<a href=\"https://e.x/?q=1&amp;r=2\">{s}</a>")),
            ]
        })
    }

    proptest! {
        #[test]
        fn parts_fit_keep_the_text_and_balance_their_tags(text in html(), limit in 120usize..400) {
            let parts = split_html(&text, limit);
            for p in &parts {
                prop_assert!(tg_len(p) <= limit, "part of {} > {limit}: {p:?}", tg_len(p));
                prop_assert!(balanced(p), "unbalanced part {p:?}");
                prop_assert!(!p.is_empty() || text.is_empty());
            }
            prop_assert_eq!(plain(&parts.concat()), plain(&text));
            if parts.len() == 1 {
                prop_assert_eq!(&parts[0], &text);
            }
        }
    }
}
