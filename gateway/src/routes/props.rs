//! Property tests of the request parts the gateway reads itself: `Range`, `Content-Range`,
//! `n` and `last`, and the path. Whatever a client sends, parsing never panics (a panic in a
//! handler is a dropped connection, and overflow checks are on in debug builds); what is
//! accepted stays within the blob, the upload or the page.

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use percent_encoding::percent_decode_str;
use proptest::prelude::*;
use std::collections::HashMap;

use super::blobs::parse_range;
use super::uploads::content_range_of;
use super::{next_link, page_params, parse};

/// Numbers near the edges: small, near `u64::MAX`, anything.
fn edge_u64() -> impl Strategy<Value = u64> {
    prop_oneof![0u64..8, u64::MAX - 3..=u64::MAX, any::<u64>()]
}

/// Any bytes a header value may hold (visible ASCII, space, tab, obs-text).
fn header_text() -> impl Strategy<Value = HeaderValue> {
    prop::collection::vec(
        prop_oneof![Just(b'\t'), 0x20u8..=0x7e, 0x80u8..=0xff],
        0..40,
    )
    .prop_map(|b| HeaderValue::from_bytes(&b).unwrap())
}

/// `Range` values as clients write them, and broken ones.
fn range_text() -> impl Strategy<Value = String> {
    prop_oneof![
        (edge_u64(), edge_u64()).prop_map(|(a, b)| format!("bytes={a}-{b}")),
        edge_u64().prop_map(|a| format!("bytes={a}-")),
        edge_u64().prop_map(|n| format!("bytes=-{n}")),
        "bytes= ?[-+]?[0-9]{0,21} ?- ?[-+]?[0-9]{0,21}(,[0-9]-[0-9])?",
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    #[test]
    fn ranges_stay_within_the_blob(
        value in prop_oneof![range_text().prop_map(|s| HeaderValue::from_str(&s).unwrap()), header_text()],
        size in edge_u64(),
    ) {
        match parse_range(&value, size) {
            Ok(Some((start, end))) => prop_assert!(start <= end && end < size, "{:?}", value),
            Ok(None) => {}
            Err(e) => {
                prop_assert_eq!(e.status, StatusCode::RANGE_NOT_SATISFIABLE);
                let unsatisfied = HeaderValue::from_str(&format!("bytes */{size}")).unwrap();
                prop_assert_eq!(e.headers, vec![(header::CONTENT_RANGE, unsatisfied)]);
            }
        }
    }

    #[test]
    fn well_formed_ranges_are_served(a in edge_u64(), b in edge_u64(), size in edge_u64()) {
        // `Ok` answers as `Some`, a 416 as `None`.
        let parse = |s: String| parse_range(&HeaderValue::from_str(&s).unwrap(), size).ok();
        let served = size > 0 && a < size;
        let last = size.saturating_sub(1);
        prop_assert_eq!(
            parse(format!("bytes={a}-{b}")),
            (served && a <= b).then_some(Some((a, b.min(last))))
        );
        prop_assert_eq!(parse(format!("bytes={a}-")), served.then_some(Some((a, last))));
        prop_assert_eq!(
            parse(format!("bytes=-{a}")),
            (a > 0 && size > 0).then_some(Some((size - a.min(size), last)))
        );
    }

    #[test]
    fn content_ranges_are_consistent(
        a in edge_u64(),
        b in edge_u64(),
        prefix in prop_oneof![Just(""), Just("bytes ")],
        total in prop_oneof![Just(String::new()), Just("/*".to_string()), edge_u64().prop_map(|t| format!("/{t}"))],
        len_kind in 0u8..3,
        other_len in edge_u64(),
    ) {
        // No Content-Length, the one that matches (modulo 2^64), or any.
        let len = match len_kind {
            0 => None,
            1 => Some(b.wrapping_sub(a).wrapping_add(1)),
            _ => Some(other_len),
        };
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_RANGE, HeaderValue::from_str(&format!("{prefix}{a}-{b}{total}")).unwrap());
        if let Some(len) = len {
            h.insert(header::CONTENT_LENGTH, len.into());
        }
        // The oracle counts in u128: an inclusive span of u64 offsets can be 2^64 long.
        let span = u128::from(b) + 1 - u128::from(a.min(b));
        let expected = a <= b && len.is_none_or(|l| u128::from(l) == span);
        match content_range_of(&h) {
            Ok(start) => {
                prop_assert!(expected, "{:?} len {:?}", h.get(header::CONTENT_RANGE), len);
                prop_assert_eq!(start, Some(a));
            }
            Err(_) => prop_assert!(!expected, "{:?} len {:?}", h.get(header::CONTENT_RANGE), len),
        }
    }

    #[test]
    fn any_content_range_is_answered(range in header_text(), len in header_text()) {
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_RANGE, range);
        h.insert(header::CONTENT_LENGTH, len);
        let _ = content_range_of(&h);
    }

    #[test]
    fn page_parameters_round_trip(
        n in prop::option::of(prop_oneof!["[0-9]{0,11}", "[-+ ]?[0-9a-z]{0,4}", any::<String>()]),
        last in prop::option::of(any::<String>()),
        repo in "[a-z0-9]{1,8}(/[a-z0-9]{1,8}){0,3}",
    ) {
        let mut params = HashMap::new();
        if let Some(n) = &n {
            params.insert("n".to_string(), n.clone());
        }
        if let Some(last) = &last {
            params.insert("last".to_string(), last.clone());
        }
        match page_params(&params) {
            Ok((got, got_last)) => {
                let expected = n.as_deref().filter(|s| !s.is_empty()).map(|s| s.parse::<u32>().unwrap());
                prop_assert_eq!(got, expected);
                prop_assert_eq!(&got_last, last.as_deref().unwrap_or(""));
                // The next page's link carries `last` back whatever it holds.
                let (_, link) = next_link(&format!("/v2/{repo}/tags/list"), got.unwrap_or(0), &got_last);
                let link = link.to_str().unwrap();
                let sent = link.split("&last=").nth(1).unwrap().split('>').next().unwrap();
                prop_assert_eq!(percent_decode_str(sent).decode_utf8().unwrap(), got_last);
            }
            Err(e) => {
                prop_assert_eq!(e.status, StatusCode::BAD_REQUEST);
                prop_assert!(n.unwrap().parse::<u32>().is_err());
            }
        }
    }

    #[test]
    fn paths_name_a_repository(path in prop_oneof!["[a-z/%0-9:]{0,30}", "([a-z]{1,3}/){0,3}(blobs|manifests|tags|referrers|uploads|list)(/[a-z%0-9]{0,4}){0,2}", any::<String>()]) {
        if let Some((repo, _)) = parse(&path) {
            prop_assert!(!repo.is_empty());
            prop_assert!(path.starts_with(&repo));
        }
    }
}
