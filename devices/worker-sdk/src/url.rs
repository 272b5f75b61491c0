//! Broker addresses: `mqtt://host:port`, `tcp://host:port` or `host:port` for
//! plain TCP; `mqtts://host:port` (or `ssl://`, `tls://`) for TLS.

use std::fmt;
use std::str::FromStr;

/// Default MQTT port when an address names none.
pub const DEFAULT_PORT: u16 = 1883;

/// Default MQTT-over-TLS port when an `mqtts://` address names none.
pub const DEFAULT_TLS_PORT: u16 = 8883;

/// A broker address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerAddr {
    /// Host name or IP address.
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// Whether the connection is TLS (`mqtts://`).
    pub tls: bool,
}

/// An address that could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid broker address `{0}`: expected mqtt://HOST:PORT or mqtts://HOST:PORT")]
pub struct UrlError(pub String);

impl FromStr for BrokerAddr {
    type Err = UrlError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || UrlError(s.to_string());
        let (tls, rest) = match s.split_once("://") {
            Some(("mqtt" | "tcp", rest)) => (false, rest),
            Some(("mqtts" | "ssl" | "tls", rest)) => (true, rest),
            Some(_) => return Err(err()),
            None => (false, s),
        };
        let default_port = if tls { DEFAULT_TLS_PORT } else { DEFAULT_PORT };
        let rest = rest.trim_end_matches('/');
        if rest.is_empty() || rest.contains('/') {
            return Err(err());
        }
        // [v6]:port, host:port, or host alone.
        let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
            let (host, after) = v6.split_once(']').ok_or_else(err)?;
            let port = match after.strip_prefix(':') {
                Some(p) => p.parse().map_err(|_| err())?,
                None if after.is_empty() => default_port,
                None => return Err(err()),
            };
            (host.to_string(), port)
        } else {
            match rest.rsplit_once(':') {
                Some((h, p)) => (h.to_string(), p.parse().map_err(|_| err())?),
                None => (rest.to_string(), default_port),
            }
        };
        if host.is_empty() {
            return Err(err());
        }
        Ok(BrokerAddr { host, port, tls })
    }
}

impl fmt::Display for BrokerAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.tls { "mqtts" } else { "mqtt" };
        if self.host.contains(':') {
            write!(f, "{scheme}://[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{scheme}://{}:{}", self.host, self.port)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_common_forms() {
        let a: BrokerAddr = "mqtt://broker:1884".parse().unwrap();
        assert_eq!((a.host.as_str(), a.port), ("broker", 1884));
        let a: BrokerAddr = "127.0.0.1:5".parse().unwrap();
        assert_eq!((a.host.as_str(), a.port), ("127.0.0.1", 5));
        let a: BrokerAddr = "tcp://h".parse().unwrap();
        assert_eq!(a.port, DEFAULT_PORT);
        let a: BrokerAddr = "mqtt://[::1]:7/".parse().unwrap();
        assert_eq!((a.host.as_str(), a.port), ("::1", 7));
        assert_eq!(a.to_string(), "mqtt://[::1]:7");
        assert!(!a.tls);
    }

    #[test]
    fn tls_schemes_default_to_8883() {
        let a: BrokerAddr = "mqtts://broker".parse().unwrap();
        assert_eq!(
            (a.host.as_str(), a.port, a.tls),
            ("broker", DEFAULT_TLS_PORT, true)
        );
        let a: BrokerAddr = "ssl://h:9".parse().unwrap();
        assert_eq!((a.port, a.tls), (9, true));
        assert_eq!(a.to_string(), "mqtts://h:9");
    }

    #[test]
    fn refuses_nonsense() {
        for bad in [
            "",
            "http://x:1",
            "mqtt://",
            "mqtt://h:port",
            "mqtt://h:1/x",
            "[::1",
        ] {
            assert!(bad.parse::<BrokerAddr>().is_err(), "{bad}");
        }
    }
}
