//! The agent's clock of genuine API contact: when the API server last
//! answered (a successful request, or a watch event other than `Init`: see
//! [`is_api_contact`]). Everything that talks to the API server sets it;
//! readiness, the self-check and the peer server read it.

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::watch;

/// Whether a watcher event proves a response from the API server.
///
/// `Event::Init` is not one: kube-runtime's watcher emits it when it
/// (re)starts, *before* it sends any request, and with a network that fails
/// fast (interface down, TCP reset, ICMP unreachable) it restarts about every
/// second. Every other event carries what the API server sent: a listed
/// object, the end of a successful list, or a watch event.
pub fn is_api_contact<K>(event: &kube::runtime::watcher::Event<K>) -> bool {
    !matches!(event, kube::runtime::watcher::Event::Init)
}

/// Cheap to clone; every clone is the same clock.
#[derive(Clone, Debug)]
pub struct ApiContact(Arc<watch::Sender<Option<Instant>>>);

impl Default for ApiContact {
    fn default() -> Self {
        ApiContact(Arc::new(watch::Sender::new(None)))
    }
}

impl ApiContact {
    /// The API server answered just now.
    pub fn seen(&self) {
        self.seen_at(Instant::now());
    }

    pub fn seen_at(&self, at: Instant) {
        // Never move backwards (a slow request may finish after a newer event).
        self.0.send_if_modified(|last| {
            let newer = last.is_none_or(|t| t < at);
            if newer {
                *last = Some(at);
            }
            newer
        });
    }

    /// The last answer from the API server (request or watch event).
    pub fn last(&self) -> Option<Instant> {
        *self.0.borrow()
    }

    /// Told of every new contact (the value is its time).
    pub fn subscribe(&self) -> watch::Receiver<Option<Instant>> {
        self.0.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn contact_never_moves_backwards_and_is_announced() {
        let c = ApiContact::default();
        let mut rx = c.subscribe();
        let t0 = Instant::now();
        c.seen_at(t0 + Duration::from_secs(2));
        assert!(rx.has_changed().unwrap());
        assert_eq!(*rx.borrow_and_update(), Some(t0 + Duration::from_secs(2)));
        c.seen_at(t0);
        assert!(!rx.has_changed().unwrap(), "an older contact is no news");
        assert_eq!(c.last(), Some(t0 + Duration::from_secs(2)));
    }

    #[test]
    fn only_init_is_no_contact() {
        use kube::runtime::watcher::Event;
        assert!(!is_api_contact::<()>(&Event::Init));
        assert!(is_api_contact::<()>(&Event::InitDone));
        assert!(is_api_contact(&Event::Apply(())));
    }
}
