//! Discovery from, and registration in, an etcd cluster (feature `etcd`).

use std::fmt;
use std::io;
use std::marker::PhantomData;
use std::str::FromStr;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, GetOptions, LeaseGrantOptions, PutOptions, Txn,
    TxnOp,
};
use tower_service::Service;

use super::{Entry, LookupError, Publication, Resolving, Turn};
use crate::shared::deadline_after;

/// The default deadline of one lookup (and of each etcd request of a registration).
pub const DEFAULT_ETCD_TIMEOUT: Duration = Duration::from_secs(2);

/// How often each member's connection is PINGed, how long its answer may take, and how long a
/// connection to a member may take to come up.
const ENDPOINT_KEEP_ALIVE: Duration = Duration::from_secs(2);

/// Refuses an endpoint whose port is not a port, or that names none without `https://`
/// (etcd-client would dial port 80 in both cases; etcd's port is 2379).
fn check_endpoint(endpoint: &str) -> Result<(), LookupError> {
    let (bare, https) = match endpoint.strip_prefix("https://") {
        Some(bare) => (bare, true),
        None => (endpoint.strip_prefix("http://").unwrap_or(endpoint), false),
    };
    let bare = bare.strip_suffix('/').unwrap_or(bare);
    let invalid = format!("cannot make an etcd client: invalid endpoint {endpoint:?}");
    let authority: http::uri::Authority = bare.parse().map_err(|e| {
        LookupError::new(
            invalid.clone(),
            Some(io::Error::new(io::ErrorKind::InvalidInput, e)),
        )
    })?;
    match authority.as_str().rsplit_once(':') {
        Some((_, port)) if !port.ends_with(']') => {
            if port.parse::<u16>().is_err() {
                return Err(LookupError::new(
                    format!("{invalid}: the port is not a number from 0 to 65535"),
                    None,
                ));
            }
        }
        // No port: `https://` means 443; anything else would be port 80, where etcd is not.
        _ if https => {}
        _ => {
            return Err(LookupError::new(
                format!("{invalid}: no port (etcd listens on 2379: \"{bare}:2379\")"),
                None,
            ));
        }
    }
    Ok(())
}

/// The shortest lease asked of etcd, in whole seconds; shorter TTLs are held to it.
const MIN_TTL_SECS: i64 = 1;

/// The longest lease etcd grants (its `MaxLeaseTTL`), in seconds; longer TTLs are held to it.
const MAX_TTL_SECS: i64 = 9_000_000_000;

/// The replicas of a service published under a key prefix of an etcd cluster: each replica
/// publishes its address as the value of one key (`/services/orders/replica-3` →
/// `10.0.0.7:8080`), held by a lease it keeps alive ([`publish`](Self::publish)).
///
/// Every call reads the prefix again (a serializable range request: any member the client
/// reaches answers from its own copy, without waiting for a leader, so that lookups go on
/// while the cluster elects one; the copy may lag the leader by the time it takes to apply a
/// change, and a member cut off from the rest of the cluster answers from its copy as it was
/// for as long as it is cut off: replicas withdrawn meanwhile are still answered through it,
/// and attempts on them fail and move on; a replica that died abruptly is answered until its
/// lease expires anyway) and answers the next replica in turn, keys taken in order: the one after the key
/// answered last, so that a key put or deleted meanwhile makes it neither repeat nor skip one. Values that are empty, not UTF-8, or do not parse as an `A`, are
/// passed over (surrounding whitespace is trimmed; with the default `String`, every other value
/// is an address). Every key under the prefix counts: an empty prefix reads the whole keyspace.
/// A lookup that gets
/// no answer within its [`timeout`](Self::timeout) (every member down or unreachable), or
/// finds no replica, fails with a [`LookupError`] that says which; the persistent connection
/// reports it as a failed attempt and tries again after its delay. A live connection is never
/// touched by discovery: lookups are made only to connect.
///
/// `A` is the address type (`String` by default; `SocketAddr`, `http::Uri`, anything
/// [`FromStr`]: see [`addresses`](Self::addresses)).
///
/// The client is etcd-client's: several endpoints are balanced, a member that is down is passed
/// over (a try that reaches it is refused at once and made again 20 ms later, where the
/// balancer sends it: a lookup that meets it takes that much longer). Clones share the client
/// and the rotation.
///
/// etcd-client runs the client's connections in tasks of the tokio runtime that
/// [`connect`](Etcd::connect) ran on: an `Etcd` works from any runtime while that one runs
/// (is driven: a current-thread runtime runs its tasks only inside its `block_on`; kept but
/// not driven, requests get no answer and fail at their timeout, as if etcd were down), and
/// once it has shut down every lookup, publication and withdrawal of that `Etcd` fails at
/// once with an error that says so (`... the tokio runtime this Etcd was made on ... has shut
/// down ...`), instead of being tried again until its timeout. Make the `Etcd` on the runtime
/// that uses it (not in a runtime of its own for setup, nor in a `static` shared by
/// `#[tokio::test]`s, each of which has a runtime of its own). A client of yours
/// ([`with_client`](Etcd::with_client)) is not watched so.
pub struct Etcd<A = String> {
    client: Client,
    made_on: MadeOn,
    prefix: Arc<str>,
    timeout: Duration,
    rotation: Turn<Vec<u8>>,
    _address: PhantomData<fn() -> A>,
}

impl<A> Clone for Etcd<A> {
    fn clone(&self) -> Self {
        Etcd {
            client: self.client.clone(),
            made_on: self.made_on.clone(),
            prefix: self.prefix.clone(),
            timeout: self.timeout,
            rotation: self.rotation.clone(),
            _address: PhantomData,
        }
    }
}

