//! What the connection loop reports, and the stream of it.

use std::fmt;
use std::pin::Pin;
use std::sync::{Mutex, MutexGuard};
use std::task::{Context, Poll};

use futures_core::Stream;
use futures_util::future::BoxFuture;
use tokio::sync::broadcast;
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;

use crate::error::ConnectError;

/// The `on_event` callback: its future is awaited before the loop moves on.
pub(crate) type OnEvent<A, C> =
    std::sync::Arc<dyn Fn(Event<A, C>) -> BoxFuture<'static, ()> + Send + Sync>;

/// One step of the connection loop.
///
/// Events are passed, in order, to the [`on_event`](crate::PersistentLayer::on_event)
/// callback (whose future is awaited before the loop moves on), to every
/// [`events`](crate::Persistent::events) stream, and to `tracing`.
///
/// | event | when |
/// |---|---|
/// | `AttemptingToConnect` | a new round of attempts begins (once per round, not per attempt) |
/// | `ObtainedAddress(a)` | `get_address` answered `a`, and `a` differs from the previous address of this round |
/// | `FailedToConnect(e)` | an attempt failed, and `e` differs (by [`ConnectError::text`]) from the previous error of this round |
/// | `Connected(c)` | `c` became the current connection |
/// | `Disconnected` | the current connection died or was closed, and its close finished (or was given up at the [close timeout](crate::PersistentLayer::close_timeout)); it is no longer current |
#[non_exhaustive]
#[derive(Clone)]
pub enum Event<A, C> {
    /// A new round of connection attempts begins.
    AttemptingToConnect,
    /// The address lookup answered a new address; the connector is called with it next.
    ObtainedAddress(A),
    /// A connection attempt failed.
    FailedToConnect(ConnectError),
    /// A connection was established and is now the current one.
    Connected(C),
    /// The current connection died or was closed, and is no longer current.
    ///
    /// A connection that a handle reported dead (its `poll_ready` failed), or that began
    /// closing by itself, stops being current at once, so that
    /// [`state`](crate::Persistent::state) and
    /// [`current_connection`](crate::Persistent::current_connection) show the change at once;
    /// the driver then closes it, and this event comes once that close has finished, or once
    /// it is given up at the [close timeout](crate::PersistentLayer::close_timeout) (10 s by
    /// default). Until then the last event is still `Connected`.
    Disconnected,
    /// Only in [`Events`] streams, never to `on_event`: this subscriber fell too far behind and
    /// missed this many events; the stream goes on with the oldest event still held.
    Lagged(u64),
}

impl<A, C> Event<A, C> {
    /// The event's name, in `snake_case`, as it appears in the logs.
    pub fn name(&self) -> &'static str {
        match self {
            Event::AttemptingToConnect => "attempting_to_connect",
            Event::ObtainedAddress(_) => "obtained_address",
            Event::FailedToConnect(_) => "failed_to_connect",
            Event::Connected(_) => "connected",
            Event::Disconnected => "disconnected",
            Event::Lagged(_) => "lagged",
        }
    }
}

impl<A: PartialEq, C: PartialEq> PartialEq for Event<A, C> {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Event::AttemptingToConnect, Event::AttemptingToConnect)
            | (Event::Disconnected, Event::Disconnected) => true,
            (Event::ObtainedAddress(a), Event::ObtainedAddress(b)) => a == b,
            (Event::FailedToConnect(a), Event::FailedToConnect(b)) => a == b,
            (Event::Connected(a), Event::Connected(b)) => a == b,
            (Event::Lagged(a), Event::Lagged(b)) => a == b,
            _ => false,
        }
    }
}

/// Shows the connection of `Connected` as `..`, so that connection types need not be `Debug`.
impl<A: fmt::Debug, C> fmt::Debug for Event<A, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Event::AttemptingToConnect => f.write_str("AttemptingToConnect"),
            Event::ObtainedAddress(a) => f.debug_tuple("ObtainedAddress").field(a).finish(),
            Event::FailedToConnect(e) => f.debug_tuple("FailedToConnect").field(e).finish(),
            Event::Connected(_) => f.write_str("Connected(..)"),
            Event::Disconnected => f.write_str("Disconnected"),
            Event::Lagged(missed) => f.debug_tuple("Lagged").field(missed).finish(),
        }
    }
}

/// One line for people, as the logs say it: `attempting to connect`, `obtained address 10.0.0.7:80`
/// (the address's `Debug`), `failed to connect: connect failed: tcp connect failed:
/// 10.0.0.7:80: Connection refused (os error 111)` (the error with its sources, as
/// [`ConnectError::text`]),
/// `connected`, `disconnected`, `missed 3 events`.
///
/// # Examples
///
/// ```
/// use tower_persistent::Event;
///
/// let event: Event<&str, ()> = Event::ObtainedAddress("10.0.0.7:80");
/// assert_eq!(event.to_string(), "obtained address \"10.0.0.7:80\"");
/// assert_eq!(Event::<&str, ()>::Disconnected.to_string(), "disconnected");
/// ```
impl<A: fmt::Debug, C> fmt::Display for Event<A, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Event::AttemptingToConnect => f.write_str("attempting to connect"),
            Event::ObtainedAddress(a) => write!(f, "obtained address {a:?}"),
            Event::FailedToConnect(e) => write!(f, "failed to connect: {}", e.text()),
            Event::Connected(_) => f.write_str("connected"),
            Event::Disconnected => f.write_str("disconnected"),
            Event::Lagged(missed) => write!(f, "missed {missed} events"),
        }
    }
}

