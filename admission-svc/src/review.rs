//! The AdmissionReview the API server sends, and the one to answer with.
//!
//! Both webhooks need the same thing from a review: the object's images, each with where it
//! stands (see [`crate::podspec`]), and for an UPDATE the images the object had before, so that
//! what did not change is neither judged again nor rewritten.
//!
//! The review's envelope is parsed with kube-core's admission types. The answer carries the
//! request's `uid` and is in the request's `apiVersion` (`admission.k8s.io/v1` or `v1beta1`).
//!
//! A review that cannot be read is a [`ReviewError`]: the caller answers HTTP 400 with its
//! message. A CREATE or UPDATE of a kind without a pod spec is one too: the webhook's rules
//! should not send it. DELETE and CONNECT start nothing, so they are read whatever the kind
//! (`kubectl exec` is a CONNECT of `PodExecOptions`) and have no images.

pub use crate::error::ReviewError;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use kube_core::DynamicObject;
use kube_core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview, Operation};

use crate::podspec::{ImageSite, KINDS, images};

/// The AdmissionReview versions answered, each in its own version.
pub const API_VERSIONS: [&str; 2] = ["admission.k8s.io/v1", "admission.k8s.io/v1beta1"];

/// A parsed review.
#[derive(Debug)]
pub struct Review {
    request: AdmissionRequest<DynamicObject>,
    /// The object's images; empty for DELETE and CONNECT.
    pub images: Vec<ImageSite>,
    /// For UPDATE: the images of the object as it was (empty when that cannot be read).
    pub old_images: Vec<ImageSite>,
    /// The object has a `deletionTimestamp`: it is on its way out and will start nothing.
    pub being_deleted: bool,
}

impl Review {
    /// Parses the review the API server sent.
    pub fn parse(json: &[u8]) -> Result<Review, ReviewError> {
        let review: AdmissionReview<DynamicObject> =
            serde_json::from_slice(json).map_err(|e| match e.classify() {
                serde_json::error::Category::Data => ReviewError::Shape(e.to_string()),
                _ => ReviewError::Json(e.to_string()),
            })?;
        if review.types.kind != "AdmissionReview"
            || !API_VERSIONS.contains(&review.types.api_version.as_str())
        {
            return Err(ReviewError::Version {
                kind: review.types.kind,
                api_version: review.types.api_version,
            });
        }
        let request: AdmissionRequest<DynamicObject> =
            review.try_into().map_err(|_| ReviewError::MissingRequest)?;
        let mut parsed = Review {
            images: Vec::new(),
            old_images: Vec::new(),
            being_deleted: false,
            request,
        };
        // Nothing starts on DELETE or CONNECT (whose kind is e.g. PodExecOptions).
        if matches!(
            parsed.request.operation,
            Operation::Delete | Operation::Connect
        ) {
            return Ok(parsed);
        }
        let gvk = &parsed.request.kind;
        let (group, kind) = (gvk.group.as_str(), gvk.kind.as_str());
        let Some(&(_, kind, base)) = KINDS.iter().find(|(g, k, _)| (*g, *k) == (group, kind))
        else {
            return Err(ReviewError::UnsupportedKind(match group {
                "" => kind.to_string(),
                g => format!("{kind} ({g})"),
            }));
        };
        let object = parsed
            .request
            .object
            .as_ref()
            .ok_or_else(|| ReviewError::MissingObject(operation(&parsed.request.operation)))?;
        parsed.being_deleted = object.metadata.deletion_timestamp.is_some();
        parsed.images = images(kind, base, object)?;
        if let Some(old) = &parsed.request.old_object {
            parsed.old_images = images(kind, base, old).unwrap_or_default();
        }
        Ok(parsed)
    }

    /// The request's uid, which the answer must carry.
    pub fn uid(&self) -> &str {
        &self.request.uid
    }

    /// The API server will not persist the outcome: nothing should happen beyond answering.
    pub fn dry_run(&self) -> bool {
        self.request.dry_run
    }

    pub fn operation(&self) -> &Operation {
        &self.request.operation
    }

    /// The object's kind (`Pod`, `Deployment`, ...).
    pub fn kind(&self) -> &str {
        &self.request.kind.kind
    }

    /// The AdmissionReview version of the request, which the answer uses too.
    pub fn api_version(&self) -> &str {
        &self.request.types.api_version
    }

    /// `Deployment team/web`, for logs (the name may be empty on CREATE with `generateName`).
    pub fn object_name(&self) -> String {
        let name = match (&self.request.namespace, self.request.name.as_str()) {
            (Some(ns), name) => format!("{ns}/{name}"),
            (None, name) => name.to_string(),
        };
        format!("{} {name}", self.kind())
    }

