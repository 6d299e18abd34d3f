//! `trow webhook-certs`: the admission webhooks' TLS without cert-manager. The API server calls
//! webhooks only over HTTPS and trusts only the `caBundle` each webhook carries, so something must
//! make a CA and a serving certificate for the webhooks' Service, store them where the webhook
//! gateway mounts them, and put the CA into both webhook configurations. The chart runs this as a
//! post-install/post-upgrade hook Job.
//!
//! Idempotent by design: a Secret that already holds a CA and a serving certificate it signed for
//! the Service's names, with at least [`MIN_LEFT`] to go, is kept (so an upgrade does not rotate
//! the certificate under running pods); otherwise a new CA and certificate replace it, but only
//! in a Secret this command made (annotation [`GENERATED_BY`]): someone else's Secret (their own
//! certificate, cert-manager's) is never overwritten. Either way Trow's webhooks' `caBundle` is
//! then set to the Secret's CA, which repairs a configuration that a `helm upgrade` re-rendered
//! without it; only webhooks whose `clientConfig.service` is `--service` in `--namespace` are
//! touched, so another vendor's webhook in the same configuration keeps its own CA.

pub mod bundle;

use std::collections::BTreeMap;
use std::time::SystemTime;

use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration, WebhookClientConfig,
};
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};

pub use bundle::{
    Bundle, CA_KEY, CERT_KEY, KEY_KEY, MAX_DAYS, MIN_LEFT, SECRET_TYPE, Service, Verdict,
    ca_bundle_after_renewal, issue, judge,
};

/// The annotation (and its value) that marks a Secret as made by this command, and so as one it
/// may replace.
pub const GENERATED_BY: (&str, &str) = ("trow.dev/generated-by", "trow webhook-certs");

/// cert-manager's annotation on the Secrets it manages.
const CERT_MANAGER: &str = "cert-manager.io/certificate-name";

/// Why the command could not do its job.
#[derive(Debug, thiserror::Error)]
pub enum WebhookCertsError {
    #[error("invalid {what} {name:?}: {rule}")]
    Name {
        what: &'static str,
        name: String,
        rule: &'static str,
    },
    #[error(
        "--days must be from 31 (a certificate is kept only while 30 days are left) to {MAX_DAYS}"
    )]
    Days,
    #[error(
        "Secret {namespace}/{name} was not made by trow webhook-certs and cannot be used ({why}); \
         it is not replaced: delete it, or use it with webhooks.tls.existingSecretRef and \
         webhooks.tls.patch.enabled=false"
    )]
    Foreign {
        namespace: String,
        name: String,
        why: String,
    },
    #[error(
        "Secret {namespace}/{name} is managed by cert-manager: set webhooks.tls.patch.enabled=false \
         (cert-manager's CA injector sets caBundle) or name another Secret"
    )]
    CertManager { namespace: String, name: String },
    #[error(
        "{kind} {name} is not Trow's: none of its webhooks ({others:?}) calls Service \
         {namespace}/{service}; nothing patched"
    )]
    NotOurs {
        kind: &'static str,
        name: String,
        namespace: String,
        service: String,
        others: Vec<String>,
    },
    #[error("no Kubernetes API to talk to (in-cluster service account, or KUBECONFIG): {0}")]
    Client(String),
    #[error("{kind} {name} not found: create it first (the chart renders it) or drop the flag")]
    NotFound { kind: &'static str, name: String },
    #[error(
        "Secret {namespace}/{name} exists with type {found:?}, not {SECRET_TYPE}: a Secret's type \
         cannot change; delete it or name another one"
    )]
    SecretType {
        namespace: String,
        name: String,
        found: String,
    },
    #[error("{what}: {source}")]
    Api {
        what: String,
        #[source]
        source: kube::Error,
    },
    #[error("cannot make the certificates: {0}")]
    Cert(#[from] rcgen::Error),
}

