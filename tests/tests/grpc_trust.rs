//! Trust between Trow's services (`--grpc-tls-*`, `--grpc-token-file`): real `trow` processes
//! in the split topology with mutual TLS or a shared token, driven through the gateway over
//! HTTP and probed directly with grpcurl and openssl, as an attacker on the pod network would.
//!
//! Each test owns one loopback address (127.0.0.221-224); certificates name it.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use trow_tests::oci::Reg;
use trow_tests::tools::Workdir;
use trow_tests::{Flags, Topology, Trow};

/// A CA and certificates it signs, as PEM files in a temp dir.
struct Pki {
    dir: tempfile::TempDir,
    params: rcgen::CertificateParams,
    key: rcgen::KeyPair,
}

impl Pki {
    /// A fresh CA; its certificate is `<dir>/ca.crt`.
    fn new(name: &str) -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key).unwrap();
        std::fs::write(dir.path().join("ca.crt"), cert.pem()).unwrap();
        Pki { dir, params, key }
    }

    fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.crt")
    }

    /// A certificate for `ip`, for servers and clients alike, with common name `cn`:
    /// `(cert, key)` written to `<dir>/<file>.crt` and `.key`.
    fn issue(&self, file: &str, cn: &str, ip: &str) -> (PathBuf, PathBuf) {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut p = rcgen::CertificateParams::new(vec![ip.to_string()]).unwrap();
        p.distinguished_name.push(rcgen::DnType::CommonName, cn);
        p.extended_key_usages = vec![
            rcgen::ExtendedKeyUsagePurpose::ServerAuth,
            rcgen::ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let issuer = rcgen::Issuer::from_params(&self.params, &self.key);
        let cert = p.signed_by(&key, &issuer).unwrap();
        let (c, k) = (
            self.dir.path().join(format!("{file}.crt")),
            self.dir.path().join(format!("{file}.key")),
        );
        std::fs::write(&k, key.serialize_pem()).unwrap();
        std::fs::write(&c, cert.pem()).unwrap();
        (c, k)
    }
}

fn s(p: &Path) -> String {
    p.display().to_string()
}

/// The `--grpc-tls-*` flags for a certificate of `pki`.
fn tls_flags(pki: &Pki, cert: &Path, key: &Path) -> Vec<String> {
    vec![
        "--grpc-tls-cert".into(),
        s(cert),
        "--grpc-tls-key".into(),
        s(key),
        "--grpc-tls-ca".into(),
        s(&pki.ca()),
    ]
}

fn refs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// grpcurl with `args`: whether it succeeded, and stdout then stderr.
fn grpcurl(w: &Workdir, args: &[&str]) -> (bool, String) {
    let bounded = ["-max-time", "20"].iter().chain(args);
    let out = w.cmd("grpcurl", bounded).output().expect("run grpcurl");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// Pushes an image through the gateway and pulls its manifest and blobs back.
async fn push_and_pull(reg: &Reg, repo: &str) {
    let (digest, body) = reg.push_image(repo, "1.0", repo).await;
    let r = reg.get_m(&reg.v2(&format!("{repo}/manifests/1.0"))).await;
    r.assert_status(200);
    assert_eq!(r.text().as_bytes(), &body[..], "the manifest pulled back");
    let m: Value = serde_json::from_slice(&body).unwrap();
    for d in m["layers"].as_array().unwrap().iter().chain([&m["config"]]) {
        let d = d["digest"].as_str().unwrap();
        reg.get(&reg.v2(&format!("{repo}/blobs/{d}")))
            .await
            .assert_status(200);
    }
    reg.get_m(&reg.v2(&format!("{repo}/manifests/{digest}")))
        .await
        .assert_status(200);
}

/// A pod CREATE review, as the API server sends it.
fn pod_review() -> Value {
    json!({
        "kind": "AdmissionReview",
        "apiVersion": "admission.k8s.io/v1",
        "request": {
            "uid": "trust-1",
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "operation": "CREATE",
            "namespace": "team",
            "userInfo": {"username": "kubernetes-admin"},
            "object": {
                "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web"},
                "spec": {"containers": [{"name": "c", "image": "nginx"}]}
            }
        }
    })
}