impl<A> fmt::Debug for Etcd<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Etcd")
            .field("prefix", &self.prefix)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl Etcd<String> {
    /// A lookup of the replicas under `prefix` (such as `/services/orders/`) of the cluster
    /// whose members answer at `endpoints` (`"127.0.0.1:2379"`, `"http://10.0.0.1:2379"`).
    ///
    /// Connects lazily: this fails only for an endpoint that is not a valid address (a port
    /// out of range included, or no port without `https://`: etcd-client would dial port 80),
    /// never because etcd is down. A trailing `/` is accepted. Each member's connection is PINGed
    /// every 2 s (HTTP/2 keep-alive) and dropped if the answer takes longer, so that a member
    /// that is frozen rather than down is passed over for a while (its connection comes up
    /// again at once, the kernel still accepting for it: it keeps taking some tries, and now and
    /// then a lookup whose every try lands on it fails at its timeout); a connection to a
    /// member gets 2 s to come up.
    ///
    /// # Errors
    ///
    /// If an endpoint is not a valid address (`cannot make an etcd client: invalid endpoint
    /// ...`, with `: no port (etcd listens on 2379: "etcd-0:2379")` for one without a port),
    /// or etcd-client refuses the endpoints.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: nothing is kept or sent before it resolves.
    pub async fn connect<E: AsRef<str>>(
        endpoints: &[E],
        prefix: impl Into<String>,
    ) -> Result<Self, LookupError> {
        for endpoint in endpoints {
            check_endpoint(endpoint.as_ref())?;
        }
        // HTTP/2 PINGs find a member that is frozen rather than down (its connection is then
        // closed, and the balancer passes it over while a new one does not come up).
        let options = ConnectOptions::new()
            .with_keep_alive(ENDPOINT_KEEP_ALIVE, ENDPOINT_KEEP_ALIVE)
            .with_keep_alive_while_idle(true)
            .with_connect_timeout(ENDPOINT_KEEP_ALIVE);
        let client = Client::connect(endpoints, Some(options))
            .await
            .map_err(|e| {
                LookupError::new("cannot make an etcd client", Some(io::Error::other(e)))
            })?;
        // etcd-client runs the client's connections in tasks of this runtime.
        let mut etcd = Self::with_client(client, prefix);
        etcd.made_on = MadeOn::here();
        Ok(etcd)
    }

    /// A lookup over a client of yours (TLS, authentication, options of yours).
    pub fn with_client(client: Client, prefix: impl Into<String>) -> Self {
        Etcd {
            client,
            made_on: MadeOn::default(),
            prefix: Arc::from(prefix.into()),
            timeout: DEFAULT_ETCD_TIMEOUT,
            rotation: Turn::default(),
            _address: PhantomData,
        }
    }
}

impl<A> Etcd<A> {
    /// The deadline of one lookup (all its requests: when the prefix's values are too large
    /// to read at once, its keys and then their values a page at a time), and of each etcd request
    /// of a registration. Default: [`DEFAULT_ETCD_TIMEOUT`] (2 s). Within it a request is made
    /// again after a transient error (a member down, an election), and a try that gets no
    /// answer within a quarter of the timeout (at least 50 ms, at most 500 ms) gets another
    /// beside it, four at most at once, the first answer of any taken: a member that is frozen
    /// rather than down, which holds a try for good, is passed by, and a member that is only
    /// slow (far away, reading much) still answers in time. Every value is accepted: `Duration::MAX` is no
    /// deadline (the persistent connection's `connect_timeout` still bounds a lookup), and
    /// `Duration::ZERO` fails every request at once, without sending it (no etcd answers in no
    /// time; a lease is not granted to a publication that would then fail).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Answers the published values parsed as `B` (values that do not parse are passed over).
    pub fn addresses<B>(self) -> Etcd<B> {
        Etcd {
            client: self.client,
            made_on: self.made_on,
            prefix: self.prefix,
            timeout: self.timeout,
            rotation: self.rotation,
            _address: PhantomData,
        }
    }

    /// The key prefix read.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The etcd client.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Publishes `address` as the replica `name`: the key `prefix + name`, attached to a lease
    /// of `ttl` (whole seconds, at least one; etcd may raise it to its own minimum) that a
    /// background task keeps alive, every third of the TTL. Should the lease be lost all the
    /// same (etcd unreachable for longer than the TTL), the task publishes again under a new
    /// one at the first keep-alive turn that etcd answers, in that turn. The key is looked at
    /// in each turn too: deleted or overwritten by another client (an operator, another
    /// replica that took the name), it is put back as published (a WARN log); withdraw the
    /// publication to take a replica out. Names are the replicas' own: two publications of
    /// one name take the key from each other, turn after turn, for as long as both run.
    ///
    /// [`withdraw`](Publication::withdraw) revokes the lease, which removes the key at once:
    /// await it on clean shutdown. Dropping the [`Publication`] instead stops the keep-alive
    /// and, inside a tokio runtime, revokes the lease from a spawned task, at best (a runtime
    /// shutting down cancels that task; the key then goes when the lease expires). A replica
    /// that dies without withdrawing ([`abandon`](Publication::abandon) does that on purpose)
    /// disappears when its lease expires.
    ///
    /// Every request of the registration (grant, put, keep-alive, revoke) is bounded by the
    /// lookup [`timeout`](Self::timeout), and by the TTL, and tried again within it after a
    /// transient error, and beside a try that got no answer in time (see
    /// [`timeout`](Self::timeout)). Every try of the grant names the same lease (a random ID
    /// chosen by the client), so a grant tried beside another grants one lease at most. If the key
    /// cannot be stored, the lease granted for it is revoked (at best, within the timeout: a
    /// revoke that fails leaves it, and the key should etcd have stored it late, until the
    /// TTL runs out). A keep-alive that fails is logged (WARN the first time, then DEBUG
    /// until one succeeds), as is a publication under a new lease that fails.
    ///
    /// # Errors
    ///
    /// If etcd does not grant the lease or store the key within that time.
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe: dropped before it resolves, a lease may have been granted and the key
    /// stored with no [`Publication`] to withdraw it; both go when the lease expires (at most
    /// `ttl` later).
    pub async fn publish(
        &self,
        name: &str,
        address: impl fmt::Display,
        ttl: Duration,
    ) -> io::Result<Publication> {
        let key = format!("{}{name}", self.prefix);
        let value = address.to_string();
        let ttl_secs = i64::try_from(ttl.as_secs())
            .unwrap_or(i64::MAX)
            .clamp(MIN_TTL_SECS, MAX_TTL_SECS);
        // A registration request gets no longer than the TTL: one that takes longer is of no
        // use, and a lookup timeout of `Duration::MAX` must not make a withdrawal wait for good.
        let timeout = self
            .timeout
            .min(Duration::from_secs(ttl_secs.unsigned_abs()));
        let link = Link {
            client: self.client.clone(),
            made_on: self.made_on.clone(),
        };
        let registered = register(&link, &key, &value, ttl_secs, timeout).await?;
        let lease: LeaseId = Arc::new(std::sync::atomic::AtomicI64::new(registered.lease));
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let keeper = tokio::spawn(keep_alive(
            link.clone(),
            key.clone(),
            value,
            ttl_secs,
            timeout,
            (lease.clone(), registered.asked_at),
            stopped,
        ));
        Ok(Publication {
            entry: Some(Entry::Etcd(Box::new(Registration {
                key,
                link,
                timeout,
                lease,
                stop: Some(stop),
                keeper,
            }))),
        })
    }
}

