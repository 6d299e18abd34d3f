//! Short-lived signed tokens: JWTs signed with HMAC-SHA256 whose claims say who (`sub`, empty
//! for an anonymous client), for which registry (`aud` and `iss`: the service name), until when
//! (`exp`) and what they grant (`access`, distribution's shape: `[{type, name, actions}]`).
//!
//! The key is shared by every gateway that must accept the others' tokens (`--token-key-file`);
//! without one each process draws its own, and tokens die with it. Signing and verifying go
//! through jsonwebtoken with a provider of our own on ring's HMAC (see [`provider`]).
//!
//! A client sends the same token on every request of a pull until it expires, and decoding it
//! (base64, JSON twice, HMAC) took a tenth of the gateway's CPU on cached manifest GETs. So
//! the claims of tokens verified lately are kept ([`Verified`]), by the exact token string: a
//! token that is not byte for byte one that verified is verified in full. A kept token is
//! refused from the second its `exp` passes, as one decoded again would be. Nothing else can
//! revoke a token: the key, the service name and the users are fixed for the process's life
//! (a new key means new `Tokens`, with an empty cache), and the rules are judged on every
//! request anyway.

use jsonwebtoken::crypto::{CryptoProvider, JwtSigner, JwtVerifier, KeyUtils};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use lru::LruCache;
use serde::{Deserialize, Serialize};
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::scope::Access;

/// Bytes a key must have at least: HMAC-SHA256's block security needs 256 bits.
pub const MIN_KEY_LEN: usize = 32;

/// Why a token key could not be had.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read the token key file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "the token key file {0} holds fewer than {MIN_KEY_LEN} bytes (e.g. `head -c 48 /dev/urandom | base64 > FILE`)"
    )]
    TooShort(PathBuf),
    #[error("the system's random generator failed")]
    Random,
    #[error("signing a token failed")]
    Sign,
}

/// Why a token was refused. Says nothing of the token itself.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    #[error("the token has expired")]
    Expired,
    #[error("the token is invalid")]
    Invalid,
}

/// The claims of a Trow token.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    pub sub: String,
    pub aud: String,
    pub exp: u64,
    pub nbf: u64,
    pub iat: u64,
    pub jti: String,
    pub access: Vec<Access>,
    /// The user's groups from a TokenReview (Trow's own users have none): rules name them,
    /// so they travel with the token.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    /// The user was authenticated by the cluster (see `Identity::kubernetes`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub kubernetes: bool,
}

/// A token handed out, with what the token endpoint says of it.
pub struct Issued {
    pub token: String,
    pub expires_in: u64,
    pub issued_at: SystemTime,
}

/// How many verified tokens [`Verified`] keeps: one per client active within a token's
/// lifetime for hundreds of clients, at most a few MiB (see [`MAX_KEPT_LEN`]).
pub const KEPT_TOKENS: usize = 1024;

/// Longer tokens are verified in full every time: one token asking for many scopes must not
/// make the cache hold megabytes. Trow's tokens for a scope or two are under 600 bytes.
pub const MAX_KEPT_LEN: usize = 2048;

/// Issues and verifies tokens for one service name with one key.
pub struct Tokens {
    key: Vec<u8>,
    lifetime: Duration,
    service: String,
    /// What a token must pass, built once.
    validation: Validation,
    /// None: the key is empty, and no token verifies.
    decoding: Option<DecodingKey>,
    verified: Verified,
}

/// The claims of tokens that verified, by token, least recently used out first. Only tokens
/// that passed in full are put in, so tokens an attacker makes up never take room.
struct Verified(Mutex<LruCache<Box<str>, Arc<Claims>>>);

impl Verified {
    fn new(entries: usize) -> Verified {
        let entries = NonZeroUsize::new(entries).unwrap_or(NonZeroUsize::MIN);
        Verified(Mutex::new(LruCache::new(entries)))
    }

    /// `token`'s claims if it verified before; Expired if its `exp` is before `now` (the very
    /// test of jsonwebtoken with no leeway: a token is good through its `exp` second).
    fn get(&self, token: &str, now: u64) -> Option<Result<Arc<Claims>, TokenError>> {
        let mut kept = self.0.lock().expect("token cache lock");
        let claims = kept.get(token)?.clone();
        if claims.exp < now {
            kept.pop(token);
            return Some(Err(TokenError::Expired));
        }
        Some(Ok(claims))
    }

    fn put(&self, token: &str, claims: Arc<Claims>) {
        if token.len() <= MAX_KEPT_LEN {
            let mut kept = self.0.lock().expect("token cache lock");
            kept.put(token.into(), claims);
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.0.lock().expect("token cache lock").len()
    }
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokens")
            .field("lifetime", &self.lifetime)
            .field("service", &self.service)
            .finish_non_exhaustive()
    }
}

