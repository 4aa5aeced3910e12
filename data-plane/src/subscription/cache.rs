//! The last good snapshot on disk, so that a node can restart and serve while
//! the control plane is unreachable.
//!
//! File layout: a magic line, the SHA-256 of the payload (32 bytes), then the
//! protobuf-encoded `isame.v1.Snapshot`. It is written to a temporary file,
//! fsync'd, renamed over the old one and the directory fsync'd, with mode
//! 0600 (the config may name key files and internal hosts).

use isame_proto::pb;
use prost::Message;
use sha2::{Digest, Sha256};
use std::fs;
use std::path::{Path, PathBuf};

// 2: the config travels as JSON (`config_json`); a cache of the protobuf
// config (1) is reported as foreign and ignored, not served half-read.
const MAGIC: &[u8] = b"ISAME-SNAPSHOT-2\n";
const FILE: &str = "snapshot.bin";

/// Why a cache could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// The file system refused.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What failed.
        source: std::io::Error,
    },
    /// The file is not a snapshot this build wrote, or it was cut short or altered.
    #[error("{path}: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
}

/// The cache file in `dir`.
pub fn path(dir: &Path) -> PathBuf {
    dir.join(FILE)
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> CacheError + '_ {
    move |source| CacheError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Writes `snapshot` as the cache in `dir` (created if missing), atomically.
pub fn save(dir: &Path, snapshot: &pb::Snapshot) -> Result<(), CacheError> {
    fs::create_dir_all(dir).map_err(io(dir))?;
    let payload = snapshot.encode_to_vec();
    let target = path(dir);
    super::private_file::replace(&target, &[MAGIC, &Sha256::digest(&payload), &payload])
        .map_err(io(&target))
}

/// Reads the cache in `dir`: `None` when there is none.
pub fn load(dir: &Path) -> Result<Option<pb::Snapshot>, CacheError> {
    let file = path(dir);
    let bytes = match fs::read(&file) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io(&file)(e)),
    };
    let corrupt = |reason: &str| CacheError::Corrupt {
        path: file.clone(),
        reason: reason.to_owned(),
    };
    let rest = bytes
        .strip_prefix(MAGIC)
        .ok_or_else(|| corrupt("not a snapshot cache (wrong header)"))?;
    if rest.len() < 32 {
        return Err(corrupt("truncated before the checksum"));
    }
    let (sum, payload) = rest.split_at(32);
    if Sha256::digest(payload).as_slice() != sum {
        return Err(corrupt(
            "checksum mismatch: the file is truncated or altered",
        ));
    }
    pb::Snapshot::decode(payload)
        .map(Some)
        .map_err(|e| corrupt(&format!("undecodable snapshot: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn snapshot(version: u64) -> pb::Snapshot {
        pb::Snapshot {
            version,
            hash: "abc".into(),
            config_json: r#"{"service": "cached"}"#.into(),
            certificates: Vec::new(),
            newest_version: version,
        }
    }

    #[test]
    fn round_trip_private_and_replaced_atomically() {
        let dir = tempfile::tempdir().expect("dir");
        let cache = dir.path().join("sub");
        assert!(load(&cache).expect("no cache").is_none());
        save(&cache, &snapshot(3)).expect("save");
        save(&cache, &snapshot(4)).expect("save again");
        assert_eq!(load(&cache).expect("load"), Some(snapshot(4)));
        let mode = fs::metadata(path(&cache))
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let leftovers: Vec<_> = fs::read_dir(&cache)
            .expect("list")
            .filter_map(Result::ok)
            .filter(|e| e.file_name() != FILE)
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }

    #[test]
    fn truncated_altered_or_foreign_files_are_named_errors() {
        let dir = tempfile::tempdir().expect("dir");
        save(dir.path(), &snapshot(7)).expect("save");
        let good = fs::read(path(dir.path())).expect("read");
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (good[..good.len() - 5].to_vec(), "checksum"),
            (good[..MAGIC.len() + 10].to_vec(), "truncated"),
            (b"version: 1\nupstreams: []\n".to_vec(), "wrong header"),
            (Vec::new(), "wrong header"),
            (
                {
                    let mut b = good.clone();
                    let last = b.len() - 1;
                    b[last] ^= 0xff;
                    b
                },
                "checksum",
            ),
        ];
        for (bytes, want) in cases {
            fs::write(path(dir.path()), &bytes).expect("write");
            match load(dir.path()) {
                Err(e @ CacheError::Corrupt { .. }) => {
                    let text = e.to_string();
                    assert!(text.contains(want) && text.contains(FILE), "{text}");
                }
                other => panic!("expected a corrupt-cache error for {want}, got {other:?}"),
            }
        }
    }
}