/// How a request tried again and again ended without an answer.
enum Failed {
    /// An error that another try would not mend.
    Error(etcd_client::Error),
    /// No answer within the time, and the last transient error or silence, if any.
    TimedOut(Option<String>),
    /// The runtime that the client's connections ran on has shut down (see [`MadeOn`]).
    RuntimeGone,
}

/// What a request of a client whose runtime has shut down says, after what was asked.
const RUNTIME_GONE: &str = "the tokio runtime this Etcd was made on (where etcd-client runs its \
                            connections) has shut down; make the Etcd on the runtime that uses it";

/// The tokio runtime that etcd-client runs a client's connections on (that of
/// [`Etcd::connect`]), and whether it still runs: a task of that runtime holds the receiver of
/// a channel whose sender the clones hold, and the runtime's shutdown drops that task. After
/// it, the client's requests can only fail (tonic's `Unknown`, which is also what some
/// transient failures give), so they fail at once, saying why, instead of being tried again
/// until the timeout. Unknown (never gone) for a client of yours.
#[derive(Clone, Default)]
struct MadeOn(Option<tokio::sync::mpsc::Sender<()>>);

impl MadeOn {
    /// The runtime of the caller, if it is in one.
    fn here() -> MadeOn {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return MadeOn(None);
        };
        let (sender, mut receiver) = tokio::sync::mpsc::channel(1);
        // Ends when the last sender goes: nothing is ever sent.
        runtime.spawn(async move { receiver.recv().await });
        MadeOn(Some(sender))
    }

    fn gone(&self) -> bool {
        self.0.as_ref().is_some_and(|sender| sender.is_closed())
    }
}

/// A registration's client, and the runtime its connections run on.
#[derive(Clone)]
struct Link {
    client: Client,
    made_on: MadeOn,
}

/// How long a try of a request waits for its answer before another is sent beside it (see
/// [`tried`]).
fn first_try(timeout: Duration) -> Duration {
    (timeout / 4).clamp(Duration::from_millis(50), Duration::from_millis(500))
}

/// How many tries of one request may wait for their answers at once.
const TRIES_AT_ONCE: usize = 4;

/// Makes the request `make` makes until it is answered, fails for good, or `timeout` passes.
///
/// A try that gets no answer in its time is not given up: another one is sent beside it, and
/// the first answer of any is taken (a member that is frozen rather than down holds a try for
/// good, and the balancer may send the next one elsewhere; a member that is only slow, far
/// away or reading much, answers the first in the end). A try is sent every quarter of the
/// timeout (at least 50 ms, at most 500 ms) while none is answered, [`TRIES_AT_ONCE`] at most
/// waiting at once. A try that fails for a transient reason
/// (a member down, an election) is made again 20 ms later if none is waiting, doubling up to
/// 200 ms. (etcd may carry out a try whose answer came late all the same: a request made with
/// tries beside each other must be one that may be carried out twice, as a lease grant that
/// names its lease is.)
///
/// `pace` is the timeout the request was given as a whole, whose quarter paces the tries, and
/// `timeout` the time left of it (less, for a request made late in a lookup): the pace, which
/// the error names, is the same for every call, so that a failure's text does not change from
/// one call to the next (a lookup's error is the source of its `FailedToConnect`, which a round
/// reports once per text). Once a try has gone unanswered in its time, that is the failure
/// named, whatever transient error a try meets after it (a frozen member's connection, dropped
/// by its keep-alive, fails the tries that wait on it at a moment that varies from call to
/// call).
async fn tried<T, F, Fut>(
    made_on: &MadeOn,
    timeout: Duration,
    pace: Duration,
    mut make: F,
) -> Result<T, Failed>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, etcd_client::Error>>,
{
    use futures_util::StreamExt;
    use futures_util::stream::FuturesUnordered;

    if made_on.gone() {
        return Err(Failed::RuntimeGone);
    }
    // No time at all: nothing is sent (a request sent would run once before its timer fired,
    // and a local etcd could answer it, or grant a lease that the call then drops).
    if timeout.is_zero() {
        return Err(Failed::TimedOut(None));
    }
    let mut last: Option<String> = None;
    let tries = async {
        let mut waiting = FuturesUnordered::new();
        let this_try = first_try(pace);
        let mut unanswered = false;
        let mut pause = Duration::from_millis(20);
        // When the next try goes: `this_try` after each one sent, or `pause` after a failure
        // that left none waiting. The first goes now (a timer of no time would fire at the
        // timer's next tick, up to a millisecond on).
        waiting.push(make());
        let after = |wait: Duration| deadline_after(tokio::time::Instant::now(), wait);
        let next = tokio::time::sleep_until(after(this_try));
        tokio::pin!(next);
        loop {
            tokio::select! {
                biased;
                Some(answer) = waiting.next() => match answer {
                    Ok(answer) => return Ok(answer),
                    Err(_) if made_on.gone() => return Err(Failed::RuntimeGone),
                    Err(error) if transient(&error) => {
                        let why = stable_text(&error);
                        tracing::debug!(%why, "etcd request failed; trying again");
                        if !unanswered {
                            last = Some(why);
                        }
                        if waiting.is_empty() {
                            next.as_mut().reset(after(pause));
                            pause = (pause * 2).min(Duration::from_millis(200));
                        }
                    }
                    Err(error) => return Err(Failed::Error(error)),
                },
                () = &mut next => {
                    if !waiting.is_empty() {
                        let why = format!("a try got no answer within {this_try:?}");
                        tracing::debug!(%why, "etcd request slow; trying again beside it");
                        last = Some(why);
                        unanswered = true;
                    }
                    if waiting.len() < TRIES_AT_ONCE {
                        waiting.push(make());
                    }
                    next.as_mut().reset(after(this_try));
                }
            }
        }
    };
    match tokio::time::timeout(timeout, tries).await {
        Ok(answer) => answer,
        Err(_) if made_on.gone() => Err(Failed::RuntimeGone),
        Err(_) => Err(Failed::TimedOut(last)),
    }
}

