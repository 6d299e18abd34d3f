//! Helpers for HTTP-level tests of the OCI Distribution API: a registry under test, a raw
//! response type with header and error-body accessors, and builders for blobs and manifests.
//!
//! Tests normally start a fresh Trow per test. With `TROW_TEST_URL` set (for example
//! `http://127.0.0.1:5000`), they run against that registry instead, to check the tests' own
//! mechanics against another implementation; repository names are then made unique per test
//! (see [`Reg::repo`]) since the registry is shared.

use crate::{Topology, Trow};
use serde_json::{Value, json};
use std::sync::atomic::{AtomicU64, Ordering};

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const OCI_EMPTY: &str = "application/vnd.oci.empty.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
pub const DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
/// An `Accept` header listing every manifest media type.
pub const ACCEPT_ALL: &str = "application/vnd.oci.image.manifest.v1+json, \
application/vnd.oci.image.index.v1+json, \
application/vnd.docker.distribution.manifest.v2+json, \
application/vnd.docker.distribution.manifest.list.v2+json";

/// The registry a test talks to: a Trow it started, or the external `TROW_TEST_URL`.
pub struct Reg {
    /// `http://host:port`, without `/v2`.
    pub url: String,
    pub client: reqwest::Client,
    /// The Trow this test started; `None` when running against `TROW_TEST_URL`.
    pub trow: Option<Trow>,
    nonce: String,
}

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// A short string unique within this machine for a while: pid, time and a counter.
pub fn unique() -> String {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{:x}{:x}{n}", std::process::id(), t & 0xffff_ffff)
}

/// A reqwest client that never follows redirects (tests inspect `Location` themselves).
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .build()
        .expect("build reqwest client")
}

impl Reg {
    /// Starts a fresh Trow in `topology`, or uses `TROW_TEST_URL` when set.
    pub fn start(topology: Topology) -> Reg {
        match std::env::var("TROW_TEST_URL") {
            Ok(url) if !url.is_empty() => Reg {
                url: url.trim_end_matches('/').to_string(),
                client: client(),
                trow: None,
                nonce: unique(),
            },
            _ => Reg::with_trow(Trow::start(topology)),
        }
    }

    /// The registry of a Trow the test started itself (e.g. with extra flags).
    pub fn with_trow(trow: Trow) -> Reg {
        Reg {
            url: trow.url.clone(),
            client: client(),
            trow: Some(trow),
            nonce: String::new(),
        }
    }

    /// Another client of a registry already running at `url` (e.g. one a test's other task
    /// owns): repository names are used as given.
    pub fn with_url(url: &str) -> Reg {
        Reg {
            url: url.trim_end_matches('/').to_string(),
            client: client(),
            trow: None,
            nonce: String::new(),
        }
    }

    /// True when running against an external, shared registry rather than a fresh Trow.
    pub fn external(&self) -> bool {
        self.trow.is_none()
    }

    /// A repository name for this test: `base` itself on a fresh Trow, `base` with a unique
    /// suffix on its last component on a shared external registry.
    pub fn repo(&self, base: &str) -> String {
        if self.nonce.is_empty() {
            base.to_string()
        } else {
            format!("{base}-{}", self.nonce)
        }
    }

    /// `url` + `/v2/` + `path`.
    pub fn v2(&self, path: &str) -> String {
        format!("{}/v2/{}", self.url, path)
    }

    /// An absolute URL for a `Location` header value (which may be a path).
    pub fn abs(&self, location: &str) -> String {
        if location.starts_with("http://") || location.starts_with("https://") {
            location.to_string()
        } else {
            format!("{}{}", self.url, location)
        }
    }

    pub async fn get(&self, url: &str) -> Resp {
        send(self.client.get(url)).await
    }

    pub async fn head(&self, url: &str) -> Resp {
        send(self.client.head(url)).await
    }

    /// GET with an `Accept` of every manifest type, as real clients send for manifests.
    pub async fn get_m(&self, url: &str) -> Resp {
        send(self.client.get(url).header("Accept", ACCEPT_ALL)).await
    }

    /// HEAD with an `Accept` of every manifest type.
    pub async fn head_m(&self, url: &str) -> Resp {
        send(self.client.head(url).header("Accept", ACCEPT_ALL)).await
    }

    pub async fn delete(&self, url: &str) -> Resp {
        send(self.client.delete(url)).await
    }

    /// POST /v2/<repo>/blobs/uploads/ with no body: starts an upload session.
    pub async fn start_upload(&self, repo: &str) -> Resp {
        send(
            self.client
                .post(self.v2(&format!("{repo}/blobs/uploads/")))
                .header("Content-Length", "0"),
        )
        .await
    }