/// `trow webhook-certs`'s flags.
#[derive(clap::Args, Debug)]
pub struct WebhookCertsArgs {
    /// The namespace of the Secret and the Service.
    #[arg(long, env = "POD_NAMESPACE")]
    pub namespace: String,
    /// The kubernetes.io/tls Secret to keep the CA, certificate and key in (tls.crt, tls.key,
    /// ca.crt).
    #[arg(long)]
    pub secret: String,
    /// The Service the webhooks are called at: the certificate names SVC, SVC.NS, SVC.NS.svc
    /// and SVC.NS.svc.cluster.local.
    #[arg(long)]
    pub service: String,
    /// A ValidatingWebhookConfiguration whose webhooks that call --service get the CA as
    /// caBundle (others are left alone and named).
    #[arg(long)]
    pub validating_webhook: Option<String>,
    /// A MutatingWebhookConfiguration whose webhooks that call --service get the CA as caBundle
    /// (others are left alone and named).
    #[arg(long)]
    pub mutating_webhook: Option<String>,
    /// How long new certificates are valid, in days (31 to 36500).
    #[arg(long, default_value_t = 3650)]
    pub days: u32,
    /// Only make the Secret when there is none; leave an existing one as it is. For the
    /// pre-install/pre-upgrade hook, whose pods need the Secret before they start: renewing
    /// belongs to the run that also patches caBundle, which then trusts the old CA and the new
    /// one while the pods switch certificates.
    #[arg(long, conflicts_with_all = ["validating_webhook", "mutating_webhook"])]
    pub create_only: bool,
}

/// A DNS-1123 label (namespaces, Services) when `subdomain` is false, else a DNS-1123
/// subdomain (Secrets, webhook configurations).
fn check_name(what: &'static str, name: &str, subdomain: bool) -> Result<(), WebhookCertsError> {
    let label = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    let ok = if subdomain {
        name.len() <= 253 && name.split('.').all(label)
    } else {
        label(name)
    };
    if ok {
        Ok(())
    } else {
        Err(WebhookCertsError::Name {
            what,
            name: name.to_string(),
            rule: if subdomain {
                "lowercase letters, digits, '-' and '.', at most 253"
            } else {
                "lowercase letters, digits and '-', at most 63"
            },
        })
    }
}

fn api(what: String) -> impl FnOnce(kube::Error) -> WebhookCertsError {
    move |source| WebhookCertsError::Api { what, source }
}