    /// The image at `pointer` in the object before this UPDATE, if there was one.
    pub fn old_image(&self, pointer: &str) -> Option<&str> {
        self.old_images
            .iter()
            .find(|s| s.pointer == pointer)
            .map(|s| s.image.as_str())
    }

    /// This UPDATE left `site` as it was: the same image at the same place in the old object.
    /// Such an image is neither judged nor rewritten: it was admitted when it was written (a
    /// policy changed since must not block removing a finalizer), and rewriting it would
    /// restart a running container or roll a workload out for a label change. An old object
    /// that cannot be read has no images, so everything in the new one counts as changed.
    pub fn unchanged(&self, site: &ImageSite) -> bool {
        self.old_image(&site.pointer) == Some(site.image.as_str())
    }

    /// An answer allowing the request: carries the uid and the request's version.
    pub fn allow(&self) -> AdmissionResponse {
        AdmissionResponse::from(&self.request)
    }
}

/// The answer as JSON. The patch, a byte string, goes out base64-encoded as the API server's
/// Go types expect of `[]byte`.
pub fn answer(response: AdmissionResponse) -> Vec<u8> {
    let patch = response.patch.as_ref().map(|p| STANDARD.encode(p));
    let mut review = serde_json::to_value(response.into_review())
        .expect("an AdmissionReview is plain data and always serializes");
    if let (Some(patch), Some(r)) = (patch, review.get_mut("response")) {
        r["patch"] = serde_json::Value::String(patch);
    }
    serde_json::to_vec(&review).expect("a JSON value always serializes")
}

