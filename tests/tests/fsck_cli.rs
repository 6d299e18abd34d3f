//! `trow fsck` as operators run it: exit status 0 clean, 1 problems (each on its own line, then
//! the summary), 2 when it cannot run; a warning when a running Trow holds the data dir's lock.

use std::path::Path;
use std::process::{Command, Output};
use trow_tests::{Topology, Trow, sha256_digest, trow_bin};

fn fsck(data_dir: &Path) -> Output {
    Command::new(trow_bin())
        .arg("fsck")
        .arg("--data-dir")
        .arg(data_dir)
        .output()
        .expect("run trow fsck")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn exit_status_says_clean_problems_or_cannot_run() {
    let tmp = tempfile::tempdir().unwrap();
    let o = fsck(tmp.path());
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).trim(),
        "fsck: 0 blobs, 0 repositories, 0 tags checked; 0 problems"
    );

    // A blob whose bytes are not what its name says.
    let name = sha256_digest(b"the real bytes");
    let hex = name.trim_start_matches("sha256:");
    let dir = tmp.path().join("blobs/sha256").join(&hex[..2]);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(hex), b"other bytes").unwrap();
    let o = fsck(tmp.path());
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let stdout = String::from_utf8_lossy(&o.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{stdout}");
    assert!(
        lines[0].starts_with(&format!("blobs/sha256/{}/{hex}: ", &hex[..2]))
            && lines[0].contains(&sha256_digest(b"other bytes")),
        "{stdout}"
    );
    assert_eq!(
        lines[1],
        "fsck: 1 blobs, 0 repositories, 0 tags checked; 1 problems"
    );

    let missing = tmp.path().join("no-such-dir");
    let o = fsck(&missing);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(!missing.exists(), "fsck created the data dir");
}

#[test]
fn warns_when_a_running_trow_holds_the_store() {
    let t = Trow::start(Topology::OneProcess);
    let o = fsck(&t.data_dir);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        stderr.contains("in use by a running Trow"),
        "no warning while Trow runs: {}",
        text(&o)
    );
    // It only probed the lock: Trow keeps serving.
    let st = Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}"])
        .arg(format!("{}/v2/", t.url))
        .output()
        .unwrap();
    assert_eq!(st.stdout, b"200");
}