/// [`tried`], its failure as an `io::Error` that says what was asked.
async fn within<T, F, Fut>(
    made_on: &MadeOn,
    timeout: Duration,
    what: impl FnOnce() -> String,
    make: F,
) -> io::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, etcd_client::Error>>,
{
    tried(made_on, timeout, timeout, make)
        .await
        .map_err(|failed| match failed {
            Failed::Error(error) => io::Error::other(format!("etcd {}: {error}", what())),
            Failed::RuntimeGone => io::Error::other(format!("etcd {}: {RUNTIME_GONE}", what())),
            Failed::TimedOut(Some(last)) => io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "etcd did not answer {} within {timeout:?} (last error: {last})",
                    what()
                ),
            ),
            Failed::TimedOut(None) => io::Error::new(
                io::ErrorKind::TimedOut,
                format!("etcd did not answer {} within {timeout:?}", what()),
            ),
        })
}

/// Whether `error` may pass with another try: the member asked is down or unreachable, the
/// cluster is electing a leader (`etcdserver: leader changed`, `no leader`), or it is
/// overloaded (`etcdserver: too many requests`). A request that
/// tonic gives up as `Cancelled` (`operation was canceled`, the connection to the member closed
/// under it as the member died; nothing of this crate's cancels one) is tried again too.
fn transient(error: &etcd_client::Error) -> bool {
    match error {
        etcd_client::Error::GRpcStatus(status) => matches!(
            status.code(),
            tonic::Code::Unavailable
                | tonic::Code::DeadlineExceeded
                | tonic::Code::Unknown
                | tonic::Code::Cancelled
                | tonic::Code::ResourceExhausted
        ),
        etcd_client::Error::TransportError(_) | etcd_client::Error::IoError(_) => true,
        _ => false,
    }
}

/// What a transient error says, the same each time for the same failure: a gRPC status by its
/// code and message, without the status's source and metadata, which name the member tried
/// (a lookup's error is the source of its `FailedToConnect`, whose text must not change with
/// the member its last try reached, or the round's deduplication would not see it as the
/// same).
fn stable_text(error: &etcd_client::Error) -> String {
    match error {
        etcd_client::Error::GRpcStatus(status) => {
            let mut text = format!(
                "grpc request error: {:?}: {}",
                status.code(),
                status.message()
            );
            // The system's word for it (`Connection refused`), if an I/O error is the cause.
            let mut source = std::error::Error::source(status);
            for _ in 0..crate::error::MAX_SOURCES {
                let Some(cause) = source else { break };
                if let Some(io) = cause.downcast_ref::<io::Error>() {
                    text.push_str(&format!(": {io}"));
                    break;
                }
                source = cause.source();
            }
            text
        }
        other => other.to_string(),
    }
}

/// Whether `error` says that the lease is gone: etcd-client reports a keep-alive answered with
/// a TTL of zero as `lease not found`, and a revoke of a lease that expired is `NotFound`.
fn lease_gone(error: &etcd_client::Error) -> bool {
    match error {
        etcd_client::Error::LeaseKeepAliveError(message) => message.contains("not found"),
        etcd_client::Error::GRpcStatus(status) => status.code() == tonic::Code::NotFound,
        _ => false,
    }
}

/// One read of `prefix` (its keys alone if `keys_only`): a serializable range request (any
/// member answers from its own copy, with no need of a leader), [`tried`] until `deadline`,
/// at the pace of the lookup's whole `timeout`.
async fn lookup(
    made_on: &MadeOn,
    kv: &etcd_client::KvClient,
    prefix: &str,
    deadline: Deadline,
    timeout: Duration,
    keys_only: bool,
) -> Result<etcd_client::GetResponse, Failed> {
    let request = || {
        let mut kv = kv.clone();
        let mut options = GetOptions::new().with_prefix().with_serializable();
        if keys_only {
            options = options.with_keys_only();
        }
        let prefix = prefix.to_owned();
        async move { kv.get(prefix, Some(options)).await }
    };
    tried(made_on, deadline.left(), timeout, request).await
}

/// A failed lookup of `prefix`, as the error that says so.
fn lookup_error(failed: Failed, prefix: &str, timeout: Duration) -> LookupError {
    match failed {
        Failed::Error(error) => LookupError::new(
            format!("etcd lookup of {prefix} failed"),
            Some(io::Error::other(error)),
        ),
        Failed::TimedOut(last) => LookupError::new(
            format!("etcd did not answer a lookup of {prefix} within {timeout:?}"),
            last.map(io::Error::other),
        ),
        Failed::RuntimeGone => LookupError::new(
            format!("etcd lookup of {prefix} failed: {RUNTIME_GONE}"),
            None,
        ),
    }
}

/// The lease a registration holds now (replaced when the task publishes again).
type LeaseId = Arc<std::sync::atomic::AtomicI64>;

/// A lease granted, with the key stored under it.
struct Registered {
    lease: i64,
    /// When the grant was asked for: the lease's TTL runs from about then.
    asked_at: tokio::time::Instant,
}

/// Grants a lease and stores `key` = `value` under it. If the key cannot be stored, the lease
/// is revoked (at best, within `timeout`), so that it does not outlive the failure, with the
/// key should etcd have stored it after all.
async fn register(
    link: &Link,
    key: &str,
    value: &str,
    ttl_secs: i64,
    timeout: Duration,
) -> io::Result<Registered> {
    let Link { client, made_on } = link;
    let asked_at = tokio::time::Instant::now();
    // Every try of the grant asks for the same lease, chosen here: a try sent beside a slow one
    // cannot grant a second lease, which would outlive the publication with no key under it.
    // etcd refuses a lease that exists, so a try that meets the lease an earlier try of this
    // grant made takes it as its answer.
    let lease = new_lease_id();
    let granted = within(
        made_on,
        timeout,
        || format!("lease grant for {key}"),
        || {
            let mut client = client.clone();
            let options = LeaseGrantOptions::new().with_id(lease);
            async move {
                match client.lease_grant(ttl_secs, Some(options)).await {
                    Ok(granted) => Ok(granted.id()),
                    Err(error) if lease_exists(&error) => Ok(lease),
                    Err(error) => Err(error),
                }
            }
        },
    )
    .await?;
    let stored = within(
        made_on,
        timeout,
        || format!("put of {key}"),
        || {
            let mut client = client.clone();
            let options = PutOptions::new().with_lease(granted);
            let (key, value) = (key.to_owned(), value.to_owned());
            async move { client.put(key, value, Some(options)).await }
        },
    )
    .await;
    if let Err(error) = stored {
        if let Err(revoking) = revoke(link, key, granted, timeout).await {
            tracing::debug!(%key, %revoking, "etcd lease of a failed publication not revoked");
        }
        return Err(error);
    }
    Ok(Registered {
        lease: granted,
        asked_at,
    })
}

