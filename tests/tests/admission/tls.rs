//! HTTPS (`--tls CERT,KEY`), as the API server reaches the webhooks: the certificate served,
//! rotation the way the kubelet updates a mounted Secret (an atomic swap of the `..data`
//! symlink), connections open across the swap, and a bad pair refused at start-up.
//!
//! The client is rustls on one TCP connection with HTTP/1.1 written by hand, so "the same
//! connection" is certain, not a pool's choice.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use trow_tests::clients::LogsOnPanic;
use trow_tests::oci::client;
use trow_tests::{Flags, Topology, Trow};

use crate::support::{pod_create, spec, trow_command};

/// A server certificate for 127.0.0.1 and the CA that issued it.
struct Pki {
    ca: CertificateDer<'static>,
    cert_pem: String,
    key_pem: String,
}

fn issue(name: &str) -> Pki {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, format!("trow-tests CA {name}"));
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
    params
        .distinguished_name
        .push(DnType::CommonName, format!("trow {name}"));
    let cert = params.signed_by(&key, &issuer).unwrap();
    Pki {
        ca: ca.der().clone(),
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    }
}

/// Writes `pki` as the kubelet does: `dir/..<version>/tls.{crt,key}`, then `..data` swapped to
/// point at it with one rename; `dir/tls.crt` and `dir/tls.key` are symlinks through `..data`.
fn mount(dir: &Path, version: &str, pki: &Pki) {
    let versioned = dir.join(format!("..{version}"));
    std::fs::create_dir(&versioned).unwrap();
    std::fs::write(versioned.join("tls.crt"), &pki.cert_pem).unwrap();
    std::fs::write(versioned.join("tls.key"), &pki.key_pem).unwrap();
    let tmp = dir.join("..data_tmp");
    std::os::unix::fs::symlink(format!("..{version}"), &tmp).unwrap();
    std::fs::rename(&tmp, dir.join("..data")).unwrap();
    for f in ["tls.crt", "tls.key"] {
        let link = dir.join(f);
        if link.symlink_metadata().is_err() {
            std::os::unix::fs::symlink(format!("..data/{f}"), link).unwrap();
        }
    }
}

/// One HTTP/1.1 connection over TLS.
struct Conn(BufReader<TlsStream<TcpStream>>);

