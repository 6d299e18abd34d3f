//! Authorization rules (`authorization` in the config file), through real processes: who may
//! pull, push and delete where; refusals are `401 UNAUTHORIZED` with the challenge for a caller
//! without credentials and `403 DENIED` for one the rules do not allow; tokens carry only what
//! the rules grant; the catalog lists what the caller may pull; a mount from a repository the
//! caller may not read becomes an upload; reads of other registries follow `cache_pull`.

use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderValue};

use super::scenarios::{Setup, challenge, claims};
use trow_tests::Topology;
use trow_tests::clients::{LogsOnPanic, describe, output, skopeo};
use trow_tests::images;
use trow_tests::oci::{OCI_MANIFEST, Reg, Resp, send};

const RULES: &str = r#"
authorization:
  groups:
    devs: [alice]
  rules:
    - subjects: [group:devs]
      repositories: [team]
      actions: [pull, push]
    - subjects: [user:bob]
      repositories: [bob/, open]
      actions: ["*"]
    - subjects: [authenticated]
      repositories: [team]
      actions: [pull]
    - subjects: [anonymous]
      repositories: [open]
      actions: [pull]
"#;

/// A client of the Trow at `url` that sends `authorization` on every request (None: none).
fn reg_as(url: &str, authorization: Option<&str>) -> Reg {
    let mut reg = Reg::with_url(url);
    let mut headers = HeaderMap::new();
    if let Some(a) = authorization {
        headers.insert(AUTHORIZATION, HeaderValue::from_str(a).unwrap());
    }
    reg.client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .default_headers(headers)
        .build()
        .unwrap();
    reg
}

async fn catalog(reg: &Reg, query: &str) -> Resp {
    reg.get(&reg.v2(&format!("_catalog{query}"))).await
}

fn names(r: &Resp) -> Vec<String> {
    r.assert_status(200);
    r.json()["repositories"]
        .as_array()
        .expect("repositories")
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect()
}

fn denied(r: &Resp) {
    r.assert_error(403, "DENIED");
    assert!(r.header("www-authenticate").is_none(), "{r}");
}

