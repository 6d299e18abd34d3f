//! Manifest fills that failed in this process lately, so the requests that followed a failed
//! fill get the failure its filler got (a 502 naming the upstream), rather than storage's
//! "the fill failed", and without each of them asking the upstream again.
//!
//! Storage knows only that a fill was cancelled; why is known to the proxy that filled it. A
//! follower on another replica does not find the failure here and makes one fetch of its own.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tonic::Status;

/// How long a failure is kept: long enough for every follower's read to end.
const KEPT: Duration = Duration::from_secs(30);

/// Failures by `repository@digest`, with when they happened.
#[derive(Default)]
pub struct Failures {
    recent: Mutex<HashMap<String, (Instant, Status)>>,
}

impl Failures {
    /// Records that the fill of `key` failed with `status` (and forgets old failures).
    pub fn record(&self, key: &str, status: &Status) {
        let mut recent = self.recent.lock().expect("failures lock");
        recent.retain(|_, (at, _)| at.elapsed() < KEPT);
        recent.insert(key.to_string(), (Instant::now(), status.clone()));
    }

    /// The failure of `key` recorded at or after `joined` (when the caller joined the fill):
    /// an older one belongs to another fill.
    pub fn since(&self, key: &str, joined: Instant) -> Option<Status> {
        let recent = self.recent.lock().expect("failures lock");
        let (at, status) = recent.get(key)?;
        (*at >= joined).then(|| status.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_failures_after_joining_count() {
        let f = Failures::default();
        let before = Instant::now();
        f.record("r@d", &Status::unavailable("upstream x answered 500"));
        let after = Instant::now();
        assert_eq!(
            f.since("r@d", before).map(|s| s.message().to_string()),
            Some("upstream x answered 500".to_string())
        );
        assert!(f.since("r@d", after).is_none());
        assert!(f.since("r@other", before).is_none());
    }
}
