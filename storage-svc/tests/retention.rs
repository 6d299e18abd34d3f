//! Retention rules applied by garbage collection against a real filesystem store: tags kept by
//! push order and by pattern, untagged manifests aged with backdated files, referrers and index
//! children living by their subject and parent, dry runs, rule precedence and config errors.

use bytes::Bytes;
use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use trow_storage::backend::{Backend, FsBackend};
use trow_storage::digest::Digest;
use trow_storage::error::StorageError;
use trow_storage::retention::Retention;
use trow_storage::store::Garbage;
use trow_storage::{Limits, Store};

mod support;
use support::*;
const HOUR: Duration = Duration::from_secs(3600);
const DAY: Duration = Duration::from_secs(86400);

fn rules(yaml: &str) -> Retention {
    serde_yaml::from_str(yaml).unwrap()
}

async fn open(dir: &Path, grace: Duration, retention: Retention) -> Arc<Store<FsBackend>> {
    let limits = Limits {
        gc_grace: grace,
        gc_every: Duration::ZERO,
        retention,
        ..Limits::default()
    };
    Arc::new(
        Store::open(FsBackend::new(dir).unwrap(), limits)
            .await
            .unwrap(),
    )
}

/// Pushes an image of a shared base layer and a layer and config of its own under `reference`
/// (a tag or its digest, which is worked out): (manifest digest, its own two blobs).
async fn push_image<B: Backend>(
    s: &Store<B>,
    repo: &str,
    reference: Option<&str>,
    own: &str,
) -> (Digest, [Digest; 2]) {
    let cfg = push_blob(s, repo, format!("cfg-{own}").as_bytes()).await;
    let base = push_blob(s, repo, b"base").await;
    let layer = push_blob(s, repo, format!("layer-{own}").as_bytes()).await;
    let m = image_manifest(&cfg, &[&base, &layer], None);
    let d = Digest::sha256_of(&m);
    let reference = reference.map_or_else(|| d.to_string(), str::to_string);
    s.put_manifest(repo, &reference, OCI_MANIFEST, Bytes::from(m))
        .await
        .unwrap();
    (d, [cfg, layer])
}

/// Moves `tag` to `d` (a real push of the manifest's bytes under the tag).
async fn tag<B: Backend>(s: &Store<B>, repo: &str, tag: &str, d: &Digest) {
    let (meta, bytes) = s.get_manifest(repo, &d.to_string()).await.unwrap();
    s.put_manifest(repo, tag, &meta.media_type, bytes)
        .await
        .unwrap();
}

/// The tags the collection reported removing, as `repo:tag`.
fn removed_tags(items: &[Garbage]) -> BTreeSet<String> {
    items
        .iter()
        .filter_map(|g| match g {
            Garbage::Tag {
                repository, tag, ..
            } => Some(format!("{repository}:{tag}")),
            _ => None,
        })
        .collect()
}

fn removed_manifests(items: &[Garbage]) -> BTreeSet<String> {
    items
        .iter()
        .filter_map(|g| match g {
            Garbage::Manifest { digest, .. } => Some(digest.clone()),
            _ => None,
        })
        .collect()
}

/// Items in a stable order (records are visited in hash order).
fn sorted(items: &[Garbage]) -> Vec<String> {
    let mut v: Vec<String> = items.iter().map(|g| format!("{g:?}")).collect();
    v.sort();
    v
}

async fn tags<B: Backend>(s: &Store<B>, repo: &str) -> Vec<String> {
    s.list_tags(repo, 0, "").await.unwrap().0
}

async fn exists<B: Backend>(s: &Store<B>, repo: &str, d: &Digest) -> bool {
    match s.stat_manifest(repo, &d.to_string()).await {
        Ok(_) => true,
        Err(StorageError::ManifestUnknown(_)) => false,
        Err(e) => panic!("{e}"),
    }
}

fn record_file(dir: &Path, repo: &str, d: &Digest) -> std::path::PathBuf {
    dir.join(format!("repositories/{repo}/_manifests/sha256/{}", d.hex))
}

/// Sets the write time of `path` (a file, or every file under a directory) to `age` ago.
fn backdate(path: &Path, age: Duration) {
    let when = SystemTime::now() - age;
    if path.is_dir() {
        for e in std::fs::read_dir(path).unwrap() {
            backdate(&e.unwrap().path(), age);
        }
    } else {
        std::fs::File::options()
            .write(true)
            .open(path)
            .unwrap()
            .set_modified(when)
            .unwrap();
    }
}

/// Distinct tag write times, whatever the filesystem's timestamp resolution.
async fn tick() {
    tokio::time::sleep(Duration::from_millis(30)).await;
}