/// Split topology with storage, a proxy and admission, all on mutual TLS: the gateway pushes,
/// pulls, reads through the proxy (which reads storage) and asks admission; grpcurl reaches
/// storage only with a certificate the CA signed.
#[tokio::test(flavor = "multi_thread")]
async fn mutual_tls_split() {
    const IP: &str = "127.0.0.221";
    let pki = Pki::new("Trow test CA");
    let (cert, key) = pki.issue("trow", "trow-services", IP);
    let config = pki.dir.path().join("config.yml");
    std::fs::write(&config, "registry_proxies:\n  offline: true\n").unwrap();
    let grpc = tls_flags(&pki, &cert, &key);
    let flags = Flags::config(&config)
        .with_admission(&[])
        .with_grpc(&refs(&grpc))
        .on_ip(IP);
    let trow = Trow::start_with(Topology::Split, flags);
    let _logs = trow_tests::clients::LogsOnPanic::trow(&trow);
    let storage = trow.storage_addr.clone();
    assert!(storage.starts_with(IP), "{storage}");
    let reg = Reg::with_trow(trow);

    // gateway → storage
    push_and_pull(&reg, "team/app").await;
    // gateway → proxy → storage: offline, nothing cached, so storage's answer is a 404 (a
    // refused connection anywhere on the way would be a 503).
    reg.get_m(&reg.v2("f/docker.io/library/nginx/manifests/1.0"))
        .await
        .assert_error(404, "MANIFEST_UNKNOWN");
    // gateway → admission
    let r = oci_post(&reg, "/validate-image", &pod_review()).await;
    assert_eq!(r["response"]["uid"], "trust-1", "{r}");
    assert_eq!(r["response"]["allowed"], true, "{r}");

    let w = Workdir::new();
    // Plain text, and TLS without a client certificate: refused at the handshake.
    let (ok, out) = grpcurl(&w, &["-plaintext", &storage, "list"]);
    assert!(!ok, "plain text was served:\n{out}");
    let ca = s(&pki.ca());
    let (ok, out) = grpcurl(&w, &["-cacert", &ca, &storage, "list"]);
    assert!(
        !ok && out.contains("certificate required"),
        "a client without a certificate was served:\n{out}"
    );
    // A certificate from another CA, for the right address: refused.
    let other = Pki::new("Another CA");
    let (oc, ok_) = other.issue("intruder", "intruder", IP);
    let (ok, out) = grpcurl(
        &w,
        &[
            "-cacert",
            &ca,
            "-cert",
            &s(&oc),
            "-key",
            &s(&ok_),
            &storage,
            "list",
        ],
    );
    assert!(
        !ok && out.contains("tls:"),
        "a certificate from another CA was served:\n{out}"
    );
    // A client that trusts another CA refuses storage's certificate too.
    let (ok, out) = grpcurl(
        &w,
        &[
            "-cacert",
            &s(&other.ca()),
            "-cert",
            &s(&cert),
            "-key",
            &s(&key),
            &storage,
            "list",
        ],
    );
    assert!(
        !ok && out.contains("certificate signed by unknown authority"),
        "storage's certificate passed another CA:\n{out}"
    );
    // The right certificate: the service, reflection and health answer.
    let mtls = ["-cacert", &ca, "-cert", &s(&cert), "-key", &s(&key)];
    let (ok, out) = grpcurl(&w, &[&mtls[..], &[&storage, "list"]].concat());
    assert!(ok && out.contains("trow.storage.v1.Storage"), "{out}");
    let (ok, out) = grpcurl(
        &w,
        &[&mtls[..], &[&storage, "grpc.health.v1.Health/Check"]].concat(),
    );
    assert!(ok && out.contains("SERVING"), "{out}");

    // `trow gc` is a client too: https:// with the certificate, and a plain URL is refused
    // before anything is sent.
    let gc = |url: &str, extra: &[String]| {
        let out = Command::new(trow_tests::trow_bin())
            .args(["gc", "--dry-run", "--storage", url])
            .args(extra)
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    };
    let (ok, out) = gc(&format!("https://{storage}"), &grpc);
    assert!(ok && out.contains("gc: "), "{out}");
    let (ok, out) = gc(&format!("http://{storage}"), &grpc);
    assert!(!ok && out.contains("https://"), "{out}");
    let (ok, out) = gc(&format!("https://{storage}"), &[]);
    assert!(!ok && out.contains("--grpc-tls-cert"), "{out}");
}