/// A lease ID for a new grant: random, positive (0 asks etcd to choose one), so that two
/// grants, of this process or another, ask for the same one with a chance of one in 2⁶³.
fn new_lease_id() -> i64 {
    (rand::random::<u64>() >> 1).max(1) as i64
}

/// Whether `error` is etcd's refusal of a lease ID already granted.
fn lease_exists(error: &etcd_client::Error) -> bool {
    match error {
        etcd_client::Error::GRpcStatus(status) => {
            status.code() == tonic::Code::FailedPrecondition
                && status.message().contains("lease already exists")
        }
        _ => false,
    }
}

/// Revokes `lease` (which deletes the keys under it); a lease already gone is not an error.
async fn revoke(
    Link { client, made_on }: &Link,
    key: &str,
    lease: i64,
    timeout: Duration,
) -> io::Result<()> {
    within(
        made_on,
        timeout,
        || format!("lease revoke for {key}"),
        || {
            let mut client = client.clone();
            async move {
                match client.lease_revoke(lease).await {
                    Err(error) if lease_gone(&error) => Ok(()),
                    other => other.map(drop),
                }
            }
        },
    )
    .await
}

/// Keeps the lease alive every third of its TTL until stopped, on one keep-alive stream kept
/// from turn to turn (a stream that has ended since the last turn, its member down or its
/// connection cut, is replaced within the turn; a new stream's first answer is the turn's
/// renewal); publishes again under a new lease if it was lost.
async fn keep_alive(
    link: Link,
    key: String,
    value: String,
    ttl_secs: i64,
    timeout: Duration,
    (lease, granted_at): (LeaseId, tokio::time::Instant),
    mut stopped: tokio::sync::oneshot::Receiver<()>,
) {
    use std::sync::atomic::Ordering;
    let period = Duration::from_secs(u64::try_from(ttl_secs).unwrap_or(1)) / 3;
    // The first turn a period after the grant was asked for (the TTL runs from about then,
    // however long the put took), as every later one.
    let period = period.max(Duration::from_millis(100));
    let first = deadline_after(granted_at, period);
    let mut ticks = tokio::time::interval_at(first, period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut lost = false;
    // The keep-alive stream kept from one turn to the next, and the lease it is for.
    type Held = (
        etcd_client::LeaseKeeper,
        etcd_client::LeaseKeepAliveStream,
        i64,
    );
    let held: Arc<std::sync::Mutex<Option<Held>>> = Arc::default();
    // Whether the last keep-alive failed: the first failure is a WARN, the next ones DEBUG.
    let mut failing = false;
    // Whether a publication again under a new lease has failed since the lease was lost (its
    // first failure is a WARN, the next ones DEBUG).
    let mut not_restored = false;
    // A lease found lost: published again at once (etcd has just answered), not a period later.
    let mut at_once = false;
    loop {
        // The stop first: a turn that took its whole period finds the next tick due already,
        // and an unbiased choice would start turn after turn before the withdrawal.
        if !std::mem::take(&mut at_once) {
            tokio::select! {
                biased;
                _ = &mut stopped => return,
                _ = ticks.tick() => {}
            }
        }
        if lost {
            lost = !republish(
                &link,
                &key,
                &value,
                ttl_secs,
                timeout,
                &lease,
                &mut not_restored,
            )
            .await;
            continue;
        }
        let id = lease.load(Ordering::Acquire);
        // Whether the lease is still there: asked on the keep-alive stream of the last turn,
        // or a new one (the first time, after a failure or a cancelled try, or a new lease).
        // A keep-alive under way when the withdrawal comes is given up: the lease it renews
        // is the one the withdrawal revokes. (A registration under way is not, above: the
        // lease revoked must be the last one granted. It takes up to two timeouts, its grant
        // and its put.)
        let renewing = within(
            &link.made_on,
            timeout,
            || format!("keep-alive of {key}"),
            || {
                let mut client = link.client.clone();
                let held = held.clone();
                async move {
                    let keep = |kept| *held.lock().unwrap_or_else(|e| e.into_inner()) = kept;
                    let taken = held.lock().unwrap_or_else(|e| e.into_inner()).take();
                    let (mut keeper, mut answers) = match taken {
                        Some((keeper, answers, of)) if of == id => (keeper, answers),
                        // A new stream: etcd-client sends its first keep-alive and awaits the
                        // answer, which renews the lease, or tells that it is gone (revoked
                        // before this turn) as an error.
                        _ => {
                            return match client.lease_keep_alive(id).await {
                                Ok((keeper, answers)) => {
                                    keep(Some((keeper, answers, id)));
                                    Ok(true)
                                }
                                Err(error) if lease_gone(&error) => Ok(false),
                                // The stream ended with no answer (etcd-client's words).
                                Err(etcd_client::Error::WatchError(_)) => {
                                    Err(stream_ended("the keep-alive stream ended with no answer"))
                                }
                                Err(error) => Err(error),
                            };
                        }
                    };
                    let answer = async {
                        keeper.keep_alive().await?;
                        answers.message().await
                    };
                    match answer.await {
                        // A TTL of zero: the lease is gone.
                        Ok(Some(answer)) => {
                            let alive = answer.ttl() > 0;
                            if alive {
                                keep(Some((keeper, answers, id)));
                            }
                            Ok(alive)
                        }
                        Err(error) if lease_gone(&error) => Ok(false),
                        // The stream of the last turn has ended since (its member went down,
                        // its connection was cut): tried again at once, on a new stream.
                        Ok(None) => Err(stream_ended(
                            "the keep-alive stream of the last turn has ended".to_owned(),
                        )),
                        Err(error) => Err(stream_ended(format!(
                            "the keep-alive stream of the last turn failed: {error}"
                        ))),
                    }
                }
            },
        );
        let renewed = tokio::select! {
            biased;
            _ = &mut stopped => return,
            renewed = renewing => renewed,
        };
        match renewed {
            Ok(false) => {
                tracing::warn!(%key, "etcd lease lost (expired or revoked); publishing again");
                failing = false;
                lost = true;
                at_once = true;
            }
            Ok(true) => {
                failing = false;
                // The key itself, which others may have deleted or overwritten meanwhile.
                let restored = tokio::select! {
                    biased;
                    _ = &mut stopped => return,
                    restored = restore_key(&link, &key, &value, id, timeout) => restored,
                };
                match restored {
                    Ok(false) => {}
                    Ok(true) => tracing::warn!(
                        %key,
                        "etcd key deleted or changed by another client; published again"
                    ),
                    Err(error) => tracing::debug!(%key, %error, "etcd key not checked"),
                }
            }
            Err(error) => {
                if std::mem::replace(&mut failing, true) {
                    tracing::debug!(%key, %error, "etcd keep-alive failed again");
                } else {
                    tracing::warn!(%key, %error, "etcd keep-alive failed");
                }
            }
        }
    }
}

/// A keep-alive stream that ended (`why`), as a transient error: the turn tries again at once,
/// on a new stream.
fn stream_ended(why: impl Into<String>) -> etcd_client::Error {
    etcd_client::Error::GRpcStatus(tonic::Status::unavailable(why))
}

/// Publishes `key` = `value` again under a new lease, which `lease` then holds; false if etcd
/// did not take it (the next turn tries again). The first failure in a row (`not_restored`) is
/// a WARN, the replica being unpublished meanwhile, the next ones DEBUG.
async fn republish(
    link: &Link,
    key: &str,
    value: &str,
    ttl_secs: i64,
    timeout: Duration,
    lease: &LeaseId,
    not_restored: &mut bool,
) -> bool {
    match register(link, key, value, ttl_secs, timeout).await {
        Ok(new) => {
            lease.store(new.lease, std::sync::atomic::Ordering::Release);
            *not_restored = false;
            tracing::info!(%key, "etcd registration published again under a new lease");
            true
        }
        Err(error) if std::mem::replace(not_restored, true) => {
            tracing::debug!(%key, %error, "etcd registration not yet restored");
            false
        }
        Err(error) => {
            tracing::warn!(
                %key,
                %error,
                "etcd registration not restored; the replica is unpublished until it is (tried \
                 again every third of the TTL)"
            );
            false
        }
    }
}

/// Puts `key` = `value` back under `lease` unless it is there as such already (deleted or
/// overwritten by another client since it was published). Whether it put it back.
///
/// First a transaction of comparisons alone, which etcd answers as a read (no write to its
/// log: every keep-alive turn of every replica asks it), then, only if the key is not as
/// published, one that compares and puts.
async fn restore_key(
    Link { client, made_on }: &Link,
    key: &str,
    value: &str,
    lease: i64,
    timeout: Duration,
) -> io::Result<bool> {
    let as_published = || {
        [
            Compare::value(key, CompareOp::Equal, value),
            Compare::lease(key, CompareOp::Equal, lease),
        ]
    };
    let check = within(
        made_on,
        timeout,
        || format!("check of {key}"),
        || {
            let mut client = client.clone();
            let txn = Txn::new().when(as_published());
            async move { client.txn(txn).await }
        },
    )
    .await?;
    if check.succeeded() {
        return Ok(false);
    }
    let answer = within(
        made_on,
        timeout,
        || format!("check of {key}"),
        || {
            let mut client = client.clone();
            let txn = Txn::new().when(as_published()).or_else([TxnOp::put(
                key,
                value,
                Some(PutOptions::new().with_lease(lease)),
            )]);
            async move { client.txn(txn).await }
        },
    )
    .await?;
    Ok(!answer.succeeded())
}

/// A replica's entry in etcd: its key, its lease and the task that keeps the lease alive.
pub(super) struct Registration {
    key: String,
    link: Link,
    timeout: Duration,
    lease: LeaseId,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    keeper: tokio::task::JoinHandle<()>,
}

impl fmt::Debug for Registration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registration")
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

impl Registration {
    pub(super) fn key(&self) -> &str {
        &self.key
    }

    /// Stops keeping the lease alive.
    fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.keeper.abort();
    }

    /// Revokes the lease: the key goes at once. A lease already gone (expired while etcd was
    /// out of reach) is not an error.
    pub(super) async fn withdraw(mut self) -> io::Result<()> {
        // The keep-alive task first finishes what it is doing (publishing under a new lease,
        // say; each of its steps is bounded), so that the lease revoked is the last one.
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        // Bounded all the same: a grant and a put (its revoke, should the put fail, is given
        // up), or for ever if the task's runtime is no longer driven. A publication under a
        // new lease cut short here leaves that lease, and its key if stored, to expire.
        let finishing = self.timeout.saturating_mul(2);
        if tokio::time::timeout(finishing, &mut self.keeper)
            .await
            .is_err()
        {
            self.keeper.abort();
        }
        let id = self.lease.load(std::sync::atomic::Ordering::Acquire);
        revoke(&self.link, &self.key, id, self.timeout).await
    }

    /// Leaves the key to expire with its lease, as a replica that dies does.
    pub(super) fn abandon(mut self) {
        self.stop();
    }

    /// Dropped without a withdrawal: inside a tokio runtime, withdraws from a spawned task, at
    /// best; else stops the keep-alive, and the key expires with the lease.
    pub(super) fn drop_entry(mut self) {
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let _ = self.withdraw().await;
            });
        } else {
            self.stop();
        }
    }
}

