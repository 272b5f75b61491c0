//! Test certificates, made with rcgen: a CA, and a server certificate it
//! signs for `localhost` and 127.0.0.1. Shared by the broker's integration
//! tests and the word-count tests (included there by path).

use std::path::{Path, PathBuf};

/// PEM files of a test CA and a server certificate it signed.
pub(crate) struct TlsFiles {
    pub(crate) ca: PathBuf,
    pub(crate) cert: PathBuf,
    pub(crate) key: PathBuf,
}

/// Writes `ca.pem`, `server.pem` and `server.key` into `dir`.
pub(crate) fn make_certs(dir: &Path) -> TlsFiles {
    use rcgen::{
        BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair,
        KeyUsagePurpose,
    };
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "swarmq test CA");
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().expect("CA key"))
        .expect("CA certificate");

    let mut params = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
        .expect("server params");
    params
        .distinguished_name
        .push(DnType::CommonName, "swarmq test broker");
    let key = KeyPair::generate().expect("server key");
    let cert = params.signed_by(&key, &ca).expect("server certificate");

    let files = TlsFiles {
        ca: dir.join("ca.pem"),
        cert: dir.join("server.pem"),
        key: dir.join("server.key"),
    };
    std::fs::write(&files.ca, ca.pem()).expect("write CA");
    std::fs::write(&files.cert, cert.pem()).expect("write certificate");
    std::fs::write(&files.key, key.serialize_pem()).expect("write key");
    files
}
