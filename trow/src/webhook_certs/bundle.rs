//! The webhooks' CA and serving certificate: made with rcgen, and judged when read back from the
//! Secret (x509-parser, rcgen's own parser) so that a good one is kept and anything else renewed.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;

/// A kept certificate must stay valid at least this long: a renewal then happens at an upgrade
/// well before anything expires.
pub const MIN_LEFT: Duration = Duration::from_secs(30 * 24 * 3600);

/// The Secret's type and keys (what cert-manager writes too, so the webhook gateway's mount is
/// the same whichever made it).
pub const SECRET_TYPE: &str = "kubernetes.io/tls";
pub const CERT_KEY: &str = "tls.crt";
pub const KEY_KEY: &str = "tls.key";
pub const CA_KEY: &str = "ca.crt";

/// The Service the webhooks are called at.
#[derive(Clone, Debug)]
pub struct Service {
    pub namespace: String,
    pub name: String,
}

impl Service {
    /// Every name a client in the cluster may use for the Service; the API server uses
    /// `NAME.NAMESPACE.svc`.
    pub fn dns_names(&self) -> Vec<String> {
        let (n, ns) = (&self.name, &self.namespace);
        vec![
            n.clone(),
            format!("{n}.{ns}"),
            format!("{n}.{ns}.svc"),
            format!("{n}.{ns}.svc.cluster.local"),
        ]
    }
}

/// A CA, a serving certificate it signed and that certificate's key, all PEM. Debug never shows
/// the key.
#[derive(Clone, PartialEq, Eq)]
pub struct Bundle {
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for Bundle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bundle")
            .field("ca_pem", &self.ca_pem)
            .field("cert_pem", &self.cert_pem)
            .field("key_pem", &"<redacted>")
            .finish()
    }
}

impl Bundle {
    /// The bundle a Secret holds, or why it holds none.
    pub fn from_secret(s: &Secret) -> Result<Bundle, String> {
        let data = s.data.clone().unwrap_or_default();
        let get = |k: &str| -> Result<String, String> {
            let v = data.get(k).ok_or_else(|| format!("it has no {k}"))?;
            String::from_utf8(v.0.clone()).map_err(|_| format!("its {k} is not PEM text"))
        };
        Ok(Bundle {
            ca_pem: get(CA_KEY)?,
            cert_pem: get(CERT_KEY)?,
            key_pem: get(KEY_KEY)?,
        })
    }

    /// The Secret's data.
    pub fn data(&self) -> BTreeMap<String, ByteString> {
        [
            (CA_KEY, &self.ca_pem),
            (CERT_KEY, &self.cert_pem),
            (KEY_KEY, &self.key_pem),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), ByteString(v.clone().into_bytes())))
        .collect()
    }
}

/// Whether a bundle can stay.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Keep,
    /// Why it must be replaced.
    Renew(String),
}

