//! How a worker or client reaches the broker: plain TCP (`mqtt://`) or TLS
//! (`mqtts://`, with the `tls` feature), always with TCP_NODELAY.

use std::path::PathBuf;

use rumqttc::v5::MqttOptions;

use crate::url::BrokerAddr;

/// Largest packet the SDK takes from the broker: the broker's own default
/// (`mqtt.max_packet_size_bytes`).
pub(crate) const MAX_PACKET_BYTES: u32 = 16 * 1024 * 1024;

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

/// How a worker or client proves who it is and whom it trusts: what both
/// builders take.
#[derive(Debug, Clone, Default)]
pub(crate) struct ConnectSettings {
    /// PEM certificates the broker's chain must lead to.
    pub(crate) ca_file: Option<PathBuf>,
    /// PEM client certificate and its key, for brokers that want one.
    pub(crate) client_cert: Option<(PathBuf, PathBuf)>,
    /// The identity's name.
    pub(crate) username: Option<String>,
    /// Its token or password.
    pub(crate) password: Option<String>,
}

impl ConnectSettings {
    /// A client id for this identity: `<username>:<random>`, or a random one.
    pub(crate) fn default_client_id(&self) -> String {
        let random = crate::worker::random_client_id();
        match &self.username {
            Some(u) => format!("{u}:{random}"),
            None => random,
        }
    }
}

/// The builder methods of [`ConnectSettings`], shared by `ClientBuilder` and
/// `WorkerBuilder` (each has a `connect: ConnectSettings` field).
macro_rules! connect_settings_methods {
    () => {
        /// PEM file of the CA that signed the broker's certificate, for
        /// `mqtts://` addresses (default: the system's trusted roots).
        pub fn ca_file(mut self, path: impl Into<PathBuf>) -> Self {
            self.connect.ca_file = Some(path.into());
            self
        }

        /// Connects as an identity: its name and token (or password). The
        /// default client id is then `<username>:<random>`, as the broker asks.
        pub fn credentials(
            mut self,
            username: impl Into<String>,
            password: impl Into<String>,
        ) -> Self {
            self.connect.username = Some(username.into());
            self.connect.password = Some(password.into());
            self
        }

        /// Connects as an identity named `username` without a password, proving
        /// it with a TLS client certificate (see [`Self::client_cert`]).
        pub fn username(mut self, username: impl Into<String>) -> Self {
            self.connect.username = Some(username.into());
            self
        }

        /// A PEM client certificate and its private key, for `mqtts://` brokers
        /// that authenticate clients by certificate (its CN names the identity).
        pub fn client_cert(mut self, cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
            self.connect.client_cert = Some((cert.into(), key.into()));
            self
        }
    };
}
pub(crate) use connect_settings_methods;

/// The connection a worker or client opens: TLS settings are checked (and
/// the CA file read) when it is built, so a bad file fails at start.
#[derive(Clone)]
pub(crate) struct Connection {
    tls: Option<rumqttc::Transport>,
    credentials: Option<(String, String)>,
}

impl Connection {
    /// For `addr`; the CA file names the PEM certificates the broker's chain
    /// must lead to (without it the system's trusted roots are used).
    pub(crate) fn new(
        addr: &BrokerAddr,
        settings: &ConnectSettings,
    ) -> Result<Connection, TlsError> {
        let tls = if addr.tls {
            Some(tls::transport(
                addr,
                settings.ca_file.as_deref(),
                settings
                    .client_cert
                    .as_ref()
                    .map(|(c, k)| (c.as_path(), k.as_path())),
            )?)
        } else {
            None
        };
        let credentials = settings
            .username
            .clone()
            .map(|u| (u, settings.password.clone().unwrap_or_default()));
        Ok(Connection { tls, credentials })
    }

    /// Sets TCP_NODELAY, the largest packet taken, credentials, and TLS
    /// when asked for, on `opts`.
    pub(crate) fn configure(&self, opts: &mut MqttOptions) {
        // rumqttc takes 10 KiB by default; a chord's body receives the list
        // of every header result, and a workflow's result can be as large.
        opts.set_max_packet_size(Some(MAX_PACKET_BYTES));
        let mut net = rumqttc::NetworkOptions::new();
        net.set_tcp_nodelay(true);
        opts.set_network_options(net);
        if let Some(t) = &self.tls {
            opts.set_transport(t.clone());
        }
        if let Some((u, p)) = &self.credentials {
            opts.set_credentials(u.clone(), p.clone());
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
        client_cert: Option<(&Path, &Path)>,
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
        let builder = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Setup(e.to_string()))?
            .with_root_certificates(roots);
        let config = match client_cert {
            None => builder.with_no_client_auth(),
            Some((cert, key)) => {
                let bad = |path: &Path, reason: String| TlsError::Ca {
                    path: path.to_path_buf(),
                    reason,
                };
                let chain = CertificateDer::pem_file_iter(cert)
                    .map_err(|e| bad(cert, e.to_string()))?
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| bad(cert, e.to_string()))?;
                let key_der = rustls::pki_types::PrivateKeyDer::from_pem_file(key)
                    .map_err(|e| bad(key, e.to_string()))?;
                builder
                    .with_client_auth_cert(chain, key_der)
                    .map_err(|e| TlsError::Setup(e.to_string()))?
            }
        };
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
        _client_cert: Option<(&Path, &Path)>,
    ) -> Result<Transport, TlsError> {
        Err(TlsError::NotBuilt(addr.to_string()))
    }
}