impl<A> Service<()> for Etcd<A>
where
    A: FromStr + Clone + Send + 'static,
{
    type Response = A;
    type Error = LookupError;
    type Future = Resolving<A>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), LookupError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, (): ()) -> Self::Future {
        let kv = self.client.kv_client();
        let made_on = self.made_on.clone();
        let prefix = self.prefix.clone();
        let timeout = self.timeout;
        let rotation = self.rotation.clone();
        Resolving::new(async move {
            // One deadline for the whole lookup, its fallback's requests included.
            let deadline = Deadline::after(timeout);
            let answer = match lookup(&made_on, &kv, &prefix, deadline, timeout, false).await {
                Err(Failed::Error(error)) if too_large(&error) => {
                    return paged(&made_on, &kv, &prefix, deadline, timeout, &rotation).await;
                }
                other => other.map_err(|failed| lookup_error(failed, &prefix, timeout))?,
            };
            let addresses: Vec<(Vec<u8>, A)> = answer
                .kvs()
                .iter()
                .filter_map(|kv| Some((kv.key().to_vec(), address(kv)?)))
                .collect();
            rotation.pick(&addresses, || match answer.kvs().len() {
                0 => format!("no replica published under {prefix} in etcd"),
                1 => format!(
                    "no replica published under {prefix} in etcd: its one key holds no address"
                ),
                keys => format!(
                    "no replica published under {prefix} in etcd: none of its {keys} keys holds \
                     an address"
                ),
            })
        })
    }
}

