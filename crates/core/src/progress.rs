//! How libraries report long work: the binary implements [`Progress`] with progress
//! bars; libraries only call it, so they never draw anything themselves.

/// Progress of a sequence of phases, each counted in units (passages, scores, steps).
pub trait Progress: Sync {
    /// A new phase named `what` with `total` units (0: not known yet).
    fn start(&self, what: &str, total: u64);
    /// The phase's total, once known.
    fn set_total(&self, _total: u64) {}
    /// Units done so far in the current phase.
    fn set(&self, done: u64);
    /// Units found already done when the phase starts (a resumed run): counted in the
    /// position but not in the rate, so the ETA reflects the work that is left.
    fn skip(&self, done: u64) {
        self.set(done);
    }
    /// A short status beside the bar (a loss, say).
    fn message(&self, _msg: &str) {}
    /// The current phase is over.
    fn finish(&self);
}

/// Reports nothing (tests, library callers without a terminal).
pub struct NoProgress;

impl Progress for NoProgress {
    fn start(&self, _what: &str, _total: u64) {}
    fn set(&self, _done: u64) {}
    fn finish(&self) {}
}
