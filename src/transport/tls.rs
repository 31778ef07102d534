//! TLS for the HTTP connector (feature `tls`): rustls with the `ring` provider, through
//! tokio-rustls.

use std::fmt;
use std::sync::Arc;

use rustls::pki_types::ServerName;
use rustls::{ClientConfig, RootCertStore};

use crate::BoxError;

use super::connector::{ConnectErrorKind, HttpConnectError};
use super::dial::{At, Dialed, Peer, host_of};
use super::shared::Version;

/// The TLS settings of an [`HttpConnector`](super::HttpConnector)
/// ([`tls`](super::HttpConnector::tls)): which roots to trust, and, if set, the name every
/// server's certificate is checked against.
///
/// Without a [`server_name`](Self::server_name), a certificate is checked against the address
/// of each connection: the host of a name (a lookup answering the string
/// `replica-3.orders.internal:8443` gets that host's certificate checked against
/// `replica-3.orders.internal`), or else the IP address dialed. Lookups that answer socket
/// addresses ([`Dns`](crate::discovery::Dns), [`Catalog`](crate::discovery::Catalog)) keep no
/// name, and a Unix domain socket or a stream of yours has none: set the name.
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use tower_persistent::transport::{HttpConnector, TlsConfig};
///
/// // The platform's roots (the system's certificate store).
/// let connector = HttpConnector::<http_body_util::Empty<bytes::Bytes>>::http2()
///     .tls(TlsConfig::platform_roots()?);
/// // Your own client configuration (roots, client certificates, ...), and one name for all.
/// let mut roots = rustls::RootCertStore::empty();
/// # let _ = &mut roots;
/// let config = rustls::ClientConfig::builder_with_provider(
///     rustls::crypto::ring::default_provider().into(),
/// )
/// .with_safe_default_protocol_versions()?
/// .with_root_certificates(roots)
/// .with_no_client_auth();
/// let connector = HttpConnector::<http_body_util::Empty<bytes::Bytes>>::http1()
///     .tls(TlsConfig::from_client_config(config).server_name("orders.internal")?);
/// # let _ = connector;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct TlsConfig {
    config: Arc<ClientConfig>,
    server_name: Option<ServerName<'static>>,
}

impl fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsConfig")
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

impl TlsConfig {
    /// Trusts the platform's roots: the system's certificate store, read now (through
    /// `rustls-native-certs`, which honours `SSL_CERT_FILE` and `SSL_CERT_DIR`). Fails when no
    /// root could be read.
    ///
    /// # Errors
    ///
    /// [`TlsConfigError`] (`no root certificate found on this platform`) when no root could be
    /// read; the platform's first error, if any, is its source.
    pub fn platform_roots() -> Result<Self, TlsConfigError> {
        let loaded = rustls_native_certs::load_native_certs();
        let mut roots = RootCertStore::empty();
        let (added, _unparsable) = roots.add_parsable_certificates(loaded.certs);
        if added == 0 {
            return Err(TlsConfigError {
                message: "no root certificate found on this platform".to_owned(),
                source: loaded
                    .errors
                    .into_iter()
                    .next()
                    .map(|error| Arc::new(error) as Arc<dyn std::error::Error + Send + Sync>),
            });
        }
        Ok(Self::with_roots(roots))
    }

    /// Trusts `roots` only (a private certificate authority, say).
    pub fn with_roots(roots: RootCertStore) -> Self {
        let config =
            ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .expect("the ring provider supports rustls' default protocol versions")
                .with_root_certificates(roots)
                .with_no_client_auth();
        Self::from_client_config(config)
    }

    /// Uses `config` as it is (its roots, verifier, client certificate, provider), but for
    /// ALPN, which the connector sets to its own HTTP version.
    pub fn from_client_config(config: impl Into<Arc<ClientConfig>>) -> Self {
        TlsConfig {
            config: config.into(),
            server_name: None,
        }
    }

    /// Checks every server's certificate against `name` (a DNS name or an IP address),
    /// whatever the address; a DNS name is also sent as SNI (rustls sends none for an IP
    /// address). An invalid name is rejected here. Without it, the name checked is that of
    /// each connection's address (or of the connector's
    /// [`authority`](super::HttpConnector::authority)), or else the IP address dialed.
    ///
    /// # Errors
    ///
    /// [`TlsConfigError`] (`invalid tls server name "..."`) when `name` is neither a DNS name
    /// nor an IP address; the parse error is its source.
    pub fn server_name(mut self, name: &str) -> Result<Self, TlsConfigError> {
        let parsed = ServerName::try_from(name.to_owned()).map_err(|e| TlsConfigError {
            message: format!("invalid tls server name {name:?}"),
            source: Some(Arc::new(e)),
        })?;
        self.server_name = Some(parsed);
        Ok(self)
    }

