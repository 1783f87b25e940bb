//! Mapping the store's and the catalog's errors to S3 error codes.

use s3s::{S3Error, S3ErrorCode, s3_error};

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
        StoreError::Truncated { .. } => s3_error!(IncompleteBody, "{err}"),
        StoreError::Source(_) => s3_error!(IncompleteBody, "{err}"),
        StoreError::InvalidRange { .. } => s3_error!(InvalidRange),
        StoreError::NoSuchObject(_) => s3_error!(NoSuchKey),
        StoreError::Catalog(_) | StoreError::ChunkVanished { .. } => s3_error!(ServiceUnavailable, "{err}"),
        other => {
            tracing::error!(error = %other, "S3 request failed");
            s3_error!(InternalError, "internal error; see the server log")
        }
    }
}

pub(crate) fn from_db(err: tokio_postgres::Error) -> S3Error {
    tracing::error!(error = %crate::catalog::describe(&err), "S3 catalog query failed");
    s3_error!(ServiceUnavailable, "the catalog is unavailable")
}

pub(crate) fn from_pool(err: deadpool_postgres::PoolError) -> S3Error {
    tracing::error!(error = %err, "S3 catalog unreachable");
    s3_error!(ServiceUnavailable, "the catalog is unavailable")
}
