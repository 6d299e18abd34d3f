//! Kubernetes identities and RBAC, the `kubernetes` part of the `authorization` section:
//!
//! - **TokenReview**: a Kubernetes token (a pod's service-account token, a projected token a
//!   kubelet credential provider hands out) given as the password is checked by the cluster's
//!   API server; the caller is then the token's user (`system:serviceaccount:<ns>:<name>`)
//!   with its groups, which rules name like any other (`group:system:serviceaccounts:ci`).
//! - **SubjectAccessReview**: with `rbac`, the cluster's own RBAC decides as well: a request is
//!   allowed when the rules allow it or the API server says the caller may do the verb (`pull`,
//!   `push`, `delete`, `audit`) on the resource (`repositories` in `trow.dev` by default) named
//!   after the repository. So `kubectl create role ... --verb=pull,push
//!   --resource=repositories.trow.dev --resource-name=team/app` grants a push.
//!
//! Answers are cached for `cache_seconds` (10) by a hash of the token or the question, so a
//! pull of many blobs asks the API server once; the cache is bounded.
//!
//! ```yaml
//! authorization:
//!   kubernetes:
//!     token_review: true
//!     audiences: []              # the TokenReview's audiences; empty: the API server's
//!     rbac: { group: trow.dev, resource: repositories }
//!     cache_seconds: 10
//! ```
//!
//! The API server is reached with the pod's service account (in-cluster) or `KUBECONFIG`;
//! the account needs `create` on `tokenreviews` and `subjectaccessreviews` (the
//! `system:auth-delegator` ClusterRole).

use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use kube::Api;
use kube::api::PostParams;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::Identity;
use super::rules::Action;

/// The section as written.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KubernetesConfig {
    /// Kubernetes tokens are accepted as passwords.
    #[serde(default)]
    pub token_review: bool,
    #[serde(default)]
    pub audiences: Vec<String>,
    /// The cluster's RBAC decides too.
    #[serde(default)]
    pub rbac: Option<RbacConfig>,
    #[serde(default = "default_cache_seconds")]
    pub cache_seconds: u64,
}

fn default_cache_seconds() -> u64 {
    10
}

/// The resource a SubjectAccessReview asks about.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RbacConfig {
    #[serde(default = "default_group")]
    pub group: String,
    #[serde(default = "default_resource")]
    pub resource: String,
}

fn default_group() -> String {
    "trow.dev".into()
}

fn default_resource() -> String {
    "repositories".into()
}

/// Why the API server could not be asked. The answer to the client is a refusal either way;
/// this goes to the log.
#[derive(Debug, thiserror::Error)]
pub enum KubeError {
    #[error("no Kubernetes client configuration (in-cluster or KUBECONFIG): {0}")]
    Config(String),
}

/// Most answers kept; past it the cache starts afresh (answers live seconds anyway).
const CACHE_ENTRIES: usize = 10_000;

/// Answers the API server gave, by a hash of the question.
struct Cache<T> {
    ttl: Duration,
    entries: Mutex<HashMap<[u8; 32], (Instant, T)>>,
}

impl<T: Clone> Cache<T> {
    fn new(ttl: Duration) -> Self {
        Cache {
            ttl,
            entries: Mutex::new(HashMap::new()),
        }
    }

    fn get(&self, key: &[u8; 32]) -> Option<T> {
        let entries = self.entries.lock().expect("cache lock");
        entries
            .get(key)
            .filter(|(at, _)| at.elapsed() < self.ttl)
            .map(|(_, v)| v.clone())
    }

    fn put(&self, key: [u8; 32], value: T) {
        let mut entries = self.entries.lock().expect("cache lock");
        if entries.len() >= CACHE_ENTRIES {
            entries.clear();
        }
        entries.insert(key, (Instant::now(), value));
    }
}

fn key(parts: &[&str]) -> [u8; 32] {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_be_bytes());
        h.update(p.as_bytes());
    }
    h.finalize().into()
}

/// The cluster's authentication and authorization, as one gateway asks them.
pub struct Kubernetes {
    client: kube::Client,
    config: KubernetesConfig,
    tokens: Cache<Option<Identity>>,
    decisions: Cache<bool>,
}

impl std::fmt::Debug for Kubernetes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kubernetes")
            .field("token_review", &self.config.token_review)
            .field("rbac", &self.config.rbac)
            .finish()
    }
}

impl Kubernetes {
    /// A client of the API server the pod runs in (or `KUBECONFIG`'s).
    pub async fn connect(config: KubernetesConfig) -> Result<Kubernetes, KubeError> {
        let client = kube::Client::try_default()
            .await
            .map_err(|e| KubeError::Config(e.to_string()))?;
        let ttl = Duration::from_secs(config.cache_seconds);
        Ok(Kubernetes {
            client,
            config,
            tokens: Cache::new(ttl),
            decisions: Cache::new(ttl),
        })
    }

    pub fn token_review(&self) -> bool {
        self.config.token_review
    }

