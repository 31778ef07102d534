//! Ready-made address lookups (`get_address` services).
//!
//! Each is a cloneable `Service<()>` answering an address; clones share their state (the
//! rotation), and any other `Service<()>` (for example `tower::service_fn` over an async
//! closure) works as well.
//!
//! | lookup | answers |
//! |---|---|
//! | [`Fixed`] | always the same address |
//! | [`RoundRobin`] | the next address of a list, in turn |
//! | [`Dns`] | `host:port` resolved again at every call, rotating among the results |
//! | [`Catalog`] | the next replica published in a directory, in turn |
//! | [`Watch`] | the address last pushed through a `tokio::sync::watch` channel |
//! | [`Etcd`] (feature `etcd`) | the next replica published under a key prefix of an etcd cluster, in turn |
//!
//! The persistent connection calls its lookup once per connection attempt, that is after a
//! failed attempt or after a connection died. The rotating lookups therefore move on to another
//! address exactly when the previous one failed them, and come back to it after the others.
//! [`Dns`], [`Catalog`] and [`Etcd`] take their lists in an order of their own (addresses sorted,
//! files and keys by name) and answer the one after the one they answered last: a replica
//! published or withdrawn meanwhile does not make them answer the same one twice in a row, nor
//! skip one.
//!
//! # Examples
//!
//! ```
//! use tower::ServiceExt;
//! use tower_persistent::discovery::{Catalog, Fixed};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> std::io::Result<()> {
//! let fixed = Fixed::new("127.0.0.1:8080".parse::<std::net::SocketAddr>().unwrap());
//! assert_eq!(fixed.oneshot(()).await.unwrap().port(), 8080);
//!
//! // Two replicas publish themselves; the lookup takes them in turn.
//! let dir = std::env::temp_dir().join(format!("catalog-doc-{}", std::process::id()));
//! let a = Catalog::publish(&dir, "a", "127.0.0.1:7001".parse().unwrap()).await?;
//! let b = Catalog::publish(&dir, "b", "127.0.0.1:7002".parse().unwrap()).await?;
//! let catalog = Catalog::new(&dir);
//! assert_eq!(catalog.clone().oneshot(()).await.unwrap().port(), 7001);
//! assert_eq!(catalog.clone().oneshot(()).await.unwrap().port(), 7002);
//! a.withdraw().await?;
//! b.withdraw().await?;
//! assert!(catalog.oneshot(()).await.is_err(), "no replica published");
//! # std::fs::remove_dir(&dir)?;
//! # Ok(()) }
//! ```
#![cfg_attr(
    not(feature = "etcd"),
    doc = "[`Etcd`]: https://docs.rs/tower-persistent/latest/tower_persistent/discovery/struct.Etcd.html"
)]

use std::convert::Infallible;
use std::error::Error as StdError;
use std::fmt;
use std::future::{Future, Ready, ready};
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use tower_service::Service;

#[cfg(feature = "etcd")]
mod etcd;
#[cfg(feature = "etcd")]
pub use etcd::{DEFAULT_ETCD_TIMEOUT, Etcd};

/// Always the same address.
#[derive(Debug, Clone)]
pub struct Fixed<A>(A);

impl<A> Fixed<A> {
    /// A lookup that answers `address`.
    pub fn new(address: A) -> Self {
        Fixed(address)
    }
}

impl<A: Clone> Service<()> for Fixed<A> {
    type Response = A;
    type Error = Infallible;
    type Future = Ready<Result<A, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, (): ()) -> Self::Future {
        ready(Ok(self.0.clone()))
    }
}

/// Why a lookup found no address.
#[derive(Debug)]
pub struct LookupError {
    message: String,
    source: Option<io::Error>,
}

impl LookupError {
    fn new(message: impl Into<String>, source: Option<io::Error>) -> Self {
        LookupError {
            message: message.into(),
            source,
        }
    }
}

impl fmt::Display for LookupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl StdError for LookupError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.source.as_ref().map(|e| e as &(dyn StdError + 'static))
    }
}

/// Takes the next of `len` items in turn (for a list that does not change).
#[derive(Debug, Clone, Default)]
struct Rotation(Arc<AtomicUsize>);

impl Rotation {
    /// The next of `items` in turn, or the error `empty` makes.
    fn pick<T: Clone>(
        &self,
        items: &[T],
        empty: impl FnOnce() -> String,
    ) -> Result<T, LookupError> {
        if items.is_empty() {
            return Err(LookupError::new(empty(), None));
        }
        Ok(items[self.turn(items.len())].clone())
    }

