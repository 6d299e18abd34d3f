//! Test helpers: the JSON fixtures in `tests/fixtures/` (AdmissionReviews as the API server
//! sends them) and a builder for small reviews of any kind.

use std::path::Path;

/// A fixture's text.
pub fn fixture(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// An `admission.k8s.io/v1` review of `object` (and `old_object`, JSON or `null`).
pub fn review_json(group: &str, kind: &str, operation: &str, object: &str, old: &str) -> String {
    let version = "v1";
    let resource = format!("{}s", kind.to_lowercase());
    format!(
        r#"{{"kind":"AdmissionReview","apiVersion":"admission.k8s.io/v1","request":{{
  "uid":"11111111-2222-3333-4444-555555555555",
  "kind":{{"group":"{group}","version":"{version}","kind":"{kind}"}},
  "resource":{{"group":"{group}","version":"{version}","resource":"{resource}"}},
  "name":"x","namespace":"team","operation":"{operation}",
  "userInfo":{{"username":"kubernetes-admin","groups":["system:authenticated"]}},
  "object":{object},"oldObject":{old},"dryRun":false}}}}"#
    )
}
