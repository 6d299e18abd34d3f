//! Serving the webhooks over gRPC (`trow.admission.v1.Admission`), with health and reflection
//! like every Trow service. The gateway forwards the API server's AdmissionReview here.

use std::future::Future;
use std::sync::Arc;
use tokio::net::TcpListener;
use tonic::server::NamedService;
use tonic::service::Routes;
use tonic::{Request, Response, Status};
use trow_proto::admission::admission_server::{Admission, AdmissionServer};
use trow_proto::admission::{Decision, Review};
use trow_proto::in_process::Direct;
use trow_proto::transport::MAX_MESSAGE_SIZE;
use trow_proto::trust::Trust;

use crate::Webhooks;
use crate::metrics::{Outcome, Webhook, decided};
use crate::prewarm::Prewarmer;

/// The webhooks, and the pre-warmer when there is a proxy to warm through.
pub struct AdmissionService {
    pub hooks: Webhooks,
    pub prewarm: Option<Arc<Prewarmer>>,
}

impl AdmissionService {
    /// Says at start-up what the webhooks will and will not do.
    pub fn log_startup(&self) {
        for w in self.hooks.startup_warnings() {
            tracing::warn!("{w}");
        }
        if self.hooks.mutation().prewarm && self.prewarm.is_none() {
            tracing::warn!(
                "image_mutation.prewarm is on but no proxy is configured: nothing is pre-warmed"
            );
        }
    }
}

fn bad_review(e: crate::ReviewError) -> Status {
    Status::invalid_argument(e.to_string())
}

#[tonic::async_trait]
impl Admission for Shared {
    async fn validate(&self, r: Request<Review>) -> Result<Response<Review>, Status> {
        let (json, outcome) = self
            .0
            .hooks
            .validate(&r.into_inner().json)
            .inspect_err(|_| decided(Webhook::Validate, Outcome::Error))
            .map_err(bad_review)?;
        decided(
            Webhook::Validate,
            if outcome.allowed {
                Outcome::Allowed
            } else {
                Outcome::Denied
            },
        );
        if outcome.allowed {
            tracing::debug!(object = %outcome.object, uid = %outcome.uid, "admitted");
        } else {
            let denied: Vec<String> = outcome.denied.iter().map(|d| d.to_string()).collect();
            tracing::info!(object = %outcome.object, uid = %outcome.uid, dry_run = outcome.dry_run,
                denied = %denied.join("; "), "refused");
        }
        let decision = Decision {
            allowed: outcome.allowed,
            dry_run: outcome.dry_run,
            object: outcome.object.clone(),
            detail: outcome
                .denied
                .iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join("; "),
        };
        Ok(Response::new(Review {
            json: json.into(),
            decision: Some(decision),
        }))
    }

    async fn mutate(&self, r: Request<Review>) -> Result<Response<Review>, Status> {
        let (json, outcome) = self
            .0
            .hooks
            .mutate(&r.into_inner().json)
            .inspect_err(|_| decided(Webhook::Mutate, Outcome::Error))
            .map_err(bad_review)?;
        decided(
            Webhook::Mutate,
            if outcome.rewritten.is_empty() {
                Outcome::Allowed
            } else {
                Outcome::Patched
            },
        );
        for w in &outcome.warnings {
            tracing::debug!(object = %outcome.object, "{w}");
        }
        if !outcome.rewritten.is_empty() {
            tracing::info!(object = %outcome.object, uid = %outcome.uid, dry_run = outcome.dry_run,
                images = outcome.rewritten.len(), "images rewritten to pull through the cache");
        }
        // A dry run has no side effects; warming is one.
        if let Some(p) = &self.0.prewarm
            && !outcome.dry_run
            && self.0.hooks.mutation().prewarm
        {
            p.warm(&outcome.warm);
        }
        let decision = Decision {
            allowed: outcome.allowed,
            dry_run: outcome.dry_run,
            object: outcome.object.clone(),
            detail: match outcome.rewritten.len() {
                0 => String::new(),
                n => format!("{n} image(s) rewritten to pull through the cache"),
            },
        };
        Ok(Response::new(Review {
            json: json.into(),
            decision: Some(decision),
        }))
    }
}

/// Serves `service` on `listener`, to the callers `trust` admits, until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    service: Arc<AdmissionService>,
    shutdown: impl Future<Output = ()> + Send,
    trust: &Trust,
) -> Result<(), tonic::transport::Error> {
    trow_proto::server::server(routes(service).await, trust.guard())
        .serve_with_incoming_shutdown(trust.incoming(listener), shutdown)
        .await
}

/// `service` for callers in this process, called directly (see `trow_proto::in_process`).
pub async fn in_process(service: Arc<AdmissionService>) -> Direct {
    trow_proto::in_process::direct(routes(service).await)
}

/// The Admission API with health and reflection.
async fn routes(service: Arc<AdmissionService>) -> Routes {
    let admission = AdmissionServer::new(Shared(service))
        .max_decoding_message_size(MAX_MESSAGE_SIZE)
        .max_encoding_message_size(MAX_MESSAGE_SIZE);
    trow_proto::server::operator_routes(
        &[<AdmissionServer<Shared> as NamedService>::NAME],
        trow_proto::descriptors::ADMISSION,
    )
    .await
    .add_service(admission)
}

/// One service behind any number of listeners.
pub struct Shared(pub Arc<AdmissionService>);