    /// The index of the next of `len` items in turn; `len` is not zero.
    fn turn(&self, len: usize) -> usize {
        self.0.fetch_add(1, Ordering::Relaxed) % len
    }
}

/// Takes, of a list in ascending order of its keys that may change from one turn to the next,
/// the item after the one taken last (by key; the first if none is after it), so that an item
/// added or removed meanwhile neither repeats nor skips one. Clones share the turn.
#[derive(Debug)]
struct Turn<K>(Arc<Mutex<Option<K>>>);

impl<K> Clone for Turn<K> {
    fn clone(&self) -> Self {
        Turn(self.0.clone())
    }
}

impl<K> Default for Turn<K> {
    fn default() -> Self {
        Turn(Arc::new(Mutex::new(None)))
    }
}

impl<K: Ord + Clone> Turn<K> {
    /// The item of `items` (key and item, keys ascending) after the one taken last, or the
    /// error `empty` makes.
    fn pick<T: Clone>(
        &self,
        items: &[(K, T)],
        empty: impl FnOnce() -> String,
    ) -> Result<T, LookupError> {
        if items.is_empty() {
            return Err(LookupError::new(empty(), None));
        }
        let mut last = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let (key, item) = &items[Self::after(last.as_ref(), items.iter().map(|(k, _)| k))];
        *last = Some(key.clone());
        Ok(item.clone())
    }

    /// The index of the first of `keys` (ascending, not empty) after the one taken last (0 if
    /// none is), marked as taken in the same step: lookups made at once start from different
    /// keys.
    #[cfg_attr(not(feature = "etcd"), allow(dead_code))]
    fn take_next(&self, keys: &[K]) -> usize {
        let mut last = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let next = Self::after(last.as_ref(), keys.iter());
        *last = Some(keys[next].clone());
        next
    }

    /// Marks `key` as the one taken last.
    #[cfg_attr(not(feature = "etcd"), allow(dead_code))]
    fn taken(&self, key: K) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(key);
    }

    fn after<'a>(last: Option<&K>, mut keys: impl Iterator<Item = &'a K>) -> usize
    where
        K: 'a,
    {
        last.and_then(|last| keys.position(|key| key > last))
            .unwrap_or(0)
    }
}

/// The addresses of a list, in turn.
#[derive(Debug, Clone)]
pub struct RoundRobin<A> {
    addresses: Arc<[A]>,
    rotation: Rotation,
}

impl<A> RoundRobin<A> {
    /// A lookup that answers the addresses in turn, from the first.
    ///
    /// An empty list answers an error at every call.
    pub fn new(addresses: impl IntoIterator<Item = A>) -> Self {
        RoundRobin {
            addresses: addresses.into_iter().collect(),
            rotation: Rotation::default(),
        }
    }
}

impl<A: Clone> Service<()> for RoundRobin<A> {
    type Response = A;
    type Error = LookupError;
    type Future = Ready<Result<A, LookupError>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), LookupError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, (): ()) -> Self::Future {
        ready(
            self.rotation
                .pick(&self.addresses, || "the address list is empty".into()),
        )
    }
}

/// The future of a lookup that does I/O ([`Dns`], [`Catalog`], `Etcd`): the address, or why
/// there is none.
pub struct Resolving<A = SocketAddr>(Pin<Box<dyn Future<Output = Result<A, LookupError>> + Send>>);

impl<A> Resolving<A> {
    fn new(lookup: impl Future<Output = Result<A, LookupError>> + Send + 'static) -> Self {
        Resolving(Box::pin(lookup))
    }
}

impl<A> Future for Resolving<A> {
    type Output = Result<A, LookupError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.0.as_mut().poll(cx)
    }
}

impl<A> fmt::Debug for Resolving<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Resolving").finish_non_exhaustive()
    }
}

/// A `host:port` resolved again at every call, rotating among the results.
///
/// The results of each resolution are sorted, so that the rotation is stable while the records
/// are; an address that disappears from the records is no longer answered. It answers socket
/// addresses: the name is not kept, so an HTTP request that names no authority is sent with
/// the IP address and port, and over TLS the certificate is checked against the IP address
/// unless the connector's `TlsConfig::server_name` (or `authority`) says otherwise.
#[derive(Debug, Clone)]
pub struct Dns {
    host_port: Arc<str>,
    rotation: Turn<SocketAddr>,
}

