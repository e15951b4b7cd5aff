//! A connection's view of the switch's shutdown, cheap to poll.
//!
//! Each connection task waits for two things at once: hyper's connection future and the
//! shutdown. `select!` polls both on every wake-up of the task, that is on every request
//! (twice: when the request arrives and when the driver's reply does). Polling the watch
//! channel's `wait_for` each time walks its notifier (a lock, the waker check, the task's
//! budget): about a thousand instructions per exchange, measured with callgrind
//! (docs/performance.md). [`Stopping`] polls it only when it may have something to say: on
//! its first poll (to register the task's waker), when the task's waker changed, or when the
//! channel's version moved — one atomic load otherwise.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use tokio::sync::watch;

/// Resolves once the shutdown flag is true (or its sender is gone).
pub(crate) struct Stopping {
    /// The channel's waiter, registered with `registered`.
    wait: Pin<Box<dyn Future<Output = ()> + Send>>,
    /// A second receiver, only read for its version: whether `wait` may have been woken.
    probe: watch::Receiver<bool>,
    /// The waker `wait` was last polled with.
    registered: Option<Waker>,
}

impl Stopping {
    /// Watches `shutdown` (a receiver of the switch's shutdown flag).
    pub(crate) fn new(shutdown: &watch::Receiver<bool>) -> Self {
        let mut waiting = shutdown.clone();
        let mut probe = shutdown.clone();
        // The probe's "seen" version starts at the current one: a change from here on
        // (or a sender dropped) makes `has_changed` true.
        probe.borrow_and_update();
        Self {
            wait: Box::pin(async move {
                // The guard `wait_for` returns must not live across an await.
                let _ = waiting.wait_for(|stopping| *stopping).await.is_ok();
            }),
            probe,
            registered: None,
        }
    }
}

impl Future for Stopping {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        let same_waker = this
            .registered
            .as_ref()
            .is_some_and(|waker| waker.will_wake(cx.waker()));
        if same_waker && !this.probe.has_changed().unwrap_or(true) {
            return Poll::Pending;
        }
        if !same_waker {
            this.registered = Some(cx.waker().clone());
        }
        this.wait.as_mut().poll(cx)
    }
}

/// Waits `hold`, or less if the switch begins shutting down (`shutdown` turns true): whether
/// the wait ran out.
pub(crate) async fn wait_unless_stopping(shutdown: &watch::Receiver<bool>, hold: Duration) -> bool {
    let mut shutdown = shutdown.clone();
    tokio::select! {
        biased;
        _ = shutdown.wait_for(|stopping| *stopping) => false,
        () = tokio::time::sleep(hold) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn resolves_when_the_flag_is_raised_and_not_before() {
        let (sender, receiver) = watch::channel(false);
        let mut stopping = Stopping::new(&receiver);
        let early = tokio::time::timeout(Duration::from_secs(5), &mut stopping).await;
        assert!(early.is_err(), "no shutdown yet");
        let task = tokio::spawn(stopping);
        tokio::task::yield_now().await;
        sender.send_replace(true);
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("woken by the shutdown")
            .unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn resolves_at_once_when_already_stopping_or_the_sender_is_gone() {
        let (sender, receiver) = watch::channel(true);
        Stopping::new(&receiver).await;
        let (sender_gone, receiver) = watch::channel(false);
        let stopping = Stopping::new(&receiver);
        drop(sender_gone);
        tokio::time::timeout(Duration::from_secs(5), stopping)
            .await
            .expect("a dropped sender ends the wait");
        drop(sender);
    }

    #[tokio::test(start_paused = true)]
    async fn a_value_that_stays_false_does_not_end_the_wait() {
        let (sender, receiver) = watch::channel(false);
        let mut stopping = Stopping::new(&receiver);
        assert!(tokio::time::timeout(Duration::from_secs(1), &mut stopping)
            .await
            .is_err());
        sender.send_replace(false);
        assert!(tokio::time::timeout(Duration::from_secs(1), &mut stopping)
            .await
            .is_err());
        sender.send_replace(true);
        tokio::time::timeout(Duration::from_secs(1), stopping)
            .await
            .expect("raised at last");
    }
}