fn secs(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Keep `b` only if its CA is a CA, its certificate was signed by that CA, names every one of
/// `names`, matches its key, and both are valid from `now` until at least `now + min_left`.
pub fn judge(b: &Bundle, names: &[String], now: SystemTime, min_left: Duration) -> Verdict {
    match check(b, names, secs(now), secs(now + min_left)) {
        Ok(()) => Verdict::Keep,
        Err(why) => Verdict::Renew(why),
    }
}

/// The signature algorithms Go's `x509` verifier (the API server's webhook client) accepts: a
/// bundle signed with SHA-1 or MD5 is refused there, so it must not be kept here.
fn strong_signature(alg: &x509_parser::oid_registry::Oid) -> bool {
    use x509_parser::oid_registry::*;
    [
        OID_PKCS1_SHA256WITHRSA,
        OID_PKCS1_SHA384WITHRSA,
        OID_PKCS1_SHA512WITHRSA,
        OID_PKCS1_RSASSAPSS,
        OID_SIG_ECDSA_WITH_SHA256,
        OID_SIG_ECDSA_WITH_SHA384,
        OID_SIG_ECDSA_WITH_SHA512,
        OID_SIG_ED25519,
    ]
    .contains(alg)
}

fn check(b: &Bundle, names: &[String], now: i64, until: i64) -> Result<(), String> {
    use x509_parser::prelude::*;
    let (rest, ca_pem) =
        parse_x509_pem(b.ca_pem.as_bytes()).map_err(|e| format!("ca.crt is not PEM: {e}"))?;
    // The whole of ca.crt becomes caBundle: anything after the one CA would be trusted too.
    if !rest.iter().all(u8::is_ascii_whitespace) {
        return Err("ca.crt holds more than the one CA that signed tls.crt".into());
    }
    let ca = ca_pem
        .parse_x509()
        .map_err(|e| format!("ca.crt is not a certificate: {e}"))?;
    let (_, cert_pem) =
        parse_x509_pem(b.cert_pem.as_bytes()).map_err(|e| format!("tls.crt is not PEM: {e}"))?;
    let cert = cert_pem
        .parse_x509()
        .map_err(|e| format!("tls.crt is not a certificate: {e}"))?;
    for (what, c) in [("ca.crt", &ca), ("tls.crt", &cert)] {
        if !strong_signature(&c.signature_algorithm.algorithm) {
            return Err(format!(
                "{what} is signed with {} (the API server accepts only SHA-256 or stronger)",
                c.signature_algorithm.algorithm
            ));
        }
        // Go checks the extended key usage along the whole chain: absent, any or serverAuth.
        match c.extended_key_usage() {
            Ok(None) => {}
            Ok(Some(e)) if e.value.any || e.value.server_auth => {}
            _ => {
                return Err(format!(
                    "{what}'s extended key usage does not allow serverAuth"
                ));
            }
        }
    }
    if !ca.is_ca() {
        return Err("ca.crt is not a CA certificate".into());
    }
    for (what, c) in [("ca.crt", &ca), ("tls.crt", &cert)] {
        let v = c.validity();
        if v.not_before.timestamp() > now {
            return Err(format!("{what} is not valid yet"));
        }
        if v.not_after.timestamp() < until {
            return Err(format!(
                "{what} expires {} (less than {} days from now)",
                v.not_after,
                (until - now) / 86400
            ));
        }
    }
    if cert.issuer() != ca.subject() || cert.verify_signature(Some(ca.public_key())).is_err() {
        return Err("tls.crt was not signed by ca.crt".into());
    }
    let sans: Vec<String> = match cert.subject_alternative_name() {
        Ok(Some(ext)) => ext
            .value
            .general_names
            .iter()
            .filter_map(|g| match g {
                GeneralName::DNSName(n) => Some(n.to_ascii_lowercase()),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    };
    let missing: Vec<&String> = names
        .iter()
        .filter(|n| !sans.contains(&n.to_ascii_lowercase()))
        .collect();
    if !missing.is_empty() {
        return Err(format!("tls.crt does not name {missing:?}"));
    }
    let key = rcgen::KeyPair::from_pem(&b.key_pem)
        .map_err(|_| "tls.key is not a PKCS#8 private key".to_string())?;
    if rcgen::PublicKeyData::subject_public_key_info(&key) != cert.public_key().raw {
        return Err("tls.key is not tls.crt's key".into());
    }
    Ok(())
}

/// The longest `--days`: the certificates must end before year 9999, which X.509 (and `time`)
/// cannot go past.
pub const MAX_DAYS: u32 = 36500;

/// What the webhook configurations' `caBundle` gets after a renewal: the new CA, and the old one
/// while it is still valid. The API server switches to a new `caBundle` at once, but the webhook
/// pods serve the old certificate until the kubelet syncs the Secret's volume (a minute or two)
/// and Trow reloads it; trusting both CAs meanwhile keeps a `failurePolicy: Fail` webhook from
/// refusing every request in that window. ca.crt itself holds only the new CA (it must be the
/// one that signed tls.crt). The old CA is dropped by the next run that keeps the bundle (the
/// next upgrade), when the pods have long served the new certificate; its key was never stored,
/// so trusting it a while longer lets no one sign anything new.
pub fn ca_bundle_after_renewal(new: &Bundle, old: Option<&Bundle>, now: SystemTime) -> String {
    use x509_parser::prelude::*;
    let old_ca = old.and_then(|o| {
        let (_, pem) = parse_x509_pem(o.ca_pem.as_bytes()).ok()?;
        let ca = pem.parse_x509().ok()?;
        let live = ca.validity().not_after.timestamp() > secs(now);
        (ca.is_ca() && live && o.ca_pem.trim() != new.ca_pem.trim()).then(|| o.ca_pem.clone())
    });
    match old_ca {
        Some(o) => format!("{}\n{}\n", new.ca_pem.trim_end(), o.trim()),
        None => new.ca_pem.clone(),
    }
}

/// A new CA and a serving certificate for `names` signed by it, both ECDSA P-256 and valid from
/// an hour before `now` (clock skew between nodes) for `days` (at most [`MAX_DAYS`]).
pub fn issue(names: &[String], days: u32, now: SystemTime) -> Result<Bundle, rcgen::Error> {
    issue_for(
        names,
        days,
        now,
        vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth],
    )
}

fn issue_for(
    names: &[String],
    days: u32,
    now: SystemTime,
    eku: Vec<rcgen::ExtendedKeyUsagePurpose>,
) -> Result<Bundle, rcgen::Error> {
    use rcgen::{
        BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair,
        KeyUsagePurpose, PKCS_ECDSA_P256_SHA256,
    };
    let start = time::OffsetDateTime::from(now) - time::Duration::hours(1);
    let end = time::OffsetDateTime::from(now) + time::Duration::days(i64::from(days));
    let subject = names.get(2).or(names.first()).cloned().unwrap_or_default();

    let ca_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.distinguished_name = DistinguishedName::new();
    ca.distinguished_name.push(
        DnType::CommonName,
        format!("trow webhooks CA for {subject}"),
    );
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    ca.not_before = start;
    ca.not_after = end;
    let ca_cert = ca.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca, &ca_key);

    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
    let mut leaf = CertificateParams::new(names.to_vec())?;
    leaf.distinguished_name = DistinguishedName::new();
    leaf.distinguished_name.push(DnType::CommonName, subject);
    leaf.is_ca = IsCa::ExplicitNoCa;
    leaf.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    leaf.extended_key_usages = eku;
    leaf.use_authority_key_identifier_extension = true;
    leaf.not_before = start;
    leaf.not_after = end;
    let cert = leaf.signed_by(&key, &issuer)?;
    Ok(Bundle {
        ca_pem: ca_cert.pem(),
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> Vec<String> {
        Service {
            namespace: "trow".into(),
            name: "trow-webhooks".into(),
        }
        .dns_names()
    }

    const DAY: Duration = Duration::from_secs(86400);

    #[test]
    fn the_service_names() {
        assert_eq!(
            names(),
            [
                "trow-webhooks",
                "trow-webhooks.trow",
                "trow-webhooks.trow.svc",
                "trow-webhooks.trow.svc.cluster.local"
            ]
        );
    }

    #[test]
    fn a_fresh_bundle_is_kept() {
        let now = SystemTime::now();
        let b = issue(&names(), 3650, now).unwrap();
        assert_eq!(judge(&b, &names(), now, MIN_LEFT), Verdict::Keep);
        assert!(b.key_pem.contains("PRIVATE KEY"));
        assert!(
            !format!("{b:?}").contains(&b.key_pem),
            "Debug shows the key"
        );
    }

    #[test]
    fn an_expiring_or_expired_bundle_is_renewed() {
        let now = SystemTime::now();
        let b = issue(&names(), 40, now).unwrap();
        assert_eq!(judge(&b, &names(), now, MIN_LEFT), Verdict::Keep);
        let later = now + 20 * DAY;
        assert!(matches!(
            judge(&b, &names(), later, MIN_LEFT),
            Verdict::Renew(w) if w.contains("expires")
        ));
        let expired = now + 41 * DAY;
        assert!(matches!(
            judge(&b, &names(), expired, MIN_LEFT),
            Verdict::Renew(_)
        ));
        let early = now - 2 * DAY;
        assert!(matches!(
            judge(&b, &names(), early, MIN_LEFT),
            Verdict::Renew(w) if w.contains("not valid yet")
        ));
    }

    #[test]
    fn wrong_names_are_renewed() {
        let now = SystemTime::now();
        let b = issue(&names(), 3650, now).unwrap();
        let other = Service {
            namespace: "other".into(),
            name: "trow-webhooks".into(),
        }
        .dns_names();
        assert!(matches!(
            judge(&b, &other, now, MIN_LEFT),
            Verdict::Renew(w) if w.contains("does not name")
        ));
    }

    #[test]
    fn mismatched_parts_are_renewed() {
        let now = SystemTime::now();
        let a = issue(&names(), 3650, now).unwrap();
        let b = issue(&names(), 3650, now).unwrap();
        let foreign_ca = Bundle {
            ca_pem: b.ca_pem.clone(),
            ..a.clone()
        };
        assert!(matches!(
            judge(&foreign_ca, &names(), now, MIN_LEFT),
            Verdict::Renew(w) if w.contains("not signed")
        ));
        let foreign_key = Bundle {
            key_pem: b.key_pem.clone(),
            ..a.clone()
        };
        assert!(matches!(
            judge(&foreign_key, &names(), now, MIN_LEFT),
            Verdict::Renew(w) if w.contains("not tls.crt's key")
        ));
        let leaf_as_ca = Bundle {
            ca_pem: a.cert_pem.clone(),
            ..a.clone()
        };
        assert!(matches!(
            judge(&leaf_as_ca, &names(), now, MIN_LEFT),
            Verdict::Renew(w) if w.contains("not a CA")
        ));
        let garbage = Bundle {
            cert_pem: "nope".into(),
            ..a
        };
        assert!(matches!(
            judge(&garbage, &names(), now, MIN_LEFT),
            Verdict::Renew(_)
        ));
    }

    /// What Go's verifier refuses must be renewed, not kept (each was kept before).
    #[test]
    fn what_the_api_server_would_refuse_is_renewed() {
        let now = SystemTime::now();
        let sha1 = Bundle {
            ca_pem: include_str!("testdata/sha1-ca.crt").into(),
            cert_pem: include_str!("testdata/sha1-tls.crt").into(),
            key_pem: include_str!("testdata/sha1-tls.key").into(),
        };
        assert!(matches!(
            judge(&sha1, &names(), now, MIN_LEFT),
            Verdict::Renew(w) if w.contains("signed with")
        ));
        let client_only = issue_for(
            &names(),
            3650,
            now,
            vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth],
        )
        .unwrap();
        assert!(matches!(
            judge(&client_only, &names(), now, MIN_LEFT),
            Verdict::Renew(w) if w.contains("serverAuth")
        ));
        let no_eku = issue_for(&names(), 3650, now, vec![]).unwrap();
        assert_eq!(judge(&no_eku, &names(), now, MIN_LEFT), Verdict::Keep);
        let a = issue(&names(), 3650, now).unwrap();
        let other = issue(&names(), 3650, now).unwrap();
        let two_cas = Bundle {
            ca_pem: format!("{}{}", a.ca_pem, other.ca_pem),
            ..a.clone()
        };
        assert!(matches!(
            judge(&two_cas, &names(), now, MIN_LEFT),
            Verdict::Renew(w) if w.contains("more than the one CA")
        ));
        let trailing_space = Bundle {
            ca_pem: format!("{}\n  \n", a.ca_pem),
            ..a
        };
        assert_eq!(
            judge(&trailing_space, &names(), now, MIN_LEFT),
            Verdict::Keep
        );
    }

    #[test]
    fn a_renewal_publishes_the_old_ca_too_while_it_is_valid() {
        let now = SystemTime::now();
        let old = issue(&names(), 40, now).unwrap();
        let new = issue(&names(), 3650, now).unwrap();
        let both = ca_bundle_after_renewal(&new, Some(&old), now);
        assert!(both.starts_with(&new.ca_pem), "{both}");
        assert!(both.contains(old.ca_pem.trim()), "{both}");
        assert_eq!(both.matches("BEGIN CERTIFICATE").count(), 2);
        assert_eq!(ca_bundle_after_renewal(&new, None, now), new.ca_pem);
        let after_expiry = now + 41 * DAY;
        assert_eq!(
            ca_bundle_after_renewal(&new, Some(&old), after_expiry),
            new.ca_pem
        );
        let garbage = Bundle {
            ca_pem: "nope".into(),
            ..old
        };
        assert_eq!(
            ca_bundle_after_renewal(&new, Some(&garbage), now),
            new.ca_pem
        );
    }

    #[test]
    fn a_secret_missing_a_key_is_renewed() {
        let b = issue(&names(), 3650, SystemTime::now()).unwrap();
        let mut data = b.data();
        assert_eq!(Bundle::from_secret(&secret(data.clone())).unwrap(), b);
        data.remove(CA_KEY);
        assert!(
            Bundle::from_secret(&secret(data))
                .unwrap_err()
                .contains("ca.crt")
        );
    }

    fn secret(data: BTreeMap<String, ByteString>) -> Secret {
        Secret {
            data: Some(data),
            ..Default::default()
        }
    }
}