impl Dns {
    /// A lookup of `host_port` (`"example.com:443"`, `"localhost:8080"`, `"[::1]:80"`).
    ///
    /// Every value is accepted here; one that cannot be resolved makes each lookup fail
    /// (`cannot resolve …`), as does port 0 (`cannot connect to port 0 …`). Errors show at
    /// most 260 bytes of it. Whitespace around it (the end of a line read from a file) is no
    /// part of it.
    pub fn new(host_port: impl Into<String>) -> Self {
        Dns {
            host_port: Arc::from(host_port.into().trim()),
            rotation: Turn::default(),
        }
    }
}

impl Service<()> for Dns {
    type Response = SocketAddr;
    type Error = LookupError;
    type Future = Resolving;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), LookupError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, (): ()) -> Self::Future {
        let host_port = self.host_port.clone();
        let rotation = self.rotation.clone();
        Resolving::new(async move {
            // An IPv6 address without its brackets (`"::1:8080"`) names no port for sure
            // (`::1:8080` is an IPv6 address too): refused, as the HTTP connector refuses it.
            if ipv6_without_brackets(&host_port) {
                let shown = shown(&host_port);
                return Err(LookupError::new(
                    format!(
                        "cannot resolve {shown} (an IPv6 address takes brackets before its \
                         port: [host]:port)"
                    ),
                    None,
                ));
            }
            let mut addresses: Vec<SocketAddr> = tokio::net::lookup_host(&*host_port)
                .await
                .map_err(|e| {
                    // tokio's own text for a name without a port says only "invalid socket
                    // address".
                    let hint = match e.kind() {
                        io::ErrorKind::InvalidInput => " (a name and a port: host:port)",
                        _ => "",
                    };
                    let shown = shown(&host_port);
                    LookupError::new(format!("cannot resolve {shown}{hint}"), Some(e))
                })?
                .collect();
            if addresses.iter().any(|a| a.port() == 0) {
                let shown = shown(&host_port);
                return Err(LookupError::new(
                    format!("cannot connect to port 0 ({shown})"),
                    None,
                ));
            }
            addresses.sort();
            addresses.dedup();
            let addresses: Vec<_> = addresses.into_iter().map(|a| (a, a)).collect();
            rotation.pick(&addresses, || {
                format!("{} resolved to no address", shown(&host_port))
            })
        })
    }
}

/// The longest `host:port` that `Dns`'s errors show whole: a name has at most 253 bytes.
const MAX_SHOWN: usize = 260;

/// Whether `host_port` is an IPv6 address and port without the address's brackets
/// (`"::1:8080"`), which names no port for sure: `::1:8080` is an IPv6 address too.
pub(crate) fn ipv6_without_brackets(host_port: &str) -> bool {
    host_port
        .rsplit_once(':')
        .is_some_and(|(host, _)| host.contains(':') && !host.starts_with('['))
}

/// `host_port` as `Dns`'s errors show it: cut after [`MAX_SHOWN`] bytes, with its length, so
/// that a mistaken value of any size makes a bounded error (and log line).
fn shown(host_port: &str) -> std::borrow::Cow<'_, str> {
    if host_port.len() <= MAX_SHOWN {
        return host_port.into();
    }
    let mut end = MAX_SHOWN;
    while !host_port.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}... ({} bytes)", &host_port[..end], host_port.len()).into()
}

/// The address last pushed through a [`tokio::sync::watch`] channel: for addresses that come from
/// elsewhere in the program (a configuration reloader, a membership protocol, an admin
/// endpoint), with no `Arc<Mutex<_>>` and no `service_fn`.
///
/// Every call answers the value in the channel at that moment; `None` (nothing published, or
/// withdrawn) is an error, so the attempt fails and is retried after the delay. A new address
/// takes effect at the next attempt; a live connection is left alone. Once the sender is
/// dropped the last value stays the answer (with `None`, the error says the publisher is gone).
///
/// # Examples
///
/// ```
/// use tower::ServiceExt;
/// use tower_persistent::discovery::Watch;
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let (publish, lookup) = Watch::channel(None);
/// assert!(lookup.clone().oneshot(()).await.is_err(), "nothing published yet");
/// publish.send_replace(Some("10.0.0.7:8080".to_owned()));
/// assert_eq!(lookup.clone().oneshot(()).await.unwrap(), "10.0.0.7:8080");
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct Watch<A> {
    receiver: tokio::sync::watch::Receiver<Option<A>>,
}

