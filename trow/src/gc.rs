//! `trow gc`: asks a running storage service to collect garbage and prints what it reports.

use std::io::Write;
use trow_proto::storage as pb;

use crate::Error;

/// Collects garbage in the storage service at `url` (a dry run only lists), writing one line
/// per item and a summary to `out`. `trust`: how the storage service is reached (mutual TLS,
/// token), as the other services reach it.
pub async fn run(
    url: &str,
    dry_run: bool,
    trust: &trow_proto::trust::Trust,
    out: &mut impl Write,
) -> Result<(), Error> {
    let mut client = trow_gateway::storage_client(url, trust)?;
    let mut reports = client
        .collect_garbage(pb::CollectGarbageRequest { dry_run })
        .await
        .map_err(|s| {
            if s.code() == tonic::Code::Unavailable {
                format!("cannot reach the storage service at {url}: {s}")
            } else {
                format!("garbage collection failed: {}", s.message())
            }
        })?
        .into_inner();
    let verb = if dry_run { "would delete" } else { "deleted" };
    while let Some(report) = reports
        .message()
        .await
        .map_err(|s| format!("garbage collection failed: {}", s.message()))?
    {
        match report.part {
            Some(pb::garbage_report::Part::Item(i)) => writeln!(out, "{verb} {}", item(&i))?,
            Some(pb::garbage_report::Part::Summary(s)) => {
                writeln!(out, "{}", summary(&s))?;
                return Ok(());
            }
            None => {}
        }
    }
    Err("the storage service ended the collection without a summary".into())
}

fn item(i: &pb::GarbageItem) -> String {
    use pb::garbage_item::Kind;
    match i.kind() {
        Kind::Manifest => format!("manifest {}@{}", i.repository, i.digest),
        Kind::Link => format!("link {}@{}", i.repository, i.digest),
        Kind::Blob => format!("blob {} ({} bytes)", i.digest, i.size),
        Kind::Tag => format!("tag {}:{} (rule {:?})", i.repository, i.tag, i.rule),
        Kind::Unspecified => format!("{} {}", i.repository, i.digest),
    }
}

/// `gc: 2 manifests, 5 links, 4 blobs (1234 bytes) deleted in 12 ms (3 repositories; 0 kept
/// for a push in progress)`, then `; 3 tags removed by retention rules` when there were some
/// (at the end, so the numbers before keep their places).
fn summary(s: &pb::GarbageSummary) -> String {
    let verb = if s.dry_run {
        "would be deleted"
    } else {
        "deleted"
    };
    let mut line = format!(
        "gc: {} manifests, {} links, {} blobs ({} bytes) {verb} in {} ms ({} repositories; {} kept for a push in progress)",
        s.manifests, s.links, s.blobs, s.bytes, s.elapsed_ms, s.repositories, s.rescued
    );
    if s.tags > 0 {
        let removed = if s.dry_run {
            "would be removed"
        } else {
            "removed"
        };
        line.push_str(&format!("; {} tags {removed} by retention rules", s.tags));
    }
    if s.unlisted > 0 {
        line.push_str(&format!("; {} items not listed", s.unlisted));
    }
    line
}
