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
    make_certs_with_clients(dir, &[]).0
}

/// As [`make_certs`], and a client certificate signed by the same CA for
/// each name (as its subject CN): `client-<name>.pem` and `.key`.
#[allow(dead_code)]
pub(crate) fn make_certs_with_clients(
    dir: &Path,
    names: &[&str],
) -> (TlsFiles, Vec<(PathBuf, PathBuf)>) {
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
    let mut clients = Vec::new();
    for name in names {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("client params");
        params.distinguished_name.push(DnType::CommonName, *name);
        let key = KeyPair::generate().expect("client key");
        let cert = params.signed_by(&key, &ca).expect("client certificate");
        let (c, k) = (
            dir.join(format!("client-{name}.pem")),
            dir.join(format!("client-{name}.key")),
        );
        std::fs::write(&c, cert.pem()).expect("write client certificate");
        std::fs::write(&k, key.serialize_pem()).expect("write client key");
        clients.push((c, k));
    }
    (files, clients)
}
