//! [`State`]: where the connection loop is, for watching and for decisions.

use tokio::time::Instant;

use crate::error::ConnectError;

/// The state of a persistent connection, from [`Persistent::state`](crate::Persistent::state).
#[non_exhaustive]
#[derive(Debug, Clone)]
pub enum State {
    /// No connection: an attempt is under way, or the loop waits for the next one.
    Connecting {
        /// Attempts started in the current round (1 during the first; 0 while waiting, after a
        /// disconnection, for the round to begin).
        attempt: u32,
        /// When the next attempt starts, while waiting for it.
        next_attempt_at: Option<Instant>,
        /// The error of the last failed attempt of the current round.
        last_error: Option<ConnectError>,
    },
    /// A connection is current.
    Connected,
    /// The persistent connection is closed (or closing).
    Closed,
}

impl State {
    /// Whether a connection is current.
    pub fn is_connected(&self) -> bool {
        matches!(self, State::Connected)
    }

    /// Whether the persistent connection is closed or closing.
    pub fn is_closed(&self) -> bool {
        matches!(self, State::Closed)
    }
}