/// The fan-out of events to stream subscribers: the most recent event and a broadcast channel,
/// updated under one lock so that a new subscriber sees each event exactly once.
pub(crate) struct Hub<A, C> {
    state: Mutex<HubState<A, C>>,
}

struct HubState<A, C> {
    last: Option<Event<A, C>>,
    /// The channel to the streams: made by the first `events()` call (its buffer holds
    /// `capacity` events), dropped when the last stream is gone, so that a persistent
    /// connection nobody watches holds no buffer.
    sender: Option<broadcast::Sender<Event<A, C>>>,
    capacity: u32,
    /// The persistent connection finished closing: streams end.
    finished: bool,
    /// Closing began: no round begins any more, and no `AttemptingToConnect` is published.
    rounds_stopped: bool,
}

impl<A: Clone + Send + 'static, C: Clone + Send + 'static> Hub<A, C> {
    pub(crate) fn new(capacity: usize) -> Self {
        Hub {
            state: Mutex::new(HubState {
                last: None,
                sender: None,
                capacity: capacity.clamp(1, MAX_CAPACITY) as u32,
                finished: false,
                rounds_stopped: false,
            }),
        }
    }

    /// Sends `event` to the streams and keeps it as the last one.
    pub(crate) fn publish(&self, event: Event<A, C>) {
        let state = self.lock();
        Self::publish_locked(state, event);
    }

    /// Publishes `AttemptingToConnect`, unless closing began ([`Self::stop_rounds`]): false
    /// then. Closing's beginning and this are ordered by the hub's lock: an event published
    /// once `close()` has returned would say that a round began after it.
    pub(crate) fn publish_round(&self) -> bool {
        let state = self.lock();
        if state.rounds_stopped {
            return false;
        }
        Self::publish_locked(state, Event::AttemptingToConnect);
        true
    }

    fn publish_locked(mut state: MutexGuard<'_, HubState<A, C>>, event: Event<A, C>) {
        let mut unwatched = None;
        if let Some(sender) = &state.sender {
            if sender.receiver_count() == 0 {
                // Every stream is gone: so is the buffer, until the next `events()`.
                unwatched = state.sender.take();
            } else {
                let _ = sender.send(event.clone());
            }
        }
        let replaced = state.last.replace(event);
        drop(state);
        // The event before (a connection, say) and an unwatched buffer are dropped once the
        // lock is released.
        drop(replaced);
        drop(unwatched);
    }

    pub(crate) fn subscribe(&self) -> Events<A, C> {
        let mut state = self.lock();
        let receiver = if state.finished {
            // A receiver whose channel is already closed ends the stream at once.
            broadcast::channel(1).1
        } else {
            let capacity = state.capacity as usize;
            state
                .sender
                .get_or_insert_with(|| broadcast::Sender::new(capacity))
                .subscribe()
        };
        Events {
            first: state.last.clone(),
            rest: BroadcastStream::new(receiver),
        }
    }
}

impl<A, C> Hub<A, C> {
    /// Closing began: [`Self::publish_round`] publishes nothing from now on.
    pub(crate) fn stop_rounds(&self) {
        self.lock().rounds_stopped = true;
    }

    fn lock(&self) -> MutexGuard<'_, HubState<A, C>> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Ends every stream once it has delivered what was already sent. A last event that holds
    /// a connection (the driver ended without its `Disconnected`: its runtime was dropped, say)
    /// is forgotten: a later subscriber is not told of a connection that is gone, and the
    /// connection is not kept alive by the persistent connection's state.
    pub(crate) fn finish(&self) {
        let mut state = self.lock();
        state.finished = true;
        let sender = state.sender.take();
        let connected = match state.last {
            Some(Event::Connected(_)) => state.last.take(),
            _ => None,
        };
        drop(state);
        drop(sender);
        drop(connected);
    }
}

/// The largest event buffer the streams may be given (tokio's broadcast limit is
/// `usize::MAX / 2`, and each slot is allocated when the first stream subscribes).
const MAX_CAPACITY: usize = 1 << 16;

/// The stream returned by [`Persistent::events`](crate::Persistent::events).
///
/// It first yields the most recent event (if any event was emitted yet), then every later
/// event, in order. A subscriber that falls more than the configured
/// [`event_capacity`](crate::PersistentLayer::event_capacity) behind receives one
/// [`Event::Lagged`] telling how many events it missed, then continues with the oldest event
/// still held: events are never dropped silently.
///
/// The stream ends once the persistent connection has finished closing and every event was
/// delivered.
pub struct Events<A, C> {
    first: Option<Event<A, C>>,
    rest: BroadcastStream<Event<A, C>>,
}

// The broadcast stream is `Unpin`, and the first event is never pinned.
impl<A, C> Unpin for Events<A, C> {}

impl<A, C> fmt::Debug for Events<A, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Events").finish_non_exhaustive()
    }
}

impl<A: Clone + Send + 'static, C: Clone + Send + 'static> Stream for Events<A, C> {
    type Item = Event<A, C>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if let Some(event) = this.first.take() {
            return Poll::Ready(Some(event));
        }
        Pin::new(&mut this.rest).poll_next(cx).map(|item| {
            item.map(|result| {
                result.unwrap_or_else(|BroadcastStreamRecvError::Lagged(missed)| {
                    Event::Lagged(missed)
                })
            })
        })
    }
}
