//! Tag lists through the cache: the upstream's list, all its pages, while it answers (within
//! `fetch_timeout` and [`MAX_TAG_LIST`] bytes); the cached tags (`stale`) when it fails; the
//! upstream's failure when nothing is cached.

use reqwest::Method;
use reqwest::header::{self, HeaderMap};
use tonic::{Code, Status};
use trow_proto::oci_code::{self, ErrorCode};
use trow_proto::proxy::{self as pb, CacheStatus};
use trow_proto::storage as st;

use crate::reference::Target;
use crate::service::{ProxyService, upstream_status};
use crate::upstream::{UpstreamError, read_limited};

impl ProxyService {
    /// The tags of the repository `r` names.
    pub(crate) async fn tags(&self, r: &pb::TagsRequest) -> Result<pb::TagList, Status> {
        let t = self.target(&r.registry, &r.repository)?;
        let answer = self.tags_of(&t).await;
        if let Ok(list) = &answer {
            crate::metrics::cache(&t, "tags", list.cache());
        }
        answer
    }

    async fn tags_of(&self, t: &Target) -> Result<pb::TagList, Status> {
        let mut failure = None;
        if !self.offline {
            let fetched = self.upstream_tags(t).await;
            match fetched {
                Ok(mut tags) => {
                    tags.sort();
                    return Ok(pb::TagList {
                        tags,
                        cache: CacheStatus::Miss.into(),
                    });
                }
                Err(e @ UpstreamError::NotFound { .. }) => {
                    return Err(oci_code::status(
                        Code::NotFound,
                        ErrorCode::NameUnknown,
                        e.to_string(),
                    ));
                }
                Err(e) => failure = Some(e),
            }
        }
        let listed = self
            .storage
            .clone()
            .list_tags(st::ListRequest {
                repository: t.cache_repository.clone(),
                limit: 0,
                last: String::new(),
            })
            .await;
        let mut pages = match (listed, failure) {
            (Ok(pages), Some(e)) => {
                tracing::warn!(upstream = %t.upstream.host, error = %e,
                    "upstream tag list failed: serving the cached tags");
                pages.into_inner()
            }
            (Ok(pages), None) => pages.into_inner(),
            // Nothing cached to fall back on: the upstream's failure is the answer.
            (Err(s), Some(e)) if s.code() == Code::NotFound => {
                return Err(upstream_status(&e, ErrorCode::NameUnknown));
            }
            (Err(s), _) => return Err(s),
        };
        let mut tags = Vec::new();
        while let Some(page) = pages.message().await? {
            tags.extend(page.names);
        }
        Ok(pb::TagList {
            tags,
            cache: if self.offline {
                CacheStatus::Hit
            } else {
                CacheStatus::Stale
            }
            .into(),
        })
    }

    /// The upstream's tags, following its `Link` pages: at most [`TAG_PAGES`] of them and
    /// [`MAX_TAG_LIST`] bytes in all, within `fetch_timeout`.
    async fn upstream_tags(&self, t: &Target) -> Result<Vec<String>, UpstreamError> {
        tokio::time::timeout(self.fetch_timeout, self.upstream_tag_pages(t))
            .await
            .unwrap_or_else(|_| {
                Err(UpstreamError::Timeout {
                    host: t.upstream.host.clone(),
                })
            })
    }

    async fn upstream_tag_pages(&self, t: &Target) -> Result<Vec<String>, UpstreamError> {
        #[derive(serde::Deserialize)]
        struct Tags {
            tags: Option<Vec<String>>,
        }
        let host = &t.upstream.host;
        let mut tags = Vec::new();
        let mut path = "tags/list".to_string();
        let mut left = MAX_TAG_LIST;
        for _ in 0..TAG_PAGES {
            let resp = self
                .upstreams
                .send(
                    t,
                    Method::GET,
                    &path,
                    HeaderMap::new(),
                    Some(self.revalidate_timeout),
                )
                .await?;
            let next = next_page(resp.headers(), &t.repository);
            let body = read_limited(host, resp, left, "tag list")
                .await
                .map_err(|e| match e {
                    UpstreamError::TooLarge { host, what, .. } => UpstreamError::TooLarge {
                        host,
                        what,
                        limit: MAX_TAG_LIST,
                    },
                    e => e,
                })?;
            left -= body.len();
            let page: Tags = serde_json::from_slice(&body).map_err(|e| UpstreamError::Invalid {
                host: host.clone(),
                reason: format!("tag list: {e}"),
            })?;
            tags.extend(page.tags.unwrap_or_default());
            match next {
                Some(p) => path = p,
                None => break,
            }
        }
        Ok(tags)
    }
}

/// Pages of an upstream's tag list followed at most (Docker Hub serves 100 tags a page).
const TAG_PAGES: usize = 100;

/// Bytes of an upstream's tag list read at most, all pages together: tens of thousands of
/// tags, and a list that still fits one gRPC message to the gateway.
const MAX_TAG_LIST: usize = 4 << 20;

/// The next page of an upstream tag list, from its `Link: </v2/<repo>/tags/list?...>;
/// rel="next"` header, as a path below the repository.
pub(crate) fn next_page(headers: &HeaderMap, repository: &str) -> Option<String> {
    let link = headers.get(header::LINK)?.to_str().ok()?;
    let target = link
        .split(';')
        .next()?
        .trim()
        .strip_prefix('<')?
        .strip_suffix('>')?;
    // Absolute or not, the page lies under the repository's path.
    let path = target.split_once("/v2/").map(|(_, p)| p)?;
    let rest = path.strip_prefix(repository)?.strip_prefix('/')?;
    // Exactly the tag list, with a query or not: `tags/list50` is another path, and
    // `tags/list/../../other/tags/list` resolves to another repository's list.
    (rest == "tags/list" || rest.starts_with("tags/list?")).then(|| rest.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    #[test]
    fn tag_pages_follow_link_headers() {
        let mut h = HeaderMap::new();
        assert_eq!(next_page(&h, "library/nginx"), None);
        h.insert(
            header::LINK,
            HeaderValue::from_static("</v2/library/nginx/tags/list?last=1.27&n=100>; rel=\"next\""),
        );
        assert_eq!(
            next_page(&h, "library/nginx").as_deref(),
            Some("tags/list?last=1.27&n=100")
        );
        assert_eq!(next_page(&h, "library/other"), None);
    }

    /// Found by the fuzz target `tag_list_link`: a link whose path only began with `tags/list`
    /// was followed, to `/v2/a/b/tags/list50&last=v2`, or, with `..`, out of the repository.
    #[test]
    fn only_the_tag_list_itself_is_a_next_page() {
        for link in [
            "<https://registry/registryexample.com/v2/a/b/tags/list50&last=v2>;xt\"",
            "</v2/a/b/tags/list/../../../c/tags/list?n=1>; rel=\"next\"",
            "</v2/a/b/tags/lists>",
        ] {
            let mut h = HeaderMap::new();
            h.insert(header::LINK, HeaderValue::from_static(link));
            assert_eq!(next_page(&h, "a/b"), None, "{link}");
        }
        let mut h = HeaderMap::new();
        h.insert(
            header::LINK,
            HeaderValue::from_static("</v2/a/b/tags/list>"),
        );
        assert_eq!(next_page(&h, "a/b").as_deref(), Some("tags/list"));
    }
}
