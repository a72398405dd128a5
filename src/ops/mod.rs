//! Metrics, Events, health, logs.

pub mod api_contact;
pub mod events;
pub mod health;
pub mod logging;
pub mod metrics;

pub use api_contact::ApiContact;
pub use events::EventSink;
pub use health::Health;
pub use metrics::Metrics;