    /// Made ready for a connector of `version`: ALPN offers that version only.
    pub(super) fn for_version(self, version: Version) -> Tls {
        let mut config = (*self.config).clone();
        config.alpn_protocols = vec![version.alpn().to_vec()];
        Tls {
            connector: tokio_rustls::TlsConnector::from(Arc::new(config)),
            server_name: self.server_name,
        }
    }
}

/// A [`TlsConfig`] that cannot be used: no platform root could be read, or a server name is
/// not valid. The cause, when there is one (the platform's error, the name's parse error), is
/// the [`source`](std::error::Error::source).
#[derive(Debug, Clone)]
pub struct TlsConfigError {
    message: String,
    source: Option<Arc<dyn std::error::Error + Send + Sync>>,
}

impl fmt::Display for TlsConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for TlsConfigError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

impl Version {
    fn alpn(self) -> &'static [u8] {
        match self {
            Version::Http1 => b"http/1.1",
            Version::Http2 => b"h2",
        }
    }
}

/// A connector's TLS, ready to shake hands.
pub(super) struct Tls {
    connector: tokio_rustls::TlsConnector,
    server_name: Option<ServerName<'static>>,
}

impl fmt::Debug for Tls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tls")
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

impl Tls {
    /// Shakes hands over `dialed`; returns the TLS stream in its place, and the server name.
    pub(super) async fn handshake(
        &self,
        dialed: Dialed,
    ) -> Result<(Dialed, String), HttpConnectError> {
        let error = |kind, why: BoxError| HttpConnectError::new(kind, Some(why));
        let server_name = match (&self.server_name, &dialed.name, &dialed.peer) {
            (Some(name), _, _) => name.clone(),
            (None, Some(name), _) => {
                ServerName::try_from(host_of(name).to_owned()).map_err(|e| {
                    error(
                        ConnectErrorKind::InvalidServerName,
                        At::new(host_of(name), e).into(),
                    )
                })?
            }
            (None, None, Peer::Tcp(address)) => ServerName::IpAddress(address.ip().into()),
            (None, None, peer) => {
                return Err(error(
                    ConnectErrorKind::NoServerName,
                    format!("the peer is {peer}").into(),
                ));
            }
        };
        let shown = server_name.to_str().into_owned();
        let Dialed {
            io,
            peer,
            name,
            probe,
        } = dialed;
        let stream = self.connector.connect(server_name, io).await.map_err(|e| {
            error(
                ConnectErrorKind::Tls,
                At::io(format!("with {shown}"), without_the_time(e)).into(),
            )
        })?;
        // rustls itself refuses a protocol that was not offered, and a server that offers
        // none of ours ends the handshake (`no_application_protocol`).
        // The probe sees the TCP stream under TLS: a server's close_notify is bytes to it (so
        // nothing is known), its end of stream or reset is seen as without TLS.
        let dialed = Dialed {
            io: Box::pin(stream),
            peer,
            name,
            probe,
        };
        Ok((dialed, shown))
    }
}

/// `error`, but for a certificate checked against the clock (expired, not valid yet), whose
/// rustls text says when it was checked: that time is left out, so that each attempt against
/// the same certificate fails with the same text (the round's `FailedToConnect` is emitted
/// once, not at every attempt).
fn without_the_time(error: std::io::Error) -> std::io::Error {
    use rustls::CertificateError::{ExpiredContext, NotValidYetContext};
    let certificate = match error
        .get_ref()
        .and_then(|e| e.downcast_ref::<rustls::Error>())
    {
        Some(rustls::Error::InvalidCertificate(certificate)) => certificate,
        _ => return error,
    };
    let text = match certificate {
        ExpiredContext { not_after, .. } => format!(
            "invalid peer certificate: certificate expired: not valid after {} (UNIX)",
            not_after.as_secs()
        ),
        NotValidYetContext { not_before, .. } => format!(
            "invalid peer certificate: certificate not valid yet: not valid before {} (UNIX)",
            not_before.as_secs()
        ),
        _ => return error,
    };
    std::io::Error::new(error.kind(), text)
}
