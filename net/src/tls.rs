//! TLS on the client listeners (`serve --tls-cert FILE --tls-key FILE`) and in the clients:
//! rustls with its `ring` provider, over glommio's futures-io streams through futures-rustls
//! (server and `AsyncClient`) and over a blocking `TcpStream` through rustls' own
//! `StreamOwned` (`Client`). PEM files are read by rustls-pki-types.
//!
//! A client trusts the certificates of a CA file it is given, or else the system's trust
//! store (rustls-native-certs: the operating system's own roots, so a private CA an operator
//! installed there is trusted without shipping a bundle, which webpki-roots' compiled-in
//! Mozilla list would not do).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};

/// The one provider every configuration is built with (chosen here, not by which rustls
/// features the build happened to unify). rustls deprecates ring's for want of post-quantum
/// key exchange (ring has no ML-KEM); it is kept because aws-lc-rs, the provider that has
/// it, needs cmake and a large C build. Keys are exchanged with X25519, P-256 or P-384.
fn provider() -> Arc<CryptoProvider> {
    #[allow(deprecated)]
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The certificates of a PEM file, at least one.
fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let shown = path.display();
    let certificates = CertificateDer::pem_file_iter(path)
        .and_then(|certificates| certificates.collect::<Result<Vec<_>, _>>())
        .map_err(|error| format!("cannot read the certificates of {shown}: {error}"))?;
    if certificates.is_empty() {
        return Err(format!("{shown} holds no PEM certificate (-----BEGIN CERTIFICATE-----)"));
    }
    Ok(certificates)
}

/// A node's TLS identity: the certificate chain of `cert` (PEM, its own certificate first)
/// and the private key of `key` (PEM: PKCS#8, PKCS#1 or SEC1). Fails, naming the file, if
/// either cannot be read or parsed or the key is not the certificate's.
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>, String> {
    let chain = certificates(cert)?;
    let private_key = PrivateKeyDer::from_pem_file(key).map_err(|error| match error {
        rustls_pki_types::pem::Error::NoItemsFound => {
            format!("{} holds no PEM private key (-----BEGIN PRIVATE KEY-----)", key.display())
        }
        error => format!("cannot read the private key of {}: {error}", key.display()),
    })?;
    let config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|error| error.to_string())?
        .with_no_client_auth()
        .with_single_cert(chain, private_key)
        .map_err(|error| match error {
            rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch) => {
                format!("the key of {} is not the key of the certificate of {}", key.display(), cert.display())
            }
            error => {
                format!(
                    "the certificate of {} and the key of {} cannot be used: {error}",
                    cert.display(),
                    key.display()
                )
            }
        })?;
    Ok(Arc::new(config))
}

/// How a client speaks TLS: whom it trusts, and which name it expects certificates to hold.
#[derive(Clone, Debug)]
pub struct ClientTls {
    config: Arc<rustls::ClientConfig>,
    /// The name every server's certificate must hold; `None`: the IP address connected to.
    name: Option<ServerName<'static>>,
}

impl ClientTls {
    /// Trusts the certificates of the PEM file `ca_file` (a CA's, or a server's self-signed
    /// one), or without one the system's trust store.
    pub fn trusting(ca_file: Option<&Path>) -> Result<ClientTls, String> {
        let mut roots = RootCertStore::empty();
        match ca_file {
            Some(path) => {
                for certificate in certificates(path)? {
                    roots.add(certificate).map_err(|error| {
                        format!("{} holds a certificate that cannot be trusted: {error}", path.display())
                    })?;
                }
            }
            None => {
                let (added, _) = roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
                if added == 0 {
                    return Err("the system's trust store holds no certificate: name a CA file".into());
                }
            }
        }
        let config = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|error| error.to_string())?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(ClientTls { config: Arc::new(config), name: None })
    }

    /// Expects every server's certificate to hold `name` (a DNS name or an IP address), the
    /// host a client was pointed at, rather than the IP address it connects to.
    pub fn named(self, name: &str) -> Result<ClientTls, String> {
        let name = ServerName::try_from(name.to_string())
            .map_err(|_| format!("{name:?} is neither a DNS name nor an IP address a certificate can hold"))?;
        Ok(ClientTls { name: Some(name), ..self })
    }

    fn name_for(&self, address: SocketAddr) -> ServerName<'static> {
        self.name.clone().unwrap_or_else(|| ServerName::IpAddress(address.ip().into()))
    }

    /// A blocking TLS stream over `stream`, connected to `address`; the handshake completes
    /// within the socket's timeouts (a server whose certificate is not trusted fails it).
    pub(crate) fn connect_blocking(
        &self,
        mut stream: std::net::TcpStream,
        address: SocketAddr,
    ) -> std::io::Result<rustls::StreamOwned<rustls::ClientConnection, std::net::TcpStream>> {
        let mut connection = rustls::ClientConnection::new(self.config.clone(), self.name_for(address))
            .map_err(std::io::Error::other)?;
        while connection.is_handshaking() {
            connection.complete_io(&mut stream)?;
        }
        Ok(rustls::StreamOwned::new(connection, stream))
    }

    /// A TLS stream over glommio's `stream`, connected to `address`, once its handshake is done.
    pub(crate) async fn connect<S>(
        &self,
        stream: S,
        address: SocketAddr,
    ) -> std::io::Result<futures_rustls::client::TlsStream<S>>
    where
        S: futures_lite::AsyncRead + futures_lite::AsyncWrite + Unpin,
    {
        futures_rustls::TlsConnector::from(self.config.clone()).connect(self.name_for(address), stream).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(name: &str, text: &str) -> std::path::PathBuf {
        let path = std::env::temp_dir().join(format!("tessera-tls-{}-{name}", std::process::id()));
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn bad_files_are_named() {
        let missing = Path::new("/nonexistent/cert.pem");
        let garbage = file("garbage.pem", "not a certificate\n");
        let fake = file("fake.pem", "-----BEGIN CERTIFICATE-----\naGVsbG8=\n-----END CERTIFICATE-----\n");
        let error = server_config(missing, &garbage).unwrap_err();
        assert!(error.contains("/nonexistent/cert.pem"), "{error}");
        let error = server_config(&garbage, &garbage).unwrap_err();
        assert!(error.contains(&garbage.display().to_string()) && error.contains("no PEM certificate"), "{error}");
        let error = server_config(&fake, &garbage).unwrap_err();
        assert!(error.contains(&garbage.display().to_string()) && error.contains("no PEM private key"), "{error}");
        let error = ClientTls::trusting(Some(&garbage)).unwrap_err();
        assert!(error.contains(&garbage.display().to_string()), "{error}");
        let error = ClientTls::trusting(Some(missing)).unwrap_err();
        assert!(error.contains("/nonexistent/cert.pem"), "{error}");
        assert!(ClientTls::trusting(Some(&fake)).is_err());
        for path in [garbage, fake] {
            std::fs::remove_file(path).unwrap();
        }
    }
}
