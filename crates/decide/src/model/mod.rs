//! What the core reads and returns: the [`settings`] it decides with, the
//! [`observations`] of the cluster it decides on, and the [`actions`] and
//! report it returns.

pub mod actions;
pub mod observations;
pub mod settings;

pub use actions::*;
pub use observations::*;
pub use settings::*;
