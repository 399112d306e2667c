//! Certificates generated at test time: a CA and a server certificate for
//! `localhost` and `127.0.0.1`, used by both pgveil and the test
//! PostgreSQL. Nothing here is committed; each test process makes its own.

use std::path::PathBuf;
use std::sync::OnceLock;

/// PEM files of the test PKI.
pub struct Certs {
    _dir: tempfile::TempDir,
    /// The CA certificate clients trust (`sslrootcert`, `[upstream_tls] ca`).
    pub ca: PathBuf,
    /// Server certificate for localhost / 127.0.0.1, signed by the CA.
    pub cert: PathBuf,
    /// Its private key (0600).
    pub key: PathBuf,
    /// The same certificate and key as text.
    pub cert_pem: String,
    /// The key as text.
    pub key_pem: String,
}

/// The test process's certificates, generated on first use.
pub fn certs() -> &'static Certs {
    static CERTS: OnceLock<Certs> = OnceLock::new();
    CERTS.get_or_init(generate)
}

fn generate() -> Certs {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyPair, KeyUsagePurpose,
    };
    use std::os::unix::fs::PermissionsExt;
    let ca_key = KeyPair::generate().expect("CA key");
    let mut ca = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name.push(
        DnType::CommonName,
        "pgveil test CA (generated per test run)",
    );
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca.self_signed(&ca_key).expect("self-sign CA");
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate().expect("server key");
    let mut server = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
        .expect("server params");
    server
        .distinguished_name
        .push(DnType::CommonName, "localhost");
    server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let cert = server.signed_by(&key, &issuer).expect("sign server cert");
    let dir = tempfile::tempdir().expect("cert dir");
    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).expect("write PEM");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        path
    };
    let cert_pem = cert.pem();
    let key_pem = key.serialize_pem();
    Certs {
        ca: write("ca.crt", &ca_cert.pem()),
        cert: write("server.crt", &cert_pem),
        key: write("server.key", &key_pem),
        cert_pem,
        key_pem,
        _dir: dir,
    }
}

/// A rustls client configuration trusting the test CA.
pub fn client_config() -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    let pem = std::fs::read(&certs().ca).expect("read CA");
    use rustls::pki_types::pem::PemObject;
    for c in rustls::pki_types::CertificateDer::pem_slice_iter(&pem) {
        roots.add(c.expect("CA PEM")).expect("add CA");
    }
    rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("protocol versions")
    .with_root_certificates(roots)
    .with_no_client_auth()
}
