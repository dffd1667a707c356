//! Telegram's `parse_mode=HTML` as the Bot API parses it: the supported tags, properly nested,
//! and the entities it decodes. What it refuses, the server answers with 400 "Bad Request: can't
//! parse entities: …", as Telegram does.

/// The tags Telegram's HTML accepts.
const TAGS: [&str; 16] = [
    "b",
    "strong",
    "i",
    "em",
    "u",
    "ins",
    "s",
    "strike",
    "del",
    "span",
    "tg-spoiler",
    "a",
    "code",
    "pre",
    "blockquote",
    "tg-emoji",
];

/// The text of `html` once its tags are removed and its entities decoded (what Telegram shows
/// and counts), or why Telegram would refuse it.
pub fn parse(html: &str) -> Result<String, String> {
    let mut out = String::with_capacity(html.len());
    let mut open: Vec<&str> = Vec::new();
    let mut at = 0;
    while at < html.len() {
        let rest = &html[at..];
        let c = rest.chars().next().unwrap_or_default();
        at += match c {
            '<' => tag(rest, at, &mut open)?,
            '&' => entity(rest, &mut out),
            c => {
                out.push(c);
                c.len_utf8()
            }
        };
    }
    match open.last() {
        Some(name) => Err(format!(
            "Can't find end tag corresponding to start tag \"{name}\""
        )),
        None => Ok(out),
    }
}

/// One tag at byte `at`; returns its length.
fn tag<'a>(rest: &'a str, at: usize, open: &mut Vec<&'a str>) -> Result<usize, String> {
    let end = rest
        .find('>')
        .ok_or_else(|| format!("Unclosed start tag at byte offset {at}"))?;
    let inner = &rest[1..end];
    if let Some(name) = inner.strip_prefix('/') {
        let name = name.trim();
        return match open.pop() {
            Some(top) if top == name => Ok(end + 1),
            Some(top) => Err(format!(
                "Unmatched end tag at byte offset {at}, expected \"</{top}>\", found \"</{name}>\""
            )),
            None => Err(format!("Unexpected end tag at byte offset {at}")),
        };
    }
    let name = inner.split(char::is_whitespace).next().unwrap_or("");
    if !TAGS.contains(&name) {
        return Err(format!(
            "Unsupported start tag \"{name}\" at byte offset {at}"
        ));
    }
    open.push(name);
    Ok(end + 1)
}

/// One entity (or a lone `&`, kept as it is); returns its length.
fn entity(rest: &str, out: &mut String) -> usize {
    let Some(end) = rest.find(';').filter(|&e| e <= 10) else {
        out.push('&');
        return 1;
    };
    let name = &rest[1..end];
    let decoded = match name {
        "lt" => Some('<'),
        "gt" => Some('>'),
        "amp" => Some('&'),
        "quot" => Some('"'),
        _ => numeric(name),
    };
    match decoded {
        Some(c) => {
            out.push(c);
            end + 1
        }
        // Telegram leaves unsupported named entities as they are written.
        None => {
            out.push('&');
            1
        }
    }
}

fn numeric(name: &str) -> Option<char> {
    let digits = name.strip_prefix('#')?;
    let code = match digits.strip_prefix(['x', 'X']) {
        Some(hex) => u32::from_str_radix(hex, 16).ok()?,
        None => digits.parse().ok()?,
    };
    char::from_u32(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_telegram_html_and_decodes_entities() {
        assert_eq!(
            parse("<b>a &lt;b&gt; &amp; &quot;c&quot; &#33;&#x41;</b> <a href=\"x\">l</a>"),
            Ok("a <b> & \"c\" !A l".to_string())
        );
        assert_eq!(parse("a & b &nbsp;"), Ok("a & b &nbsp;".to_string()));
    }

    #[test]
    fn refuses_what_telegram_refuses() {
        assert!(parse("<b>x").unwrap_err().contains("start tag \"b\""));
        assert!(parse("<foo>x</foo>")
            .unwrap_err()
            .contains("Unsupported start tag"));
        assert!(parse("a < b").unwrap_err().contains("Unclosed start tag"));
        assert!(parse("<b><i>x</b></i>")
            .unwrap_err()
            .contains("Unmatched end tag"));
        assert!(parse("x</b>").unwrap_err().contains("Unexpected end tag"));
    }
}
