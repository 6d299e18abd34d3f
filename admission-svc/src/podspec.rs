//! The images of an object's pod spec, each with where it stands.
//!
//! Every place the kubelet pulls an image from counts, or a policy could be bypassed by
//! moving an image to the place nobody looks: `containers`, `initContainers`,
//! `ephemeralContainers` (`kubectl debug`) and image volumes (`volumes[].image.reference`,
//! an image's filesystem mounted read-only, pulled by the runtime like a container's image).
//! Each image comes with its JSON pointer (for the mutating webhook's patch and for comparing
//! an UPDATE with the object as it was) and its owner's name (for messages).
//!
//! Pods carry their spec at `/spec`; workloads carry a pod template ([`KINDS`]), and the API
//! server admits them too, so a denied image is refused when the Deployment is applied, not
//! later as a ReplicaSet that silently never gets pods. The object is read with k8s-openapi's
//! typed structs chosen by kind, so an object of the wrong shape is a clear error rather than a
//! pod spec read half-way.
//!
//! A container without `image`, or an image volume without `reference`, has nothing to judge or
//! rewrite. Both fields are optional in the API so that a workload's template can leave them to
//! be set later; the API server itself refuses a Pod without them, and the Pods a workload
//! creates are judged on their own when they are created.

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{Pod, PodSpec, PodTemplate, ReplicationController};
use kube_core::DynamicObject;
use serde::de::DeserializeOwned;

use crate::error::ReviewError;

/// The kinds whose pod spec is known: (API group, kind, where the pod spec is).
pub const KINDS: [(&str, &str, &str); 9] = [
    ("", "Pod", "/spec"),
    ("apps", "Deployment", "/spec/template/spec"),
    ("apps", "StatefulSet", "/spec/template/spec"),
    ("apps", "DaemonSet", "/spec/template/spec"),
    ("apps", "ReplicaSet", "/spec/template/spec"),
    ("batch", "Job", "/spec/template/spec"),
    ("", "ReplicationController", "/spec/template/spec"),
    ("batch", "CronJob", "/spec/jobTemplate/spec/template/spec"),
    ("", "PodTemplate", "/template/spec"),
];

/// Where in the pod spec an image is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    Containers,
    InitContainers,
    EphemeralContainers,
    /// `volumes[].image.reference`.
    ImageVolume,
}

impl Place {
    /// The list's name in the pod spec.
    pub fn field(self) -> &'static str {
        match self {
            Place::Containers => "containers",
            Place::InitContainers => "initContainers",
            Place::EphemeralContainers => "ephemeralContainers",
            Place::ImageVolume => "volumes",
        }
    }

    /// What owns an image here, for messages: `container` or `volume`.
    pub fn owner(self) -> &'static str {
        match self {
            Place::ImageVolume => "volume",
            _ => "container",
        }
    }
}

/// One image of the object, as written, and where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageSite {
    /// The JSON pointer of the image's field in the object:
    /// `/spec/template/spec/initContainers/0/image`, `/spec/volumes/2/image/reference`.
    pub pointer: String,
    pub place: Place,
    /// The container's or the volume's name.
    pub name: String,
    /// The image as written.
    pub image: String,
}

impl ImageSite {
    /// `container "app"`, `volume "models"`.
    pub fn owner(&self) -> String {
        format!("{} {:?}", self.place.owner(), self.name)
    }
}

/// The images of an object of `kind`, whose pod spec is at `base`.
pub(crate) fn images(
    kind: &str,
    base: &str,
    object: &DynamicObject,
) -> Result<Vec<ImageSite>, ReviewError> {
    let value = serde_json::to_value(object).map_err(|e| ReviewError::InvalidObject {
        kind: kind.to_string(),
        reason: e.to_string(),
    })?;
    let spec = match kind {
        "Pod" => typed::<Pod>(kind, value)?.spec,
        "Deployment" => typed::<Deployment>(kind, value)?.spec.template.spec,
        "StatefulSet" => typed::<StatefulSet>(kind, value)?.spec.template.spec,
        "DaemonSet" => typed::<DaemonSet>(kind, value)?.spec.template.spec,
        "ReplicaSet" => typed::<ReplicaSet>(kind, value)?
            .spec
            .template
            .and_then(|t| t.spec),
        "Job" => typed::<Job>(kind, value)?
            .spec
            .and_then(|s| s.template.spec),
        "ReplicationController" => typed::<ReplicationController>(kind, value)?
            .spec
            .and_then(|s| s.template?.spec),
        "CronJob" => typed::<CronJob>(kind, value)?
            .spec
            .job_template
            .spec
            .and_then(|j| j.template.spec),
        "PodTemplate" => typed::<PodTemplate>(kind, value)?
            .template
            .and_then(|t| t.spec),
        _ => return Err(ReviewError::UnsupportedKind(kind.to_string())),
    };
    Ok(spec.map(|s| sites(base, s)).unwrap_or_default())
}

