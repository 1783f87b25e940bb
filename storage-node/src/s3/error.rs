//! Mapping the model's, the store's and the catalog's errors to S3 error codes.

use s3s::{S3Error, S3ErrorCode, s3_error};

use crate::catalog::CatalogError;
use crate::model::ModelError;
use crate::store::StoreError;

pub(crate) fn from_store(err: StoreError) -> S3Error {
    match err {
        StoreError::QuotaExceeded { .. } => {
            let mut error =
                S3Error::with_message(S3ErrorCode::Custom("QuotaExceeded".into()), err.to_string());
            error.set_status_code(http::StatusCode::INSUFFICIENT_STORAGE);
            error
        }
        StoreError::StorageFull { .. } => {
            let mut error =
                S3Error::with_message(S3ErrorCode::Custom("InsufficientStorage".into()), err.to_string());
            error.set_status_code(http::StatusCode::INSUFFICIENT_STORAGE);
            error
        }
        StoreError::Truncated { .. } | StoreError::LongerThanAnnounced { .. } => {
            s3_error!(IncompleteBody, "{err}")
        }
        StoreError::Source(_) => s3_error!(IncompleteBody, "{err}"),
        StoreError::InvalidRange { .. } => s3_error!(InvalidRange),
        StoreError::NoSuchObject(_) => s3_error!(NoSuchKey),
        StoreError::Catalog(err) => from_catalog(&err),
        StoreError::ChunkVanished { .. } => s3_error!(ServiceUnavailable, "{err}"),
        // A copy of the pack failed mid-upload: nothing was committed, and a retry starts a
        // pack on healthy nodes. SDKs retry a 503 SlowDown by default.
        StoreError::CopyFailed { .. } => {
            tracing::warn!(error = %err, "an upload lost a copy of its pack");
            retry_later("a storage node failed during the upload; retry")
        }
        StoreError::Placement(crate::placement::PlacementError::Catalog(err)) => from_catalog(&err),
        StoreError::Placement(crate::placement::PlacementError::Shortage { .. }) => {
            tracing::warn!(error = %err, "too few zones can take a new pack");
            retry_later(
                "too few storage zones are reachable to keep the copies this tenant's policy asks for; retry",
            )
        }
        StoreError::Retry(_) => {
            tracing::warn!(error = %err, "an upload must be retried");
            retry_later("the upload's storage changed while it ran; retry")
        }
        // Nothing was read of the body nor stored: the node's memory budget for uploads is spent.
        StoreError::MemoryBusy { .. } => {
            tracing::warn!(error = %err, "an upload waited too long for memory");
            retry_later("the node is busy with other uploads; retry")
        }
        // Committed; a retry of the same write is harmless and is confirmed again.
        StoreError::Unconfirmed(_) => {
            tracing::error!(error = %err, "a write could not confirm the read caches clean");
            retry_later("the write could not be confirmed on every node; retry")
        }
        StoreError::ChunkUnavailable { .. } => {
            tracing::error!(error = %err, "no copy of a chunk could be read");
            retry_later("no copy of the object's data can be read now; retry")
        }
        other => {
            tracing::error!(error = %other, "S3 request failed");
            s3_error!(InternalError, "internal error; see the server log")
        }
    }
}

/// `503 SlowDown` with `Retry-After: 1`: the request may succeed if repeated, and the SDKs
/// repeat it by default.
pub(crate) fn retry_later(message: &'static str) -> S3Error {
    let mut error = S3Error::with_message(S3ErrorCode::SlowDown, message);
    error.set_status_code(http::StatusCode::SERVICE_UNAVAILABLE);
    let mut headers = http::HeaderMap::new();
    headers.insert(http::header::RETRY_AFTER, http::HeaderValue::from_static("1"));
    error.set_headers(headers);
    error
}

/// A catalog that fails is unavailable to S3: the reason goes to the log, not to the client.
fn from_catalog(err: &CatalogError) -> S3Error {
    tracing::error!(error = %err, "S3 catalog query failed");
    s3_error!(ServiceUnavailable, "the catalog is unavailable")
}

pub(crate) fn from_model(err: ModelError) -> S3Error {
    match err {
        ModelError::Store(err) => from_store(err),
        ModelError::BucketGone => s3_error!(NoSuchBucket),
        ModelError::BucketNotEmpty => s3_error!(BucketNotEmpty),
        ModelError::TenantDeleting => tenant_deleting(),
        ModelError::UploadGone => s3_error!(NoSuchUpload),
        // The condition held when the write began (it is checked then): the key changed since.
        ModelError::ConditionFailed => s3_error!(ConditionalRequestConflict),
    }
}

/// The answer to a write for a tenant whose deletion has started.
pub(crate) fn tenant_deleting() -> S3Error {
    s3_error!(AccessDenied, "the tenant is being deleted")
}

impl From<StoreError> for S3Error {
    fn from(err: StoreError) -> Self {
        from_store(err)
    }
}

impl From<ModelError> for S3Error {
    fn from(err: ModelError) -> Self {
        from_model(err)
    }
}