pub async fn rules_decide(topology: Topology) {
    let mut s = Setup::start_with_config(topology, &[], Some(RULES));
    let _logs = LogsOnPanic::trow(&s.trow);
    let url = s.trow.url.clone();
    let alice_basic = Setup::basic("alice", &s.alice);
    let bob_basic = Setup::basic("bob", &s.bob);
    let alice = reg_as(&url, Some(&alice_basic));
    let bob = reg_as(&url, Some(&bob_basic));
    let anon = reg_as(&url, None);

    // The health endpoint needs no credentials.
    anon.get(&format!("{url}/healthz")).await.assert_status(200);

    // Pushes where the rules say, and only there.
    let (team_digest, _) = alice.push_image("team/app", "v1", "team").await;
    let (bob_digest, _) = bob.push_image("bob/x", "v1", "bob").await;
    bob.push_image("open/tool", "v1", "open").await;
    denied(&bob.start_upload("team/app").await);
    denied(&alice.start_upload("bob/x").await);
    denied(&alice.start_upload("teamwork").await);
    let m = alice.image_manifest("team/app", "again").await;
    let r = bob
        .put_manifest(
            "team/app",
            "v2",
            OCI_MANIFEST,
            &serde_json::to_vec(&m).unwrap(),
        )
        .await;
    denied(&r);

    // Reads: authenticated users read team; bob/ is bob's; anonymous callers read open only,
    // and a refused anonymous read is challenged (they may log in), not denied.
    bob.get_m(&bob.v2("team/app/manifests/v1"))
        .await
        .assert_status(200);
    denied(&alice.get_m(&alice.v2("bob/x/manifests/v1")).await);
    anon.get_m(&anon.v2("open/tool/manifests/v1"))
        .await
        .assert_status(200);
    let r = anon.get_m(&anon.v2("team/app/manifests/v1")).await;
    r.assert_error(401, "UNAUTHORIZED");
    assert_eq!(
        r.must_header("www-authenticate"),
        challenge(&s.trow, ",scope=\"repository:team/app:pull\"")
    );
    // Behind an ingress that ends TLS, the realm is the URL the client used.
    let r = send(
        anon.client
            .get(anon.v2("team/app/manifests/v1"))
            .header("x-forwarded-proto", "https")
            .header("x-forwarded-host", "registry.example.com"),
    )
    .await;
    assert_eq!(
        r.must_header("www-authenticate"),
        "Bearer realm=\"https://registry.example.com/v2/token\",service=\"trow\",scope=\"repository:team/app:pull\""
    );

    // Deletes: alice may push to team but not delete there; bob deletes his own.
    denied(
        &alice
            .delete(&alice.v2(&format!("team/app/manifests/{team_digest}")))
            .await,
    );
    let r = bob
        .delete(&bob.v2(&format!("bob/x/manifests/{bob_digest}")))
        .await;
    r.assert_status(202);
    bob.push_image("bob/x", "v1", "bob").await;

    // Tokens carry only what the rules grant; a token for a push the rules refuse is denied
    // with 403, not sent round again for a token.
    let v = s
        .token(Some(&bob_basic), &["repository:team/app:pull,push,delete"])
        .await;
    let token = v["token"].as_str().unwrap().to_string();
    assert_eq!(
        claims(&token)["access"],
        serde_json::json!([{"type": "repository", "name": "team/app", "actions": ["pull"]}])
    );
    let bearer = reg_as(&url, Some(&format!("Bearer {token}")));
    bearer
        .get_m(&bearer.v2("team/app/manifests/v1"))
        .await
        .assert_status(200);
    denied(&bearer.start_upload("team/app").await);
    let v = s.token(None, &["repository:open/tool:pull,push"]).await;
    assert_eq!(
        claims(v["token"].as_str().unwrap())["access"],
        serde_json::json!([{"type": "repository", "name": "open/tool", "actions": ["pull"]}])
    );

    // The catalog lists what the caller may pull, paginated over that view.
    assert_eq!(names(&catalog(&alice, "").await), ["open/tool", "team/app"]);
    assert_eq!(
        names(&catalog(&bob, "").await),
        ["bob/x", "open/tool", "team/app"]
    );
    assert_eq!(names(&catalog(&anon, "").await), ["open/tool"]);
    let first = catalog(&alice, "?n=1").await;
    assert_eq!(names(&first), ["open/tool"]);
    let link = first.must_header("link");
    assert!(
        link.contains("last=open%2Ftool") || link.contains("last=open/tool"),
        "{link}"
    );
    let second = catalog(&alice, "?n=1&last=open/tool").await;
    assert_eq!(names(&second), ["team/app"]);
    assert!(second.header("link").is_none(), "{second}");

    // A mount from a repository the caller may not pull is an ordinary upload (202), which
    // neither reveals nor links the blob; from one it may, the blob is mounted (201).
    let bob_layer = trow_tests::sha256_digest(b"layer bytes for bob");
    let r = send(alice.client.post(alice.v2(&format!(
        "team/app/blobs/uploads/?mount={bob_layer}&from=bob/x"
    ))))
    .await;
    r.assert_status(202);
    alice
        .head(&alice.v2(&format!("team/app/blobs/{bob_layer}")))
        .await
        .assert_status(404);
    let team_layer = trow_tests::sha256_digest(b"layer bytes for team");
    let r = send(bob.client.post(bob.v2(&format!(
        "bob/y/blobs/uploads/?mount={team_layer}&from=team/app"
    ))))
    .await;
    r.assert_status(201);

    // Reads of other registries follow `cache_pull` (default: users who logged in), under
    // their cache name however the registry is spelled: anonymous callers are challenged,
    // users pass to the proxy, whose SSRF guard then refuses the unconfigured loopback upstream.
    for path in [
        "library/nginx/manifests/1?ns=127.0.0.1:1",
        "f/127.0.0.1_1/library/nginx/manifests/1",
    ] {
        anon.get_m(&anon.v2(path))
            .await
            .assert_error(401, "UNAUTHORIZED");
        let r = alice.get_m(&alice.v2(path)).await;
        r.assert_error(403, "DENIED");
        assert!(r.text().contains("refusing to connect"), "{r}");
    }
    // The guard reads `ns` as the handlers do: a repeated `ns` whose last value names this
    // registry is a local read, judged as one; an encoded key is still `ns`; and a `?ns=` read
    // reaches nothing local but manifests, blobs and tags of the other registry.
    denied(
        &alice
            .get_m(&alice.v2("bob/x/manifests/v1?ns=127.0.0.1:1&ns="))
            .await,
    );
    denied(
        &alice
            .get(&alice.v2("bob/x/tags/list?ns=127.0.0.1:1&ns="))
            .await,
    );
    anon.get_m(&anon.v2("open/tool/manifests/v1?n%73=127.0.0.1:1"))
        .await
        .assert_error(401, "UNAUTHORIZED");
    let r = alice
        .get(&alice.v2(&format!("bob/x/referrers/{bob_digest}?ns=127.0.0.1:1")))
        .await;
    r.assert_error(403, "DENIED");
    assert!(r.text().contains("?ns="), "{r}");

    // Nobody pushes into the cache, whatever the rules.
    denied(&bob.start_upload("f/127.0.0.1_1/library/nginx").await);

    // skopeo as bob: pushing to team fails with the registry's denial.
    let tmp = tempfile::tempdir().unwrap();
    let img = images::build_image(&tmp.path().join("src"), "rules", "amd64");
    let mut cmd = skopeo(["copy", "--dest-tls-verify=false", "--dest-creds"]);
    cmd.arg(format!("bob:{}", s.bob))
        .arg(img.oci_ref())
        .arg(format!("docker://{}/team/skopeo:v1", s.trow.addr));
    let out = output(&mut cmd);
    assert!(!out.status.success(), "{}", describe(&cmd, &out));
    let err = String::from_utf8_lossy(&out.stderr).to_lowercase();
    assert!(err.contains("denied"), "{}", describe(&cmd, &out));

    s.assert_no_secrets();
}