/// Makes sure the Secret holds a good bundle and both configurations carry its CA; prints what
/// it did (never the key).
pub async fn apply(a: &WebhookCertsArgs) -> Result<(), WebhookCertsError> {
    check_name("namespace", &a.namespace, false)?;
    check_name("service", &a.service, false)?;
    check_name("secret", &a.secret, true)?;
    for name in [&a.validating_webhook, &a.mutating_webhook]
        .into_iter()
        .flatten()
    {
        check_name("webhook configuration", name, true)?;
    }
    check_days(a.days)?;
    let client = kube::Client::try_default()
        .await
        .map_err(|e| WebhookCertsError::Client(e.to_string()))?;
    let (ns, name) = (&a.namespace, &a.secret);
    let names = Service {
        namespace: ns.clone(),
        name: a.service.clone(),
    }
    .dns_names();
    // The configurations first: one with none of Trow's webhooks (a wrong flag) must stop the
    // run before the Secret is touched.
    // What `plan` needs of one webhook of either kind.
    let hook = |name: &String, c: &WebhookClientConfig| Hook {
        name: name.clone(),
        ca_bundle: c.ca_bundle.clone(),
        ours: c
            .service
            .as_ref()
            .is_some_and(|r| r.namespace == *ns && r.name == a.service),
    };
    let vapi: Api<ValidatingWebhookConfiguration> = Api::all(client.clone());
    let mapi: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    let validating = match &a.validating_webhook {
        Some(n) => Some(
            plan(&vapi, "ValidatingWebhookConfiguration", n, a, |c| {
                let hooks = c.webhooks.iter().flatten();
                hooks.map(|w| hook(&w.name, &w.client_config)).collect()
            })
            .await?,
        ),
        None => None,
    };
    let mutating = match &a.mutating_webhook {
        Some(n) => Some(
            plan(&mapi, "MutatingWebhookConfiguration", n, a, |c| {
                let hooks = c.webhooks.iter().flatten();
                hooks.map(|w| hook(&w.name, &w.client_config)).collect()
            })
            .await?,
        ),
        None => None,
    };
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    let existing = secrets
        .get_opt(name)
        .await
        .map_err(api(format!("reading Secret {ns}/{name}")))?;
    if a.create_only && existing.is_some() {
        println!("Secret {ns}/{name}: exists, left as it is (--create-only)");
        return Ok(());
    }
    let now = SystemTime::now();
    let ca_bundle = match existing {
        Some(mut s) => {
            let annotations = s.metadata.annotations.clone().unwrap_or_default();
            if annotations.contains_key(CERT_MANAGER) {
                return Err(WebhookCertsError::CertManager {
                    namespace: ns.clone(),
                    name: name.clone(),
                });
            }
            let ours = annotations.get(GENERATED_BY.0).map(String::as_str) == Some(GENERATED_BY.1);
            let found = s.type_.clone().unwrap_or_else(|| "Opaque".into());
            let old = Bundle::from_secret(&s);
            let why = match &old {
                Ok(b) => match judge(b, &names, now, MIN_LEFT) {
                    Verdict::Keep => None,
                    Verdict::Renew(w) => Some(w),
                },
                Err(w) => Some(w.clone()),
            };
            match (why, old) {
                (None, Ok(b)) => {
                    let whose = if ours {
                        ""
                    } else {
                        ", not made by trow webhook-certs: used as it is"
                    };
                    println!(
                        "Secret {ns}/{name}: kept (valid for {names:?} over 30 more days{whose})"
                    );
                    b.ca_pem
                }
                (why, old) => {
                    let why = why.unwrap_or_default();
                    if !ours {
                        return Err(WebhookCertsError::Foreign {
                            namespace: ns.clone(),
                            name: name.clone(),
                            why,
                        });
                    }
                    if found != SECRET_TYPE {
                        return Err(WebhookCertsError::SecretType {
                            namespace: ns.clone(),
                            name: name.clone(),
                            found,
                        });
                    }
                    let b = issue(&names, a.days, now)?;
                    // The object as read (labels, annotations, resourceVersion: a concurrent
                    // writer makes this fail rather than be overwritten), with new data.
                    s.data = Some(b.data());
                    s.string_data = None;
                    secrets
                        .replace(name, &PostParams::default(), &s)
                        .await
                        .map_err(api(format!("updating Secret {ns}/{name}")))?;
                    let ca = ca_bundle_after_renewal(&b, old.as_ref().ok(), now);
                    let also = if ca == b.ca_pem {
                        ""
                    } else {
                        "; caBundle trusts the old CA too until the next run"
                    };
                    println!("Secret {ns}/{name}: replaced ({why}{also})");
                    ca
                }
            }
        }
        None => {
            let b = issue(&names, a.days, now)?;
            let s = Secret {
                metadata: kube::api::ObjectMeta {
                    name: Some(name.clone()),
                    namespace: Some(ns.clone()),
                    annotations: Some(BTreeMap::from([(
                        GENERATED_BY.0.to_string(),
                        GENERATED_BY.1.to_string(),
                    )])),
                    ..Default::default()
                },
                type_: Some(SECRET_TYPE.into()),
                data: Some(b.data()),
                ..Default::default()
            };
            secrets
                .create(&PostParams::default(), &s)
                .await
                .map_err(api(format!("creating Secret {ns}/{name}")))?;
            println!("Secret {ns}/{name}: created for {names:?}");
            b.ca_pem
        }
    };
    let ca = ByteString(ca_bundle.into_bytes());
    if let Some(p) = &validating {
        patch_ca(&vapi, p, &ca).await?;
    }
    if let Some(p) = &mutating {
        patch_ca(&mapi, p, &ca).await?;
    }
    Ok(())
}

/// `--days` within what a certificate can say (before year 9999) and longer than [`MIN_LEFT`].
fn check_days(days: u32) -> Result<(), WebhookCertsError> {
    if (31..=MAX_DAYS).contains(&days) {
        Ok(())
    } else {
        Err(WebhookCertsError::Days)
    }
}

/// One webhook of a configuration: its name, its `caBundle`, and whether it calls Trow's
/// Service.
struct Hook {
    name: String,
    ca_bundle: Option<ByteString>,
    ours: bool,
}

/// What to patch in one configuration: Trow's webhooks, and the names of the others.
struct Plan {
    kind: &'static str,
    name: String,
    hooks: Vec<Hook>,
    others: Vec<String>,
}

