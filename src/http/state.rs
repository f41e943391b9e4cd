//! What every handler can reach: the service, and whether the server wants traffic.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::service::Service;

/// Whether the server wants traffic; flipped off first on shutdown.
#[derive(Debug, Clone, Default)]
pub struct Readiness(Arc<AtomicBool>);

impl Readiness {
    pub fn set_ready(&self, ready: bool) {
        self.0.store(ready, Ordering::SeqCst);
    }

    pub fn is_ready(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// What every handler can reach.
#[derive(Debug, Clone)]
pub struct AppState {
    pub service: Service,
    pub readiness: Readiness,
}
