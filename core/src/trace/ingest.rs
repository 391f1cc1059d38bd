//! The host's side of reporting: an uploaded body decoded under a cap, the
//! batch checked whole before anything is stored, then stored in one
//! transaction with dedup by id. `edgeloop-trainer serve` and `import` run
//! it; `fuzz/` feeds it arbitrary bodies.

use std::io::Read;

use flate2::read::MultiGzDecoder;
use serde_json::Value;

use super::report::{Ack, BATCH_SCHEMA_VERSION};
use super::store::{Inserted, StoreError, TraceStore};
use super::TraceRecord;

/// Most traces in one uploaded batch.
pub const MAX_BATCH_TRACES: usize = 10_000;

/// Why a request's body is refused; each maps to one status code.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    /// 400: not a batch this host reads.
    #[error("{0}")]
    Bad(String),
    /// 413: larger than the host takes.
    #[error("{0}")]
    TooLarge(String),
    /// 415: a content encoding other than gzip or none.
    #[error("{0}")]
    Encoding(String),
}

/// The JSON text of a body: decompressed if `encoding` says gzip, refused
/// once it passes `max_json` bytes (so a small body that expands without
/// end is stopped at the cap).
pub fn decode_body(
    body: &[u8],
    encoding: Option<&str>,
    max_json: usize,
) -> Result<Vec<u8>, Refusal> {
    match encoding.map(str::trim) {
        None | Some("") | Some("identity") => {
            if body.len() > max_json {
                return Err(Refusal::TooLarge(format!(
                    "body of {} bytes is larger than the limit of {max_json}",
                    body.len()
                )));
            }
            Ok(body.to_vec())
        }
        Some(e) if e.eq_ignore_ascii_case("gzip") => {
            let mut out = Vec::new();
            MultiGzDecoder::new(body)
                .take(max_json as u64 + 1)
                .read_to_end(&mut out)
                .map_err(|e| Refusal::Bad(format!("body is not valid gzip: {e}")))?;
            if out.len() > max_json {
                return Err(Refusal::TooLarge(format!(
                    "body expands past the limit of {max_json} bytes"
                )));
            }
            Ok(out)
        }
        Some(e) => Err(Refusal::Encoding(format!(
            "content encoding {e:?} is not supported (gzip or none)"
        ))),
    }
}

/// Parses and checks a batch: `{"schema_version":1,"traces":[...]}` with
/// every record valid ([`TraceRecord::from_json`]) and consented.
pub fn parse_batch(json: &[u8]) -> Result<Vec<TraceRecord>, Refusal> {
    let bad = |m: String| Refusal::Bad(m);
    let v: Value =
        serde_json::from_slice(json).map_err(|e| bad(format!("body is not JSON: {e}")))?;
    let Value::Object(obj) = v else {
        return Err(bad("body is not a JSON object".into()));
    };
    if let Some(k) = obj
        .keys()
        .find(|k| !matches!(k.as_str(), "schema_version" | "traces"))
    {
        return Err(bad(format!("unknown field {k:?} in the batch")));
    }
    match obj.get("schema_version") {
        None => return Err(bad("batch has no schema_version".into())),
        Some(Value::Number(n)) if n.as_u64() == Some(BATCH_SCHEMA_VERSION as u64) => {}
        Some(other) => {
            return Err(bad(format!(
                "batch schema_version {other} is not supported (this host reads version {BATCH_SCHEMA_VERSION})"
            )))
        }
    }
    let Some(Value::Array(traces)) = obj.get("traces") else {
        return Err(bad("batch has no traces array".into()));
    };
    if traces.len() > MAX_BATCH_TRACES {
        return Err(Refusal::TooLarge(format!(
            "batch of {} traces is more than the limit of {MAX_BATCH_TRACES}",
            traces.len()
        )));
    }
    traces
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let r = TraceRecord::from_json(&t.to_string())
                .map_err(|e| bad(format!("traces[{i}]: {e}")))?;
            if !r.consent {
                return Err(bad(format!(
                    "traces[{i}] ({}): the user did not consent to reporting it",
                    r.id
                )));
            }
            Ok(r)
        })
        .collect()
}

/// Stores checked records in one transaction; durable on return. Ids new
/// to the host are `accepted`, ids it held already (or that came twice)
/// are `duplicates`.
pub fn store_batch(store: &mut TraceStore, records: &[TraceRecord]) -> Result<Ack, StoreError> {
    let outcomes = store.insert_batch(records)?;
    let mut ack = Ack::default();
    for (r, o) in records.iter().zip(outcomes) {
        match o {
            Inserted::New | Inserted::Upgraded => ack.accepted.push(r.id.clone()),
            Inserted::Duplicate | Inserted::Discarded => ack.duplicates.push(r.id.clone()),
        }
    }
    Ok(ack)
}
