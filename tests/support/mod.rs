//! Scripted address lookups, connectors and connections, and an event recorder, for the tests.
#![allow(dead_code, unreachable_pub)]

use std::collections::VecDeque;
use std::fmt::Debug;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::Instant;
use tower::Service;
use tower_persistent::{ClosableService, Event};

pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// What one call of a scripted lookup or connector does.
#[derive(Clone, Debug)]
pub enum Step {
    /// Answers at once (the address, for a lookup; anything, for a connector).
    Ok(&'static str),
    /// Fails at once with this message.
    Err(&'static str),
    /// Panics with this message.
    Panic(&'static str),
    /// Never answers; counts in `dropped` when its future is dropped.
    Hang,
    /// Never answers, and panics with this message when its future is dropped.
    HangThenPanicOnDrop(&'static str),
    /// Waits, then does the step.
    After(Duration, Box<Step>),
}

/// Milliseconds since `start` on the paused clock.
pub fn ms(start: Instant) -> u64 {
    start.elapsed().as_millis() as u64
}

/// A script of steps, and what happened to it.
#[derive(Clone)]
pub struct Script {
    start: Instant,
    steps: Arc<Mutex<VecDeque<Step>>>,
    /// What is done once the steps run out.
    default: Step,
    /// The time of every call, in ms since start.
    pub calls: Arc<Mutex<Vec<u64>>>,
    /// How many hanging futures were dropped.
    pub dropped: Arc<AtomicUsize>,
}

impl Script {
    pub fn new(start: Instant, steps: impl IntoIterator<Item = Step>, default: Step) -> Self {
        Script {
            start,
            steps: Arc::new(Mutex::new(steps.into_iter().collect())),
            default,
            calls: Arc::default(),
            dropped: Arc::default(),
        }
    }

    pub fn calls(&self) -> Vec<u64> {
        self.calls.lock().unwrap().clone()
    }

    pub fn push(&self, step: Step) {
        self.steps.lock().unwrap().push_back(step);
    }

    fn next(&self) -> Step {
        self.calls.lock().unwrap().push(ms(self.start));
        self.steps
            .lock()
            .unwrap()
            .pop_front()
            .unwrap_or_else(|| self.default.clone())
    }
}

/// Runs a step; `Ok` is turned into `T` by `make`.
fn run<T: Send + 'static>(
    step: Step,
    dropped: Arc<AtomicUsize>,
    make: impl FnOnce(&'static str) -> T + Send + 'static,
) -> BoxFuture<io::Result<T>> {
    Box::pin(async move {
        let mut step = step;
        while let Step::After(delay, next) = step {
            tokio::time::sleep(delay).await;
            step = *next;
        }
        match step {
            Step::Ok(s) => Ok(make(s)),
            Step::Err(msg) => Err(io::Error::other(msg)),
            Step::Panic(msg) => panic!("{msg}"),
            Step::Hang => {
                let _guard = CountOnDrop(dropped);
                std::future::pending().await
            }
            Step::HangThenPanicOnDrop(msg) => {
                let _guard = PanicOnDrop(msg);
                std::future::pending().await
            }
            Step::After(..) => unreachable!(),
        }
    })
}

struct CountOnDrop(Arc<AtomicUsize>);

struct PanicOnDrop(&'static str);

impl Drop for PanicOnDrop {
    fn drop(&mut self) {
        panic!("{}", self.0);
    }
}

impl Drop for CountOnDrop {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

/// A scripted address lookup: `Service<()>` answering `&'static str` addresses.
#[derive(Clone)]
pub struct Lookup(pub Script);

impl Service<()> for Lookup {
    type Response = &'static str;
    type Error = io::Error;
    type Future = BoxFuture<io::Result<&'static str>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, (): ()) -> Self::Future {
        let step = self.0.next();
        run(step, self.0.dropped.clone(), |address| address)
    }
}

/// A test connection: answers request `n` with `(id, n)`.
#[derive(Clone)]
pub struct Echo {
    pub id: usize,
    pub address: &'static str,
    state: Arc<EchoState>,
}

#[derive(Default)]
struct EchoState {
    fail_ready: AtomicBool,
    calls: AtomicUsize,
}

impl Echo {
    /// A new connection.
    pub fn new(id: usize, address: &'static str) -> Self {
        Echo {
            id,
            address,
            state: Arc::default(),
        }
    }

    /// From now on, `poll_ready` fails.
    pub fn break_ready(&self) {
        self.state.fail_ready.store(true, Ordering::SeqCst);
    }

    pub fn calls(&self) -> usize {
        self.state.calls.load(Ordering::SeqCst)
    }
}

impl Service<u32> for Echo {
    type Response = (usize, u32);
    type Error = io::Error;
    type Future = std::future::Ready<io::Result<(usize, u32)>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.state.fail_ready.load(Ordering::SeqCst) {
            Poll::Ready(Err(io::Error::other("broken connection")))
        } else {
            Poll::Ready(Ok(()))
        }
    }

    fn call(&mut self, n: u32) -> Self::Future {
        self.state.calls.fetch_add(1, Ordering::SeqCst);
        std::future::ready(Ok((self.id, n)))
    }
}

pub type Conn = ClosableService<Echo>;

/// A scripted connector: `Service<&'static str>` making [`Conn`]s numbered from 1.
#[derive(Clone)]
pub struct Connect {
    pub script: Script,
    /// Every connection made, in order.
    pub made: Arc<Mutex<Vec<Conn>>>,
    /// The address of every call, in order.
    pub addresses: Arc<Mutex<Vec<&'static str>>>,
}

impl Connect {
    pub fn new(script: Script) -> Self {
        Connect {
            script,
            made: Arc::default(),
            addresses: Arc::default(),
        }
    }

    pub fn made(&self) -> Vec<Conn> {
        self.made.lock().unwrap().clone()
    }

    /// The n-th connection made (from 1).
    pub fn conn(&self, n: usize) -> Conn {
        self.made.lock().unwrap()[n - 1].clone()
    }
}

impl Service<&'static str> for Connect {
    type Response = Conn;
    type Error = io::Error;
    type Future = BoxFuture<io::Result<Conn>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, address: &'static str) -> Self::Future {
        self.addresses.lock().unwrap().push(address);
        let step = self.script.next();
        let made = self.made.clone();
        run(step, self.script.dropped.clone(), move |_| {
            let mut made = made.lock().unwrap();
            let conn = ClosableService::new(Echo {
                id: made.len() + 1,
                address,
                state: Arc::default(),
            });
            made.push(conn.clone());
            conn
        })
    }
}

/// One line per event: its name and what it carries.
pub fn describe<A: Debug>(event: &Event<A, Conn>) -> String {
    match event {
        Event::AttemptingToConnect => "AttemptingToConnect".into(),
        Event::ObtainedAddress(a) => format!("ObtainedAddress({a:?})"),
        Event::FailedToConnect(e) => format!("FailedToConnect({})", e.text()),
        Event::Connected(c) => format!("Connected({})", c.get_ref().id),
        Event::Disconnected => "Disconnected".into(),
        _ => format!("{event:?}"),
    }
}

/// Records every event handed to `on_event`, with its time.
#[derive(Clone)]
pub struct Recorder {
    start: Instant,
    log: Arc<Mutex<Vec<(u64, String)>>>,
}

impl Recorder {
    pub fn new(start: Instant) -> Self {
        Recorder {
            start,
            log: Arc::default(),
        }
    }

    /// Records one event now.
    pub fn record<A: Debug>(&self, event: &Event<A, Conn>) {
        self.log
            .lock()
            .unwrap()
            .push((ms(self.start), describe(event)));
    }

    /// An `on_event` callback that records.
    pub fn handler<A: Debug + Send + 'static>(
        &self,
    ) -> impl Fn(Event<A, Conn>) -> std::future::Ready<()> + Send + Sync + 'static {
        let this = self.clone();
        move |event| {
            this.record(&event);
            std::future::ready(())
        }
    }

