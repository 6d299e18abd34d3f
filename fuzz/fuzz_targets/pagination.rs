//! A listing request's URL (`gateway/src/routes/mod.rs`): the path the gateway splits into
//! repository and resource, and the `n` and `last` query parameters of `/v2/_catalog` and
//! `/v2/<name>/tags/list`. The input is everything after `/v2/`, as a client sends it.
//!
//! Beyond "never panics": a parsed path names a non-empty repository it starts with; `n` is a
//! u32 or a 400; `last` comes back unchanged through the next page's `Link`, which the proxy's
//! own `Link` reader follows to the same page (what one Trow sends, another Trow reads).

#![no_main]

use axum::extract::Query;
use http::{HeaderMap, StatusCode, Uri, header};
use libfuzzer_sys::fuzz_target;
use percent_encoding::percent_decode_str;
use std::collections::HashMap;
use trow_gateway::routes::{Resource, next_link, page_params, parse};
use trow_names::grammar::valid_repository;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(uri) = Uri::try_from(format!("/v2/{s}")) else {
        return; // hyper refuses it before any handler
    };
    let path = uri.path().trim_start_matches("/v2/");
    let parsed = parse(path);
    if let Some((repo, _)) = &parsed {
        assert!(!repo.is_empty());
        assert!(path.starts_with(repo.as_str()), "{path:?} -> {repo:?}");
    }
    let Ok(Query(params)) = Query::<HashMap<String, String>>::try_from_uri(&uri) else {
        return; // a 400 from axum
    };
    let n_written = params
        .get("n")
        .map(String::as_str)
        .filter(|n| !n.is_empty());
    let (n, last) = match page_params(&params) {
        Ok(page) => page,
        Err(e) => {
            assert_eq!(e.status, StatusCode::BAD_REQUEST);
            assert!(n_written.is_some_and(|n| n.parse::<u32>().is_err()));
            return;
        }
    };
    assert_eq!(n, n_written.map(|n| n.parse::<u32>().unwrap()));
    assert_eq!(&last, params.get("last").map(String::as_str).unwrap_or(""));

    let n = n.unwrap_or(0);
    let mut pages = vec![("/v2/_catalog".to_string(), None)];
    if let Some((repo, Resource::Tags)) = &parsed {
        let page = format!("/v2/{repo}/tags/list");
        if valid_repository(repo) {
            pages.push((page, Some(repo.as_str())));
        } else {
            // Storage refuses the name before any page is sent; building the link must not
            // panic all the same.
            let _ = next_link(&page, n, &last);
        }
    }
    for (page, repo) in pages {
        let (name, link) = next_link(&page, n, &last);
        assert_eq!(name, header::LINK);
        let text = link.to_str().expect("a Link is ASCII");
        let sent = text
            .split("&last=")
            .nth(1)
            .unwrap()
            .split('>')
            .next()
            .unwrap();
        assert_eq!(percent_decode_str(sent).decode_utf8().unwrap(), last);
        if let Some(repo) = repo {
            // The proxy asks only for valid names, and follows the link to the same page.
            let mut h = HeaderMap::new();
            h.insert(header::LINK, link.clone());
            let next = trow_proxy::fuzzing::next_page(&h, repo);
            assert_eq!(next, Some(format!("tags/list?n={n}&last={sent}")), "{text}");
        }
    }
});
