//! The one stop signal every front door and background task takes (as mini-redis's
//! `shutdown.rs`): [`channel`] makes a [`Trigger`] for whoever decides to stop and a
//! [`Shutdown`] that listeners and loops clone and wait on.

use tokio::sync::watch;

/// Pulls the stop signal; held by whoever runs the server.
#[derive(Debug)]
pub struct Trigger(watch::Sender<bool>);

impl Trigger {
    /// Ask every holder of a [`Shutdown`] to stop.
    pub fn stop(&self) {
        // No receivers left means nobody is running to be stopped.
        let _ = self.0.send(true);
    }
}

/// The stop signal as seen by a listener or loop; cheap to clone.
#[derive(Debug, Clone)]
pub struct Shutdown(watch::Receiver<bool>);

impl Shutdown {
    /// Whether a stop has been asked for.
    pub fn is_requested(&self) -> bool {
        *self.0.borrow()
    }

    /// Resolves once a stop has been asked for (at once if it already was).
    pub async fn requested(&self) {
        let mut receiver = self.0.clone();
        // An error means the trigger is gone: nobody can ask any more, so stop too.
        let _ = receiver.wait_for(|stop| *stop).await;
    }
}

/// A new stop signal, not yet pulled.
pub fn channel() -> (Trigger, Shutdown) {
    let (sender, receiver) = watch::channel(false);
    (Trigger(sender), Shutdown(receiver))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn every_clone_sees_the_stop_including_late_waiters() {
        let (trigger, shutdown) = channel();
        let early = shutdown.clone();
        assert!(!early.is_requested());
        let waiting = tokio::spawn(async move { early.requested().await });
        trigger.stop();
        waiting.await.unwrap();
        assert!(shutdown.is_requested());
        shutdown.clone().requested().await;
    }
}