    /// The events so far, with their times in ms.
    pub fn log(&self) -> Vec<(u64, String)> {
        self.log.lock().unwrap().clone()
    }

    /// The events so far, without times.
    pub fn events(&self) -> Vec<String> {
        self.log().into_iter().map(|(_, e)| e).collect()
    }
}

/// Sleeps on the (paused) clock until `at` ms since `start`.
pub async fn until(start: Instant, at: u64) {
    tokio::time::sleep_until(start + Duration::from_millis(at)).await;
}

/// Reads `events` until an event named `name` arrives, and returns it.
///
/// # Panics
///
/// If the stream ends first or reports a lag.
pub async fn wait_event<A, C>(
    events: &mut tower_persistent::Events<A, C>,
    name: &str,
) -> Event<A, C>
where
    A: Clone + Send + 'static,
    C: Clone + Send + 'static,
{
    use futures_util::StreamExt;
    loop {
        match events.next().await {
            Some(Event::Lagged(missed)) => panic!("missed {missed} events"),
            Some(event) if event.name() == name => return event,
            Some(_) => {}
            None => panic!("the event stream ended before {name}"),
        }
    }
}

/// `(ms, event)` pairs from literals.
pub fn timeline(items: &[(u64, &str)]) -> Vec<(u64, String)> {
    items.iter().map(|(t, e)| (*t, e.to_string())).collect()
}

#[path = "line.rs"]
pub mod line;

#[path = "web.rs"]
pub mod web;

#[path = "faulty.rs"]
pub mod faulty;

#[path = "temp.rs"]
pub mod temp;

#[path = "etcd.rs"]
pub mod etcd;

#[path = "ports.rs"]
pub mod ports;

#[path = "proxy.rs"]
pub mod proxy;

/// An error with its sources, `: `-separated (as the README quotes errors).
pub fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    for source in std::iter::successors(error.source(), |e| (*e).source()).take(8) {
        text.push_str(": ");
        text.push_str(&source.to_string());
    }
    text
}

/// Yields to the runtime until `done` holds, a bounded number of times (without moving the
/// paused clock, which does not advance while a task is ready to run): whether it held.
pub async fn yield_until(mut done: impl FnMut() -> bool) -> bool {
    for _ in 0..YIELDS {
        if done() {
            return true;
        }
        tokio::task::yield_now().await;
    }
    done()
}

/// How many times [`yield_until`] yields at most: far more than any step a test waits for
/// takes, a few milliseconds of real time.
const YIELDS: usize = 100_000;
