//! How a worker or client reaches the broker: plain TCP (`mqtt://`) or TLS
//! (`mqtts://`, with the `tls` feature), always with TCP_NODELAY.

use std::path::{Path, PathBuf};

use rumqttc::v5::MqttOptions;

use crate::url::BrokerAddr;

/// TLS could not be set up; nothing was sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TlsError {
    /// The address asks for TLS and this build has none.
    #[error("{0} asks for TLS, but swarmq-worker was built without its `tls` feature")]
    NotBuilt(String),
    /// The CA file could not be read or holds no certificate.
    #[error("cannot use the CA certificates in {path}: {reason}")]
    Ca {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// rustls refused the configuration.
    #[error("cannot set up TLS: {0}")]
    Setup(String),
    /// The system's trusted roots could not be loaded, and no CA file was given.
    #[error("no CA file given and no system root certificates found: {0}")]
    NoRoots(String),
}

/// The connection a worker or client opens: TLS settings are checked (and
/// the CA file read) when it is built, so a bad file fails at start.
#[derive(Clone)]
pub(crate) struct Connection {
    tls: Option<rumqttc::Transport>,
}

impl Connection {
    /// For `addr`; `ca_file` names the PEM certificates the broker's chain
    /// must lead to (without it the system's trusted roots are used).
    pub(crate) fn new(addr: &BrokerAddr, ca_file: Option<&Path>) -> Result<Connection, TlsError> {
        let tls = if addr.tls {
            Some(tls::transport(addr, ca_file)?)
        } else {
            None
        };
        Ok(Connection { tls })
    }

    /// Sets TCP_NODELAY, and TLS when asked for, on `opts`.
    pub(crate) fn configure(&self, opts: &mut MqttOptions) {
        let mut net = rumqttc::NetworkOptions::new();
        net.set_tcp_nodelay(true);
        opts.set_network_options(net);
        if let Some(t) = &self.tls {
            opts.set_transport(t.clone());
        }
    }
}

#[cfg(feature = "tls")]
mod tls {
    use std::path::Path;
    use std::sync::Arc;

    use rumqttc::{TlsConfiguration, Transport};
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    use rustls::{ClientConfig, RootCertStore};

    use super::TlsError;
    use crate::url::BrokerAddr;

    pub(super) fn transport(
        _addr: &BrokerAddr,
        ca_file: Option<&Path>,
    ) -> Result<Transport, TlsError> {
        let mut roots = RootCertStore::empty();
        match ca_file {
            Some(path) => {
                let ca = |reason: String| TlsError::Ca {
                    path: path.to_path_buf(),
                    reason,
                };
                let certs = CertificateDer::pem_file_iter(path)
                    .map_err(|e| ca(e.to_string()))?
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| ca(e.to_string()))?;
                let (added, _) = roots.add_parsable_certificates(certs);
                if added == 0 {
                    return Err(ca("no usable certificate in the file".into()));
                }
            }
            None => {
                let found = rustls_native_certs::load_native_certs();
                let (added, _) = roots.add_parsable_certificates(found.certs);
                if added == 0 {
                    let why = found
                        .errors
                        .first()
                        .map_or_else(|| "none installed".to_string(), ToString::to_string);
                    return Err(TlsError::NoRoots(why));
                }
            }
        }
        // The provider is named rather than taken from the process default:
        // a program that links both of rustls' providers has no default.
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Setup(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Transport::tls_with_config(TlsConfiguration::Rustls(
            Arc::new(config),
        )))
    }
}

#[cfg(not(feature = "tls"))]
mod tls {
    use std::path::Path;

    use rumqttc::Transport;

    use super::TlsError;
    use crate::url::BrokerAddr;

    pub(super) fn transport(
        addr: &BrokerAddr,
        _ca_file: Option<&Path>,
    ) -> Result<Transport, TlsError> {
        Err(TlsError::NotBuilt(addr.to_string()))
    }
}
