//! Retention rules through real processes: Trow started with a `--config-file` holding rules,
//! tags pushed with skopeo and over HTTP, `trow gc --dry-run` listing the tags the rules remove
//! and everything that goes with them, `trow gc` deleting exactly that, the kept images pulling
//! byte-identical, and `trow fsck` clean at the end.

use std::collections::BTreeSet;
use std::process::Command;
use std::time::Duration;

use trow_tests::clients::{LogsOnPanic, run, skopeo};
use trow_tests::fsck::stop_and_fsck;
use trow_tests::images::{Image, build_image_sized, read_blob};
use trow_tests::oci::Reg;
use trow_tests::{Flags, Topology, Trow, both_topologies, trow_bin};

const CONFIG: &str = r#"
retention:
  - repositories: "team/"
    keep_last: 2
    keep_tags: ["^v[0-9]+\\.[0-9]+\\.[0-9]+$"]
  - repositories: ""
    keep_tags: ["^stable$"]
"#;

/// `trow gc` against `trow`'s storage service; panics unless it succeeds; its output.
fn trow_gc(trow: &Trow, dry_run: bool) -> String {
    let (ok, text) = trow_tests::trow_gc(&trow.storage_addr, dry_run);
    assert!(ok, "trow gc: {text}");
    text
}

/// The item lines of a `trow gc` output, without their verb (`would delete ` / `deleted `).
fn items(out: &str, verb: &str) -> BTreeSet<String> {
    out.lines()
        .filter_map(|l| l.strip_prefix(verb))
        .map(str::to_string)
        .collect()
}

fn copy_in(trow: &Trow, image: &Image, repo: &str) {
    run(&mut skopeo([
        "copy",
        "--dest-tls-verify=false",
        &image.oci_ref(),
        &format!("docker://{}", trow.image(&format!("{repo}:{}", image.tag))),
    ]));
}

/// Tag write times far enough apart for any filesystem clock.
fn tick() {
    std::thread::sleep(Duration::from_millis(50));
}

mod cli {
    use super::*;

    /// In `team/app`, under `keep_last: 2` and a release pattern: the release, and the two
    /// tags pushed last (one of them over HTTP, one moved by a second push) stay; the two
    /// others go, with the bytes only they held. In `other`, under a catch-all rule keeping
    /// `stable`, only `dev` goes.
    pub async fn removes_the_tags_the_rules_do_not_keep(topology: Topology) {
        let work = tempfile::tempdir().unwrap();
        let config = work.path().join("trow.yaml");
        std::fs::write(&config, CONFIG).unwrap();
        let layout = work.path().join("layout");
        let built: Vec<Image> = ["v1.0.0", "old", "mid", "new"]
            .iter()
            .map(|t| build_image_sized(&layout, t, "amd64", 64 * 1024))
            .collect();
        let [release, old, mid, new] = [0, 1, 2, 3].map(|i| built[i].clone());
        let mut flags = Flags::config(&config);
        flags.storage = ["--gc-grace", "0s", "--gc-every", "0"]
            .map(String::from)
            .to_vec();
        let trow = Trow::start_with(topology, flags);
        let _logs = LogsOnPanic::trow(&trow);
        let reg = Reg::with_trow(trow);
        let trow = reg.trow.as_ref().unwrap();

        // Push order (by when each tag was last moved): v1.0.0, new, old, dev (HTTP), mid,
        // new again: keep_last 2 keeps mid and new, the pattern v1.0.0.
        for image in [&release, &new, &old] {
            copy_in(trow, image, "team/app");
            tick();
        }
        let (dev, _) = reg.push_image("team/app", "dev", "dev").await;
        tick();
        copy_in(trow, &mid, "team/app");
        tick();
        copy_in(trow, &new, "team/app");
        for (tag, seed) in [("stable", "s"), ("dev", "d")] {
            reg.push_image("other", tag, seed).await;
        }

        let dry = trow_gc(trow, true);
        let listed = items(&dry, "would delete ");
        let tags: BTreeSet<String> = listed
            .iter()
            .filter(|l| l.starts_with("tag "))
            .cloned()
            .collect();
        assert_eq!(
            tags,
            BTreeSet::from([
                r#"tag team/app:old (rule "team/")"#.to_string(),
                r#"tag team/app:dev (rule "team/")"#.to_string(),
                r#"tag other:dev (rule "")"#.to_string(),
            ]),
            "{dry}"
        );
        // What goes because of the rules: the untagged images' records and bytes.
        assert!(
            listed.contains(&format!("manifest team/app@{}", old.manifest_digest)),
            "{dry}"
        );
        assert!(
            listed.contains(&format!("manifest team/app@{dev}")),
            "{dry}"
        );
        for d in old
            .layers
            .iter()
            .chain([&old.config_digest, &old.manifest_digest])
        {
            assert!(
                listed.iter().any(|l| l.starts_with(&format!("blob {d} "))),
                "{d} not listed:\n{dry}"
            );
        }
        assert!(
            dry.contains("3 tags would be removed by retention rules"),
            "{dry}"
        );
        // A dry run removes nothing.
        for tag in ["old", "dev"] {
            let r = reg
                .head_m(&reg.v2(&format!("team/app/manifests/{tag}")))
                .await;
            assert_eq!(r.status, 200, "{tag}");
        }

        let done = trow_gc(trow, false);
        assert_eq!(
            items(&done, "deleted "),
            listed,
            "a collection deletes exactly what its dry run listed:\n{dry}\n{done}"
        );
        assert!(done.contains("3 tags removed by retention rules"), "{done}");
        for (repo, tag) in [("team/app", "old"), ("team/app", "dev"), ("other", "dev")] {
            let r = reg.get_m(&reg.v2(&format!("{repo}/manifests/{tag}"))).await;
            assert_eq!(r.status, 404, "{repo}:{tag}");
        }
        let r = reg
            .get_m(&reg.v2(&format!("team/app/manifests/{dev}")))
            .await;
        assert_eq!(r.status, 404, "the untagged image went with its tag");

        // The kept images pull byte-identical.
        let pulled = work.path().join("pulled");
        for image in [&release, &mid, &new] {
            run(&mut skopeo([
                "copy",
                "--src-tls-verify=false",
                &format!(
                    "docker://{}",
                    trow.image(&format!("team/app:{}", image.tag))
                ),
                &format!("oci:{}:{}", pulled.display(), image.tag),
            ]));
            for d in image.layers.iter().chain([&image.config_digest]) {
                assert_eq!(read_blob(&pulled, d), read_blob(&layout, d), "{d}");
            }
        }
        let r = reg.get_m(&reg.v2("other/manifests/stable")).await;
        assert_eq!(r.status, 200);

        // Nothing is left to remove.
        let again = trow_gc(trow, false);
        assert!(items(&again, "deleted ").is_empty(), "{again}");
        let mut trow = reg.trow.unwrap();
        stop_and_fsck(&mut trow);
    }
}
both_topologies!(cli::removes_the_tags_the_rules_do_not_keep);

/// A rule the storage service cannot honour stops the start-up, naming the key.
#[test]
fn a_bad_rule_stops_trow_storage() {
    let work = tempfile::tempdir().unwrap();
    let config = work.path().join("trow.yaml");
    std::fs::write(
        &config,
        "retention:\n  - repositories: a/\n    untagged_older_than: 10m\n",
    )
    .unwrap();
    let out = Command::new(trow_bin())
        .args(["storage", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(work.path().join("data"))
        .arg("--config-file")
        .arg(&config)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("retention[0].untagged_older_than") && err.contains("grace"),
        "{err}"
    );
}