/// The address a key holds, if its value is one.
fn address<A: FromStr>(kv: &etcd_client::KeyValue) -> Option<A> {
    let value = kv.value_str().ok()?.trim();
    if value.is_empty() {
        return None;
    }
    value.parse().ok()
}

/// Whether `error` is an answer too large to take in (more than 4 MiB: values that are not
/// addresses, put under the prefix by someone).
fn too_large(error: &etcd_client::Error) -> bool {
    matches!(error, etcd_client::Error::GRpcStatus(status)
        if status.code() == tonic::Code::OutOfRange)
}

/// How many keys' values a lookup reads in one request, at most, when the prefix's values are
/// too large to read at once (a page too large is halved, down to one key).
const PAGE: usize = 64;

/// When a lookup must be over: `timeout` after its start (never, for a timeout too long to
/// add).
#[derive(Clone, Copy)]
struct Deadline(Option<tokio::time::Instant>);

impl Deadline {
    fn after(timeout: Duration) -> Deadline {
        Deadline(tokio::time::Instant::now().checked_add(timeout))
    }

    /// The time left (zero once past: a request then is not sent).
    fn left(self) -> Duration {
        self.0.map_or(Duration::MAX, |at| {
            at.saturating_duration_since(tokio::time::Instant::now())
        })
    }
}

