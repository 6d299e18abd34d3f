//! Housekeeping: what a crash or an abandoned client leaves behind is removed, at open and then
//! periodically, so leftovers never fill the disk.

use std::time::{Duration, SystemTime};

use super::*;

/// Uploads untouched this long are abandoned: a client resuming a push does so within minutes.
pub const UPLOAD_MAX_AGE: Duration = Duration::from_secs(24 * 3600);

/// Temp files of atomic writes live for milliseconds; one older than this is a crash leftover.
pub const TMP_MAX_AGE: Duration = Duration::from_secs(3600);

impl<B: Backend> Store<B> {
    /// Run once when the store opens, before it serves: nothing else writes yet, so every temp
    /// file is a leftover.
    pub(super) async fn recover(&self) -> Result<()> {
        self.sweep_tmp(Duration::ZERO).await?;
        self.wait_out_recorded_leases().await?;
        self.recover_collection().await?;
        self.load_pulls().await?;
        self.load_uploads().await?;
        let purged = self.purge_uploads(UPLOAD_MAX_AGE).await?;
        if purged > 0 {
            tracing::info!(purged, "deleted abandoned uploads");
        }
        self.build_catalog_if_missing().await?;
        self.drop_stray_catalog_entries().await
    }

    /// The periodic pass: abandoned uploads and stale temp files. Returns how many went.
    pub async fn sweep(&self) -> Result<usize> {
        Ok(self.purge_uploads(UPLOAD_MAX_AGE).await? + self.sweep_tmp(TMP_MAX_AGE).await?)
    }

    /// Deletes temp files older than `max_age`.
    async fn sweep_tmp(&self, max_age: Duration) -> Result<usize> {
        let cutoff = SystemTime::now()
            .checked_sub(max_age)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        let mut removed = 0;
        for name in self.backend.list(layout::TMP).await? {
            let key = layout::tmp(&name);
            if self
                .backend
                .modified(&key)
                .await?
                .is_some_and(|t| t <= cutoff)
            {
                self.backend.delete(&key).await?;
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// A repository enters the catalog before its first content, so a crash in between leaves
    /// an entry with nothing behind it.
    async fn drop_stray_catalog_entries(&self) -> Result<()> {
        for entry in self.backend.list(layout::CATALOG).await? {
            let name = layout::catalog_name(&entry);
            if !self.repository_exists(&name).await? {
                tracing::info!(repository = %name, "dropping an empty repository from the catalog");
                self.backend
                    .delete(&format!("{}/{entry}", layout::CATALOG))
                    .await?;
            }
        }
        Ok(())
    }

    /// A store written before the catalog index existed gets one, by walking its repositories
    /// once.
    async fn build_catalog_if_missing(&self) -> Result<()> {
        if !self.backend.list(layout::CATALOG).await?.is_empty() {
            return Ok(());
        }
        let mut pending = vec![String::new()];
        while let Some(name) = pending.pop() {
            let key = if name.is_empty() {
                layout::REPOSITORIES.to_string()
            } else {
                layout::repository(&name)
            };
            let children = self.backend.list(&key).await?;
            if children
                .iter()
                .any(|c| layout::REPO_MARKERS.contains(&c.as_str()))
            {
                self.add_to_catalog(&name).await?;
            }
            for c in children.into_iter().filter(|c| !c.starts_with('_')) {
                pending.push(if name.is_empty() {
                    c
                } else {
                    format!("{name}/{c}")
                });
            }
        }
        Ok(())
    }
}