impl<A> Watch<A> {
    /// A lookup of the values sent on `receiver`'s channel.
    pub fn new(receiver: tokio::sync::watch::Receiver<Option<A>>) -> Self {
        Watch { receiver }
    }

    /// A new channel holding `initial`: its sender, to publish addresses, and the lookup.
    pub fn channel(initial: Option<A>) -> (tokio::sync::watch::Sender<Option<A>>, Self) {
        let (sender, receiver) = tokio::sync::watch::channel(initial);
        (sender, Watch { receiver })
    }
}

impl<A: Clone> Service<()> for Watch<A> {
    type Response = A;
    type Error = LookupError;
    type Future = Ready<Result<A, LookupError>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), LookupError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, (): ()) -> Self::Future {
        let current = self.receiver.borrow().clone();
        ready(current.ok_or_else(|| {
            let message = if self.receiver.has_changed().is_err() {
                "no address published, and the publisher is gone"
            } else {
                "no address published"
            };
            LookupError::new(message, None)
        }))
    }
}

/// The longest entry name: its temporary file's name (`.{name}.tmp`) is then 255 bytes, the
/// longest file name of common file systems.
const MAX_ENTRY_NAME: usize = 250;

/// Refuses an entry name a [`Catalog`] lookup could never find, or that is not one file name.
fn check_entry_name(name: &str) -> io::Result<()> {
    let why = if name.is_empty() {
        "it is empty"
    } else if name.starts_with('.') {
        "it begins with `.`, and lookups pass hidden files over"
    } else if name.contains(['/', '\\', '\0']) {
        "it holds a path separator or a NUL byte"
    } else if name.len() > MAX_ENTRY_NAME {
        "it is longer than 250 bytes (its temporary file's name would be too long)"
    } else {
        return Ok(());
    };
    Err(io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("cannot publish a catalog entry named {name:?}: {why}"),
    ))
}

/// The longest file a [`Catalog`] reads as an entry, in bytes (a socket address takes at most
/// 58, an IPv6 one with a scope id); longer files are passed over unread.
pub const MAX_CATALOG_ENTRY: u64 = 1024;

/// A service catalog in a directory: each running replica publishes its address as a file, and
/// removes it on clean shutdown.
///
/// Every call reads the directory again and answers the next published replica in turn (files
/// taken by name order; after the one answered last, whatever was published or withdrawn
/// meanwhile). Hidden files, whose names begin with `.`, and files that do not hold a socket
/// address are passed over without a log: an entry is one `SocketAddr` (`127.0.0.1:7001`,
/// `[::1]:7001`) and whitespace around it, nothing else (no host name, comment or byte-order
/// mark). So is anything but a regular file (a FIFO, a device, a directory) and a file longer
/// than [`MAX_CATALOG_ENTRY`], neither of which is read. A replica that died without
/// withdrawing leaves a stale entry: the attempt on it fails, and the next attempt moves on to
/// another replica. An entry that cannot be read (a file of another user's, written under a
/// umask that leaves others no read access: [`publish`](Catalog::publish) writes with the
/// process's umask) is passed over too; when no replica could be read, the lookup's error
/// names the first such entry, with why (`Permission denied`), rather than saying that none
/// is published.
///
/// Every lookup reads every entry, one file at a time: made for the replicas of one service
/// (a directory of 10,000 entries took 2.4 to 3.3 s per lookup in a debug build, in an outside
/// test). An entry written in place by something else than [`publish`](Catalog::publish) may be
/// read half written, and a part of an address may be an address.
#[derive(Debug, Clone)]
pub struct Catalog {
    dir: Arc<Path>,
    rotation: Turn<std::ffi::OsString>,
}

impl Catalog {
    /// A lookup of the replicas published in `dir`.
    pub fn new(dir: impl AsRef<Path>) -> Self {
        Catalog {
            dir: Arc::from(dir.as_ref()),
            rotation: Turn::default(),
        }
    }

