//! `WWW-Authenticate` challenges (RFC 9110 §11.6.1) as upstream registries send them: the
//! scheme and its parameters. A remote server wrote these bytes, so nothing here may panic,
//! and a quoted value is read as RFC 9110 quotes it (`\"` inside a realm stays in the realm).

use std::collections::HashMap;

/// `Bearer realm="...",service="..."` → ("bearer", {realm, service}).
pub fn parse_challenge(s: &str) -> (String, HashMap<String, String>) {
    let s = s.trim();
    let (scheme, rest) = s.split_once(' ').unwrap_or((s, ""));
    let mut params = HashMap::new();
    let mut rest = rest.trim();
    while !rest.is_empty() {
        let Some((k, after)) = rest.split_once('=') else {
            break;
        };
        let k = k.trim().trim_start_matches(',').trim().to_ascii_lowercase();
        // Whitespace may surround the `=` and the commas (RFC 9110 §11.4, §5.6.1).
        let after = after.trim_start();
        let (v, after) = if let Some(quoted) = after.strip_prefix('"') {
            unquote(quoted)
        } else {
            let end = after.find(',').unwrap_or(after.len());
            (after[..end].trim_end().to_string(), &after[end..])
        };
        params.insert(k, v);
        rest = after.trim_start_matches(',').trim();
    }
    (scheme.to_ascii_lowercase(), params)
}

/// The value of a quoted-string whose opening `"` is gone, its `\` escapes undone (RFC 9110
/// §5.6.4: a realm may hold `\"`), and the text after its closing quote.
fn unquote(s: &str) -> (String, &str) {
    let mut value = String::new();
    let mut chars = s.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return (value, &s[i + 1..]),
            '\\' => value.extend(chars.next().map(|(_, e)| e)),
            c => value.push(c),
        }
    }
    (value, "")
}
