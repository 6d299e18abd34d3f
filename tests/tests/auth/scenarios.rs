//! The scenarios of `tests/auth.rs`, each run in both topologies.

use base64::Engine;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use trow_tests::clients::{Containerd, LogsOnPanic, Podman, describe, output, run, skopeo};
use trow_tests::oci::{Reg, Resp, client, send, unique};
use trow_tests::tools::Workdir;
use trow_tests::{Flags, Proc, Topology, Trow, addr_prefix, images, wait_for_line};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;
const B64URL: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// A Trow with two users, `alice` (`--user`, her password from a `file://`) and `bob` (from an
/// htpasswd file, bcrypt), a token key file, and every process logging at debug level, so that
/// the secrets check covers as much log as Trow can write.
pub struct Setup {
    pub trow: Trow,
    pub alice: String,
    pub bob: String,
    pub key_file: PathBuf,
    /// Logs of extra gateways a scenario started, for the secrets check.
    pub extra_logs: Vec<PathBuf>,
    /// Tokens issued during the scenario, for the secrets check.
    pub tokens: Vec<String>,
    pub dir: tempfile::TempDir,
}

impl Setup {
    pub fn start(topology: Topology, extra: &[&str]) -> Setup {
        Setup::start_with_config(topology, extra, None)
    }

