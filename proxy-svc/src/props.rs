//! Property tests of what the proxy reads from upstream registries' headers: a remote server
//! chose these bytes. `WWW-Authenticate` challenges and tag-list `Link` headers never panic the
//! proxy, a challenge's parameters come back as the server quoted them, and a next page is
//! only ever a tag list under the repository asked for.

use proptest::prelude::*;
use reqwest::header::{self, HeaderMap, HeaderValue};
use std::collections::HashMap;

use crate::challenge::parse_challenge;
use crate::tags::next_page;

/// A quoted-string (RFC 9110 §5.6.4) holding `v`: `"` and `\` escaped.
fn quoted(v: &str) -> String {
    let mut q = String::from('"');
    for c in v.chars() {
        if matches!(c, '"' | '\\') {
            q.push('\\');
        }
        q.push(c);
    }
    q.push('"');
    q
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    #[test]
    fn any_challenge_is_answered(s in prop_oneof![
        "[A-Za-z]{0,7} ?([a-z]{0,5}=?\"?[a-z, =\\\\\"]{0,8}\"?,? ?){0,4}",
        any::<String>(),
    ]) {
        let _ = parse_challenge(&s);
    }

    /// Parameters the server quoted come back unquoted, keys in lower case, the last of a
    /// repeated key winning; unquoted tokens come back as written.
    #[test]
    fn challenge_parameters_round_trip(
        scheme in "[A-Za-z]{1,10}",
        params in prop::collection::vec(
            ("[A-Za-z_]{1,10}", prop_oneof![
                3 => "[ -~]{0,24}".prop_map(|v| (quoted(&v), v)),
                1 => "[A-Za-z0-9._~+/-]{1,12}".prop_map(|v| (v.clone(), v)),
            ]),
            0..5,
        ),
        separator in "(,|, |,  | ,)",
        equals in "(=| = |= | =)",
    ) {
        let written: Vec<String> =
            params.iter().map(|(k, (w, _))| format!("{k}{equals}{w}")).collect();
        let header = format!("{scheme} {}", written.join(&separator));
        let (got_scheme, got) = parse_challenge(&header);
        prop_assert_eq!(got_scheme, scheme.to_ascii_lowercase());
        let expected: HashMap<String, String> = params
            .iter()
            .map(|(k, (_, v))| (k.to_ascii_lowercase(), v.clone()))
            .collect();
        prop_assert_eq!(got, expected, "{}", header);
    }

    #[test]
    fn next_pages_stay_under_the_repository(
        link in prop_oneof![
            "<(https?://[a-z.]{1,8})?(/v2/)?[a-z/.]{0,12}(tags/list)?[?&=a-z0-9]{0,10}>(; rel=\"next\")?",
            "[ -~]{0,40}",
        ],
        repository in "[a-z]{1,4}(/[a-z]{1,4}){0,2}",
    ) {
        let mut h = HeaderMap::new();
        h.insert(header::LINK, HeaderValue::from_str(&link).unwrap());
        if let Some(rest) = next_page(&h, &repository) {
            prop_assert!(rest == "tags/list" || rest.starts_with("tags/list?"), "{}", rest);
            let under = format!("/v2/{repository}/{rest}>");
            prop_assert!(link.contains(&under), "{} from {}", rest, link);
        }
    }

    #[test]
    fn next_pages_are_followed(
        origin in "(|https://[a-z]{1,8}\\.io|http://[a-z]{1,8}:5000)",
        repository in "[a-z]{1,6}(/[a-z]{1,6}){0,2}",
        query in "(\\?n=[0-9]{1,3}&last=[a-z0-9._-]{1,10})?",
        rel in "(|; rel=\"next\")",
    ) {
        let link = format!("<{origin}/v2/{repository}/tags/list{query}>{rel}");
        let mut h = HeaderMap::new();
        h.insert(header::LINK, HeaderValue::from_str(&link).unwrap());
        prop_assert_eq!(next_page(&h, &repository), Some(format!("tags/list{query}")));
        prop_assert_eq!(next_page(&h, &format!("{repository}x")), None);
    }
}

/// Found by `challenge_parameters_round_trip`: an escaped quote ended the value early, so
/// `realm="\""` read as `\`, and the rest of a realm holding `\"` was read as parameters.
#[test]
fn escaped_quotes_stay_in_the_value() {
    let (_, p) = parse_challenge(r#"A A="\"""#);
    assert_eq!(p["a"], "\"");
    let (_, p) = parse_challenge(r#"Bearer realm="https://a/x\",service=\"evil",service="real""#);
    assert_eq!(p["realm"], r#"https://a/x",service="evil"#);
    assert_eq!(p["service"], "real");
}

/// Found by the same property: a token value kept the space before the next comma, and a
/// quoted value after `= ` kept its quotes.
#[test]
fn whitespace_around_separators_is_not_part_of_a_value() {
    let (_, p) = parse_challenge(r#"a A=0 ,B="""#);
    assert_eq!((p["a"].as_str(), p["b"].as_str()), ("0", ""));
    let (_, p) = parse_challenge(r#"Bearer realm = "https://auth.example/token""#);
    assert_eq!(p["realm"], "https://auth.example/token");
}
