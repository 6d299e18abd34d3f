//! The `Link` header of an upstream's tag list (`proxy-svc/src/tags.rs`): a remote server
//! chose it, and the proxy follows it with its credentials. The input is a repository name, a
//! newline, then the header value. Beyond "never panics": a next page is only ever a
//! `tags/list...` under the repository asked for, taken verbatim from the link, and the URL
//! the proxy then requests (`upstream.rs` formats it, the `url` crate resolves it as reqwest
//! does) is that tag list's, not another repository's by `..` or a `#`.

#![no_main]

use http::{HeaderMap, HeaderValue, header};
use libfuzzer_sys::fuzz_target;
use trow_names::grammar::valid_repository;
use trow_proxy::fuzzing::next_page;
use url::Url;

fuzz_target!(|data: &[u8]| {
    let Some(newline) = data.iter().position(|&b| b == b'\n') else {
        return;
    };
    let (repository, link) = (&data[..newline], &data[newline + 1..]);
    let Ok(repository) = std::str::from_utf8(repository) else {
        return;
    };
    if !valid_repository(repository) {
        return; // the proxy asks only for valid names
    }
    let Ok(value) = HeaderValue::from_bytes(link) else {
        return;
    };
    let mut h = HeaderMap::new();
    h.insert(header::LINK, value.clone());
    if let Some(rest) = next_page(&h, repository) {
        assert!(rest.starts_with("tags/list"), "{rest:?}");
        let link = value.to_str().expect("followed, so text");
        let under = format!("/v2/{repository}/{rest}>");
        assert!(link.contains(&under), "{rest:?} from {link:?}");
        // (A URL that does not parse is a failed request, not another page.)
        if let Ok(url) = Url::parse(&format!("https://upstream.example/v2/{repository}/{rest}")) {
            assert_eq!(url.host_str(), Some("upstream.example"), "{rest:?}");
            assert_eq!(
                url.path(),
                format!("/v2/{repository}/tags/list"),
                "{rest:?}"
            );
        }
    }
});