/// Reads configuration `name` and sorts its webhooks into Trow's (calling `--service` in
/// `--namespace`) and the others; a configuration with webhooks but none of Trow's is an error
/// (a wrong flag, most likely).
async fn plan<K>(
    api: &Api<K>,
    kind: &'static str,
    name: &str,
    a: &WebhookCertsArgs,
    webhooks: impl Fn(&K) -> Vec<Hook>,
) -> Result<Plan, WebhookCertsError>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let config = api
        .get_opt(name)
        .await
        .map_err(api_err(kind, name, "reading"))?
        .ok_or_else(|| WebhookCertsError::NotFound {
            kind,
            name: name.to_string(),
        })?;
    let all = webhooks(&config);
    let empty = all.is_empty();
    let (hooks, others): (Vec<Hook>, Vec<Hook>) = all.into_iter().partition(|h| h.ours);
    let others: Vec<String> = others.into_iter().map(|h| h.name).collect();
    if hooks.is_empty() && !empty {
        return Err(WebhookCertsError::NotOurs {
            kind,
            name: name.to_string(),
            namespace: a.namespace.clone(),
            service: a.service.clone(),
            others,
        });
    }
    Ok(Plan {
        kind,
        name: name.to_string(),
        hooks,
        others,
    })
}

/// Sets `caBundle` of the planned webhooks to `ca`, by a strategic merge patch keyed by webhook
/// name (so nothing else in the configuration, other webhooks included, is rewritten); no patch
/// when every one already has it.
async fn patch_ca<K>(api: &Api<K>, p: &Plan, ca: &ByteString) -> Result<(), WebhookCertsError>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let (kind, name) = (p.kind, p.name.as_str());
    if p.hooks.is_empty() {
        println!("{kind} {name}: has no webhooks, nothing to patch");
        return Ok(());
    }
    if !p.others.is_empty() {
        println!(
            "{kind} {name}: left alone (they do not call Trow's Service): {:?}",
            p.others
        );
    }
    if p.hooks.iter().all(|h| h.ca_bundle.as_ref() == Some(ca)) {
        println!(
            "{kind} {name}: caBundle already set on {} webhook(s)",
            p.hooks.len()
        );
        return Ok(());
    }
    let patch = serde_json::json!({
        "webhooks": p.hooks
            .iter()
            .map(|h| serde_json::json!({"name": h.name, "clientConfig": {"caBundle": ca}}))
            .collect::<Vec<_>>(),
    });
    api.patch(name, &PatchParams::default(), &Patch::Strategic(&patch))
        .await
        .map_err(api_err(kind, name, "patching"))?;
    println!(
        "{kind} {name}: caBundle set on {} webhook(s)",
        p.hooks.len()
    );
    Ok(())
}

fn api_err(
    kind: &'static str,
    name: &str,
    doing: &'static str,
) -> impl FnOnce(kube::Error) -> WebhookCertsError {
    api(format!("{doing} {kind} {name}"))
}

impl WebhookCertsError {
    /// Another writer got there first (two hook Jobs, or someone editing the object between
    /// our read and write): starting over reads what it wrote.
    fn is_race(&self) -> bool {
        matches!(self, WebhookCertsError::Api { source: kube::Error::Api(s), .. }
            if s.is_conflict() || s.is_already_exists())
    }
}

/// Runs `trow webhook-certs`; returns the exit status (2: could not do it). Lost races are
/// retried from the start (the command is idempotent) a few times.
pub async fn run(a: WebhookCertsArgs) -> i32 {
    let mut tries = 0;
    loop {
        tries += 1;
        match apply(&a).await {
            Ok(()) => return 0,
            Err(e) if e.is_race() && tries < 3 => {
                eprintln!("trow webhook-certs: {e}; starting over");
            }
            Err(e) => {
                eprintln!("trow webhook-certs: {e}");
                return 2;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        assert!(check_name("service", "trow-webhooks", false).is_ok());
        assert!(check_name("secret", "trow.webhook-tls", true).is_ok());
        for bad in ["", "Trow", "a_b", "-a", "a/b", "../x"] {
            assert!(check_name("service", bad, false).is_err(), "{bad:?}");
        }
        assert!(check_name("namespace", "a.b", false).is_err());
    }

    /// Days that would end past year 9999 are refused up front (they made `issue` panic).
    #[test]
    fn days_are_bounded() {
        assert!(check_days(31).is_ok() && check_days(MAX_DAYS).is_ok());
        for bad in [0, 30, MAX_DAYS + 1, 3_000_000, u32::MAX] {
            assert!(
                matches!(check_days(bad), Err(WebhookCertsError::Days)),
                "{bad}"
            );
        }
    }
}