fn operation(op: &Operation) -> String {
    match op {
        Operation::Create => "CREATE",
        Operation::Update => "UPDATE",
        Operation::Delete => "DELETE",
        Operation::Connect => "CONNECT",
    }
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::podspec::Place;
    use crate::testdata::{fixture, review_json};

    #[test]
    fn a_pod_create() {
        let r = Review::parse(fixture("pod-create.json").as_bytes()).unwrap();
        assert_eq!(r.uid(), "705ab4f5-6393-11e8-b7cc-42010a800002");
        assert_eq!(r.kind(), "Pod");
        assert_eq!(r.api_version(), "admission.k8s.io/v1");
        assert_eq!(*r.operation(), Operation::Create);
        assert!(!r.dry_run() && !r.being_deleted);
        assert_eq!(r.object_name(), "Pod team/web");
        let got: Vec<_> = r
            .images
            .iter()
            .map(|s| {
                (
                    s.pointer.as_str(),
                    s.name.as_str(),
                    s.image.as_str(),
                    s.place,
                )
            })
            .collect();
        let d = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
        let init = format!("registry.example.com:5000/team/init@{d}");
        let want = [
            (
                "/spec/containers/0/image",
                "app",
                "nginx:1.27",
                Place::Containers,
            ),
            (
                "/spec/containers/1/image",
                "side",
                "quay.io/prometheus/node-exporter:v1.8.0",
                Place::Containers,
            ),
            (
                "/spec/initContainers/0/image",
                "init",
                &init,
                Place::InitContainers,
            ),
        ];
        assert_eq!(got, want);
        assert!(r.old_images.is_empty());
    }

    #[test]
    fn workloads_carry_their_template() {
        let deploy = Review::parse(fixture("deployment-create.json").as_bytes()).unwrap();
        assert_eq!(
            deploy.images[0].pointer,
            "/spec/template/spec/containers/0/image"
        );
        assert_eq!(
            deploy.images[1].pointer,
            "/spec/template/spec/containers/1/image"
        );
        assert_eq!(
            deploy.images[2].pointer,
            "/spec/template/spec/initContainers/0/image"
        );
        assert!(deploy.dry_run());
        let cron = Review::parse(fixture("cronjob-create-v1beta1.json").as_bytes()).unwrap();
        assert_eq!(cron.api_version(), "admission.k8s.io/v1beta1");
        assert_eq!(cron.images.len(), 1);
        assert_eq!(
            cron.images[0].pointer,
            "/spec/jobTemplate/spec/template/spec/containers/0/image"
        );
        assert_eq!(
            cron.images[0].image,
            "registry.example.com:5000/batch/report:2024.1"
        );
        for (kind, group, api_version, spec) in [
            (
                "StatefulSet",
                "apps",
                "apps/v1",
                r#"{"selector":{},"template":{"spec":{"containers":[{"name":"c","image":"a.io/x"}]}}}"#,
            ),
            (
                "DaemonSet",
                "apps",
                "apps/v1",
                r#"{"selector":{},"template":{"spec":{"containers":[{"name":"c","image":"a.io/x"}]}}}"#,
            ),
            (
                "ReplicaSet",
                "apps",
                "apps/v1",
                r#"{"selector":{},"template":{"spec":{"containers":[{"name":"c","image":"a.io/x"}]}}}"#,
            ),
            (
                "Job",
                "batch",
                "batch/v1",
                r#"{"template":{"spec":{"containers":[{"name":"c","image":"a.io/x"}]}}}"#,
            ),
            (
                "ReplicationController",
                "",
                "v1",
                r#"{"template":{"spec":{"containers":[{"name":"c","image":"a.io/x"}]}}}"#,
            ),
        ] {
            let object = format!(
                r#"{{"apiVersion":"{api_version}","kind":"{kind}","metadata":{{"name":"x"}},"spec":{spec}}}"#
            );
            let r = Review::parse(review_json(group, kind, "CREATE", &object, "null").as_bytes())
                .unwrap_or_else(|e| panic!("{kind}: {e}"));
            assert_eq!(
                r.images[0].pointer, "/spec/template/spec/containers/0/image",
                "{kind}"
            );
        }
        let template = r#"{"apiVersion":"v1","kind":"PodTemplate","metadata":{"name":"t"},"template":{"spec":{"containers":[{"name":"c","image":"a.io/x"}]}}}"#;
        let r =
            Review::parse(review_json("", "PodTemplate", "CREATE", template, "null").as_bytes())
                .unwrap();
        assert_eq!(r.images[0].pointer, "/template/spec/containers/0/image");
    }

    #[test]
    fn updates_keep_the_old_images_and_deletes_have_none() {
        let r = Review::parse(fixture("pod-update.json").as_bytes()).unwrap();
        assert_eq!(*r.operation(), Operation::Update);
        assert_eq!(r.images[0].image, "nginx:1.28");
        assert_eq!(r.old_image("/spec/containers/0/image"), Some("nginx:1.27"));
        assert_eq!(
            r.old_image("/spec/containers/1/image"),
            Some("quay.io/prometheus/node-exporter:v1.8.0")
        );
        assert_eq!(r.old_image("/spec/containers/2/image"), None);
        assert!(!r.unchanged(&r.images[0]), "nginx:1.27 became nginx:1.28");
        assert!(r.unchanged(&r.images[1]));
        // Image volumes compare the same way, at their own pointer.
        let with = |reference: &str| {
            format!(
                r#"{{"apiVersion":"v1","kind":"Pod","metadata":{{"name":"p"}},"spec":{{
                "containers":[{{"name":"c","image":"a.io/x"}}],
                "volumes":[{{"name":"v","image":{{"reference":"{reference}"}}}}]}}}}"#
            )
        };
        let same = review_json("", "Pod", "UPDATE", &with("b.io/m:1"), &with("b.io/m:1"));
        let same = Review::parse(same.as_bytes()).unwrap();
        assert_eq!(same.images[1].pointer, "/spec/volumes/0/image/reference");
        assert!(same.images.iter().all(|s| same.unchanged(s)));
        let moved = review_json("", "Pod", "UPDATE", &with("b.io/m:2"), &with("b.io/m:1"));
        let moved = Review::parse(moved.as_bytes()).unwrap();
        assert!(moved.unchanged(&moved.images[0]) && !moved.unchanged(&moved.images[1]));
        // A CREATE has no old object: every image is new.
        let create = review_json("", "Pod", "CREATE", &with("b.io/m:1"), "null");
        let create = Review::parse(create.as_bytes()).unwrap();
        assert!(create.images.iter().all(|s| !create.unchanged(s)));
        let debug = Review::parse(fixture("pod-debug-update.json").as_bytes()).unwrap();
        let eph = debug.images.last().unwrap();
        assert_eq!(eph.pointer, "/spec/ephemeralContainers/0/image");
        assert_eq!(
            (eph.name.as_str(), eph.image.as_str()),
            ("debugger-7xq2c", "busybox:1.36")
        );
        assert_eq!(eph.place, Place::EphemeralContainers);
        assert_eq!(debug.old_image(&eph.pointer), None);
        let pod = r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p","deletionTimestamp":"2025-01-01T00:00:00Z"},"spec":{"containers":[{"name":"c","image":"a.io/x"}]}}"#;
        let r = Review::parse(review_json("", "Pod", "UPDATE", pod, pod).as_bytes()).unwrap();
        assert!(r.being_deleted);
        let r = Review::parse(review_json("", "Pod", "DELETE", "null", pod).as_bytes()).unwrap();
        assert!(r.images.is_empty());
        // DELETE and CONNECT start nothing, whatever the kind.
        let cm = review_json("", "ConfigMap", "DELETE", "null", "null");
        assert!(Review::parse(cm.as_bytes()).unwrap().images.is_empty());
        let exec = r#"{"apiVersion":"v1","kind":"PodExecOptions","command":["sh"]}"#;
        let exec = review_json("", "PodExecOptions", "CONNECT", exec, "null");
        assert_eq!(
            Review::parse(exec.as_bytes()).unwrap().kind(),
            "PodExecOptions"
        );
    }

    #[test]
    fn unreadable_reviews_are_errors() {
        let e = |json: &str| Review::parse(json.as_bytes()).unwrap_err();
        assert!(matches!(e("{not json"), ReviewError::Json(_)));
        assert!(matches!(e(""), ReviewError::Json(_)));
        assert!(matches!(e("[1, 2]"), ReviewError::Shape(_)));
        assert_eq!(
            e(r#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}"#),
            ReviewError::MissingRequest
        );
        assert!(matches!(
            e(r#"{"apiVersion":"admission.k8s.io/v2","kind":"AdmissionReview"}"#),
            ReviewError::Version { .. }
        ));
        assert!(matches!(
            e(r#"{"apiVersion":"v1","kind":"Pod"}"#),
            ReviewError::Version { .. }
        ));
        let cm = r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"c"},"data":{}}"#;
        let err = e(&review_json("", "ConfigMap", "CREATE", cm, "null"));
        assert_eq!(err, ReviewError::UnsupportedKind("ConfigMap".into()));
        assert!(
            err.to_string()
                .starts_with("kind ConfigMap has no pod spec"),
            "{err}"
        );
        // A Deployment of another API group is not apps' Deployment.
        let other =
            r#"{"apiVersion":"example.com/v1","kind":"Deployment","metadata":{"name":"d"}}"#;
        let err = e(&review_json(
            "example.com",
            "Deployment",
            "CREATE",
            other,
            "null",
        ));
        assert_eq!(
            err,
            ReviewError::UnsupportedKind("Deployment (example.com)".into())
        );
        assert_eq!(
            e(&review_json("", "Pod", "CREATE", "null", "null")),
            ReviewError::MissingObject("CREATE".into())
        );
        let bad = r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p"},"spec":{"containers":"nginx"}}"#;
        let err = e(&review_json("", "Pod", "CREATE", bad, "null"));
        assert!(
            err.to_string()
                .starts_with("the request's object is not a valid Pod: "),
            "{err}"
        );
        // k8s-openapi defaults missing lists; the API server's own validation refuses a pod
        // without containers.
        let empty = r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p"},"spec":{}}"#;
        let r = Review::parse(review_json("", "Pod", "CREATE", empty, "null").as_bytes()).unwrap();
        assert!(r.images.is_empty());
        let wrong_version = r#"{"apiVersion":"batch/v1beta1","kind":"CronJob","metadata":{}}"#;
        let err = e(&review_json(
            "batch",
            "CronJob",
            "CREATE",
            wrong_version,
            "null",
        ));
        assert!(err.to_string().contains("batch/v1beta1"), "{err}");
        let no_uid =
            fixture("pod-create.json").replace("\"uid\": \"705ab4f5", "\"id\": \"705ab4f5");
        assert!(matches!(e(&no_uid), ReviewError::Shape(m) if m.contains("uid")));
    }

    #[test]
    fn answers_carry_uid_version_and_a_base64_patch() {
        let r = Review::parse(fixture("cronjob-create-v1beta1.json").as_bytes()).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&answer(r.allow())).unwrap();
        assert_eq!(v["apiVersion"], "admission.k8s.io/v1beta1");
        assert_eq!(v["kind"], "AdmissionReview");
        assert_eq!(v["response"]["uid"], r.uid());
        assert_eq!(v["response"]["allowed"], true);
        assert!(v["response"].get("patch").is_none());
        let patch: json_patch::Patch =
            serde_json::from_str(r#"[{"op":"replace","path":"/a","value":"b"}]"#).unwrap();
        let with = r.allow().with_patch(patch).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&answer(with)).unwrap();
        assert_eq!(v["response"]["patchType"], "JSONPatch");
        let bytes = STANDARD
            .decode(v["response"]["patch"].as_str().unwrap())
            .unwrap();
        assert_eq!(
            String::from_utf8(bytes).unwrap(),
            r#"[{"op":"replace","path":"/a","value":"b"}]"#
        );
    }
}
