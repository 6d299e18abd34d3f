//! OCI Distribution API: tag listing and the catalog, with `n`/`last` pagination and `Link`.

use serde_json::Value;
use trow_tests::Topology;
use trow_tests::oci::{OCI_MANIFEST, Reg, Resp, encode, parse_next_link, path_only, query_params};

/// Pushes one image to `repo` and tags it with every tag in `tags`.
async fn push_tags(reg: &Reg, repo: &str, tags: &[&str]) {
    let (_, body) = reg.push_image(repo, tags[0], repo).await;
    for t in &tags[1..] {
        reg.push_manifest(repo, t, OCI_MANIFEST, &body).await;
    }
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .map(|s| s.as_str().expect("string").to_string())
        .collect()
}

/// The tags of a tags/list response, checking `name`.
fn tags_of(r: &Resp, repo: &str) -> Vec<String> {
    r.assert_status(200);
    let v = r.json();
    assert_eq!(v["name"], repo, "{r}");
    strings(&v["tags"])
}

/// Checks a `Link` header points at `expected_path` with `n` and `last`; returns its URL.
fn next_link(r: &Resp, expected_path: &str, n: usize, last: &str) -> String {
    let url = parse_next_link(&r.must_header("link"));
    assert_eq!(path_only(&url), expected_path, "{r}");
    let mut q = query_params(&url);
    q.sort();
    let mut want = vec![
        ("last".to_string(), last.to_string()),
        ("n".to_string(), n.to_string()),
    ];
    want.sort();
    assert_eq!(q, want, "Link query: {r}");
    url
}

#[tokio::test]
async fn tags_are_listed_sorted() {
    let reg = Reg::start(Topology::OneProcess);
    let repo = reg.repo("list/tags");
    push_tags(&reg, &repo, &["v2", "latest", "a", "v10", "B", "_x", "1.0"]).await;
    let r = reg.get(&reg.v2(&format!("{repo}/tags/list"))).await;
    assert_eq!(
        tags_of(&r, &repo),
        ["1.0", "B", "_x", "a", "latest", "v10", "v2"]
    );
    assert_eq!(r.content_type().as_deref(), Some("application/json"), "{r}");
    assert_eq!(r.header("link"), None, "{r}");
}

#[tokio::test]
async fn tags_pagination_follows_link() {
    let reg = Reg::start(Topology::OneProcess);
    let repo = reg.repo("list/paged");
    push_tags(&reg, &repo, &["e", "c", "a", "d", "b"]).await;
    let path = format!("/v2/{repo}/tags/list");

    let r = reg.get(&reg.v2(&format!("{repo}/tags/list?n=2"))).await;
    assert_eq!(tags_of(&r, &repo), ["a", "b"]);
    let next = next_link(&r, &path, 2, "b");

    let r = reg.get(&reg.abs(&next)).await;
    assert_eq!(tags_of(&r, &repo), ["c", "d"]);
    let next = next_link(&r, &path, 2, "d");

    let r = reg.get(&reg.abs(&next)).await;
    assert_eq!(tags_of(&r, &repo), ["e"]);
    assert_eq!(r.header("link"), None, "last page has a Link: {r}");
}

#[tokio::test]
async fn tags_last_continues_after_the_given_tag() {
    let reg = Reg::start(Topology::OneProcess);
    let repo = reg.repo("list/last");
    push_tags(&reg, &repo, &["a", "b", "c", "d"]).await;
    let r = reg
        .get(&reg.v2(&format!("{repo}/tags/list?n=2&last=a")))
        .await;
    assert_eq!(tags_of(&r, &repo), ["b", "c"]);
    next_link(&r, &format!("/v2/{repo}/tags/list"), 2, "c");
    // `last` need not be an existing tag.
    let r = reg
        .get(&reg.v2(&format!("{repo}/tags/list?n=10&last=bb")))
        .await;
    assert_eq!(tags_of(&r, &repo), ["c", "d"]);
    assert_eq!(r.header("link"), None, "{r}");
    // Past the end: an empty page.
    let r = reg
        .get(&reg.v2(&format!("{repo}/tags/list?n=2&last=d")))
        .await;
    assert!(tags_of(&r, &repo).is_empty(), "{r}");
    assert_eq!(r.header("link"), None, "{r}");
}

#[tokio::test]
async fn tags_exact_page_size_has_no_link() {
    let reg = Reg::start(Topology::OneProcess);
    let repo = reg.repo("list/exact");
    push_tags(&reg, &repo, &["x", "y"]).await;
    let r = reg.get(&reg.v2(&format!("{repo}/tags/list?n=5"))).await;
    assert_eq!(tags_of(&r, &repo), ["x", "y"]);
    assert_eq!(r.header("link"), None, "{r}");
}

#[tokio::test]
async fn tags_n_zero_is_an_empty_list() {
    let reg = Reg::start(Topology::OneProcess);
    let repo = reg.repo("list/zero");
    push_tags(&reg, &repo, &["a", "b"]).await;
    let r = reg.get(&reg.v2(&format!("{repo}/tags/list?n=0"))).await;
    assert!(tags_of(&r, &repo).is_empty(), "{r}");
    assert_eq!(r.header("link"), None, "n=0 must not have a Link: {r}");
}

#[tokio::test]
async fn tags_of_unknown_repo_is_name_unknown() {
    let reg = Reg::start(Topology::OneProcess);
    let repo = reg.repo("list/nosuchrepo");
    reg.get(&reg.v2(&format!("{repo}/tags/list")))
        .await
        .assert_error(404, "NAME_UNKNOWN");
}

