//! TLS on the client listeners (`serve --tls-cert FILE --tls-key FILE`) and in `AsyncClient`:
//! rustls with the provider of `tessera_wire::client::tls` (where `ClientTls`, whom a client
//! trusts, and the blocking client's TLS live), over glommio's futures-io streams through
//! futures-rustls. PEM files are read by rustls-pki-types.
//!
//! Peer links stay plain: each proves the cluster's secret (`crate::auth`), but their bytes
//! are readable on the path. Requests a node forwards to another go over TLS when the nodes'
//! client ports speak it (`Access::forwarding_tls`).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::PrivateKeyDer;
use tessera_wire::client::tls::{certificates, provider};
use tessera_wire::client::ClientTls;

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

/// A TLS stream as `tls` speaks it over glommio's `stream`, connected to `address`, once its
/// handshake is done.
pub(crate) async fn connect<S>(
    tls: &ClientTls,
    stream: S,
    address: SocketAddr,
) -> std::io::Result<futures_rustls::client::TlsStream<S>>
where
    S: futures_lite::AsyncRead + futures_lite::AsyncWrite + Unpin,
{
    futures_rustls::TlsConnector::from(tls.config()).connect(tls.name_for(address), stream).await
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
        for path in [garbage, fake] {
            std::fs::remove_file(path).unwrap();
        }
    }
}
