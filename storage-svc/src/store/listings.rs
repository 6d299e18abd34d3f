//! Listings: tags, repositories (catalog) and referrers, with pagination.

use super::*;

impl<B: Backend> Store<B> {
    pub(super) async fn repository_exists(&self, repository: &str) -> Result<bool> {
        let children = self.backend.list(&layout::repository(repository)).await?;
        Ok(children
            .iter()
            .any(|c| layout::REPO_MARKERS.contains(&c.as_str())))
    }

    /// Tags of a repository after `last`, at most `limit` (0: all); and whether more follow.
    pub async fn list_tags(
        &self,
        repository: &str,
        limit: u32,
        last: &str,
    ) -> Result<(Vec<String>, bool)> {
        validate_repository(repository)?;
        if !self.repository_exists(repository).await? {
            return Err(StorageError::NameUnknown(repository.to_string()));
        }
        let tags = self.backend.list(&layout::tags(repository)).await?;
        Ok(paginate(tags, limit, last))
    }

    /// Repository names after `last`, at most `limit` (0: all); and whether more follow. Read
    /// from the catalog index: one flat listing however deep the repositories nest.
    pub async fn list_repositories(&self, limit: u32, last: &str) -> Result<(Vec<String>, bool)> {
        let mut names: Vec<String> = self
            .backend
            .list(layout::CATALOG)
            .await?
            .iter()
            .map(|e| layout::catalog_name(e))
            .collect();
        // Escaping `/` changes the order of entries; the catalog's order is that of the names.
        names.sort();
        Ok(paginate(names, limit, last))
    }

    /// Referrers of `subject` in a repository, optionally only those of one artifact type.
    pub async fn list_referrers(
        &self,
        repository: &str,
        subject: &str,
        artifact_type: &str,
    ) -> Result<Vec<ReferrerDescriptor>> {
        validate_repository(repository)?;
        let subject = Digest::parse(subject)?;
        let dir = layout::referrers(repository, &subject);
        let mut out = Vec::new();
        for name in self.backend.list(&dir).await? {
            let Some(raw) = self.backend.get(&format!("{dir}/{name}")).await? else {
                continue;
            };
            let Ok(d) = serde_json::from_slice::<ReferrerDescriptor>(&raw) else {
                tracing::warn!(%name, "skipping unreadable referrer record");
                continue;
            };
            if artifact_type.is_empty() || d.artifact_type.as_deref() == Some(artifact_type) {
                out.push(d);
            }
        }
        Ok(out)
    }
}

/// Names after `last`, at most `limit` of them (0: no limit), and whether any remain.
fn paginate(names: Vec<String>, limit: u32, last: &str) -> (Vec<String>, bool) {
    let mut rest: Vec<String> = names
        .into_iter()
        .filter(|n| last.is_empty() || n.as_str() > last)
        .collect();
    if limit == 0 || rest.len() <= limit as usize {
        return (rest, false);
    }
    rest.truncate(limit as usize);
    (rest, true)
}
