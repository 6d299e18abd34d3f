//! Authentication at the gateway (README "Authentication"), with real clients and real
//! processes: podman, skopeo, oras and crane log in and push or pull through the Docker token
//! protocol; requests without the right credentials get 401 UNAUTHORIZED and the challenge;
//! tokens that expired, were signed with another key or do not grant the action are refused;
//! anonymous pull lets reads through and nothing else; replicas sharing `--token-key-file`
//! accept each other's tokens; and no password or token ever appears in a log.

#[path = "auth/rules.rs"]
mod rules;
#[path = "auth/scenarios.rs"]
mod scenarios;

use trow_tests::both_topologies;

both_topologies!(scenarios::clients_log_in_and_push);
both_topologies!(scenarios::tokens_are_checked);
both_topologies!(scenarios::anonymous_pull);
both_topologies!(scenarios::no_users_no_auth);
both_topologies!(rules::rules_decide);

#[test]
fn bad_rule_sets_stop_the_start() {
    rules::bad_rule_sets_stop_the_start();
}

/// Start-up refuses an htpasswd file with a hash that is not bcrypt, naming the line; `--help`
/// never shows a password given in the environment.
#[test]
fn start_up_refusals_and_help() {
    use std::process::Command;
    use std::time::Duration;
    let dir = tempfile::tempdir().unwrap();
    let htpasswd = dir.path().join("htpasswd");
    let good = bcrypt::hash("pw", 4).unwrap();
    std::fs::write(
        &htpasswd,
        format!("ok:{good}\nmd5:$apr1$x1y2z3$abcdefghijklmnopqrstuv\n"),
    )
    .unwrap();
    let mut cmd = Command::new(trow_tests::trow_bin());
    cmd.args(["--bind", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path().join("data"))
        .arg("--htpasswd")
        .arg(&htpasswd);
    let (status, out, err, _) = trow_tests::run_to_exit(cmd, Duration::from_secs(30));
    assert!(!status.success(), "{out}{err}");
    assert!(
        err.contains("line 2") && err.contains("\"md5\"") && err.contains("bcrypt"),
        "{err}"
    );
    assert!(!err.contains("$apr1$x1y2z3"), "the hash is echoed: {err}");

    let secret = "env-secret-4c1f9a";
    let mut cmd = Command::new(trow_tests::trow_bin());
    cmd.arg("--help").env("TROW_PASSWORD", secret);
    let (status, out, err, _) = trow_tests::run_to_exit(cmd, Duration::from_secs(30));
    assert!(status.success(), "{out}{err}");
    assert!(out.contains("--password"), "{out}");
    assert!(!out.contains(secret) && !err.contains(secret), "{out}{err}");
}
