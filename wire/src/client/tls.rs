//! TLS in the clients: rustls with its `ring` provider, over a blocking `TcpStream` through
//! rustls' own `StreamOwned` (`Client`); the server and the glommio client
//! (`tessera_net::tls`) build on the same provider and configuration. PEM files are read by
//! rustls-pki-types.
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
use rustls_pki_types::{CertificateDer, ServerName};

/// The one provider every configuration is built with, the server's too (chosen here, not by
/// which rustls features the build happened to unify). rustls deprecates ring's for want of
/// post-quantum key exchange (ring has no ML-KEM); it is kept because aws-lc-rs, the provider
/// that has it, needs cmake and a large C build. Keys are exchanged with X25519, P-256 or P-384.
pub fn provider() -> Arc<CryptoProvider> {
    #[allow(deprecated)]
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The certificates of a PEM file, at least one.
pub fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let shown = path.display();
    let certificates = CertificateDer::pem_file_iter(path)
        .and_then(|certificates| certificates.collect::<Result<Vec<_>, _>>())
        .map_err(|error| format!("cannot read the certificates of {shown}: {error}"))?;
    if certificates.is_empty() {
        return Err(format!("{shown} holds no PEM certificate (-----BEGIN CERTIFICATE-----)"));
    }
    Ok(certificates)
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

    /// The rustls configuration a connection is made with.
    pub fn config(&self) -> Arc<rustls::ClientConfig> {
        self.config.clone()
    }

    /// The name the certificate of the server at `address` must hold.
    pub fn name_for(&self, address: SocketAddr) -> ServerName<'static> {
        self.name.clone().unwrap_or_else(|| ServerName::IpAddress(address.ip().into()))
    }

    /// A blocking TLS stream over `stream`, connected to `address`; the handshake completes
    /// within the socket's timeouts (a server whose certificate is not trusted fails it).
    pub(crate) fn connect_blocking(
        &self,
        mut stream: std::net::TcpStream,
        address: SocketAddr,
    ) -> std::io::Result<rustls::StreamOwned<rustls::ClientConnection, std::net::TcpStream>> {
        let mut connection =
            rustls::ClientConnection::new(self.config(), self.name_for(address)).map_err(std::io::Error::other)?;
        while connection.is_handshaking() {
            connection.complete_io(&mut stream)?;
        }
        Ok(rustls::StreamOwned::new(connection, stream))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(name: &str, text: &str) -> std::path::PathBuf {
        let path = std::env::temp_dir().join(format!("tessera-client-tls-{}-{name}", std::process::id()));
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn bad_files_are_named() {
        let missing = Path::new("/nonexistent/cert.pem");
        let garbage = file("garbage.pem", "not a certificate\n");
        let fake = file("fake.pem", "-----BEGIN CERTIFICATE-----\naGVsbG8=\n-----END CERTIFICATE-----\n");
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
