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

fn check(b: &Bundle, names: &[String], now: i64, until: i64) -> Result<(), String> {
    use x509_parser::prelude::*;
    let (_, ca_pem) =
        parse_x509_pem(b.ca_pem.as_bytes()).map_err(|e| format!("ca.crt is not PEM: {e}"))?;
    let ca = ca_pem
        .parse_x509()
        .map_err(|e| format!("ca.crt is not a certificate: {e}"))?;
    let (_, cert_pem) =
        parse_x509_pem(b.cert_pem.as_bytes()).map_err(|e| format!("tls.crt is not PEM: {e}"))?;
    let cert = cert_pem
        .parse_x509()
        .map_err(|e| format!("tls.crt is not a certificate: {e}"))?;
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

/// A new CA and a serving certificate for `names` signed by it, both ECDSA P-256 and valid from
/// an hour before `now` (clock skew between nodes) for `days`.
pub fn issue(names: &[String], days: u32, now: SystemTime) -> Result<Bundle, rcgen::Error> {
    use rcgen::{
        BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose,
        IsCa, Issuer, KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256,
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
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
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
