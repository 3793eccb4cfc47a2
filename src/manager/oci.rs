//! OCI and Docker image JSON: the image config (kept byte for byte, its sha256 is the
//! image id), manifests, indexes and docker-archive's `manifest.json`.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::error::Error;

/// Media types.
pub mod media {
    /// An OCI image manifest.
    pub const MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
    /// An OCI image index.
    pub const INDEX: &str = "application/vnd.oci.image.index.v1+json";
    /// An OCI image config.
    pub const CONFIG: &str = "application/vnd.oci.image.config.v1+json";
    /// An uncompressed OCI layer.
    pub const LAYER: &str = "application/vnd.oci.image.layer.v1.tar";
    /// A Docker schema 2 manifest.
    pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
    /// A Docker manifest list.
    pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
}

/// The annotation that names an image in an OCI layout's index.
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";

/// A content descriptor.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Descriptor {
    /// Media type.
    #[serde(rename = "mediaType", default)]
    pub media_type: String,
    /// `sha256:<hex>`.
    pub digest: String,
    /// Bytes.
    pub size: u64,
    /// Annotations (the index's `ref.name`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<std::collections::BTreeMap<String, String>>,
    /// A manifest's platform, in an index.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Value>,
}

/// An image manifest.
#[derive(Debug, Deserialize)]
pub struct Manifest {
    /// The config blob.
    pub config: Descriptor,
    /// The layer blobs, base first.
    #[serde(default)]
    pub layers: Vec<Descriptor>,
}

/// An image index (or Docker manifest list).
#[derive(Debug, Deserialize)]
pub struct Index {
    /// Its manifests.
    #[serde(default)]
    pub manifests: Vec<Descriptor>,
}

/// One image of a docker-archive's `manifest.json`.
#[derive(Debug, Serialize, Deserialize)]
pub struct DockerEntry {
    /// The config file's path in the archive.
    #[serde(rename = "Config")]
    pub config: String,
    /// Its names.
    #[serde(rename = "RepoTags", default)]
    pub repo_tags: Option<Vec<String>>,
    /// Layer tarballs' paths in the archive, base first.
    #[serde(rename = "Layers")]
    pub layers: Vec<String>,
}

/// Parses JSON, naming what it was in the error.
pub fn parse<T: serde::de::DeserializeOwned>(bytes: &[u8], what: &str) -> Result<T, Error> {
    serde_json::from_slice(bytes).map_err(|e| Error::msg(format!("the archive's {what} is not valid: {e}")))
}

/// The layer ids (`rootfs.diff_ids`) a config lists.
pub fn diff_ids(config: &Value) -> Result<Vec<String>, Error> {
    let ids = config
        .pointer("/rootfs/diff_ids")
        .and_then(Value::as_array)
        .ok_or_else(|| Error::msg("the image config lists no layers (rootfs.diff_ids)"))?;
    ids.iter()
        .map(|v| {
            v.as_str().map(String::from).ok_or_else(|| Error::msg("a layer id in the image config is not a string"))
        })
        .collect()
}

/// The architecture name OCI uses for this machine.
pub fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

/// RFC 3339 for seconds since the epoch.
pub fn rfc3339(secs: u64) -> String {
    humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs)).to_string()
}

/// RFC 3339 for now, to the nanosecond (two images made in one second differ).
pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_nanos(std::time::SystemTime::now()).to_string()
}

/// Seconds since the epoch of a config's `created`, if it has a readable one.
pub fn created_secs(config: &Value) -> Option<u64> {
    let s = config.get("created")?.as_str()?;
    let t = humantime::parse_rfc3339_weak(s.trim_end_matches('Z').split('.').next()?).ok()?;
    t.duration_since(std::time::UNIX_EPOCH).ok().map(|d| d.as_secs())
}

/// A new image config for layers made here (`image import`): no command, no environment.
pub fn new_config(diff_ids: &[String], when: &str, history: &[String]) -> Value {
    json!({
        "created": when,
        "architecture": host_arch(),
        "os": "linux",
        "config": {},
        "rootfs": { "type": "layers", "diff_ids": diff_ids },
        "history": history.iter().map(|h| json!({ "created": when, "created_by": h })).collect::<Vec<_>>(),
    })
}

/// The config of an image made from `parent` plus one layer (`commit`): everything the
/// parent says (command, environment, labels) with the layer and a history entry added.
pub fn child_config(parent: &Value, layer: &str, when: &str, created_by: &str) -> Value {
    let mut c = parent.clone();
    if let Some(o) = c.as_object_mut() {
        o.insert("created".into(), json!(when));
        o.remove("container");
        o.remove("container_config");
    }
    let mut ids = diff_ids(parent).unwrap_or_default();
    ids.push(layer.to_string());
    c["rootfs"] = json!({ "type": "layers", "diff_ids": ids });
    let mut hist = c.get("history").and_then(Value::as_array).cloned().unwrap_or_default();
    hist.push(json!({ "created": when, "created_by": created_by }));
    c["history"] = Value::Array(hist);
    c
}

/// The config as stored: compact JSON (its sha256 is the image id).
pub fn to_bytes(v: &Value) -> Vec<u8> {
    serde_json::to_vec(v).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_round_trip() {
        let c = new_config(&["sha256:aa".into()], &rfc3339(1_700_000_000), &["x".into()]);
        assert_eq!(created_secs(&c), Some(1_700_000_000));
        let podman = json!({"created": "2024-03-01T10:20:30.123456789Z"});
        assert_eq!(created_secs(&podman), Some(1_709_288_430));
    }

    #[test]
    fn child_adds_a_layer_and_keeps_the_rest() {
        let p = json!({"config": {"Cmd": ["sh"]}, "rootfs": {"type": "layers", "diff_ids": ["sha256:a"]}});
        let c = child_config(&p, "sha256:b", &now_rfc3339(), "commit");
        assert_eq!(diff_ids(&c).unwrap(), vec!["sha256:a", "sha256:b"]);
        assert_eq!(c["config"]["Cmd"][0], "sh");
        assert_eq!(c["history"].as_array().unwrap().len(), 1);
    }
}
