//! Prometheus metrics of the admission webhooks: every decision, by webhook and outcome.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use std::sync::LazyLock;

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
struct Decision {
    webhook: &'static str,
    outcome: &'static str,
}

static DECISIONS: LazyLock<Family<Decision, Counter>> = LazyLock::new(Family::default);

/// Registers the admission service's metrics in `registry`.
pub fn register(registry: &mut Registry) {
    registry.register(
        "trow_admission_decisions",
        "AdmissionReviews answered, by webhook (validate, mutate) and outcome (allowed, denied, \
         patched: images rewritten, error: a review that could not be read)",
        DECISIONS.clone(),
    );
}

/// The webhooks whose decisions are counted.
#[derive(Clone, Copy)]
pub(crate) enum Webhook {
    Validate,
    Mutate,
}

/// What a webhook decided.
#[derive(Clone, Copy)]
pub(crate) enum Outcome {
    Allowed,
    Denied,
    Patched,
    Error,
}

pub(crate) fn decided(webhook: Webhook, outcome: Outcome) {
    DECISIONS
        .get_or_create(&Decision {
            webhook: match webhook {
                Webhook::Validate => "validate",
                Webhook::Mutate => "mutate",
            },
            outcome: match outcome {
                Outcome::Allowed => "allowed",
                Outcome::Denied => "denied",
                Outcome::Patched => "patched",
                Outcome::Error => "error",
            },
        })
        .inc();
}
