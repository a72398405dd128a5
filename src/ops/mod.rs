//! Metrics, Events, health, logs.