/// The lookup when the prefix's values are too large to read at once: the keys alone, then
/// their values in pages of up to [`PAGE`] keys, from the next in turn (and around), until one
/// holds an address or every key has been read. A page too large to read is halved; a single
/// key still too large (or whose read fails for good) is passed over. All within the lookup's
/// `deadline` (`timeout` after its start), which, reached, fails the lookup as etcd's silence
/// does.
async fn paged<A: FromStr>(
    made_on: &MadeOn,
    kv: &etcd_client::KvClient,
    prefix: &str,
    deadline: Deadline,
    timeout: Duration,
    rotation: &Turn<Vec<u8>>,
) -> Result<A, LookupError> {
    let keys = lookup(made_on, kv, prefix, deadline, timeout, true)
        .await
        .map_err(|failed| lookup_error(failed, prefix, timeout))?;
    let keys: Vec<Vec<u8>> = keys.kvs().iter().map(|kv| kv.key().to_vec()).collect();
    if keys.is_empty() {
        return Err(LookupError::new(
            format!("no replica published under {prefix} in etcd"),
            None,
        ));
    }
    // From the key after the one answered last (marked as taken at once, so that lookups made
    // at once start from different keys), to the last key, then from the first; the next
    // lookup goes on after the last key read, whether or not it held an address.
    let first = rotation.take_next(&keys);
    let runs = [first..keys.len(), 0..first];
    let mut page = PAGE;
    for run in runs {
        let mut from = run.start;
        while from < run.end {
            let to = run.end.min(from + page);
            // Keys `from..to`, one range: from the first of them to just after the last.
            let mut end = keys[to - 1].clone();
            end.push(0);
            let request = || {
                let mut kv = kv.clone();
                let start = keys[from].clone();
                let end = end.clone();
                async move {
                    let options = GetOptions::new().with_range(end).with_serializable();
                    kv.get(start, Some(options)).await
                }
            };
            match tried(made_on, deadline.left(), timeout, request).await {
                Ok(answer) => {
                    rotation.taken(keys[to - 1].clone());
                    for kv in answer.kvs() {
                        if let Some(found) = address(kv) {
                            rotation.taken(kv.key().to_vec());
                            return Ok(found);
                        }
                    }
                    from = to;
                    page = (page * 2).min(PAGE);
                }
                // Too large (or failing for good): a smaller page, down to one key, which is
                // then passed over.
                Err(Failed::Error(_)) if to - from > 1 => page = (to - from) / 2,
                Err(Failed::Error(_)) => {
                    rotation.taken(keys[from].clone());
                    from += 1;
                }
                Err(failed) => return Err(lookup_error(failed, prefix, timeout)),
            }
        }
    }
    Err(LookupError::new(
        format!(
            "no replica found under {prefix} in etcd: its values are too large to read at once, \
             and none of its {} keys holds an address",
            keys.len()
        ),
        None,
    ))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use tokio::time::Instant;

    use super::{Failed, MadeOn, check_endpoint, lease_exists, transient, tried};

    /// A request whose `n`th try is answered `answers[n]` milliseconds after it is sent (the
    /// last of `answers` for every try after them; `u64::MAX`: never), with its number (from
    /// 1); `sent` counts the tries.
    fn answered_after(
        answers: &'static [u64],
        sent: &Arc<AtomicUsize>,
    ) -> impl FnMut() -> std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<usize, etcd_client::Error>> + Send>,
    > + use<> {
        let sent = sent.clone();
        move || {
            let n = sent.fetch_add(1, Ordering::SeqCst);
            let after = answers[n.min(answers.len() - 1)];
            Box::pin(async move {
                if after == u64::MAX {
                    std::future::pending::<()>().await;
                }
                tokio::time::sleep(Duration::from_millis(after)).await;
                Ok(n + 1)
            })
        }
    }

    // A try that gets no answer in its time (a quarter of the timeout, 500 ms at most) is not
    // given up: another is sent beside it, four at most, and the first answer of any is taken.
    // A slow member's answer comes however slow, within the timeout; a frozen member's try is
    // passed by.
    #[tokio::test(start_paused = true)]
    async fn a_slow_answer_comes_and_a_frozen_member_is_passed_by() {
        // (timeout in s, answers of the tries in ms, the try answered, when, tries sent)
        let cases: [(u64, &'static [u64], usize, u64, usize); 5] = [
            // Tries sent at 0 and 500 ms; the first answers.
            (2, &[700], 1, 700, 2),
            // Tries at 0, 500 and 1,000 ms.
            (2, &[1400], 1, 1400, 3),
            // Tries at 0, 500, 1,000 and 1,500 ms, no more: four wait at once.
            (10, &[4000], 1, 4000, 4),
            // The first try lands on a frozen member: the second answers.
            (2, &[u64::MAX, 5], 2, 505, 2),
            // Frozen for the first three: the fourth, sent at 1.5 s, answers.
            (10, &[u64::MAX, u64::MAX, u64::MAX, 5], 4, 1505, 4),
        ];
        for (timeout, answers, answered, at, tries) in cases {
            let sent = Arc::new(AtomicUsize::new(0));
            let start = Instant::now();
            let answer = tried(
                &MadeOn::default(),
                Duration::from_secs(timeout),
                Duration::from_secs(timeout),
                answered_after(answers, &sent),
            )
            .await;
            assert!(matches!(answer, Ok(n) if n == answered), "{answers:?}");
            assert_eq!(start.elapsed(), Duration::from_millis(at), "{answers:?}");
            assert_eq!(sent.load(Ordering::SeqCst), tries, "{answers:?}");
        }

        // Never answered: tries at 0, 500, 1,000 and 1,500 ms, failed at the timeout, saying so.
        let sent = Arc::new(AtomicUsize::new(0));
        let start = Instant::now();
        let answer = tried(
            &MadeOn::default(),
            Duration::from_secs(2),
            Duration::from_secs(2),
            answered_after(&[u64::MAX], &sent),
        )
        .await;
        assert!(
            matches!(&answer, Err(Failed::TimedOut(Some(why))) if why == "a try got no answer within 500ms")
        );
        assert_eq!(start.elapsed(), Duration::from_secs(2));
        assert_eq!(sent.load(Ordering::SeqCst), 4);
    }

    // A call's failure reads the same from one call to the next: the tries' pace, which it
    // names, is a quarter of the request's whole timeout however little of it is left (a
    // request made late in a lookup), and a try unanswered in its time stays the failure named
    // when another fails after it (a frozen member's connection cut by its keep-alive).
    #[tokio::test(start_paused = true)]
    async fn a_silent_member_fails_every_call_with_the_same_text() {
        for left in [2_000, 1_999, 1_234] {
            let sent = Arc::new(AtomicUsize::new(0));
            let counted = sent.clone();
            // The second try fails 1.4 s after it is sent (at 1.9 s), the others never answer.
            let make = move || {
                let n = counted.fetch_add(1, Ordering::SeqCst);
                Box::pin(async move {
                    if n != 1 {
                        std::future::pending::<()>().await;
                    }
                    tokio::time::sleep(Duration::from_millis(1_400)).await;
                    Err::<(), _>(etcd_client::Error::IoError(std::io::Error::other("cut")))
                })
            };
            let answer = tried(
                &MadeOn::default(),
                Duration::from_millis(left),
                Duration::from_secs(2),
                make,
            )
            .await;
            assert!(
                matches!(&answer, Err(Failed::TimedOut(Some(why))) if why == "a try got no answer within 500ms"),
                "{left}: {:?}",
                answer.err().map(|failed| match failed {
                    Failed::TimedOut(why) => format!("timed out: {why:?}"),
                    _ => "another failure".to_owned(),
                })
            );
            assert!(sent.load(Ordering::SeqCst) >= 2, "{left}");
        }
    }

    // An endpoint with no port and no `https://` is refused (etcd-client would dial port 80),
    // with `https://` it is port 443; a trailing slash is accepted, as etcd-client accepts it.
    #[test]
    fn endpoints_without_a_port_are_refused_unless_https() {
        let refused = |endpoint: &str| check_endpoint(endpoint).unwrap_err().to_string();
        assert_eq!(
            refused("etcd-0"),
            "cannot make an etcd client: invalid endpoint \"etcd-0\": no port (etcd listens on \
             2379: \"etcd-0:2379\")"
        );
        assert_eq!(
            refused("http://[::1]"),
            "cannot make an etcd client: invalid endpoint \"http://[::1]\": no port (etcd \
             listens on 2379: \"[::1]:2379\")"
        );
        assert!(check_endpoint("https://etcd.example.com").is_ok());
        assert!(check_endpoint("http://10.0.0.1:2379/").is_ok());
        assert!(check_endpoint("[::1]:2379").is_ok());
        assert!(check_endpoint("etcd-0:2379").is_ok());
    }

    // A try of a grant that meets the lease an earlier try granted (etcd's refusal of a lease
    // ID that exists, `interop/tests/etcd.rs` checks its text) takes it as its answer; no other
    // refusal is taken so.
    #[test]
    fn a_lease_that_exists_is_told_apart() {
        let status = |status| etcd_client::Error::GRpcStatus(status);
        assert!(lease_exists(&status(tonic::Status::failed_precondition(
            "etcdserver: lease already exists"
        ))));
        assert!(!lease_exists(&status(tonic::Status::failed_precondition(
            "etcdserver: requested lease not found"
        ))));
        assert!(!lease_exists(&status(tonic::Status::unknown(
            "etcdserver: lease already exists"
        ))));
        assert!(!lease_exists(&status(tonic::Status::unavailable(
            "tcp connect error"
        ))));
    }

    // A member down, unreachable, or whose connection closed under a request (tonic's
    // `Cancelled`), and an election, are tried again; a refusal (a permission, a bad request)
    // is not.
    #[test]
    fn what_is_tried_again() {
        let status = |status| etcd_client::Error::GRpcStatus(status);
        assert!(transient(&status(tonic::Status::unavailable(
            "tcp connect error"
        ))));
        assert!(transient(&status(tonic::Status::cancelled(
            "operation was canceled"
        ))));
        assert!(transient(&status(tonic::Status::unknown(
            "etcdserver: leader changed"
        ))));
        assert!(transient(&status(tonic::Status::deadline_exceeded(
            "timeout"
        ))));
        assert!(transient(&status(tonic::Status::resource_exhausted(
            "etcdserver: too many requests"
        ))));
        assert!(!transient(&status(tonic::Status::permission_denied(
            "denied"
        ))));
        assert!(!transient(&status(tonic::Status::invalid_argument(
            "bad key"
        ))));
    }
}