    /// Publishes `address` as the replica `name` in `dir` (created if missing). The entry is
    /// written whole (to a hidden file, then renamed), so that a reader never sees half of it.
    ///
    /// The entry is removed when the returned [`Publication`] is withdrawn or dropped. Names are
    /// the replicas' own: a second publication of a name replaces the first one's entry, and
    /// either one's withdrawal removes the entry, whoever wrote it last.
    ///
    /// # Errors
    ///
    /// An error of kind [`InvalidInput`](io::ErrorKind::InvalidInput), before anything is
    /// written, if `name` is not one a lookup can find: empty, beginning with `.` (hidden, so
    /// passed over), holding a path separator or a NUL byte, or longer than 250 bytes (its
    /// temporary file's name would be longer than a file name may be). Otherwise, if the
    /// directory or the file cannot be written (the temporary file is then removed).
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe: dropped before it resolves, it may leave the hidden temporary file,
    /// or the entry itself (published, with no [`Publication`] to withdraw it).
    pub async fn publish(
        dir: impl AsRef<Path>,
        name: &str,
        address: SocketAddr,
    ) -> io::Result<Publication> {
        check_entry_name(name)?;
        let dir = dir.as_ref().to_owned();
        tokio::fs::create_dir_all(&dir).await?;
        let path = dir.join(name);
        let temporary = dir.join(format!(".{name}.tmp"));
        let written = match tokio::fs::write(&temporary, address.to_string()).await {
            Ok(()) => tokio::fs::rename(&temporary, &path).await,
            Err(error) => Err(error),
        };
        if let Err(error) = written {
            // Whatever of it was written goes (there may be nothing to remove).
            let _ = tokio::fs::remove_file(&temporary).await;
            return Err(error);
        }
        Ok(Publication {
            entry: Some(Entry::File(path)),
        })
    }

    /// The text of the entry at `path`: a regular file (a FIFO would block the read, a device
    /// would not end it), of [`MAX_CATALOG_ENTRY`] bytes at most (read no further if it grew);
    /// `None` if it is none.
    async fn read_entry(path: &Path) -> io::Result<Option<String>> {
        use tokio::io::AsyncReadExt;
        let is_entry = |metadata: &std::fs::Metadata| {
            metadata.is_file() && metadata.len() <= MAX_CATALOG_ENTRY
        };
        // What is not a regular file is not opened at all (opening some devices does things).
        if !is_entry(&tokio::fs::metadata(path).await?) {
            return Ok(None);
        }
        // The entry may be replaced between that look and the open (a rename, a link pointed
        // elsewhere): the open does not wait for a FIFO's writer (it would, for good, and hold
        // a thread of the runtime's blocking pool with it), and what it opened is looked at
        // again.
        let mut options = tokio::fs::OpenOptions::new();
        options.read(true);
        #[cfg(unix)]
        options.custom_flags(libc::O_NONBLOCK);
        let file = options.open(path).await?;
        if !is_entry(&file.metadata().await?) {
            return Ok(None);
        }
        let mut text = String::new();
        file.take(MAX_CATALOG_ENTRY)
            .read_to_string(&mut text)
            .await?;
        Ok(Some(text))
    }

    /// The replicas published in `dir`, by file name (the name as it is, so that two names
    /// that are not UTF-8 stay two), and the first entry that could not be read, with why (a
    /// file of another user's that this one may not read, say).
    async fn replicas(dir: &Path) -> io::Result<(Vec<(std::ffi::OsString, SocketAddr)>, Unread)> {
        let mut entries = tokio::fs::read_dir(dir).await?;
        let mut replicas = Vec::new();
        let mut unread = None;
        while let Some(entry) = entries.next_entry().await? {
            let name = entry.file_name();
            if name.as_encoded_bytes().starts_with(b".") {
                continue;
            }
            let text = match Self::read_entry(&entry.path()).await {
                Ok(Some(text)) => text,
                Ok(None) => continue,
                // An entry withdrawn meanwhile is simply not there.
                Err(error) if error.kind() == io::ErrorKind::NotFound => continue,
                Err(error) => {
                    unread.get_or_insert((name, error));
                    continue;
                }
            };
            if let Ok(address) = text.trim().parse() {
                replicas.push((name, address));
            }
        }
        replicas.sort();
        Ok((replicas, unread))
    }
}

impl Service<()> for Catalog {
    type Response = SocketAddr;
    type Error = LookupError;
    type Future = Resolving;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), LookupError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, (): ()) -> Self::Future {
        let dir = self.dir.clone();
        let rotation = self.rotation.clone();
        Resolving::new(async move {
            let (replicas, unread) = Catalog::replicas(&dir).await.map_err(|e| {
                LookupError::new(
                    format!("cannot read the catalog {}", dir.display()),
                    Some(e),
                )
            })?;
            // Not "none published": one is there, which this process may not read.
            if let Some((name, error)) = unread.filter(|_| replicas.is_empty()) {
                return Err(LookupError::new(
                    format!(
                        "no replica in the catalog {} could be read (the entry {} could not)",
                        dir.display(),
                        shown(&name.to_string_lossy()),
                    ),
                    Some(error),
                ));
            }
            rotation.pick(&replicas, || {
                format!("no replica published in {}", dir.display())
            })
        })
    }
}

