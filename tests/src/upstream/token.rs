//! A bearer-token realm, the way Docker Hub, GHCR and Harbor authenticate: the registry answers
//! `401` with `WWW-Authenticate: Bearer realm=...,service=...`, the client asks the realm for a
//! token for its `scope` (with Basic credentials), and sends `Authorization: Bearer <token>`.
//!
//! The registry is a real CNCF distribution with `auth: token`, so the tokens must be what it
//! verifies: JWTs signed with ES256 by a key whose certificate is in its `rootcertbundle`. The
//! realm makes the key and a self-signed certificate when it starts and puts the certificate in
//! each token's `x5c` header (distribution 2.8 accepts a chain there, or a `kid` matching the
//! key's libtrust fingerprint; the chain is the simpler of the two). The certificate must allow
//! digital signatures, or distribution refuses the chain.
//!
//! The realm itself is a [`Scripted`] server: it checks Basic credentials ([`USER`] /
//! [`PASSWORD`]), grants `pull` and `push` (whichever were asked) on every `repository:`
//! scope asked, and records each token request: which scopes, whose credentials, who asked.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};

use super::http1::RequestHead;
use super::scripted::{Reply, Scripted};
use super::{PASSWORD, USER};
use crate::oci::query_params;

/// The `service` distribution names in its challenges, and the tokens' audience.
pub const SERVICE: &str = "trow-tests-registry";
/// The tokens' issuer.
pub const ISSUER: &str = "trow-tests-realm";
/// How long a token lives, in seconds (`expires_in`).
pub const TOKEN_LIFE: u64 = 300;

/// What credentials a token request carried.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Credentials {
    None,
    /// Basic [`USER`] / [`PASSWORD`].
    Right,
    /// Basic with anything else (or another scheme).
    Wrong,
}

/// One token request as the realm saw it.
#[derive(Clone, Debug)]
pub struct TokenRequest {
    /// Every `scope` parameter, decoded (`repository:team/app:pull`).
    pub scopes: Vec<String>,
    pub service: Option<String>,
    pub credentials: Credentials,
    pub user_agent: Option<String>,
    /// Whether a token was handed out.
    pub granted: bool,
}

impl TokenRequest {
    /// Whether Trow (rather than skopeo seeding the registry, or the start-up check) asked.
    pub fn from_trow(&self) -> bool {
        self.user_agent
            .as_deref()
            .is_some_and(|u| u.starts_with("trow/"))
    }
}

/// A token realm on its own thread; stopped on drop.
pub struct TokenRealm {
    pub server: Scripted,
    issued: Arc<Mutex<Vec<TokenRequest>>>,
    cert_bundle: PathBuf,
    _dir: tempfile::TempDir,
}

impl TokenRealm {
    /// Listens on `listen` (`IP:PORT`; port 0 for any), with a fresh key and certificate.
    pub fn start(listen: &str) -> TokenRealm {
        let dir = tempfile::tempdir().expect("tempdir");
        let (signer, cert_pem) = Signer::generate();
        let cert_bundle = dir.path().join("realm.crt");
        std::fs::write(&cert_bundle, cert_pem).expect("write the realm's certificate");
        let issued = Arc::new(Mutex::new(Vec::new()));
        let log = issued.clone();
        let server = Scripted::start_with_heads(listen, move |head, _| {
            let (reply, req) = answer(&signer, head);
            if let Some(r) = req {
                log.lock().expect("token log").push(r);
            }
            reply
        });
        TokenRealm {
            server,
            issued,
            cert_bundle,
            _dir: dir,
        }
    }

    /// `http://IP:PORT/token`, the realm distribution names in its challenges.
    pub fn url(&self) -> String {
        format!("http://{}/token", self.server.addr)
    }

    /// The PEM certificate that verifies the realm's tokens.
    pub fn cert_bundle(&self) -> &Path {
        &self.cert_bundle
    }

    /// distribution's `auth:` section for this realm.
    pub fn distribution_yaml(&self) -> String {
        format!(
            "auth:\n  token:\n    realm: {}\n    service: {SERVICE}\n    issuer: {ISSUER}\n    \
             rootcertbundle: {}\n",
            self.url(),
            self.cert_bundle.display()
        )
    }

    /// Every token request so far, in arrival order.
    pub fn requests(&self) -> Vec<TokenRequest> {
        self.issued.lock().expect("token log").clone()
    }

    /// The token requests Trow made.
    pub fn trow_requests(&self) -> Vec<TokenRequest> {
        self.requests()
            .into_iter()
            .filter(TokenRequest::from_trow)
            .collect()
    }