#[tokio::test]
async fn keep_last_keeps_the_tags_moved_most_recently() {
    let tmp = tempfile::tempdir().unwrap();
    let s = open(
        tmp.path(),
        Duration::ZERO,
        rules("- repositories: team/\n  keep_last: 2\n"),
    )
    .await;
    let (one, _) = push_image(&s, "team/app", Some("one"), "1").await;
    tick().await;
    let (two, two_own) = push_image(&s, "team/app", Some("two"), "2").await;
    tick().await;
    let (three, _) = push_image(&s, "team/app", Some("three"), "3").await;
    tick().await;
    // Pushed again, `one` is the newest tag: `two` is now the oldest.
    tag(&s, "team/app", "one", &one).await;

    let (summary, items) = collect(&s, false).await;
    assert_eq!(
        removed_tags(&items),
        BTreeSet::from(["team/app:two".to_string()])
    );
    assert_eq!(summary.tags, 1);
    assert_eq!(tags(&s, "team/app").await, ["one", "three"]);
    // Its image went with the tag, in the same collection, and its own bytes with it.
    assert!(!exists(&s, "team/app", &two).await);
    for d in two_own.iter().chain([&two]) {
        assert!(!blob_path(tmp.path(), d).exists(), "{d} should be gone");
    }
    assert!(exists(&s, "team/app", &one).await && exists(&s, "team/app", &three).await);
    // Two tags are within the rule now: nothing more goes.
    let (again, items) = collect(&s, false).await;
    assert_eq!((again.tags, again.manifests), (0, 0), "{items:#?}");
    assert_clean(tmp.path()).await;
}

#[tokio::test]
async fn keep_tags_patterns_keep_matching_tags_beyond_keep_last() {
    let tmp = tempfile::tempdir().unwrap();
    let s = open(
        tmp.path(),
        Duration::ZERO,
        rules(
            r#"
- repositories: by-name/
  keep_tags: ["^v[0-9]+\\.[0-9]+\\.[0-9]+$", "^latest$"]
- repositories: both/
  keep_last: 1
  keep_tags: ["^v[0-9]+\\.[0-9]+\\.[0-9]+$"]
"#,
        ),
    )
    .await;
    for repo in ["by-name/app", "both/app"] {
        for (i, t) in ["v1.2.3", "v1.2.3-rc1", "latest", "dev", "v2.0.0", "nightly"]
            .iter()
            .enumerate()
        {
            push_image(&s, repo, Some(t), &format!("{repo}-{i}")).await;
            tick().await;
        }
    }
    let (_, items) = collect(&s, false).await;
    assert_eq!(
        removed_tags(&items),
        [
            // Patterns only: what no pattern matches, however recent.
            "by-name/app:dev",
            "by-name/app:nightly",
            "by-name/app:v1.2.3-rc1",
            // The newest (nightly), and the releases.
            "both/app:dev",
            "both/app:latest",
            "both/app:v1.2.3-rc1",
        ]
        .into_iter()
        .map(String::from)
        .collect()
    );
    assert_eq!(
        tags(&s, "by-name/app").await,
        ["latest", "v1.2.3", "v2.0.0"]
    );
    assert_eq!(tags(&s, "both/app").await, ["nightly", "v1.2.3", "v2.0.0"]);
    assert_clean(tmp.path()).await;
}

#[tokio::test]
async fn untagged_manifests_stay_until_they_were_not_written_or_used_for_the_age() {
    let tmp = tempfile::tempdir().unwrap();
    let grace = Duration::from_secs(600);
    let s = open(
        tmp.path(),
        grace,
        rules("- repositories: ci/\n  untagged_older_than: 1d\n"),
    )
    .await;
    // Pushed by digest, as CI pipelines that deploy by digest do.
    let (stale, stale_own) = push_image(&s, "ci/app", None, "stale").await;
    let (recent, _) = push_image(&s, "ci/app", None, "recent").await;
    let (used, _) = push_image(&s, "ci/app", None, "used").await;
    // The same, where no rule applies: the grace period alone decides.
    let (unruled, _) = push_image(&s, "other/app", None, "unruled").await;
    backdate(tmp.path(), 2 * DAY);
    for (repo, d) in [("ci/app", &recent), ("other/app", &unruled)] {
        backdate(&record_file(tmp.path(), repo, d), 12 * HOUR);
    }
    // Read by digest two days after its push: a use.
    assert!(exists(&s, "ci/app", &used).await);

    let (dry, listed) = collect(&s, true).await;
    let (summary, items) = collect(&s, false).await;
    assert_eq!(
        sorted(&items),
        sorted(&listed),
        "a dry run lists what the collection deletes"
    );
    assert_eq!((dry.manifests, summary.manifests), (2, 2));
    assert_eq!(
        removed_manifests(&items),
        BTreeSet::from([stale.to_string(), unruled.to_string()])
    );
    assert!(exists(&s, "ci/app", &recent).await && exists(&s, "ci/app", &used).await);
    for d in stale_own.iter().chain([&stale]) {
        assert!(!blob_path(tmp.path(), d).exists(), "{d} should be gone");
    }
    assert_clean(tmp.path()).await;
}

