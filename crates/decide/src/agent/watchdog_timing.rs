//! Timings of the watchdog's dead man's switch that the self-check core, the
//! watchdog shell and the simulator share (no other dependency, so the
//! watchdog module compiles on its own in harness/fakewdog's tests).

use std::time::Duration;

/// How long after a permit's end the watchdog's feeding thread takes it as
/// lapsed (the loop hung: the reset is then expedited); a renewal that comes
/// within it resumes the feeding. Feeds never follow the permit's end.
pub const PERMIT_GRACE: Duration = Duration::from_secs(2);

/// The watchdog timeout an expedited reset sets: the node resets this long
/// after the last ping (a self-fence decision, a lapsed permit).
pub const EXPEDITED_TIMEOUT: Duration = Duration::from_secs(1);
