//! TLS on both sides of the proxy: rustls with the ring provider.
//!
//! Toward clients pgveil is a TLS server (`[tls]`): it answers SSLRequest
//! with `S` and terminates TLS, so the application's traffic is encrypted
//! up to the process that holds the keys. Toward PostgreSQL it is a TLS
//! client (`[upstream_tls]`), for a database on another host.
//!
//! Channel binding (`SCRAM-SHA-256-PLUS`) stays withdrawn either way: the
//! client's TLS session ends at pgveil, so the server could never verify a
//! binding the client computed over it.

use crate::config::{Config, TlsConfig, UpstreamTlsConfig, UpstreamTlsMode};
use crate::net::{ClientStream, MaybeTls, ServerStream};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Why TLS could not be set up or negotiated.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A certificate or key file could not be read.
    #[error("pgveil: cannot read {what} {path}: {source}")]
    Read {
        /// Which setting named the file.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why reading failed.
        source: std::io::Error,
    },
    /// A file holds no usable PEM object of the expected kind.
    #[error("pgveil: {what} {path} holds no PEM {kind}")]
    Pem {
        /// Which setting named the file.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// What was expected.
        kind: &'static str,
    },
    /// `[tls]` names only one of `cert` and `key`, or requires TLS
    /// without a certificate.
    #[error("pgveil: [tls] {0}")]
    Incomplete(&'static str),
    /// rustls refused the certificate and key (e.g. they do not match).
    #[error("pgveil: [tls] cert/key cannot be used: {0}")]
    Server(rustls::Error),
    /// `verify-full` without a CA file.
    #[error("pgveil: [upstream_tls] mode = \"verify-full\" needs ca = \"FILE\" with the CA certificates that sign the server's certificate")]
    NoCa,
    /// A CA certificate could not be added to the trust store.
    #[error("pgveil: [upstream_tls] ca {path}: {source}")]
    Ca {
        /// The CA file.
        path: PathBuf,
        /// rustls's reason.
        source: rustls::Error,
    },
    /// The name to verify is not a valid DNS name or IP address.
    #[error("pgveil: [upstream_tls] {0:?} is not a valid server name; set server_name")]
    ServerName(String),
    /// The protocol versions or provider could not be configured.
    #[error("pgveil: TLS setup failed: {0}")]
    Setup(rustls::Error),
    /// The PostgreSQL server answered SSLRequest with something else than `S`.
    #[error("the PostgreSQL server does not accept TLS (answered {0:?} to SSLRequest); enable ssl on the server or set [upstream_tls] mode = \"disable\"")]
    UpstreamRefused(char),
    /// The TLS handshake (either side) or the negotiation around it failed.
    #[error("TLS handshake failed: {0}")]
    Handshake(std::io::Error),
}

/// The ALPN protocol name PostgreSQL 17 registered; offered so newer
/// clients that ask for it are satisfied, ignored by older ones.
const ALPN_POSTGRESQL: &[u8] = b"postgresql";

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        what,
        path: path.to_owned(),
        source,
    })
}

fn certificates(what: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(what, path)?;
    let certs: Vec<_> = CertificateDer::pem_slice_iter(&pem)
        .filter_map(Result::ok)
        .collect();
    if certs.is_empty() {
        return Err(TlsError::Pem {
            what,
            path: path.to_owned(),
            kind: "certificate",
        });
    }
    Ok(certs)
}

/// The acceptor for client connections, or `None` when `[tls]` is not set.
pub fn acceptor(cfg: &TlsConfig) -> Result<Option<tokio_rustls::TlsAcceptor>, TlsError> {
    let (cert, key) = match (&cfg.cert, &cfg.key) {
        (None, None) if cfg.require => {
            return Err(TlsError::Incomplete(
                "require = true needs cert and key: without them no client could connect",
            ))
        }
        (None, None) => return Ok(None),
        (Some(c), Some(k)) => (c, k),
        (Some(_), None) => return Err(TlsError::Incomplete("cert is set but key is not")),
        (None, Some(_)) => return Err(TlsError::Incomplete("key is set but cert is not")),
    };
    let chain = certificates("[tls] cert", cert)?;
    let key_pem = read("[tls] key", key)?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|_| TlsError::Pem {
        what: "[tls] key",
        path: key.to_owned(),
        kind: "private key (PKCS#8, PKCS#1 or SEC1)",
    })?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Setup)?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(TlsError::Server)?;
    config.alpn_protocols = vec![ALPN_POSTGRESQL.to_vec()];
    Ok(Some(tokio_rustls::TlsAcceptor::from(Arc::new(config))))
}

/// Upgrades a client connection that asked for TLS (after pgveil answered
/// `S`). On failure the stream is left `Closed`.
pub async fn accept(
    stream: &mut ClientStream,
    acceptor: &tokio_rustls::TlsAcceptor,
) -> Result<(), TlsError> {
    let Some(tcp) = stream.take_plain() else {
        return Err(TlsError::Handshake(std::io::ErrorKind::NotConnected.into()));
    };
    let tls = acceptor.accept(tcp).await.map_err(TlsError::Handshake)?;
    *stream = MaybeTls::Tls(Box::new(tls));
    Ok(())
}