#[tokio::test]
async fn deleted_tag_is_not_listed() {
    let reg = Reg::start(Topology::OneProcess);
    let repo = reg.repo("list/deleted");
    push_tags(&reg, &repo, &["keep", "drop"]).await;
    reg.delete(&reg.v2(&format!("{repo}/manifests/drop")))
        .await
        .assert_status(202);
    let r = reg.get(&reg.v2(&format!("{repo}/tags/list"))).await;
    assert_eq!(tags_of(&r, &repo), ["keep"]);
}

#[tokio::test]
async fn tags_are_per_repository() {
    let reg = Reg::start(Topology::OneProcess);
    let a = reg.repo("list/a");
    let b = reg.repo("list/a/b");
    push_tags(&reg, &a, &["a1", "a2"]).await;
    push_tags(&reg, &b, &["b1"]).await;
    let r = reg.get(&reg.v2(&format!("{a}/tags/list"))).await;
    assert_eq!(tags_of(&r, &a), ["a1", "a2"]);
    let r = reg.get(&reg.v2(&format!("{b}/tags/list"))).await;
    assert_eq!(tags_of(&r, &b), ["b1"]);
}

fn repos_of(r: &Resp) -> Vec<String> {
    r.assert_status(200);
    strings(&r.json()["repositories"])
}

#[tokio::test]
async fn catalog_lists_repositories_sorted() {
    let reg = Reg::start(Topology::OneProcess);
    let names: Vec<String> = ["zeta", "alpha/one", "alpha", "mid-dle/x/y", "alpha/two"]
        .iter()
        .map(|n| reg.repo(&format!("cat/{n}")))
        .collect();
    for n in &names {
        push_tags(&reg, n, &["t"]).await;
    }
    let mut want = names.clone();
    want.sort();
    let r = reg.get(&reg.v2("_catalog")).await;
    let got = repos_of(&r);
    assert_eq!(r.content_type().as_deref(), Some("application/json"), "{r}");
    if reg.external() {
        let mine: Vec<String> = got.into_iter().filter(|g| names.contains(g)).collect();
        assert_eq!(mine, want);
    } else {
        assert_eq!(got, want);
        assert_eq!(r.header("link"), None, "{r}");
    }
}

#[tokio::test]
async fn catalog_pagination_follows_link() {
    let reg = Reg::start(Topology::OneProcess);
    let prefix = reg.repo("pag");
    let names: Vec<String> = ["d", "b", "a", "e", "c"]
        .iter()
        .map(|n| format!("{prefix}/{n}"))
        .collect();
    for n in &names {
        push_tags(&reg, n, &["t"]).await;
    }
    let mut want = names.clone();
    want.sort();

    // On a fresh registry, the walk starts at the beginning; on a shared one, just before ours.
    let first = if reg.external() {
        reg.v2(&format!(
            "_catalog?n=2&last={}",
            encode(&format!("{prefix}/"))
        ))
    } else {
        reg.v2("_catalog?n=2")
    };
    let r = reg.get(&first).await;
    assert_eq!(repos_of(&r), want[0..2]);
    let next = next_link(&r, "/v2/_catalog", 2, &want[1]);
    let r = reg.get(&reg.abs(&next)).await;
    assert_eq!(repos_of(&r), want[2..4]);
    let next = next_link(&r, "/v2/_catalog", 2, &want[3]);
    let r = reg.get(&reg.abs(&next)).await;
    let got = repos_of(&r);
    assert_eq!(got[0], want[4]);
    if !reg.external() {
        assert_eq!(got, want[4..]);
        assert_eq!(r.header("link"), None, "last page has a Link: {r}");
    }

    // `last` in the middle.
    let r = reg
        .get(&reg.v2(&format!("_catalog?n=2&last={}", encode(&want[2]))))
        .await;
    assert_eq!(repos_of(&r), want[3..5]);
}

#[tokio::test]
async fn catalog_n_zero_is_empty() {
    let reg = Reg::start(Topology::OneProcess);
    push_tags(&reg, &reg.repo("zero/a"), &["t"]).await;
    let r = reg.get(&reg.v2("_catalog?n=0")).await;
    assert!(repos_of(&r).is_empty(), "{r}");
    assert_eq!(r.header("link"), None, "{r}");
}

#[tokio::test]
async fn catalog_of_an_empty_registry_is_empty() {
    let reg = Reg::start(Topology::OneProcess);
    if reg.external() {
        return;
    }
    let r = reg.get(&reg.v2("_catalog")).await;
    assert_eq!(repos_of(&r), Vec::<String>::new());
}

async fn listing(topology: Topology) {
    let reg = Reg::start(topology);
    let repo = reg.repo("split/list");
    push_tags(&reg, &repo, &["3", "1", "2"]).await;
    let r = reg.get(&reg.v2(&format!("{repo}/tags/list?n=2"))).await;
    assert_eq!(tags_of(&r, &repo), ["1", "2"]);
    let next = next_link(&r, &format!("/v2/{repo}/tags/list"), 2, "2");
    let r = reg.get(&reg.abs(&next)).await;
    assert_eq!(tags_of(&r, &repo), ["3"]);
    let r = reg.get(&reg.v2("_catalog")).await;
    assert!(repos_of(&r).contains(&repo), "{r}");
    reg.get(&reg.v2(&format!("{}/tags/list", reg.repo("split/none"))))
        .await
        .assert_error(404, "NAME_UNKNOWN");
}

#[tokio::test]
async fn listing_split() {
    listing(Topology::Split).await;
}

#[tokio::test]
async fn listing_one_process() {
    listing(Topology::OneProcess).await;
}