    /// Starts a session and returns its absolute location, asserting 202.
    pub async fn upload_location(&self, repo: &str) -> String {
        let r = self.start_upload(repo).await;
        r.assert_status(202);
        self.abs(&r.header("location").expect("Location on POST upload"))
    }

    /// Pushes `data` to `repo` with POST then PUT (the portable two-step upload), asserting 201;
    /// returns its sha256 digest.
    pub async fn push_blob(&self, repo: &str, data: &[u8]) -> String {
        let digest = crate::sha256_digest(data);
        let loc = self.upload_location(repo).await;
        let r = send(
            self.client
                .put(with_query(&loc, &format!("digest={digest}")))
                .header("Content-Type", "application/octet-stream")
                .body(data.to_vec()),
        )
        .await;
        r.assert_status(201);
        digest
    }

    /// PUT /v2/<repo>/manifests/<reference> with `media_type` as Content-Type.
    pub async fn put_manifest(
        &self,
        repo: &str,
        reference: &str,
        media_type: &str,
        body: &[u8],
    ) -> Resp {
        send(
            self.client
                .put(self.v2(&format!("{repo}/manifests/{reference}")))
                .header("Content-Type", media_type)
                .body(body.to_vec()),
        )
        .await
    }

    /// Like [`Reg::put_manifest`] but asserts 201 and returns the manifest's digest.
    pub async fn push_manifest(
        &self,
        repo: &str,
        reference: &str,
        media_type: &str,
        body: &[u8],
    ) -> String {
        let r = self.put_manifest(repo, reference, media_type, body).await;
        r.assert_status(201);
        crate::sha256_digest(body)
    }

    /// Pushes a config blob and one layer to `repo` and returns an OCI image manifest referencing
    /// them (not pushed). `seed` makes the content distinct.
    pub async fn image_manifest(&self, repo: &str, seed: &str) -> Value {
        let config = config_blob(seed);
        let layer = format!("layer bytes for {seed}").into_bytes();
        let cd = self.push_blob(repo, &config).await;
        let ld = self.push_blob(repo, &layer).await;
        oci_manifest(
            desc(OCI_CONFIG, &cd, config.len()),
            &[desc(OCI_LAYER, &ld, layer.len())],
        )
    }

    /// Pushes an image (blobs + manifest) under `reference`; returns the manifest digest and bytes.
    pub async fn push_image(&self, repo: &str, reference: &str, seed: &str) -> (String, Vec<u8>) {
        let m = self.image_manifest(repo, seed).await;
        let body = to_bytes(&m);
        let d = self
            .push_manifest(repo, reference, OCI_MANIFEST, &body)
            .await;
        (d, body)
    }

    /// Pushes the OCI empty config blob `{}` to `repo`; returns its descriptor.
    pub async fn push_empty_config(&self, repo: &str) -> Value {
        let d = self.push_blob(repo, b"{}").await;
        desc(OCI_EMPTY, &d, 2)
    }

    /// Pushes an artifact manifest with `subject` to `repo` by digest; returns (digest, size).
    /// `artifact_type` goes in the manifest's `artifactType`; when `None`, the config's media
    /// type is `config_type`.
    pub async fn push_referrer(
        &self,
        repo: &str,
        subject: &Value,
        artifact_type: Option<&str>,
        config_type: &str,
        annotations: Value,
    ) -> (String, usize) {
        let blob = format!("{{\"seed\":\"{}\"}}", unique()).into_bytes();
        let cd = self.push_blob(repo, &blob).await;
        let mut m = json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": desc(config_type, &cd, blob.len()),
            "layers": [desc(OCI_LAYER, &cd, blob.len())],
            "subject": subject,
            "annotations": annotations,
        });
        if let Some(at) = artifact_type {
            m["artifactType"] = json!(at);
        }
        let body = to_bytes(&m);
        let d = crate::sha256_digest(&body);
        let r = self.put_manifest(repo, &d, OCI_MANIFEST, &body).await;
        r.assert_status(201);
        (d, body.len())
    }
}

/// A response read to the end.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Vec<u8>,
    /// `METHOD url`, for assertion messages.
    pub what: String,
}

/// Sends `req`; returns the response and `METHOD url` for assertion messages.
async fn execute(req: reqwest::RequestBuilder) -> (reqwest::Response, String) {
    let (c, req) = req.build_split();
    let req = req.expect("build request");
    let what = format!("{} {}", req.method(), req.url());
    let r = c
        .execute(req)
        .await
        .unwrap_or_else(|e| panic!("{what}: {}", error_chain(&e)));
    (r, what)
}