fn typed<T: DeserializeOwned>(kind: &str, value: serde_json::Value) -> Result<T, ReviewError> {
    serde_json::from_value(value).map_err(|e| ReviewError::InvalidObject {
        kind: kind.to_string(),
        reason: e.to_string(),
    })
}

/// Every image, in the order containers, init containers, ephemeral containers, image volumes.
fn sites(base: &str, spec: PodSpec) -> Vec<ImageSite> {
    let site = |place: Place, i: usize, name: String, image: Option<String>, field: &str| {
        image.map(|image| ImageSite {
            pointer: format!("{base}/{}/{i}/{field}", place.field()),
            place,
            name,
            image,
        })
    };
    let containers = spec
        .containers
        .into_iter()
        .enumerate()
        .filter_map(|(i, c)| site(Place::Containers, i, c.name, c.image, "image"));
    let init = spec
        .init_containers
        .unwrap_or_default()
        .into_iter()
        .enumerate()
        .filter_map(|(i, c)| site(Place::InitContainers, i, c.name, c.image, "image"));
    let ephemeral = spec
        .ephemeral_containers
        .unwrap_or_default()
        .into_iter()
        .enumerate()
        .filter_map(|(i, c)| site(Place::EphemeralContainers, i, c.name, c.image, "image"));
    // Go's `omitempty` makes an empty reference and none the same value: neither names an image.
    let volumes = spec
        .volumes
        .unwrap_or_default()
        .into_iter()
        .enumerate()
        .filter_map(|(i, v)| {
            let reference = v.image?.reference.filter(|r| !r.is_empty());
            site(Place::ImageVolume, i, v.name, reference, "image/reference")
        });
    containers
        .chain(init)
        .chain(ephemeral)
        .chain(volumes)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::review::Review;
    use crate::testdata::review_json;

    /// A pod spec with a container and, among other volumes, two image volumes (one without
    /// a reference).
    const SPEC: &str = r#"{"containers":[{"name":"c","image":"a.io/x"}],"volumes":[
        {"name":"tmp","emptyDir":{}},
        {"name":"models","image":{"reference":"b.io/models:v1","pullPolicy":"IfNotPresent"}},
        {"name":"later","image":{"pullPolicy":"Always"}},
        {"name":"blank","image":{"reference":""}}]}"#;

    fn object(kind: &str, api_version: &str, base: &str) -> String {
        // Nest the spec at `base` (`/spec/template/spec` → spec.template.spec).
        let mut v: serde_json::Value = serde_json::from_str(SPEC).unwrap();
        let path: Vec<&str> = base.trim_start_matches('/').split('/').collect();
        for key in path.iter().rev() {
            v = serde_json::json!({ *key: v });
        }
        v["apiVersion"] = api_version.into();
        v["kind"] = kind.into();
        v["metadata"] = serde_json::json!({"name": "x"});
        // What k8s-openapi requires besides the template.
        match kind {
            "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet" => {
                v["spec"]["selector"] = serde_json::json!({})
            }
            "CronJob" => v["spec"]["schedule"] = "0 2 * * *".into(),
            _ => {}
        }
        v.to_string()
    }

    #[test]
    fn image_volumes_of_every_kind_are_images() {
        for (group, kind, base) in KINDS {
            let api_version = match group {
                "" => "v1".to_string(),
                g => format!("{g}/v1"),
            };
            let json = review_json(
                group,
                kind,
                "CREATE",
                &object(kind, &api_version, base),
                "null",
            );
            let r = Review::parse(json.as_bytes()).unwrap_or_else(|e| panic!("{kind}: {e}"));
            let got: Vec<_> = r
                .images
                .iter()
                .map(|s| (s.pointer.as_str(), s.place, s.owner(), s.image.as_str()))
                .collect();
            let want = [
                (
                    format!("{base}/containers/0/image"),
                    Place::Containers,
                    "container \"c\"".to_string(),
                    "a.io/x",
                ),
                (
                    format!("{base}/volumes/1/image/reference"),
                    Place::ImageVolume,
                    "volume \"models\"".to_string(),
                    "b.io/models:v1",
                ),
            ];
            let want: Vec<_> = want
                .iter()
                .map(|(p, place, o, i)| (p.as_str(), *place, o.clone(), *i))
                .collect();
            assert_eq!(got, want, "{kind}");
        }
    }
}