    /// The token requests so far, one a line, for assertion messages.
    pub fn describe(&self) -> String {
        let all = self.requests();
        if all.is_empty() {
            return "(no token requests)".into();
        }
        all.iter()
            .map(|r| {
                format!(
                    "  scopes {:?} service {:?} credentials {:?} granted {} (ua {:?})",
                    r.scopes, r.service, r.credentials, r.granted, r.user_agent
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// The realm's answer to one request, and the record of it when it was a token request.
fn answer(signer: &Signer, head: &RequestHead) -> (Reply, Option<TokenRequest>) {
    if head.path() != "/token" || head.method != "GET" {
        return (Reply::oci_error(404, "NOT_FOUND"), None);
    }
    let params = query_params(&head.target);
    let param = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    let scopes: Vec<String> = params
        .iter()
        .filter(|(k, _)| k == "scope")
        .flat_map(|(_, v)| v.split(' ').map(str::to_owned).collect::<Vec<_>>())
        .filter(|s| !s.is_empty())
        .collect();
    let credentials = match head.header("authorization") {
        None => Credentials::None,
        Some(a) => {
            let expected = STANDARD.encode(format!("{USER}:{PASSWORD}"));
            match a.split_once(' ') {
                Some((scheme, value))
                    if scheme.eq_ignore_ascii_case("basic") && value.trim() == expected =>
                {
                    Credentials::Right
                }
                _ => Credentials::Wrong,
            }
        }
    };
    let mut req = TokenRequest {
        scopes: scopes.clone(),
        service: param("service"),
        credentials,
        user_agent: head.header("user-agent").map(str::to_owned),
        granted: false,
    };
    if credentials != Credentials::Right {
        let reply = Reply::oci_error(401, "UNAUTHORIZED")
            .header("WWW-Authenticate", "Basic realm=\"trow-tests-token\"");
        return (reply, Some(req));
    }
    let token = signer.token(USER, &access(&scopes));
    req.granted = true;
    let body = serde_json::json!({"token": token, "expires_in": TOKEN_LIFE});
    (
        Reply::ok("application/json", body.to_string().into_bytes()),
        Some(req),
    )
}

/// The `access` claim for `scopes`: `pull` and `push`, of those asked, on each repository.
fn access(scopes: &[String]) -> serde_json::Value {
    let grants: Vec<serde_json::Value> = scopes
        .iter()
        .filter_map(|s| {
            // repository:<name>:<actions>; the name may not contain ':'.
            let rest = s.strip_prefix("repository:")?;
            let (name, actions) = rest.rsplit_once(':')?;
            let actions: Vec<&str> = actions
                .split(',')
                .filter(|a| *a == "pull" || *a == "push")
                .collect();
            Some(serde_json::json!({"type": "repository", "name": name, "actions": actions}))
        })
        .collect();
    serde_json::Value::Array(grants)
}

/// An ES256 key and its self-signed certificate.
struct Signer {
    key: EcdsaKeyPair,
    /// The certificate, base64 DER, for the `x5c` header.
    x5c: String,
    rng: SystemRandom,
}

impl Signer {
    /// A new key pair and certificate; returns the certificate as PEM too.
    fn generate() -> (Signer, String) {
        let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .expect("generate a P-256 key");
        let mut params =
            rcgen::CertificateParams::new(vec![ISSUER.to_string()]).expect("certificate params");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, ISSUER);
        // distribution: "leaf certificate's key usage does not include digital signature".
        params.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
        let cert = params.self_signed(&kp).expect("self-sign the certificate");
        let rng = SystemRandom::new();
        let key =
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &kp.serialize_der(), &rng)
                .expect("load the key into ring");
        let signer = Signer {
            key,
            x5c: STANDARD.encode(cert.der()),
            rng,
        };
        (signer, cert.pem())
    }

    /// A JWT for `subject` with `access`, valid for [`TOKEN_LIFE`] seconds.
    fn token(&self, subject: &str, access: &serde_json::Value) -> String {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock after 1970")
            .as_secs();
        let header = serde_json::json!({"typ": "JWT", "alg": "ES256", "x5c": [self.x5c]});
        let claims = serde_json::json!({
            "iss": ISSUER,
            "sub": subject,
            "aud": SERVICE,
            // A minute of slack for clocks (distribution checks nbf and iat without leeway).
            "nbf": now - 60,
            "iat": now - 60,
            "exp": now + TOKEN_LIFE,
            "jti": crate::oci::unique(),
            "access": access,
        });
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        // FIXED: r || s, as JWS wants (not the ASN.1 DER of X.509 signatures).
        let sig = self
            .key
            .sign(&self.rng, input.as_bytes())
            .expect("sign a token");
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig.as_ref()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grants_pull_and_push_per_repository() {
        let a = access(&[
            "repository:team/app:pull,push".into(),
            "repository:other:pull,delete".into(),
            "registry:catalog:*".into(),
        ]);
        assert_eq!(
            a,
            serde_json::json!([
                {"type": "repository", "name": "team/app", "actions": ["pull", "push"]},
                {"type": "repository", "name": "other", "actions": ["pull"]},
            ])
        );
    }

    #[test]
    fn tokens_are_es256_jwts_with_the_certificate() {
        let (s, pem) = Signer::generate();
        assert!(pem.starts_with("-----BEGIN CERTIFICATE-----"), "{pem}");
        let t = s.token("u", &serde_json::json!([]));
        let parts: Vec<&str> = t.split('.').collect();
        assert_eq!(parts.len(), 3, "{t}");
        let header: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).unwrap()).unwrap();
        assert_eq!(header["alg"], "ES256");
        assert_eq!(header["x5c"][0], s.x5c.as_str());
        assert_eq!(URL_SAFE_NO_PAD.decode(parts[2]).unwrap().len(), 64);
        let claims: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
        assert_eq!(claims["aud"], SERVICE);
        assert_eq!(claims["iss"], ISSUER);
    }
}