/// Connects to `addr` trusting only `cas`; the handshake's error as text.
async fn connect(addr: &str, cas: &[&CertificateDer<'static>]) -> Result<Conn, String> {
    let mut roots = rustls::RootCertStore::empty();
    for ca in cas {
        roots.add((*ca).clone()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let tcp = TcpStream::connect(addr)
        .await
        .unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    let name = ServerName::try_from("127.0.0.1").unwrap();
    let tls = TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .map_err(|e| e.to_string())?;
    Ok(Conn(BufReader::new(tls)))
}

impl Conn {
    /// Sends one request and reads its whole answer: status and body.
    async fn request(&mut self, method: &str, path: &str, body: &[u8]) -> (u16, Vec<u8>) {
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\n\r\n",
            body.len()
        );
        let io = self.0.get_mut();
        io.write_all(head.as_bytes()).await.expect("write request");
        io.write_all(body).await.expect("write body");
        io.flush().await.expect("flush");
        let line = self.line().await;
        let status = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("{method} {path}: status line {line:?}"));
        let (mut length, mut chunked) = (0usize, false);
        loop {
            let l = self.line().await;
            if l.is_empty() {
                break;
            }
            let (k, v) = l.split_once(':').expect("a header line");
            match k.trim().to_ascii_lowercase().as_str() {
                "content-length" => length = v.trim().parse().expect("a length"),
                "transfer-encoding" => chunked = v.to_ascii_lowercase().contains("chunked"),
                "connection" => assert!(!v.contains("close"), "{method} {path}: {l}"),
                _ => {}
            }
        }
        let mut out = Vec::new();
        if !chunked {
            out.resize(length, 0);
            self.0.read_exact(&mut out).await.expect("read body");
            return (status, out);
        }
        loop {
            let size = usize::from_str_radix(self.line().await.trim(), 16).expect("chunk size");
            let mut chunk = vec![0; size + 2];
            self.0.read_exact(&mut chunk).await.expect("read chunk");
            out.extend_from_slice(&chunk[..size]);
            if size == 0 {
                return (status, out);
            }
        }
    }

    async fn line(&mut self) -> String {
        let mut l = String::new();
        self.0.read_line(&mut l).await.expect("read a line");
        l.trim_end_matches(['\r', '\n']).to_string()
    }
}

/// `GET /v2/` on a new connection trusting only `ca`: its status, or the handshake's error.
async fn fresh_get(addr: &str, ca: &CertificateDer<'static>) -> Result<u16, String> {
    let mut c = connect(addr, &[ca]).await?;
    Ok(c.request("GET", "/v2/", b"").await.0)
}

pub async fn serves_and_rotates_its_certificate() {
    let tmp = tempfile::tempdir().unwrap();
    let secret = tmp.path().join("secret");
    std::fs::create_dir(&secret).unwrap();
    let (a, b) = (issue("A"), issue("B"));
    mount(&secret, "2025_01_01", &a);
    let files = format!(
        "{},{}",
        secret.join("tls.crt").display(),
        secret.join("tls.key").display()
    );
    let trow = Trow::start_with(Topology::OneProcess, Flags::gateway(&["--tls", &files]));
    let _logs = LogsOnPanic::trow(&trow);
    assert!(trow.url.starts_with("https://"), "{}", trow.url);
    let addr = trow.addr.clone();

    // Served with A; plain HTTP on the port gets no registry answer.
    assert_eq!(fresh_get(&addr, &a.ca).await, Ok(200));
    let e = fresh_get(&addr, &b.ca)
        .await
        .expect_err("B's CA must not accept A");
    assert!(
        e.contains("UnknownIssuer") || e.contains("invalid peer certificate"),
        "{e}"
    );
    let plain = client().get(format!("http://{addr}/v2/")).send().await;
    assert!(
        plain.is_err(),
        "plain HTTP got an HTTP answer on the TLS port: {plain:?}"
    );

    // A keep-alive connection, as the API server holds to its webhooks.
    let mut kept = connect(&addr, &[&a.ca]).await.expect("connect trusting A");
    assert_eq!(kept.request("GET", "/v2/", b"").await.0, 200);

    // The kubelet swaps the Secret's files: new handshakes get B within a few seconds.
    mount(&secret, "2025_02_01", &b);
    let swapped = Instant::now();
    loop {
        match fresh_get(&addr, &b.ca).await {
            Ok(200) => break,
            Ok(s) => panic!("GET /v2/ with B answered {s}"),
            Err(e) => assert!(
                swapped.elapsed() < Duration::from_secs(5),
                "B not served 5 s after the swap ({e}):\n{}",
                trow.main.log_text()
            ),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!("B served {:?} after the swap", swapped.elapsed());
    let e = fresh_get(&addr, &a.ca)
        .await
        .expect_err("A is no longer served");
    assert!(
        e.contains("UnknownIssuer") || e.contains("invalid peer certificate"),
        "{e}"
    );
    assert!(
        trow.main.log_text().contains("TLS certificate reloaded"),
        "{}",
        trow.main.log_text()
    );

    // The connection opened with A still works: a /v2/ and a webhook call on it.
    assert_eq!(kept.request("GET", "/v2/", b"").await.0, 200);
    let review = pod_create(spec(&[("app", "nginx:1.27")], &[], &[]), false);
    let (status, body) = kept
        .request(
            "POST",
            "/validate-image",
            &serde_json::to_vec(&review).unwrap(),
        )
        .await;
    let answer: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        answer["response"]["uid"], review["request"]["uid"],
        "{answer}"
    );
    assert_eq!(answer["response"]["allowed"], true, "{answer}");

    // A half-written rotation (B's certificate with another key) keeps B and says why.
    let c = issue("C");
    std::fs::write(secret.join("..2025_02_01/tls.key"), &c.key_pem).unwrap();
    let written = Instant::now();
    while !trow
        .main
        .log_text()
        .contains("new TLS certificate files do not load")
    {
        assert!(
            written.elapsed() < Duration::from_secs(5),
            "a mismatched pair not reported within 5 s:\n{}",
            trow.main.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(fresh_get(&addr, &b.ca).await, Ok(200));
    assert_eq!(kept.request("GET", "/v2/", b"").await.0, 200);
}

/// A pair that does not load stops Trow before it serves anything, saying which file.
pub fn a_bad_pair_stops_start_up() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (issue("A"), issue("B"));
    let write = |name: &str, text: &str| {
        let p = tmp.path().join(name);
        std::fs::write(&p, text).unwrap();
        p.display().to_string()
    };
    let (a_crt, b_key) = (write("a.crt", &a.cert_pem), write("b.key", &b.key_pem));
    let a_key = write("a.key", &a.key_pem);
    let missing = tmp.path().join("none.crt").display().to_string();
    let cases = [
        (format!("{a_crt},{b_key}"), "does not fit the certificate"),
        (format!("{missing},{a_key}"), "cannot read"),
        (format!("{a_key},{a_key}"), "no PEM certificate"),
    ];
    for (flag, says) in cases {
        let mut cmd = trow_command(&tmp.path().join("data"));
        cmd.args(["--tls", &flag]);
        let (status, stdout, stderr, _) = trow_tests::run_to_exit(cmd, Duration::from_secs(10));
        assert!(
            !status.success(),
            "trow started with --tls {flag}:\n{stdout}"
        );
        assert!(
            stderr.contains(says),
            "--tls {flag}: must say {says:?}:\n{stderr}"
        );
        assert!(!stdout.contains("OCI registry on"), "{stdout}");
    }
}