/// POSTs `review` to the gateway's webhook `path`; the AdmissionReview it answers.
async fn oci_post(reg: &Reg, path: &str, review: &Value) -> Value {
    let r = trow_tests::oci::send(
        trow_tests::oci::client()
            .post(format!("{}{path}", reg.url))
            .header("content-type", "application/json")
            .body(review.to_string()),
    )
    .await;
    r.assert_status(200);
    r.json()
}

fn write_token(dir: &Path) -> (PathBuf, String) {
    let token = format!("test-token-{}", trow_tests::oci::unique());
    let path = dir.join("grpc.token");
    std::fs::write(&path, format!("{token}\n")).unwrap();
    (path, token)
}

/// What grpcurl gets from a service that needs the token: refused without it (the service and
/// reflection alike), served with it; health open either way.
fn token_is_required(w: &Workdir, addr: &str, token: &str, service: &str) {
    let (ok, out) = grpcurl(w, &["-plaintext", addr, "list"]);
    assert!(!ok && out.contains("Unauthenticated"), "{out}");
    let (ok, out) = grpcurl(
        w,
        &[
            "-plaintext",
            "-H",
            "authorization: Bearer wrong-token-0123456789",
            addr,
            "list",
        ],
    );
    assert!(!ok && out.contains("Unauthenticated"), "{out}");
    let bearer = format!("authorization: Bearer {token}");
    let (ok, out) = grpcurl(w, &["-plaintext", "-H", &bearer, addr, "list"]);
    assert!(ok && out.contains(service), "{out}");
    // Health without the token (reflection, which grpcurl needs to know the method, with it).
    let (ok, out) = grpcurl(
        w,
        &[
            "-plaintext",
            "-reflect-header",
            &bearer,
            addr,
            "grpc.health.v1.Health/Check",
        ],
    );
    assert!(
        ok && out.contains("SERVING"),
        "health must stay open:\n{out}"
    );
    // A call of the service itself, with its descriptors from a token-bearing reflection
    // request: refused without the token.
    let (ok, out) = grpcurl(
        w,
        &[
            "-plaintext",
            "-reflect-header",
            &bearer,
            "-d",
            "{}",
            addr,
            &format!("{service}/StatBlob"),
        ],
    );
    assert!(!ok && out.contains("Unauthenticated"), "{out}");
}

/// A health check as the kubelet's gRPC probe makes it: no token, no reflection.
async fn health_without_anything(addr: &str) {
    use tonic_health::pb::health_check_response::ServingStatus;
    let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut c = tonic_health::pb::health_client::HealthClient::new(channel);
    let r = c
        .check(tonic_health::pb::HealthCheckRequest {
            service: "trow.storage.v1.Storage".into(),
        })
        .await
        .expect("health without a token");
    assert_eq!(r.into_inner().status, ServingStatus::Serving as i32);
}

