//! Running `trow fsck` from tests: every concurrency and fault test ends by checking the store
//! it leaves with the same checker operators run.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::{Trow, trow_bin};

/// Runs `trow fsck --data-dir data_dir` and panics with its output unless it exits 0 (clean).
pub fn fsck(data_dir: &Path) {
    let out = Command::new(trow_bin())
        .arg("fsck")
        .arg("--data-dir")
        .arg(data_dir)
        .output()
        .unwrap_or_else(|e| panic!("run trow fsck: {e}"));
    assert!(
        out.status.success(),
        "trow fsck --data-dir {} exited with {}:\n{}{}",
        data_dir.display(),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Stops `t` gracefully (SIGTERM: the gateway first, then the proxies, then storage; each gets
/// 10 s), then checks its data dir with [`fsck`]. The store must be consistent once Trow stopped,
/// whatever the test did to it.
pub fn stop_and_fsck(t: &mut Trow) {
    let grace = Duration::from_secs(10);
    assert!(
        t.main.terminate(grace).is_some(),
        "trow did not stop within {grace:?} of SIGTERM:\n{}",
        t.main.log_text()
    );
    for p in t.proxies.iter_mut() {
        assert!(
            p.terminate(grace).is_some(),
            "trow proxy did not stop within {grace:?} of SIGTERM:\n{}",
            p.log_text()
        );
    }
    if let Some(s) = t.storage.as_mut() {
        assert!(
            s.terminate(grace).is_some(),
            "trow storage did not stop within {grace:?} of SIGTERM:\n{}",
            s.log_text()
        );
    }
    fsck(&t.data_dir);
}
