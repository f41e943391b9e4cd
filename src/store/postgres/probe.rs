//! The background check of the database's reachability behind `/readyz`, which also
//! publishes the pool's gauges.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use deadpool_postgres::{Pool, PoolError, TimeoutType, Timeouts};

use super::sql;
use crate::metrics::Metrics;

/// How often the background task checks that the database answers.
const PROBE_INTERVAL: Duration = Duration::from_secs(1);
/// How long one reachability check may take.
const PROBE_TIMEOUT: Duration = Duration::from_millis(800);
/// Check about once a second that the database answers, until aborted.
pub async fn probe_loop(pool: Pool, reachable: Arc<AtomicBool>, metrics: Arc<Metrics>) {
    let mut tick = tokio::time::interval(PROBE_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let status = pool.status();
        let gauge = |state: &str, n: usize| {
            metrics
                .database_connections
                .with_label_values(&[state])
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        };
        gauge("idle", status.available);
        gauge("in_use", status.size.saturating_sub(status.available));
        metrics
            .database_waiting
            .set(i64::try_from(status.waiting).unwrap_or(i64::MAX));
        if let Some(answered) = probe(&pool).await {
            let before = reachable.swap(answered, Ordering::Relaxed);
            if before != answered {
                if answered {
                    tracing::info!("PostgreSQL is reachable again");
                } else {
                    tracing::warn!("PostgreSQL is not reachable");
                }
            }
        }
    }
}

/// `Some(true)` when `SELECT 1` answered in time, `Some(false)` when the database
/// could not be reached; `None` when every pooled connection was busy (the database
/// is evidently working, just loaded) or the pool is closed.
async fn probe(pool: &Pool) -> Option<bool> {
    // A short wait for a free connection: when none frees up soon, the pool is busy
    // with work the database is doing, which is no sign of an outage.
    let timeouts = Timeouts {
        wait: Some(PROBE_TIMEOUT / 4),
        create: Some(PROBE_TIMEOUT),
        recycle: Some(PROBE_TIMEOUT),
    };
    let attempt = tokio::time::timeout(PROBE_TIMEOUT, async {
        let client = pool.timeout_get(&timeouts).await?;
        client.simple_query(sql::PING).await?;
        Ok::<_, PoolError>(())
    })
    .await;
    match attempt {
        Ok(Ok(())) => Some(true),
        Ok(Err(PoolError::Timeout(TimeoutType::Wait) | PoolError::Closed)) => None,
        Ok(Err(_)) | Err(_) => Some(false),
    }
}