    /// Who `token` belongs to, if the API server says it is valid. Shaped like a JWT or not,
    /// only the API server can tell; Trow's own passwords are tried first.
    pub async fn review(&self, token: &str) -> Option<Identity> {
        if !self.config.token_review || token.is_empty() {
            return None;
        }
        let k = key(&["token", token]);
        if let Some(v) = self.tokens.get(&k) {
            return v;
        }
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: token.to_string(),
                audiences: (!self.config.audiences.is_empty())
                    .then(|| self.config.audiences.clone()),
            },
            ..TokenReview::default()
        };
        let api: Api<TokenReview> = Api::all(self.client.clone());
        let answer = match api.create(&PostParams::default(), &review).await {
            Ok(r) => r,
            Err(e) => {
                // Not cached: the next request asks again.
                tracing::warn!(error = %e, "TokenReview failed");
                return None;
            }
        };
        let identity = answer.status.and_then(|s| {
            if s.authenticated != Some(true) {
                return None;
            }
            let user = s.user?;
            Some(Identity {
                user: Some(user.username.filter(|u| !u.is_empty())?),
                groups: user.groups.unwrap_or_default(),
                kubernetes: true,
                expires: expiry(token),
            })
        });
        match &identity {
            Some(i) => tracing::debug!(user = ?i.user, "TokenReview: authenticated"),
            None => tracing::debug!("TokenReview: not authenticated"),
        }
        self.tokens.put(k, identity.clone());
        identity
    }

    /// Whether the cluster's RBAC lets `who` do `action` on `repository` (None: on every
    /// repository, as the catalog and the audit log ask). Without `rbac`, never.
    pub async fn allows(&self, who: &Identity, repository: Option<&str>, action: Action) -> bool {
        let (Some(rbac), Some(user)) = (&self.config.rbac, &who.user) else {
            return false;
        };
        let verb = match action {
            Action::Pull => "pull",
            Action::Push => "push",
            Action::Delete => "delete",
            Action::Audit => "audit",
        };
        let name = repository.unwrap_or("");
        let mut parts = vec!["sar", user.as_str(), verb, name];
        parts.extend(who.groups.iter().map(String::as_str));
        let k = key(&parts);
        if let Some(v) = self.decisions.get(&k) {
            return v;
        }
        let review = SubjectAccessReview {
            spec: SubjectAccessReviewSpec {
                user: Some(user.clone()),
                groups: (!who.groups.is_empty()).then(|| who.groups.clone()),
                resource_attributes: Some(ResourceAttributes {
                    group: Some(rbac.group.clone()),
                    resource: Some(rbac.resource.clone()),
                    name: repository.map(str::to_string),
                    verb: Some(verb.into()),
                    ..ResourceAttributes::default()
                }),
                ..SubjectAccessReviewSpec::default()
            },
            ..SubjectAccessReview::default()
        };
        let api: Api<SubjectAccessReview> = Api::all(self.client.clone());
        let allowed = match api.create(&PostParams::default(), &review).await {
            Ok(r) => r.status.is_some_and(|s| s.allowed),
            Err(e) => {
                tracing::warn!(error = %e, "SubjectAccessReview failed");
                return false;
            }
        };
        tracing::debug!(
            user,
            verb,
            repository = name,
            allowed,
            "SubjectAccessReview"
        );
        self.decisions.put(k, allowed);
        allowed
    }
}

/// The `exp` of a JWT the API server has just accepted (so its payload is its own; unsigned
/// reading is enough): Trow's token for it must not outlive it.
fn expiry(token: &str) -> Option<std::time::SystemTime> {
    use base64::Engine;
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let exp = serde_json::from_slice::<serde_json::Value>(&bytes).ok()?["exp"].as_u64()?;
    Some(std::time::UNIX_EPOCH + Duration::from_secs(exp))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tokens_expiry_is_read_from_its_payload() {
        use base64::Engine;
        let b = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        let token = format!("{}.{}.sig", b("{}"), b(r#"{"exp":1700000000,"sub":"x"}"#));
        assert_eq!(
            expiry(&token),
            Some(std::time::UNIX_EPOCH + Duration::from_secs(1_700_000_000))
        );
        assert_eq!(expiry("not a token"), None);
        assert_eq!(expiry(&format!("{}.{}.s", b("{}"), b("{}"))), None);
    }

    #[test]
    fn cached_answers_expire_and_stay_bounded() {
        let c: Cache<bool> = Cache::new(Duration::from_millis(50));
        let k = key(&["a", "b"]);
        assert_ne!(k, key(&["ab", ""]), "parts are delimited");
        c.put(k, true);
        assert_eq!(c.get(&k), Some(true));
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(c.get(&k), None);
        for i in 0..CACHE_ENTRIES + 1 {
            c.put(key(&[&i.to_string()]), false);
        }
        assert!(c.entries.lock().unwrap().len() <= CACHE_ENTRIES);
    }

    #[test]
    fn the_section_has_defaults_and_no_stray_keys() {
        let c: KubernetesConfig = serde_yaml::from_str("token_review: true\nrbac: {}\n").unwrap();
        assert!(c.token_review);
        assert_eq!(c.cache_seconds, 10);
        let rbac = c.rbac.unwrap();
        assert_eq!(
            (rbac.group.as_str(), rbac.resource.as_str()),
            ("trow.dev", "repositories")
        );
        assert!(serde_yaml::from_str::<KubernetesConfig>("tokenreview: true\n").is_err());
    }
}