/// The key in `path`: its bytes, without trailing whitespace (a newline an editor added must not
/// make two replicas disagree).
pub fn key_from_file(path: &Path) -> Result<Vec<u8>, KeyError> {
    let mut key = std::fs::read(path).map_err(|source| KeyError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    while key.last().is_some_and(u8::is_ascii_whitespace) {
        key.pop();
    }
    if key.len() < MIN_KEY_LEN {
        return Err(KeyError::TooShort(path.to_path_buf()));
    }
    Ok(key)
}

/// A fresh random key, for a gateway whose tokens only it verifies.
pub fn random_key() -> Result<Vec<u8>, KeyError> {
    random_bytes::<64>().map(Vec::from)
}

fn random_bytes<const N: usize>() -> Result<[u8; N], KeyError> {
    let mut b = [0u8; N];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b)
        .map_err(|_| KeyError::Random)?;
    Ok(b)
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

impl Tokens {
    pub fn new(key: Vec<u8>, lifetime: Duration, service: String) -> Tokens {
        Tokens::with_cache(key, lifetime, service, KEPT_TOKENS)
    }

    /// [`Tokens::new`] keeping up to `kept` verified tokens (at least one).
    fn with_cache(key: Vec<u8>, lifetime: Duration, service: String, kept: usize) -> Tokens {
        provider();
        // No leeway: replicas share a clock within the second, and a token lives minutes.
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 0;
        validation.set_audience(&[&service]);
        validation.set_issuer(&[&service]);
        validation.set_required_spec_claims(&["exp", "aud", "iss"]);
        Tokens {
            decoding: DecodingKey::from_secret(&key).ok(),
            key,
            lifetime,
            service,
            validation,
            verified: Verified::new(kept),
        }
    }

    pub fn service(&self) -> &str {
        &self.service
    }

    /// A token for `subject` (empty: anonymous) in `groups` (`kubernetes`: authenticated by
    /// the cluster), granting `access`, valid the configured lifetime but never past
    /// `not_after` (the credentials it was issued for expire then).
    pub fn issue(
        &self,
        subject: &str,
        groups: Vec<String>,
        kubernetes: bool,
        not_after: Option<SystemTime>,
        access: Vec<Access>,
    ) -> Result<Issued, KeyError> {
        let now = SystemTime::now();
        let left = not_after.map_or(u64::MAX, |t| {
            t.duration_since(now).map_or(0, |d| d.as_secs())
        });
        let lifetime = self.lifetime.as_secs().min(left).max(1);
        let iat = unix(now);
        let claims = Claims {
            iss: self.service.clone(),
            sub: subject.to_string(),
            aud: self.service.clone(),
            exp: iat + lifetime,
            nbf: iat,
            iat,
            jti: hex(&random_bytes::<16>()?),
            access,
            groups,
            kubernetes,
        };
        let key = EncodingKey::from_secret(&self.key).map_err(|_| KeyError::Sign)?;
        let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &key)
            .map_err(|_| KeyError::Sign)?;
        Ok(Issued {
            token,
            expires_in: lifetime,
            issued_at: now,
        })
    }

    /// The claims of `token`, if this service's key signed it, it is for this service, and it
    /// has not expired.
    pub fn verify(&self, token: &str) -> Result<Arc<Claims>, TokenError> {
        self.verify_at(token, unix(SystemTime::now()))
    }

    /// [`Tokens::verify`] at `now` (Unix seconds). A token decoded in full is also judged by
    /// jsonwebtoken at the real time.
    fn verify_at(&self, token: &str, now: u64) -> Result<Arc<Claims>, TokenError> {
        if let Some(known) = self.verified.get(token, now) {
            return known;
        }
        let key = self.decoding.as_ref().ok_or(TokenError::Invalid)?;
        let claims = match jsonwebtoken::decode::<Claims>(token, key, &self.validation) {
            Ok(data) => Arc::new(data.claims),
            Err(e) if matches!(e.kind(), ErrorKind::ExpiredSignature) => {
                return Err(TokenError::Expired);
            }
            Err(_) => return Err(TokenError::Invalid),
        };
        if claims.exp < now {
            return Err(TokenError::Expired);
        }
        self.verified.put(token, claims.clone());
        Ok(claims)
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// HMAC-SHA256 on ring, as jsonwebtoken's signer and verifier.
struct Hs256(ring::hmac::Key);

impl signature::Signer<Vec<u8>> for Hs256 {
    fn try_sign(&self, msg: &[u8]) -> Result<Vec<u8>, signature::Error> {
        Ok(ring::hmac::sign(&self.0, msg).as_ref().to_vec())
    }
}

impl signature::Verifier<Vec<u8>> for Hs256 {
    fn verify(&self, msg: &[u8], tag: &Vec<u8>) -> Result<(), signature::Error> {
        // Constant time, by ring.
        ring::hmac::verify(&self.0, msg, tag).map_err(|_| signature::Error::new())
    }
}

impl JwtSigner for Hs256 {
    fn algorithm(&self) -> Algorithm {
        Algorithm::HS256
    }
}

impl JwtVerifier for Hs256 {
    fn algorithm(&self) -> Algorithm {
        Algorithm::HS256
    }
}

fn hs256(secret: &[u8]) -> Hs256 {
    Hs256(ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret))
}

/// HS256 only: a token of any other algorithm is refused before its signature is looked at.
static PROVIDER: CryptoProvider = CryptoProvider {
    signer_factory: |alg, key| match alg {
        Algorithm::HS256 => Ok(Box::new(hs256(key.as_bytes()))),
        _ => Err(ErrorKind::InvalidAlgorithm.into()),
    },
    verifier_factory: |alg, key| match alg {
        Algorithm::HS256 => Ok(Box::new(hs256(key.try_get_as_bytes()?))),
        _ => Err(ErrorKind::InvalidAlgorithm.into()),
    },
    key_utils: KeyUtils::new_unimplemented(),
};

/// Installs [`PROVIDER`] as jsonwebtoken's process-wide provider, once. Should another part of
/// the process have installed one first, that one's HS256 is used: same algorithm, same tokens.
fn provider() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = PROVIDER.install_default();
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens(key: &[u8], lifetime: u64) -> Tokens {
        Tokens::new(key.to_vec(), Duration::from_secs(lifetime), "trow".into())
    }

    /// A token letting alice pull repository `a`.
    fn alice_pulls_a(t: &Tokens) -> Issued {
        let pull = vec![Access::repository("a", &["pull"])];
        t.issue("alice", vec![], false, None, pull).unwrap()
    }

    #[test]
    fn a_token_never_outlives_the_credentials_it_was_issued_for() {
        let t = tokens(b"key-for-the-lifetime-test-0123456789", 300);
        let soon = SystemTime::now() + Duration::from_secs(20);
        let issued = t.issue("sa", vec![], true, Some(soon), vec![]).unwrap();
        assert!(
            issued.expires_in <= 20 && issued.expires_in >= 19,
            "{}",
            issued.expires_in
        );
        let issued = t.issue("u", vec![], false, None, vec![]).unwrap();
        assert_eq!(issued.expires_in, 300);
    }

    #[test]
    fn a_token_carries_its_grant() {
        let t = tokens(&[7; 32], 300);
        let issued = alice_pulls_a(&t);
        assert_eq!(issued.expires_in, 300);
        let c = t.verify(&issued.token).unwrap();
        assert_eq!(c.sub, "alice");
        assert_eq!(c.aud, "trow");
        assert_eq!(c.access, vec![Access::repository("a", &["pull"])]);
        assert_eq!(c.exp, c.iat + 300);
    }

    #[test]
    fn foreign_expired_and_tampered_tokens_are_refused() {
        let t = tokens(&[7; 32], 300);
        let other = tokens(&[8; 32], 300);
        let theirs = other
            .issue("alice", vec![], false, None, vec![])
            .unwrap()
            .token;
        assert_eq!(t.verify(&theirs).unwrap_err(), TokenError::Invalid);

        let other_service = Tokens::new(vec![7; 32], Duration::from_secs(300), "x".into());
        let theirs = other_service
            .issue("alice", vec![], false, None, vec![])
            .unwrap()
            .token;
        assert_eq!(t.verify(&theirs).unwrap_err(), TokenError::Invalid);

        // Claims edited after signing.
        let ours = t.issue("anon", vec![], false, None, vec![]).unwrap().token;
        let parts: Vec<&str> = ours.split('.').collect();
        use base64::Engine;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let mut claims: serde_json::Value =
            serde_json::from_slice(&b64.decode(parts[1]).unwrap()).unwrap();
        claims["sub"] = "admin".into();
        let forged = format!(
            "{}.{}.{}",
            parts[0],
            b64.encode(claims.to_string()),
            parts[2]
        );
        assert_eq!(t.verify(&forged).unwrap_err(), TokenError::Invalid);

        // `alg: none` is not an algorithm we know.
        let none = format!("{}.{}.", b64.encode(r#"{"alg":"none"}"#), parts[1]);
        assert_eq!(t.verify(&none).unwrap_err(), TokenError::Invalid);
        assert_eq!(t.verify("garbage").unwrap_err(), TokenError::Invalid);

        // Verified (so kept) while good, refused once expired.
        let short = tokens(&[7; 32], 1);
        let token = short
            .issue("alice", vec![], false, None, vec![])
            .unwrap()
            .token;
        assert_eq!(short.verify(&token).unwrap().sub, "alice");
        assert_eq!(short.verified.len(), 1);
        std::thread::sleep(Duration::from_millis(2100));
        assert_eq!(short.verify(&token).unwrap_err(), TokenError::Expired);
    }

    #[test]
    fn a_kept_token_is_good_through_its_exp_second_and_not_after() {
        let t = tokens(&[7; 32], 300);
        let token = t.issue("alice", vec![], false, None, vec![]).unwrap().token;
        let exp = t.verify(&token).unwrap().exp;
        assert_eq!(t.verified.len(), 1);
        assert_eq!(t.verify_at(&token, exp).unwrap().sub, "alice");
        assert_eq!(
            t.verify_at(&token, exp + 1).unwrap_err(),
            TokenError::Expired
        );
        assert_eq!(t.verified.len(), 0, "an expired token is dropped");
        // Decoded in full again, it is judged at `now` as well.
        assert_eq!(
            t.verify_at(&token, exp + 1).unwrap_err(),
            TokenError::Expired
        );
        assert_eq!(t.verified.len(), 0, "nor kept again");
        assert_eq!(t.verify(&token).unwrap().sub, "alice");
    }

    #[test]
    fn a_token_altered_after_the_genuine_one_was_kept_is_refused() {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let t = tokens(&[7; 32], 300);
        let genuine = alice_pulls_a(&t).token;
        t.verify(&genuine).unwrap();
        assert_eq!(t.verified.len(), 1);
        let parts: Vec<&str> = genuine.split('.').collect();
        let mut claims: serde_json::Value =
            serde_json::from_slice(&b64.decode(parts[1]).unwrap()).unwrap();
        claims["access"][0]["actions"] = serde_json::json!(["pull", "push", "delete"]);
        let wider = format!(
            "{}.{}.{}",
            parts[0],
            b64.encode(claims.to_string()),
            parts[2]
        );
        let mut signature = b64.decode(parts[2]).unwrap();
        signature[0] ^= 1;
        let resigned = format!("{}.{}.{}", parts[0], parts[1], b64.encode(&signature));
        let header = format!(
            "{}.{}.{}",
            b64.encode(r#"{"alg":"HS256"}"#),
            parts[1],
            parts[2]
        );
        let truncated = &genuine[..genuine.len() - 1];
        for forged in [&wider, &resigned, &header, truncated] {
            assert_eq!(
                t.verify(forged).unwrap_err(),
                TokenError::Invalid,
                "{forged}"
            );
        }
        assert_eq!(t.verified.len(), 1, "refused tokens are not kept");
        assert_eq!(
            t.verify(&genuine).unwrap().access,
            vec![Access::repository("a", &["pull"])]
        );
    }

    #[test]
    fn the_cache_is_bounded() {
        let t = tokens(&[7; 32], 300);
        let issued: Vec<String> = (0..KEPT_TOKENS + 100)
            .map(|i| {
                t.issue(&format!("user{i}"), vec![], false, None, vec![])
                    .unwrap()
                    .token
            })
            .collect();
        for (i, token) in issued.iter().enumerate() {
            assert_eq!(t.verify(token).unwrap().sub, format!("user{i}"));
        }
        assert_eq!(t.verified.len(), KEPT_TOKENS);
        // The first ones were dropped and verify in full.
        assert_eq!(t.verify(&issued[0]).unwrap().sub, "user0");
        assert_eq!(t.verified.len(), KEPT_TOKENS);

        // A long token verifies but is not kept.
        let t = tokens(&[7; 32], 300);
        let many: Vec<Access> = (0..100)
            .map(|i| Access::repository(&format!("team/app{i}"), &["pull"]))
            .collect();
        let long = t.issue("alice", vec![], false, None, many).unwrap().token;
        assert!(long.len() > MAX_KEPT_LEN);
        assert_eq!(t.verify(&long).unwrap().access.len(), 100);
        assert_eq!(t.verified.len(), 0);
    }

    #[test]
    fn key_files_need_enough_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("key");
        std::fs::write(&p, "short\n").unwrap();
        assert!(matches!(key_from_file(&p), Err(KeyError::TooShort(_))));
        std::fs::write(&p, format!("{}\n", "k".repeat(40))).unwrap();
        assert_eq!(key_from_file(&p).unwrap(), b"k".repeat(40));
        assert_ne!(random_key().unwrap(), random_key().unwrap());
    }
}
