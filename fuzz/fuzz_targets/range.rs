//! `Range` on a blob GET (`gateway/src/routes/blobs.rs`) and `Content-Range` with
//! `Content-Length` on an upload PATCH/PUT (`gateway/src/routes/uploads.rs`): header bytes a
//! client chose, against a blob size. The input is 8 bytes of size (little-endian), then the
//! three header values separated by newlines (which no header value may hold).
//!
//! Beyond "never panics" (debug assertions are on, so an overflow panics too): a served span
//! lies within the blob; a refusal is a 416 telling the size; the plain forms `a-b`, `a-` and
//! `-n` get exactly the span RFC 9110 gives them; an accepted chunk's span fits in u64 and
//! matches its Content-Length; the plain `start-end[/total]` form is accepted exactly when it
//! should be.

#![no_main]

use http::{HeaderMap, HeaderValue, StatusCode, header};
use libfuzzer_sys::fuzz_target;
use trow_gateway::fuzzing::{content_range_of, parse_range};

/// A non-empty run of ASCII digits, as a number (None if it overflows u64).
fn number(s: &str) -> Option<Option<u64>> {
    (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())).then(|| s.parse().ok())
}

/// The span RFC 9110 gives `bytes=<spec>` when spec is digits and one `-` only: `Some(None)` is
/// a 416; `None` means the oracle does not judge this text.
fn expected_range(spec: &str, size: u64) -> Option<Option<(u64, u64)>> {
    let (a, b) = spec.split_once('-')?;
    let last = size.checked_sub(1);
    Some(match (a, b) {
        ("", n) => {
            let n = number(n)??;
            (n > 0)
                .then_some(())
                .and(last)
                .map(|last| (size - n.min(size), last))
        }
        (a, "") => {
            let a = number(a)??;
            last.filter(|_| a < size).map(|last| (a, last))
        }
        (a, b) => {
            let (a, b) = (number(a)??, number(b)??);
            last.filter(|_| a < size && a <= b)
                .map(|last| (a, b.min(last)))
        }
    })
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 8 {
        return;
    }
    let (size, text) = data.split_at(8);
    let size = u64::from_le_bytes(size.try_into().unwrap());
    let mut parts = text.splitn(3, |&b| b == b'\n');
    let range = parts.next().unwrap_or_default();
    let content_range = parts.next();
    let content_length = parts.next();

    // Range.
    if let Ok(value) = HeaderValue::from_bytes(range) {
        let got = parse_range(&value, size);
        match &got {
            Ok(Some((start, end))) => {
                assert!(
                    start <= end && *end < size,
                    "{value:?} size {size}: {start}-{end}"
                );
                // What the handler answers with must be sayable.
                let length = end - start + 1;
                assert!(length <= size);
                HeaderValue::from_str(&format!("bytes {start}-{end}/{size}")).unwrap();
            }
            Ok(None) => {}
            Err(e) => {
                assert_eq!(e.status, StatusCode::RANGE_NOT_SATISFIABLE);
                let unsatisfied = HeaderValue::from_str(&format!("bytes */{size}")).unwrap();
                assert_eq!(e.headers, vec![(header::CONTENT_RANGE, unsatisfied)]);
            }
        }
        let spec = std::str::from_utf8(range)
            .ok()
            .and_then(|r| r.strip_prefix("bytes="));
        if let Some(expected) = spec.and_then(|s| expected_range(s, size)) {
            let got = got
                .as_ref()
                .ok()
                .map(|r| r.expect("a single range is answered"));
            assert_eq!(got, expected, "{value:?} size {size}");
        }
    }

    // Content-Range with Content-Length.
    let mut headers = HeaderMap::new();
    if let Some(v) = content_range.and_then(|v| HeaderValue::from_bytes(v).ok()) {
        headers.insert(header::CONTENT_RANGE, v);
    }
    if let Some(v) = content_length.and_then(|v| HeaderValue::from_bytes(v).ok()) {
        headers.insert(header::CONTENT_LENGTH, v);
    }
    let got = content_range_of(&headers);
    let length = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    match &got {
        Ok(None) => assert!(!headers.contains_key(header::CONTENT_RANGE)),
        Ok(Some(start)) => {
            if let Some(length) = length {
                // The chunk's bytes all have u64 offsets.
                assert!(
                    length >= 1 && start.checked_add(length - 1).is_some(),
                    "{headers:?}"
                );
            }
        }
        Err(e) => assert!(e.status.is_client_error(), "{e:?}"),
    }
    // The plain form, judged in u128 so a 2^64-byte span cannot overflow the oracle.
    let plain = headers
        .get(header::CONTENT_RANGE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.strip_prefix("bytes ").unwrap_or(v))
        .and_then(|v| {
            let (span, total) = v.split_once('/').unwrap_or((v, "0"));
            number(total)?;
            let (a, b) = span.split_once('-')?;
            Some((number(a)??, number(b)??))
        });
    if let Some((a, b)) = plain {
        let span = u128::from(b) + 1 - u128::from(a.min(b));
        let accepted = a <= b && length.is_none_or(|l| u128::from(l) == span);
        // (A Content-Length that is not a number is ignored, as by the handler.)
        assert_eq!(got.ok(), accepted.then_some(Some(a)), "{headers:?}");
    }
});