    /// [`Setup::start`] with `config` (YAML) as the `--config-file`.
    pub fn start_with_config(topology: Topology, extra: &[&str], config: Option<&str>) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let alice = format!("alice-pw-{}", unique());
        let bob = format!("bob-pw-{}", unique());
        let alice_file = dir.path().join("alice.pw");
        std::fs::write(&alice_file, format!("{alice}\n")).unwrap();
        let htpasswd = dir.path().join("htpasswd");
        let hash = bcrypt::hash(&bob, 4).unwrap();
        std::fs::write(&htpasswd, format!("# the team\nbob:{hash}\n")).unwrap();
        let key_file = dir.path().join("token.key");
        std::fs::write(&key_file, format!("key-{}-{}", unique(), "k".repeat(40))).unwrap();
        let mut args = vec![
            "--user".to_string(),
            "alice".into(),
            "--password".into(),
            format!("file://{}", alice_file.display()),
            "--htpasswd".into(),
            htpasswd.display().to_string(),
            "--token-key-file".into(),
            key_file.display().to_string(),
        ];
        args.extend(extra.iter().map(|a| a.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut flags = Flags::gateway(&args).with_env("RUST_LOG", "debug");
        if let Some(yaml) = config {
            let path = dir.path().join("config.yaml");
            std::fs::write(&path, yaml).unwrap();
            flags.config_file = Some(path);
        }
        let trow = Trow::start_with(topology, flags);
        Setup {
            trow,
            alice,
            bob,
            key_file,
            extra_logs: Vec::new(),
            tokens: Vec::new(),
            dir,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.trow.url)
    }

    /// `Authorization: Basic` for `user:password`.
    pub fn basic(user: &str, password: &str) -> String {
        format!("Basic {}", B64.encode(format!("{user}:{password}")))
    }

    /// A token from `GET /v2/token` (alice's, or anonymous with `basic` None) for `scopes`.
    pub async fn token(&mut self, basic: Option<&str>, scopes: &[&str]) -> Value {
        let q: Vec<String> = scopes.iter().map(|s| format!("scope={s}")).collect();
        let mut req = client().get(self.url(&format!("/v2/token?service=trow&{}", q.join("&"))));
        if let Some(b) = basic {
            req = req.header("authorization", b);
        }
        let r = send(req).await;
        r.assert_status(200);
        let v = r.json();
        let token = v["token"].as_str().expect("token").to_string();
        assert_eq!(v["access_token"], token.as_str(), "{r}");
        self.tokens.push(token);
        v
    }

    /// Every process's log must contain none of the passwords, their Basic encodings, the
    /// tokens issued, nor the token key.
    pub fn assert_no_secrets(&self) {
        let key = std::fs::read_to_string(&self.key_file).unwrap();
        let mut secrets = vec![
            self.alice.clone(),
            self.bob.clone(),
            B64.encode(format!("alice:{}", self.alice)),
            B64.encode(format!("bob:{}", self.bob)),
            key,
        ];
        // A token's signature part is what makes it a credential.
        secrets.extend(
            self.tokens
                .iter()
                .map(|t| t.rsplit('.').next().unwrap().to_string()),
        );
        let mut logs: Vec<PathBuf> = self
            .trow
            .processes()
            .iter()
            .map(|(_, p)| p.log.clone())
            .collect();
        logs.extend(self.extra_logs.iter().cloned());
        let mut checked = 0;
        for log in &logs {
            let text = std::fs::read_to_string(log).unwrap();
            checked += text.len();
            for s in &secrets {
                assert!(
                    !text.contains(s.as_str()),
                    "{} contains a secret ({}...)",
                    log.display(),
                    &s[..6]
                );
            }
        }
        // The check means something only if the processes logged.
        assert!(checked > 1000, "only {checked} bytes of log");
    }
}

/// The challenge a request to `url` gets: `Bearer realm=...,service="trow"` plus `rest`.
pub fn challenge(t: &Trow, rest: &str) -> String {
    format!("Bearer realm=\"{}/v2/token\",service=\"trow\"{rest}", t.url)
}

fn assert_refused(r: &Resp, challenge: &str) {
    r.assert_error(401, "UNAUTHORIZED");
    assert_eq!(r.must_header("www-authenticate"), challenge, "{r}");
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A JWT in Trow's shape for `access`, signed with HMAC-SHA256 under `key`: written here, not
/// by Trow, so a test can sign with the right key or another one.
fn jwt(key: &[u8], sub: &str, exp: u64, access: Value) -> String {
    let header = B64URL.encode(r#"{"alg":"HS256","typ":"JWT"}"#);
    let claims = json!({
        "iss": "trow", "sub": sub, "aud": "trow", "exp": exp, "nbf": now(), "iat": now(),
        "jti": unique(), "access": access,
    });
    let msg = format!("{header}.{}", B64URL.encode(claims.to_string()));
    let k = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key);
    let sig = B64URL.encode(ring::hmac::sign(&k, msg.as_bytes()).as_ref());
    format!("{msg}.{sig}")
}

/// The claims of a token (not verified: what Trow wrote in it).
pub fn claims(token: &str) -> Value {
    let part = token.split('.').nth(1).expect("a JWT");
    serde_json::from_slice(&B64URL.decode(part).unwrap()).unwrap()
}

/// Starts another `trow gateway` on this Trow's storage, with alice and the token key in
/// `key_file`; returns it and its URL once it answers.
fn another_gateway(s: &mut Setup, key_file: &Path) -> (Proc, String) {
    let mut cmd = Command::new(trow_tests::trow_bin());
    cmd.args(["gateway", "--bind", "127.0.0.1:0", "--storage"])
        .arg(format!("http://{}", s.trow.storage_addr))
        .args(["--user", "alice", "--password", s.alice.as_str()])
        .arg("--token-key-file")
        .arg(key_file)
        .env("RUST_LOG", "debug");
    let log = s.dir.path().join(format!("gateway-{}.log", unique()));
    s.extra_logs.push(log.clone());
    let mut p = Proc::spawn(cmd, log);
    let url = addr_prefix(&wait_for_line(&mut p, "trow gateway: OCI registry on "));
    trow_tests::wait_http_status(&format!("{url}/v2/"), "401", &mut [&mut p]);
    (p, url)
}

/// podman, skopeo, oras and crane log in (alice from `--password file://`, bob from htpasswd)
/// and push and pull; without credentials or with a wrong password they are refused.
pub async fn clients_log_in_and_push(topology: Topology) {
    let s = Setup::start(topology, &[]);
    let t = &s.trow;
    let _logs = LogsOnPanic::trow(t);
    let addr = t.addr.as_str();

    // The version check challenges; a push without credentials names its scope.
    assert_refused(&send(client().get(s.url("/v2/"))).await, &challenge(t, ""));
    let r = send(client().post(s.url("/v2/auth/anon/blobs/uploads/"))).await;
    assert_refused(
        &r,
        &challenge(t, ",scope=\"repository:auth/anon:pull,push\""),
    );
    let r = send(client().delete(s.url("/v2/auth/anon/manifests/v1"))).await;
    assert_refused(&r, &challenge(t, ",scope=\"repository:auth/anon:delete\""));
    let r = send(client().get(s.url("/v2/_catalog"))).await;
    assert_refused(&r, &challenge(t, ",scope=\"registry:catalog:*\""));
    // A wrong password, at the token endpoint and as Basic on a route.
    let wrong = Setup::basic("alice", &format!("{}x", s.alice));
    let r = send(
        client()
            .get(s.url("/v2/token?scope=repository:a:pull"))
            .header("authorization", &wrong),
    )
    .await;
    r.assert_error(401, "UNAUTHORIZED");
    let r = send(client().get(s.url("/v2/")).header("authorization", &wrong)).await;
    assert_refused(&r, &challenge(t, ""));
    let r = send(
        client()
            .get(s.url("/v2/"))
            .header("authorization", Setup::basic("bob", &s.bob)),
    )
    .await;
    r.assert_status(200);

    // podman: a wrong password is refused at login; then login, push, pull back.
    let tmp = tempfile::Builder::new()
        .prefix(&format!("trow-auth-{}", unique()))
        .rand_bytes(0)
        .tempdir()
        .unwrap();
    let img = images::build_image(&tmp.path().join("src"), "podman", "amd64");
    let p = Podman::new();
    let authfile = p.path("auth.json");
    let authfile = authfile.to_str().unwrap();
    let mut cmd = p.cmd([
        "login",
        "--tls-verify=false",
        "--authfile",
        authfile,
        "-u",
        "alice",
        "-p",
        "wrong",
        addr,
    ]);
    let out = output(&mut cmd);
    assert!(!out.status.success(), "{}", describe(&cmd, &out));
    p.run([
        "login",
        "--tls-verify=false",
        "--authfile",
        authfile,
        "-u",
        "alice",
        "-p",
        s.alice.as_str(),
        addr,
    ]);
    let id = p.run(["pull", &img.oci_ref()]);
    let id = id.lines().last().unwrap().trim().to_string();
    let reference = format!("{addr}/auth/podman:v1");
    p.run(["tag", &id, &reference]);
    p.run([
        "push",
        "--tls-verify=false",
        "--authfile",
        authfile,
        &reference,
    ]);
    p.run(["rmi", &reference]);
    p.run([
        "pull",
        "--tls-verify=false",
        "--authfile",
        authfile,
        &reference,
    ]);

    // skopeo: bob's htpasswd credentials on the command line, then `skopeo login`; without
    // credentials a pull is refused (anonymous pull is off).
    let src = tmp.path().join("skopeo-src");
    let simg = images::build_image(&src, "s", "amd64");
    run(skopeo(["copy", "--dest-tls-verify=false", "--dest-creds"])
        .arg(format!("bob:{}", s.bob))
        .arg(simg.oci_ref())
        .arg(format!("docker://{addr}/auth/skopeo:v1")));
    let sauth = tmp.path().join("skopeo-auth.json");
    run(skopeo([
        "login",
        "--tls-verify=false",
        "-u",
        "bob",
        "-p",
        s.bob.as_str(),
        addr,
    ])
    .arg("--authfile")
    .arg(&sauth));
    let raw = run(
        skopeo(["inspect", "--raw", "--tls-verify=false", "--authfile"])
            .arg(&sauth)
            .arg(format!("docker://{addr}/auth/skopeo:v1")),
    );
    assert_eq!(
        raw.as_bytes(),
        simg.manifest_bytes(),
        "skopeo pulled another manifest"
    );
    let mut cmd = skopeo(["inspect", "--raw", "--tls-verify=false", "--no-creds"]);
    cmd.arg(format!("docker://{addr}/auth/skopeo:v1"));
    let out = output(&mut cmd);
    assert!(!out.status.success(), "{}", describe(&cmd, &out));
    let err = String::from_utf8_lossy(&out.stderr).to_lowercase();
    assert!(
        err.contains("unauthorized") || err.contains("authentication required"),
        "{err}"
    );

    // oras: login, push, fetch.
    let w = Workdir::new();
    w.write("readme.txt", b"hello from an authenticated push\n");
    w.run(
        "oras",
        [
            "login",
            "--plain-http",
            "-u",
            "alice",
            "-p",
            s.alice.as_str(),
            addr,
        ],
    );
    let oras_ref = format!("{addr}/auth/oras:v1");
    w.run(
        "oras",
        ["push", "--plain-http", &oras_ref, "readme.txt:text/plain"],
    );
    w.run("oras", ["manifest", "fetch", "--plain-http", &oras_ref]);

    // crane: login, then pull what skopeo pushed.
    let c = Workdir::new();
    c.run(
        "crane",
        ["auth", "login", addr, "-u", "alice", "-p", s.alice.as_str()],
    );
    let manifest = c.run(
        "crane",
        ["--insecure", "manifest", &format!("{addr}/auth/skopeo:v1")],
    );
    assert_eq!(manifest.as_bytes(), simg.manifest_bytes());
    c.run(
        "crane",
        [
            "--insecure",
            "pull",
            &format!("{addr}/auth/podman:v1"),
            "image.tar",
        ],
    );
    // ...and crane without login is refused.
    let anon = Workdir::new();
    let mut cmd = anon.cmd(
        "crane",
        ["--insecure", "manifest", &format!("{addr}/auth/skopeo:v1")],
    );
    let out = output(&mut cmd);
    assert!(!out.status.success(), "{}", describe(&cmd, &out));

    // containerd (ctr with credentials, as the CRI passes a node's registry credentials).
    // Without credentials, refused.
    let ctd = Containerd::start();
    let image = format!("{addr}/auth/skopeo:v1");
    let user = format!("alice:{}", s.alice);
    ctd.run(["images", "pull", "--plain-http", "--user", &user, &image]);
    assert_eq!(ctd.image(&image).digest, simg.manifest_digest);
    let mut cmd = ctd.ctr([
        "images",
        "pull",
        "--plain-http",
        &format!("{addr}/auth/podman:v1"),
    ]);
    let out = output(&mut cmd);
    assert!(!out.status.success(), "{}", describe(&cmd, &out));

    // A refused HEAD carries the challenge and no body.
    let r = send(client().head(s.url("/v2/auth/skopeo/manifests/v1"))).await;
    r.assert_status(401);
    assert!(r.body.is_empty(), "{r}");
    assert_eq!(
        r.must_header("www-authenticate"),
        challenge(t, ",scope=\"repository:auth/skopeo:pull\"")
    );

    s.assert_no_secrets();
}

/// Tokens: what the endpoint issues; a token used for more than it grants, for another
/// repository, after it expired, or signed with another key, is refused; one signed with the
/// shared key is accepted by another gateway replica, and not by one with another key.
pub async fn tokens_are_checked(topology: Topology) {
    let mut s = Setup::start(topology, &["--token-lifetime", "3s"]);
    let _logs = LogsOnPanic::trow(&s.trow);
    let alice = Setup::basic("alice", &s.alice);

    let v = s.token(Some(&alice), &["repository:auth/tok:pull"]).await;
    assert_eq!(v["expires_in"], 3, "{v}");
    assert!(
        v["issued_at"].as_str().is_some_and(|t| t.ends_with('Z')),
        "{v}"
    );
    let token = v["token"].as_str().unwrap().to_string();
    let c = claims(&token);
    assert_eq!(c["sub"], "alice");
    assert_eq!(c["aud"], "trow");
    assert_eq!(
        c["access"],
        json!([{"type": "repository", "name": "auth/tok", "actions": ["pull"]}])
    );
    let bearer = format!("Bearer {token}");
    let tags = s.url("/v2/auth/tok/tags/list");
    // Granted: the request passes authentication (the repository does not exist).
    let r = send(client().get(&tags).header("authorization", &bearer)).await;
    r.assert_error(404, "NAME_UNKNOWN");
    let r = send(client().get(s.url("/v2/")).header("authorization", &bearer)).await;
    r.assert_status(200);
    // Not granted: a push to it, or a pull of another repository.
    let r = send(
        client()
            .post(s.url("/v2/auth/tok/blobs/uploads/"))
            .header("authorization", &bearer),
    )
    .await;
    assert_refused(
        &r,
        &challenge(
            &s.trow,
            ",scope=\"repository:auth/tok:pull,push\",error=\"insufficient_scope\"",
        ),
    );
    let r = send(
        client()
            .get(s.url("/v2/auth/other/tags/list"))
            .header("authorization", &bearer),
    )
    .await;
    r.assert_error(401, "UNAUTHORIZED");

    // Tokens written here: with the key file's key they are good, with another key not.
    let key = std::fs::read(&s.key_file).unwrap();
    let access = json!([{"type": "repository", "name": "auth/tok", "actions": ["pull", "push"]}]);
    let good = jwt(&key, "alice", now() + 60, access.clone());
    let forged = jwt(
        b"another-key-0123456789abcdef0123456789",
        "alice",
        now() + 60,
        access.clone(),
    );
    s.tokens.push(good.clone());
    let post = |t: &str| {
        client()
            .post(s.url("/v2/auth/tok/blobs/uploads/"))
            .header("authorization", format!("Bearer {t}"))
    };
    send(post(&good)).await.assert_status(202);
    // The gateway keeps tokens it verified: the same claims with good's signature, or good's
    // claims with its signature altered, are still refused after good was accepted.
    let parts: Vec<&str> = good.split('.').collect();
    let mut wider = claims(&good);
    wider["access"][0]["actions"] = json!(["pull", "push", "delete"]);
    let wider = format!(
        "{}.{}.{}",
        parts[0],
        B64URL.encode(wider.to_string()),
        parts[2]
    );
    let mut signature = B64URL.decode(parts[2]).unwrap();
    signature[0] ^= 1;
    let resigned = format!("{}.{}.{}", parts[0], parts[1], B64URL.encode(&signature));
    for altered in [&wider, &resigned] {
        let r = send(
            client()
                .delete(s.url("/v2/auth/tok/manifests/latest"))
                .header("authorization", format!("Bearer {altered}")),
        )
        .await;
        r.assert_error(401, "UNAUTHORIZED");
        assert!(
            r.must_header("www-authenticate")
                .contains("error=\"invalid_token\""),
            "{r}"
        );
        send(post(altered)).await.assert_error(401, "UNAUTHORIZED");
    }
    send(post(&good)).await.assert_status(202);
    let r = send(post(&forged)).await;
    assert_refused(
        &r,
        &challenge(
            &s.trow,
            ",scope=\"repository:auth/tok:pull,push\",error=\"invalid_token\"",
        ),
    );
    let expired = jwt(&key, "alice", now() - 1, access);
    send(post(&expired)).await.assert_error(401, "UNAUTHORIZED");

    // Basic on a route works as a login: right password yes, wrong no.
    let r = send(
        client()
            .post(s.url("/v2/auth/tok/blobs/uploads/"))
            .header("authorization", &alice),
    )
    .await;
    r.assert_status(202);
    // No credentials at the token endpoint, anonymous pull off: refused.
    let r = send(client().get(s.url("/v2/token?scope=repository:auth/tok:pull"))).await;
    r.assert_error(401, "UNAUTHORIZED");

    // Replicas: one sharing the key file accepts this gateway's tokens; one with its own key
    // refuses them.
    let shared = s.key_file.clone();
    let (mut same_key, same_url) = another_gateway(&mut s, &shared);
    let other_key = s.dir.path().join("other.key");
    std::fs::write(&other_key, "o".repeat(48)).unwrap();
    let (mut other, other_url) = another_gateway(&mut s, &other_key);
    let v = s
        .token(Some(&alice), &["repository:auth/tok:pull,push"])
        .await;
    let fresh = format!("Bearer {}", v["token"].as_str().unwrap());
    let r = send(
        client()
            .post(format!("{same_url}/v2/auth/tok/blobs/uploads/"))
            .header("authorization", &fresh),
    )
    .await;
    r.assert_status(202);
    let r = send(
        client()
            .post(format!("{other_url}/v2/auth/tok/blobs/uploads/"))
            .header("authorization", &fresh),
    )
    .await;
    r.assert_error(401, "UNAUTHORIZED");

    // The first token has expired by now (3 s).
    tokio::time::sleep(Duration::from_secs(4)).await;
    let r = send(client().get(&tags).header("authorization", &bearer)).await;
    assert_refused(
        &r,
        &challenge(
            &s.trow,
            ",scope=\"repository:auth/tok:pull\",error=\"invalid_token\"",
        ),
    );
    assert!(r.text().contains("expired"), "{r}");

    same_key.terminate(Duration::from_secs(10));
    other.terminate(Duration::from_secs(10));
    s.assert_no_secrets();
}

/// With `--anonymous-pull`: reads need no credentials (curl, skopeo), writes and deletes do;
/// an anonymous token grants pulls only.
pub async fn anonymous_pull(topology: Topology) {
    let mut s = Setup::start(topology, &["--anonymous-pull"]);
    let _logs = LogsOnPanic::trow(&s.trow);
    let addr = s.trow.addr.clone();
    let alice = Setup::basic("alice", &s.alice);

    // alice pushes (Basic on every request).
    let mut reg = Reg::with_url(&s.trow.url);
    let mut h = reqwest::header::HeaderMap::new();
    h.insert("authorization", alice.parse().unwrap());
    reg.client = reqwest::Client::builder()
        .default_headers(h)
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .build()
        .unwrap();
    let (digest, _) = reg.push_image("auth/anon", "v1", "anonymous pull").await;

    // Reads without credentials.
    let anon = Reg::with_url(&s.trow.url);
    anon.get_m(&anon.v2("auth/anon/manifests/v1"))
        .await
        .assert_status(200);
    anon.head_m(&anon.v2(&format!("auth/anon/manifests/{digest}")))
        .await
        .assert_status(200);
    anon.get(&anon.v2("auth/anon/tags/list"))
        .await
        .assert_status(200);
    anon.get(&anon.v2("_catalog")).await.assert_status(200);
    anon.get(&anon.v2(&format!("auth/anon/referrers/{digest}")))
        .await
        .assert_status(200);
    // The version check still challenges, as clients expect.
    assert_refused(&anon.get(&anon.v2("")).await, &challenge(&s.trow, ""));
    // Writes and deletes without credentials: refused.
    let r = anon.start_upload("auth/anon").await;
    assert_refused(
        &r,
        &challenge(&s.trow, ",scope=\"repository:auth/anon:pull,push\""),
    );
    let r = anon
        .delete(&anon.v2(&format!("auth/anon/manifests/{digest}")))
        .await;
    assert_refused(
        &r,
        &challenge(&s.trow, ",scope=\"repository:auth/anon:delete\""),
    );

    // An anonymous token asked for pull and push grants pull only.
    let v = s
        .token(
            None,
            &["repository:auth/anon:pull,push", "registry:catalog:*"],
        )
        .await;
    let token = v["token"].as_str().unwrap().to_string();
    assert_eq!(
        claims(&token)["access"],
        json!([
            {"type": "repository", "name": "auth/anon", "actions": ["pull"]},
            {"type": "registry", "name": "catalog", "actions": ["*"]},
        ])
    );
    let r = send(
        client()
            .post(s.url("/v2/auth/anon/blobs/uploads/"))
            .header("authorization", format!("Bearer {token}")),
    )
    .await;
    r.assert_error(401, "UNAUTHORIZED");

    // skopeo without credentials: pulls, cannot push.
    let raw = run(
        skopeo(["inspect", "--raw", "--tls-verify=false", "--no-creds"])
            .arg(format!("docker://{addr}/auth/anon:v1")),
    );
    assert_eq!(trow_tests::sha256_digest(raw.as_bytes()), digest);
    let tmp = tempfile::tempdir().unwrap();
    let img = images::build_image(&tmp.path().join("src"), "anon", "amd64");
    let mut cmd = skopeo(["copy", "--dest-tls-verify=false", "--dest-no-creds"]);
    cmd.arg(img.oci_ref())
        .arg(format!("docker://{addr}/auth/anon-push:v1"));
    let out = output(&mut cmd);
    assert!(!out.status.success(), "{}", describe(&cmd, &out));

    s.assert_no_secrets();
}

/// Without users nothing changes: no challenge, pushes and pulls without credentials, and no
/// token endpoint.
pub async fn no_users_no_auth(topology: Topology) {
    let reg = Reg::with_trow(Trow::start(topology));
    let r = reg.get(&reg.v2("")).await;
    r.assert_status(200);
    assert!(r.header("www-authenticate").is_none(), "{r}");
    let (digest, _) = reg.push_image("open/app", "v1", "no auth").await;
    reg.get_m(&reg.v2(&format!("open/app/manifests/{digest}")))
        .await
        .assert_status(200);
    reg.get(&reg.v2("token"))
        .await
        .assert_error(404, "NAME_UNKNOWN");
}
