//! The gRPC adapter: containerd's `Snapshots` service over a [`Snapshotter`]. Each call runs
//! on tokio's blocking pool (the core does file-system work and waits on the metadata file's
//! lock), so a slow call never holds up another; errors become gRPC status codes here and
//! nowhere else.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::core::{Info, Mount, Snapshotter};
use super::error::{Code, SnapError};
use super::meta::{Kind, Time};
use super::proto::snapshots::{self as pb, snapshots_server::Snapshots};
use super::proto::types;

/// Infos per `List` message (containerd's own server sends batches of 100).
const LIST_BATCH: usize = 100;

/// The service.
#[derive(Debug, Clone)]
pub struct Service {
    core: Arc<Snapshotter>,
}

impl Service {
    /// A service over `core`.
    pub fn new(core: Arc<Snapshotter>) -> Service {
        Service { core }
    }

    /// Runs `f` on the blocking pool, its error as a status.
    async fn run<T: Send + 'static>(
        &self,
        call: &'static str,
        f: impl FnOnce(&Snapshotter) -> Result<T, SnapError> + Send + 'static,
    ) -> Result<T, Status> {
        let core = self.core.clone();
        let out = tokio::task::spawn_blocking(move || f(&core))
            .await
            .map_err(|e| Status::internal(format!("the {call} call failed: {e}")))?;
        out.map_err(|e| {
            tracing::debug!(call, code = ?e.code, "{e}");
            status(e)
        })
    }
}

/// containerd's errdefs travel as these codes (its `errgrpc`).
fn status(e: SnapError) -> Status {
    let code = match e.code {
        Code::NotFound => tonic::Code::NotFound,
        Code::AlreadyExists => tonic::Code::AlreadyExists,
        Code::FailedPrecondition => tonic::Code::FailedPrecondition,
        Code::InvalidArgument => tonic::Code::InvalidArgument,
        Code::Internal => tonic::Code::Internal,
    };
    Status::new(code, e.message)
}

fn mounts(m: Vec<Mount>) -> Vec<types::Mount> {
    m.into_iter()
        .map(|m| types::Mount { r#type: m.kind, source: m.source, target: String::new(), options: m.options })
        .collect()
}

fn labels(l: std::collections::HashMap<String, String>) -> BTreeMap<String, String> {
    l.into_iter().collect()
}

fn timestamp(t: Time) -> prost_types::Timestamp {
    prost_types::Timestamp { seconds: t.secs, nanos: t.nanos }
}

fn kind(k: Kind) -> pb::Kind {
    match k {
        Kind::View => pb::Kind::View,
        Kind::Active => pb::Kind::Active,
        Kind::Committed => pb::Kind::Committed,
    }
}

fn info(i: Info) -> pb::Info {
    pb::Info {
        name: i.name,
        parent: i.parent,
        kind: kind(i.kind).into(),
        created_at: Some(timestamp(i.created)),
        updated_at: Some(timestamp(i.updated)),
        labels: i.labels.into_iter().collect(),
    }
}

type ListStream = Pin<Box<dyn tokio_stream::Stream<Item = Result<pb::ListSnapshotsResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Snapshots for Service {
    async fn prepare(
        &self,
        r: Request<pb::PrepareSnapshotRequest>,
    ) -> Result<Response<pb::PrepareSnapshotResponse>, Status> {
        let r = r.into_inner();
        let m = self.run("Prepare", move |s| s.prepare(&r.key, &r.parent, labels(r.labels))).await?;
        Ok(Response::new(pb::PrepareSnapshotResponse { mounts: mounts(m) }))
    }

    async fn view(&self, r: Request<pb::ViewSnapshotRequest>) -> Result<Response<pb::ViewSnapshotResponse>, Status> {
        let r = r.into_inner();
        let m = self.run("View", move |s| s.view(&r.key, &r.parent, labels(r.labels))).await?;
        Ok(Response::new(pb::ViewSnapshotResponse { mounts: mounts(m) }))
    }

    async fn mounts(&self, r: Request<pb::MountsRequest>) -> Result<Response<pb::MountsResponse>, Status> {
        let r = r.into_inner();
        let m = self.run("Mounts", move |s| s.mounts(&r.key)).await?;
        Ok(Response::new(pb::MountsResponse { mounts: mounts(m) }))
    }

    async fn commit(&self, r: Request<pb::CommitSnapshotRequest>) -> Result<Response<()>, Status> {
        let r = r.into_inner();
        self.run("Commit", move |s| s.commit(&r.name, &r.key, labels(r.labels))).await?;
        Ok(Response::new(()))
    }

    async fn remove(&self, r: Request<pb::RemoveSnapshotRequest>) -> Result<Response<()>, Status> {
        let r = r.into_inner();
        self.run("Remove", move |s| s.remove(&r.key)).await?;
        Ok(Response::new(()))
    }

    async fn stat(&self, r: Request<pb::StatSnapshotRequest>) -> Result<Response<pb::StatSnapshotResponse>, Status> {
        let r = r.into_inner();
        let i = self.run("Stat", move |s| s.stat(&r.key)).await?;
        Ok(Response::new(pb::StatSnapshotResponse { info: Some(info(i)) }))
    }

    async fn update(
        &self,
        r: Request<pb::UpdateSnapshotRequest>,
    ) -> Result<Response<pb::UpdateSnapshotResponse>, Status> {
        let r = r.into_inner();
        let given = r.info.ok_or_else(|| Status::invalid_argument("the update carries no snapshot info"))?;
        let (name, labels) = (given.name, labels(given.labels));
        let paths = r.update_mask.map(|m| m.paths).unwrap_or_default();
        let i = self.run("Update", move |s| s.update(&name, &labels, &paths)).await?;
        Ok(Response::new(pb::UpdateSnapshotResponse { info: Some(info(i)) }))
    }

    type ListStream = ListStream;

    async fn list(&self, r: Request<pb::ListSnapshotsRequest>) -> Result<Response<ListStream>, Status> {
        let r = r.into_inner();
        let all = self.run("List", move |s| s.list(&r.filters)).await?;
        let mut batches = Vec::new();
        let mut it = all.into_iter().map(info).peekable();
        while it.peek().is_some() {
            batches.push(Ok(pb::ListSnapshotsResponse { info: it.by_ref().take(LIST_BATCH).collect() }));
        }
        Ok(Response::new(Box::pin(tokio_stream::iter(batches))))
    }

    async fn usage(&self, r: Request<pb::UsageRequest>) -> Result<Response<pb::UsageResponse>, Status> {
        let r = r.into_inner();
        let u = self.run("Usage", move |s| s.usage(&r.key)).await?;
        Ok(Response::new(pb::UsageResponse { size: u.size, inodes: u.inodes }))
    }

    async fn cleanup(&self, _r: Request<pb::CleanupRequest>) -> Result<Response<()>, Status> {
        let n = self.run("Cleanup", |s| s.cleanup()).await?;
        tracing::debug!("cleanup removed {n} directories");
        Ok(Response::new(()))
    }
}