/// How to reach the upstream over TLS.
#[derive(Clone)]
pub struct UpstreamTls {
    connector: tokio_rustls::TlsConnector,
    config: Arc<rustls::ClientConfig>,
    name: ServerName<'static>,
}

impl std::fmt::Debug for UpstreamTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamTls")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl UpstreamTls {
    /// Builds the upstream TLS client from the configuration; `None` when
    /// `[upstream_tls] mode = "disable"`.
    pub fn from_config(config: &Config) -> Result<Option<UpstreamTls>, TlsError> {
        let Some(client) = client_config(&config.upstream_tls)? else {
            return Ok(None);
        };
        let host = match &config.upstream_tls.server_name {
            Some(n) => n.clone(),
            None => upstream_host(&config.proxy.upstream).to_owned(),
        };
        let name = ServerName::try_from(host.clone()).map_err(|_| TlsError::ServerName(host))?;
        Ok(Some(UpstreamTls {
            connector: tokio_rustls::TlsConnector::from(client.clone()),
            config: client,
            name,
        }))
    }

    /// Asks the server for TLS on a fresh connection (SSLRequest) and
    /// performs the handshake.
    pub async fn connect(&self, mut tcp: TcpStream) -> Result<ServerStream, TlsError> {
        // SSLRequest: length 8, code 1234.5679.
        tcp.write_all(&[0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f])
            .await
            .map_err(TlsError::Handshake)?;
        let answer = tcp.read_u8().await.map_err(TlsError::Handshake)?;
        if answer != b'S' {
            return Err(TlsError::UpstreamRefused(answer as char));
        }
        let tls = self
            .connector
            .connect(self.name.clone(), tcp)
            .await
            .map_err(TlsError::Handshake)?;
        Ok(MaybeTls::Tls(Box::new(tls)))
    }

    /// A tokio-postgres connector with the same settings, for pgveil's own
    /// catalog connection.
    pub fn postgres_connector(&self) -> tokio_postgres_rustls::MakeRustlsConnect {
        tokio_postgres_rustls::MakeRustlsConnect::new((*self.config).clone())
    }
}

/// The host part of `host:port` (brackets of an IPv6 literal removed).
fn upstream_host(addr: &str) -> &str {
    let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
    host.trim_start_matches('[').trim_end_matches(']')
}

fn client_config(cfg: &UpstreamTlsConfig) -> Result<Option<Arc<rustls::ClientConfig>>, TlsError> {
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Setup)?;
    let config = match cfg.mode {
        UpstreamTlsMode::Disable => return Ok(None),
        UpstreamTlsMode::Require => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerification(provider())))
            .with_no_client_auth(),
        UpstreamTlsMode::VerifyFull => {
            let path = cfg.ca.as_ref().ok_or(TlsError::NoCa)?;
            let mut roots = rustls::RootCertStore::empty();
            for cert in certificates("[upstream_tls] ca", path)? {
                roots.add(cert).map_err(|source| TlsError::Ca {
                    path: path.clone(),
                    source,
                })?;
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
    };
    Ok(Some(Arc::new(config)))
}

/// `mode = "require"`: encrypt, but accept any certificate, as libpq's
/// `sslmode=require` does without a root certificate. Signatures are still
/// checked so the handshake itself is sound; only the identity is not.
#[derive(Debug)]
struct NoVerification(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Checks that the TLS settings of `config` can be loaded; used by
/// `pgveil check` and before a reload.
pub fn check(config: &Config) -> Vec<TlsError> {
    let mut problems = Vec::new();
    if let Err(e) = acceptor(&config.tls) {
        problems.push(e);
    }
    if let Err(e) = UpstreamTls::from_config(config) {
        problems.push(e);
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_of_upstream() {
        assert_eq!(upstream_host("db.internal:5432"), "db.internal");
        assert_eq!(upstream_host("[::1]:5432"), "::1");
        assert_eq!(upstream_host("localhost"), "localhost");
    }

    #[test]
    fn incomplete_settings_are_errors() {
        let mut cfg = TlsConfig {
            require: true,
            ..TlsConfig::default()
        };
        assert!(matches!(acceptor(&cfg), Err(TlsError::Incomplete(_))));
        cfg.require = false;
        assert!(matches!(acceptor(&cfg), Ok(None)));
        cfg.cert = Some("/nonexistent/cert.pem".into());
        assert!(matches!(acceptor(&cfg), Err(TlsError::Incomplete(_))));
        cfg.key = Some("/nonexistent/key.pem".into());
        let err = acceptor(&cfg)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("/nonexistent/cert.pem"), "{err}");
        let up = UpstreamTlsConfig {
            mode: UpstreamTlsMode::VerifyFull,
            ..UpstreamTlsConfig::default()
        };
        assert!(matches!(client_config(&up), Err(TlsError::NoCa)));
    }
}