#[tokio::test]
async fn referrers_and_index_children_live_by_their_subject_and_parent() {
    let tmp = tempfile::tempdir().unwrap();
    let s = open(
        tmp.path(),
        Duration::from_secs(600),
        rules("- repositories: \"\"\n  keep_last: 1\n  untagged_older_than: 1d\n"),
    )
    .await;
    let repo = "signed/app";
    let (subject, _) = push_image(&s, repo, Some("v1"), "subject").await;
    // A signature of it, untagged.
    let sig_cfg = push_blob(&s, repo, b"sig-cfg").await;
    let sig = image_manifest(&sig_cfg, &[], Some(&subject));
    let sig_d = Digest::sha256_of(&sig);
    s.put_manifest(repo, &sig_d.to_string(), OCI_MANIFEST, Bytes::from(sig))
        .await
        .unwrap();
    // An index pushed by digest, with its child.
    let (child, _) = push_image(&s, repo, None, "child").await;
    let idx = index(&[&child]);
    let idx_d = Digest::sha256_of(&idx);
    s.put_manifest(repo, &idx_d.to_string(), OCI_INDEX, Bytes::from(idx))
        .await
        .unwrap();
    tick().await;
    // A newer tag: keep_last 1 removes v1, leaving its image untagged.
    push_image(&s, repo, Some("v2"), "v2").await;
    backdate(tmp.path(), 12 * HOUR);
    backdate(
        &tmp.path().join(format!("repositories/{repo}/_tags/v2")),
        HOUR,
    );

    let (summary, items) = collect(&s, false).await;
    assert_eq!(removed_tags(&items), BTreeSet::from([format!("{repo}:v1")]));
    assert_eq!(summary.manifests, 0, "{items:#?}");
    // Untagged but younger than a day: the subject stays, and its signature with it; the index
    // stays, and its child with it.
    // (Looked at on disk: a read by digest is a use, which would make them young again.)
    for d in [&subject, &sig_d, &idx_d, &child] {
        assert!(record_file(tmp.path(), repo, d).exists(), "{d}");
    }
    assert_eq!(
        s.list_referrers(repo, &subject.to_string(), "")
            .await
            .unwrap()
            .len(),
        1
    );

    // The subject and the index age past a day; the signature and the child are still 12 hours
    // old, but go with them.
    backdate(&record_file(tmp.path(), repo, &subject), 2 * DAY);
    backdate(&record_file(tmp.path(), repo, &idx_d), 2 * DAY);
    let (_, items) = collect(&s, false).await;
    assert_eq!(
        removed_manifests(&items),
        [&subject, &sig_d, &idx_d, &child]
            .iter()
            .map(|d| d.to_string())
            .collect()
    );
    assert!(
        s.list_referrers(repo, &subject.to_string(), "")
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(tags(&s, repo).await, ["v2"]);
    assert_clean(tmp.path()).await;
}

#[tokio::test]
async fn a_dry_run_lists_exactly_what_the_collection_deletes() {
    let tmp = tempfile::tempdir().unwrap();
    let s = open(
        tmp.path(),
        Duration::ZERO,
        rules("- repositories: \"\"\n  keep_last: 1\n"),
    )
    .await;
    let mut pushed = Vec::new();
    for t in ["a", "b", "c"] {
        pushed.push(push_image(&s, "dry/app", Some(t), t).await);
        tick().await;
    }
    let (dry, listed) = collect(&s, true).await;
    // Nothing was deleted, not even the tags.
    assert_eq!(tags(&s, "dry/app").await, ["a", "b", "c"]);
    for (d, own) in &pushed {
        assert!(exists(&s, "dry/app", d).await);
        assert!(own.iter().all(|b| blob_path(tmp.path(), b).exists()));
    }
    // The tags, and what goes because of them: the images' records, links and bytes.
    assert_eq!(dry.tags, 2);
    assert_eq!(
        (dry.manifests, dry.links, dry.blobs),
        (2, 4, 6),
        "{listed:#?}"
    );

    let (done, items) = collect(&s, false).await;
    assert_eq!(sorted(&items), sorted(&listed));
    assert_eq!(
        (
            done.tags,
            done.manifests,
            done.links,
            done.blobs,
            done.bytes
        ),
        (dry.tags, dry.manifests, dry.links, dry.blobs, dry.bytes)
    );
    assert_eq!(tags(&s, "dry/app").await, ["c"]);
    assert!(items.contains(&Garbage::Tag {
        repository: "dry/app".into(),
        tag: "a".into(),
        rule: String::new(),
    }));
    assert_clean(tmp.path()).await;
}

#[tokio::test]
async fn the_first_rule_matching_a_repository_applies() {
    let tmp = tempfile::tempdir().unwrap();
    let s = open(
        tmp.path(),
        Duration::ZERO,
        rules(
            r#"
- repositories: team/keep
- repositories: team/
  keep_last: 1
- repositories: ""
  keep_tags: ["^stable$"]
"#,
        ),
    )
    .await;
    for repo in ["team/keep/app", "team/app", "other"] {
        for t in ["stable", "dev"] {
            push_image(&s, repo, Some(t), &format!("{repo}-{t}")).await;
            tick().await;
        }
    }
    let (_, items) = collect(&s, false).await;
    let rule_of = |tag: &str| {
        items.iter().find_map(|g| match g {
            Garbage::Tag {
                repository,
                tag: t,
                rule,
            } if format!("{repository}:{t}") == tag => Some(rule.clone()),
            _ => None,
        })
    };
    assert_eq!(
        removed_tags(&items),
        BTreeSet::from(["team/app:stable".to_string(), "other:dev".to_string()])
    );
    assert_eq!(rule_of("team/app:stable").as_deref(), Some("team/"));
    assert_eq!(rule_of("other:dev").as_deref(), Some(""));
    assert_eq!(tags(&s, "team/keep/app").await, ["dev", "stable"]);
    assert_clean(tmp.path()).await;
}

#[tokio::test]
async fn rules_leave_the_cache_to_eviction() {
    let tmp = tempfile::tempdir().unwrap();
    let s = open(
        tmp.path(),
        Duration::ZERO,
        rules("- repositories: \"\"\n  keep_last: 1\n"),
    )
    .await;
    let cached = "f/docker.io/library/nginx";
    for t in ["1.26", "1.27"] {
        let cfg = Digest::sha256_of(format!("cfg {t}").as_bytes());
        let m = image_manifest(&cfg, &[], None);
        s.put_cached_manifest(cached, t, OCI_MANIFEST, Bytes::from(m))
            .await
            .unwrap();
        push_image(&s, "mine", Some(t), t).await;
        tick().await;
    }
    let (_, items) = collect(&s, false).await;
    assert_eq!(
        removed_tags(&items),
        BTreeSet::from(["mine:1.26".to_string()])
    );
    assert_eq!(tags(&s, cached).await, ["1.26", "1.27"]);
}

#[tokio::test]
async fn an_age_below_the_grace_period_never_shortens_it() {
    // The config check refuses this (see below); a store handed it anyway keeps the grace.
    let tmp = tempfile::tempdir().unwrap();
    let s = open(
        tmp.path(),
        HOUR,
        rules("- repositories: \"\"\n  untagged_older_than: 1m\n"),
    )
    .await;
    let (young, _) = push_image(&s, "r", None, "young").await;
    let (old, _) = push_image(&s, "r", None, "old").await;
    backdate(tmp.path(), Duration::from_secs(1800));
    backdate(&record_file(tmp.path(), "r", &old), 2 * HOUR);
    let (_, items) = collect(&s, false).await;
    assert_eq!(removed_manifests(&items), BTreeSet::from([old.to_string()]));
    assert!(exists(&s, "r", &young).await);

    let e = rules("- repositories: \"\"\n  untagged_older_than: 1m\n")
        .check_grace(HOUR)
        .unwrap_err();
    assert_eq!(e.key, "retention[0].untagged_older_than");
}

#[test]
fn config_errors_name_the_key() {
    for (yaml, key) in [
        (
            "- repositories: a/\n- repositories: b/\n  keep_tags: [\"v(\"]\n",
            "retention[1].keep_tags[0]",
        ),
        (
            "- repositories: a/\n  keep_last: 0\n",
            "retention[0].keep_last",
        ),
        (
            "- repositories: a/\n  untagged_older_than: a week\n",
            "retention[0].untagged_older_than",
        ),
        ("- repositories: a/\n  keep: 3\n", "keep"),
    ] {
        let e = serde_yaml::from_str::<Retention>(yaml).unwrap_err();
        assert!(e.to_string().contains(key), "{key} not in {e}");
    }
}