/// Sends `req` and reads the whole response.
pub async fn send(req: reqwest::RequestBuilder) -> Resp {
    let (r, what) = execute(req).await;
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let body = r
        .bytes()
        .await
        .unwrap_or_else(|e| panic!("{what}: reading body: {e}"))
        .to_vec();
    Resp {
        status,
        headers,
        body,
        what,
    }
}

/// `e` and its sources, `: `-separated.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// Sends `req` and returns status and headers, discarding the body (tolerating a body that
/// cannot be read, for checks where only the status line matters).
pub async fn send_no_body(req: reqwest::RequestBuilder) -> Resp {
    let (r, what) = execute(req).await;
    Resp {
        status: r.status().as_u16(),
        headers: r.headers().clone(),
        body: Vec::new(),
        what,
    }
}

impl Resp {
    /// The header's value, if present and text.
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .map(|v| v.to_str().expect("header is text").to_string())
    }

    /// The header's value; panics with the response when absent.
    pub fn must_header(&self, name: &str) -> String {
        self.header(name)
            .unwrap_or_else(|| panic!("{}: no {name} header in {self}", self.what))
    }

    /// The body as text (lossy), for messages.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("{}: body is not JSON ({e}): {self}", self.what))
    }

    pub fn assert_status(&self, status: u16) -> &Self {
        assert_eq!(
            self.status, status,
            "{}: unexpected status: {self}",
            self.what
        );
        self
    }

    /// Asserts the header is present with exactly `value`.
    pub fn assert_header(&self, name: &str, value: &str) -> &Self {
        assert_eq!(
            self.header(name).as_deref(),
            Some(value),
            "{}: header {name}: {self}",
            self.what
        );
        self
    }

    /// The media type of Content-Type, without parameters.
    pub fn content_type(&self) -> Option<String> {
        self.header("content-type")
            .map(|c| c.split(';').next().unwrap_or("").trim().to_string())
    }

    /// Asserts an OCI error response: `status`, a JSON `Content-Type`, and a body
    /// `{"errors":[{"code":..,"message":..}]}` whose first error has `code`.
    pub fn assert_error(&self, status: u16, code: &str) -> &Self {
        self.assert_status(status);
        assert_eq!(
            self.content_type().as_deref(),
            Some("application/json"),
            "{}: error Content-Type: {self}",
            self.what
        );
        let codes = self.error_codes();
        assert_eq!(
            codes.first().map(String::as_str),
            Some(code),
            "{}: error code: {self}",
            self.what
        );
        self
    }

    /// Asserts `status` and an OCI error body whose code is one of `codes`.
    pub fn assert_error_in(&self, status: u16, codes: &[&str]) -> &Self {
        self.assert_status(status);
        let got = self.error_codes();
        assert!(
            got.first().is_some_and(|c| codes.contains(&c.as_str())),
            "{}: error code not in {codes:?}: {self}",
            self.what
        );
        self
    }

    /// The `code`s of an OCI error body; panics if the body is not one.
    pub fn error_codes(&self) -> Vec<String> {
        let v = self.json();
        let errs = v["errors"]
            .as_array()
            .unwrap_or_else(|| panic!("{}: no errors array: {self}", self.what));
        assert!(!errs.is_empty(), "{}: empty errors array", self.what);
        errs.iter()
            .map(|e| {
                assert!(
                    e.get("message").is_none_or(Value::is_string),
                    "{}: message must be a string: {self}",
                    self.what
                );
                e["code"]
                    .as_str()
                    .unwrap_or_else(|| panic!("{}: error without code: {self}", self.what))
                    .to_string()
            })
            .collect()
    }

    /// The path (and query) of the `Location` header, with any scheme and authority removed.
    pub fn location_path(&self) -> String {
        path_of(&self.must_header("location"))
    }

    /// `Content-Length` as a number.
    pub fn content_length(&self) -> u64 {
        self.must_header("content-length")
            .parse()
            .expect("numeric Content-Length")
    }
}

impl std::fmt::Display for Resp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "HTTP {} headers={:?} body={:?}",
            self.status,
            self.headers,
            {
                let t = self.text();
                if t.len() > 2000 {
                    format!("{}…", &t[..t.floor_char_boundary(2000)])
                } else {
                    t
                }
            }
        )
    }
}

