//! Driver and pool errors sorted into "the database is unreachable right now" (the
//! request may be retried: HTTP 503) and everything else.

use deadpool_postgres::{PoolError, tokio_postgres};
use tokio_postgres::error::SqlState;

use crate::store::StoreError;

/// Whether `e` says the connection or the server is gone or not taking work, rather
/// than that the statement itself is wrong.
pub fn is_transient(e: &tokio_postgres::Error) -> bool {
    if e.is_closed() {
        return true;
    }
    if let Some(code) = e.code() {
        let code = code.code();
        // 08: connection exception; 57P01-03: admin/crash shutdown, starting up;
        // 53: insufficient resources (too many connections, out of memory);
        // 57014: query_canceled (our statement_timeout expired: overload or a lock
        // held too long — the caller may retry later); 25006: read-only transaction
        // (connected to a server demoted to standby by a failover).
        return code.starts_with("08")
            || code.starts_with("53")
            || matches!(code, "57P01" | "57P02" | "57P03" | "57014" | "25006");
    }
    // Connect errors and broken sockets carry the io::Error — except a refused TLS
    // handshake (a certificate that does not verify), which comes wrapped in one too
    // but will not cure itself; the connect timeout carries nothing but its message.
    let io = std::error::Error::source(e).and_then(|s| s.downcast_ref::<std::io::Error>());
    match io {
        Some(io) => !io
            .get_ref()
            .is_some_and(|inner| inner.is::<rustls::Error>()),
        None => e.to_string().starts_with("timeout waiting for server"),
    }
}

/// Deadlocks and serialization failures: retrying the transaction is the cure.
pub fn is_retryable_conflict(e: &StoreError) -> bool {
    let StoreError::Engine(source) = e else {
        return false;
    };
    source
        .downcast_ref::<tokio_postgres::Error>()
        .and_then(tokio_postgres::Error::code)
        .is_some_and(|code| {
            *code == SqlState::T_R_DEADLOCK_DETECTED || *code == SqlState::T_R_SERIALIZATION_FAILURE
        })
}

pub fn from_driver(e: tokio_postgres::Error) -> StoreError {
    if is_transient(&e) {
        StoreError::Unavailable(Box::new(e))
    } else {
        StoreError::Engine(Box::new(e))
    }
}

pub fn from_pool(e: PoolError) -> StoreError {
    match e {
        PoolError::Backend(e) => from_driver(e),
        PoolError::Closed => StoreError::Closed,
        PoolError::Timeout(_) => StoreError::Unavailable(Box::new(e)),
        other => StoreError::Engine(Box::new(other)),
    }
}

/// The client-side deadline on one operation passed.
pub fn deadline_passed(what: &'static str) -> StoreError {
    StoreError::Unavailable(format!("{what}: no answer from the database in time").into())
}