/// Rules without users, and `--anonymous-pull` beside rules, stop the start-up with a clear
/// message; a rule naming an undefined group too, with its place named.
pub fn bad_rule_sets_stop_the_start() {
    use std::process::Command;
    use std::time::Duration;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.yaml");
    let pw = dir.path().join("pw");
    std::fs::write(&pw, "secret-pw\n").unwrap();
    let start = |yaml: &str, extra: &[&str]| {
        std::fs::write(&config, yaml).unwrap();
        let mut cmd = Command::new(trow_tests::trow_bin());
        cmd.args(["--bind", "127.0.0.1:0", "--data-dir"])
            .arg(dir.path().join("data"))
            .arg("--config-file")
            .arg(&config)
            .args(extra);
        let (status, out, err, _) = trow_tests::run_to_exit(cmd, Duration::from_secs(30));
        assert!(!status.success(), "{out}{err}");
        err
    };
    let pw_arg = format!("file://{}", pw.display());
    let with_user = ["--user", "alice", "--password", pw_arg.as_str()];
    let err = start(RULES, &[]);
    assert!(err.contains("no user is configured"), "{err}");
    let mut anon = with_user.to_vec();
    anon.push("--anonymous-pull");
    let err = start(RULES, &anon);
    assert!(err.contains("--anonymous-pull"), "{err}");
    let err = start(
        "authorization:\n  rules:\n    - subjects: [group:ops]\n      repositories: [a]\n      actions: [pull]\n",
        &with_user,
    );
    assert!(err.contains("authorization.rules[0].subjects"), "{err}");
    assert!(err.contains("ops"), "{err}");
}