/// The path and query of a URL or path.
pub fn path_of(url: &str) -> String {
    match url.split_once("://") {
        Some((_, rest)) => match rest.find('/') {
            Some(i) => rest[i..].to_string(),
            None => "/".to_string(),
        },
        None => url.to_string(),
    }
}

/// The path of a URL or path, without query.
pub fn path_only(url: &str) -> String {
    let p = path_of(url);
    p.split('?').next().unwrap_or("").to_string()
}

/// Appends `kv` to `url`'s query string.
pub fn with_query(url: &str, kv: &str) -> String {
    if url.contains('?') {
        format!("{url}&{kv}")
    } else {
        format!("{url}?{kv}")
    }
}

/// Parses a `Link: <url>; rel="next"` header, returning the URL.
pub fn parse_next_link(link: &str) -> String {
    let link = link.trim();
    let (url, rest) = link
        .strip_prefix('<')
        .and_then(|l| l.split_once('>'))
        .unwrap_or_else(|| panic!("Link header not <url>; ...: {link:?}"));
    let params: Vec<String> = rest
        .split(';')
        .map(|p| p.trim().replace(' ', ""))
        .filter(|p| !p.is_empty())
        .collect();
    assert!(
        params
            .iter()
            .any(|p| p == "rel=\"next\"" || p == "rel=next"),
        "Link header without rel=\"next\": {link:?}"
    );
    url.to_string()
}

/// The query parameters of a URL, percent-decoded.
pub fn query_params(url: &str) -> Vec<(String, String)> {
    let q = url.split_once('?').map(|(_, q)| q).unwrap_or("");
    q.split('&')
        .filter(|s| !s.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16)
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(if b[i] == b'+' { b' ' } else { b[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Percent-encodes a query value (everything but unreserved characters).
pub fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// `sha512:<hex>` of `data`.
pub fn sha512_digest(data: &[u8]) -> String {
    use sha2::{Digest, Sha512};
    format!("sha512:{}", hex::encode(Sha512::digest(data)))
}

/// Deterministic pseudo-random bytes (xorshift), for blobs larger than a literal.
pub fn bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// A descriptor `{mediaType, digest, size}`.
pub fn desc(media_type: &str, digest: &str, size: usize) -> Value {
    json!({"mediaType": media_type, "digest": digest, "size": size})
}

/// An image config blob distinct per `seed`.
pub fn config_blob(seed: &str) -> Vec<u8> {
    to_bytes(&json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {"Labels": {"seed": seed}},
        "rootfs": {"type": "layers", "diff_ids": []},
    }))
}

/// An OCI image manifest.
pub fn oci_manifest(config: Value, layers: &[Value]) -> Value {
    json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": config,
        "layers": layers,
    })
}

/// An OCI image index over `manifests` (descriptors, with platform added by the caller if any).
pub fn oci_index(manifests: &[Value]) -> Value {
    json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": manifests,
    })
}

/// Serialises `v` (compact).
pub fn to_bytes(v: &Value) -> Vec<u8> {
    serde_json::to_vec(v).expect("serialise JSON")
}

/// A response to a raw request: status, lower-cased header lines, and body text.
#[derive(Debug)]
pub struct RawResp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl RawResp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Sends a raw HTTP/1.1 request with exactly the given extra header lines (no `Accept` or other
/// defaults an HTTP client adds) and no body, over a fresh connection; for paths a client would
/// normalise (such as `/../`) and for requests without headers a client always sends.
pub async fn raw(base_url: &str, method: &str, path: &str, headers: &[(&str, &str)]) -> RawResp {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = base_url
        .split_once("://")
        .map(|(_, a)| a)
        .unwrap_or(base_url)
        .trim_end_matches('/');
    let mut s = tokio::net::TcpStream::connect(addr)
        .await
        .unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    if method != "GET" && method != "HEAD" {
        req.push_str("Content-Length: 0\r\n");
    }
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).await.expect("write request");
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.expect("read response");
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"));
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    RawResp {
        status,
        headers,
        body: body.to_string(),
    }
}

/// [`raw`] without extra headers; returns the status code and body.
pub async fn raw_request(base_url: &str, method: &str, path: &str) -> (u16, String) {
    let r = raw(base_url, method, path, &[]).await;
    (r.status, r.body)
}

/// The `errors[0].code` of a JSON error body given as text (chunked transfer framing tolerated).
pub fn error_code_of(body: &str) -> Option<String> {
    let start = body.find('{')?;
    let end = body.rfind('}')?;
    let v: Value = serde_json::from_str(&body[start..=end]).ok()?;
    v["errors"][0]["code"].as_str().map(str::to_string)
}