/// The first catalog entry that could not be read, by file name, with why.
type Unread = Option<(std::ffi::OsString, io::Error)>;

/// A replica's entry in a catalog: a file of a [`Catalog`], or a key of `Etcd` (feature
/// `etcd`) held by a lease. Removed by [`withdraw`](Self::withdraw), or on drop (a file at
/// once; an etcd key from a spawned task, at best: a runtime that shuts down, or no runtime,
/// leaves it to expire with its lease); left behind by [`abandon`](Self::abandon), as by a
/// replica that dies (an etcd key then expires with its lease).
#[derive(Debug)]
pub struct Publication {
    entry: Option<Entry>,
}

#[derive(Debug)]
enum Entry {
    File(PathBuf),
    #[cfg(feature = "etcd")]
    Etcd(Box<etcd::Registration>),
}

impl Publication {
    /// Where the entry is: the file of a [`Catalog`] entry, or the key of an etcd entry (as a
    /// path: `/services/orders/replica-3`).
    pub fn path(&self) -> &Path {
        match self.entry.as_ref().expect("present until withdrawn") {
            Entry::File(path) => path,
            #[cfg(feature = "etcd")]
            Entry::Etcd(registration) => Path::new(registration.key()),
        }
    }

    /// Removes the entry: deletes the file, or revokes the etcd lease (which deletes the key).
    ///
    /// # Errors
    ///
    /// If the file cannot be removed (a file already gone is not an error), or etcd does not
    /// answer within its timeout. The withdrawal of an etcd entry takes that timeout at most,
    /// or three times it while the entry is being published again under a new lease (its
    /// grant and its put are finished first, so that the lease revoked is the last one
    /// granted; one not finished within two timeouts, its task's runtime no longer driven,
    /// say, is cut short, and its new lease left to expire).
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe: dropped before it resolves, the removal may or may not have happened
    /// (an etcd entry then still goes when its lease expires).
    pub async fn withdraw(mut self) -> io::Result<()> {
        match self.entry.take().expect("present until withdrawn") {
            Entry::File(path) => match tokio::fs::remove_file(path).await {
                Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
                _ => Ok(()),
            },
            #[cfg(feature = "etcd")]
            Entry::Etcd(registration) => registration.withdraw().await,
        }
    }

    /// Leaves the entry in place, as a replica that dies without a clean shutdown does: the file
    /// stays; the etcd lease is no longer kept alive, and the key goes when it expires.
    pub fn abandon(mut self) {
        match self.entry.take() {
            #[cfg(feature = "etcd")]
            Some(Entry::Etcd(registration)) => registration.abandon(),
            _ => {}
        }
    }
}

impl Drop for Publication {
    fn drop(&mut self) {
        match self.entry.take() {
            Some(Entry::File(path)) => {
                let _ = std::fs::remove_file(path);
            }
            #[cfg(feature = "etcd")]
            Some(Entry::Etcd(registration)) => registration.drop_entry(),
            None => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The turn goes on after the key taken last, whatever was added or removed meanwhile (as a
    // DNS name's records change): none taken twice in a row, none skipped.
    #[test]
    fn a_turn_goes_on_after_the_last_key_as_the_list_changes() {
        let turn = Turn::<u16>::default();
        let take = |keys: &[u16]| {
            let items: Vec<(u16, u16)> = keys.iter().map(|&k| (k, k)).collect();
            turn.pick(&items, String::new).unwrap()
        };
        assert_eq!([take(&[1, 2, 3]), take(&[1, 2, 3])], [1, 2]);
        assert_eq!([take(&[2, 3]), take(&[2, 3])], [3, 2]);
        assert_eq!(
            [take(&[0, 2, 3]), take(&[0, 2, 3]), take(&[0, 2, 3])],
            [3, 0, 2]
        );
        // The key taken last is gone, with nothing after it: from the first.
        assert_eq!(take(&[0, 1]), 0);
        assert_eq!(
            turn.pick::<u16>(&[], || "empty".into())
                .unwrap_err()
                .to_string(),
            "empty"
        );
    }
}
