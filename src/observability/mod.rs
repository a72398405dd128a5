//! What an operator sees: Prometheus [`metrics`], Kubernetes [`events`],
//! the [`health`] endpoints (`/healthz`, `/readyz`, `/metrics`) and
//! [`logging`].

pub mod events;
pub mod health;
pub mod logging;
pub mod metrics;

pub use events::EventSink;
pub use health::Health;
pub use metrics::Metrics;
