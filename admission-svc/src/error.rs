//! Why an AdmissionReview could not be read: its own module, since both the envelope
//! (`review`) and the pod-spec walk (`podspec`) refuse reviews.

/// Why a review could not be read. Every variant means 400 Bad Request: the fault is in what
/// was sent (or in webhook rules that send what this webhook does not handle).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReviewError {
    #[error("the body is not valid JSON: {0}")]
    Json(String),
    #[error("the body is not an AdmissionReview: {0}")]
    Shape(String),
    #[error(
        "unsupported {kind} version {api_version:?}: expected AdmissionReview \
         admission.k8s.io/v1 or admission.k8s.io/v1beta1"
    )]
    Version { kind: String, api_version: String },
    #[error("the AdmissionReview has no request")]
    MissingRequest,
    #[error("the {0} request has no object")]
    MissingObject(String),
    #[error(
        "kind {0} has no pod spec this webhook knows (Pod, Deployment, StatefulSet, DaemonSet, \
         ReplicaSet, Job, CronJob, ReplicationController, PodTemplate): check the webhook's rules"
    )]
    UnsupportedKind(String),
    #[error("the request's object is not a valid {kind}: {reason}")]
    InvalidObject { kind: String, reason: String },
}