/// Split topology with a shared token: the gateway's calls carry it, direct calls without it
/// are refused, health stays open.
#[tokio::test(flavor = "multi_thread")]
async fn token_split() {
    const IP: &str = "127.0.0.222";
    let tmp = tempfile::tempdir().unwrap();
    let (path, token) = write_token(tmp.path());
    let flags = Flags::default()
        .with_grpc(&["--grpc-token-file", &s(&path)])
        .on_ip(IP);
    let trow = Trow::start_with(Topology::Split, flags);
    let _logs = trow_tests::clients::LogsOnPanic::trow(&trow);
    let storage = trow.storage_addr.clone();
    for (_, p) in trow.processes() {
        assert!(!p.log_text().contains(&token), "a log shows the token");
    }
    let reg = Reg::with_trow(trow);
    push_and_pull(&reg, "team/app").await;
    token_is_required(&Workdir::new(), &storage, &token, "trow.storage.v1.Storage");
    health_without_anything(&storage).await;
}

/// One process with a token: the gateway reaches its services through in-memory pipes with no
/// set-up, while the TCP listener for tools requires the token.
#[tokio::test(flavor = "multi_thread")]
async fn token_one_process() {
    const IP: &str = "127.0.0.223";
    let tmp = tempfile::tempdir().unwrap();
    let (path, token) = write_token(tmp.path());
    let flags = Flags::default()
        .with_grpc(&["--grpc-token-file", &s(&path)])
        .on_ip(IP);
    let trow = Trow::start_with(Topology::OneProcess, flags);
    let _logs = trow_tests::clients::LogsOnPanic::trow(&trow);
    let storage = trow.storage_addr.clone();
    let reg = Reg::with_trow(trow);
    push_and_pull(&reg, "team/app").await;
    token_is_required(&Workdir::new(), &storage, &token, "trow.storage.v1.Storage");
    health_without_anything(&storage).await;
}

/// The common name of the certificate a TLS server at `addr` presents, as openssl sees it on a
/// new connection (with a client certificate, which the server requires).
fn presented_cn(addr: &str, pki: &Pki, cert: &Path, key: &Path) -> String {
    let out = Command::new("openssl")
        .args(["s_client", "-connect", addr, "-CAfile"])
        .arg(pki.ca())
        .arg("-cert")
        .arg(cert)
        .arg("-key")
        .arg(key)
        .args(["-alpn", "h2", "-verify_return_error"])
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run openssl s_client");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let err = String::from_utf8_lossy(&out.stderr);
    text.lines()
        .find_map(|l| l.trim().strip_prefix("subject="))
        .and_then(|subject| subject.rsplit("CN").next())
        .map(|cn| cn.trim_start_matches([' ', '=']).trim().to_string())
        .unwrap_or_else(|| panic!("no subject from openssl s_client {addr}:\n{text}{err}"))
}

/// New certificate files (written in place, key first, as a mounted Secret may change) are
/// presented on new connections within a few seconds, and the services go on talking.
#[tokio::test(flavor = "multi_thread")]
async fn certificates_are_reloaded() {
    const IP: &str = "127.0.0.224";
    let pki = Pki::new("Trow test CA");
    let (cert, key) = pki.issue("trow", "trow-before", IP);
    let grpc = tls_flags(&pki, &cert, &key);
    let flags = Flags::default().with_grpc(&refs(&grpc)).on_ip(IP);
    let trow = Trow::start_with(Topology::Split, flags);
    let _logs = trow_tests::clients::LogsOnPanic::trow(&trow);
    let storage = trow.storage_addr.clone();
    let reg = Reg::with_trow(trow);
    push_and_pull(&reg, "team/before").await;
    assert_eq!(presented_cn(&storage, &pki, &cert, &key), "trow-before");

    let (new_cert, new_key) = pki.issue("next", "trow-after", IP);
    std::fs::copy(&new_key, &key).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    std::fs::copy(&new_cert, &cert).unwrap();
    let start = Instant::now();
    loop {
        let cn = presented_cn(&storage, &pki, &cert, &key);
        if cn == "trow-after" {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "still presenting {cn} 15 s after the files changed"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // The gateway reloaded its client certificate too: new pushes go through.
    push_and_pull(&reg, "team/after").await;
}
