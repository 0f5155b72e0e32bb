//! TLS client settings for MQTT brokers (and other peers), shared by the forwarder and the
//! listener. Behind the `tls` feature, so the pure contract builds without rustls.
//!
//! Promises: certificates are verified by default, against the given CA file or else the
//! system's roots; turning verification off must be asked for explicitly; every error names
//! the setting (as the caller calls it) and the file.

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use std::path::Path;
use std::sync::Arc;

/// How the caller names its settings, so errors point at the right key or variable.
#[derive(Debug, Clone, Copy)]
pub struct SettingNames<'a> {
    pub ca_file: &'a str,
    pub cert_file: &'a str,
    pub key_file: &'a str,
}

#[derive(Debug, Default, Clone, Copy)]
pub struct TlsFiles<'a> {
    pub ca_file: Option<&'a Path>,
    /// Client certificate and key (PEM), for brokers that authenticate clients by certificate.
    pub client: Option<(&'a Path, &'a Path)>,
    /// Accept any server certificate. Only for tests and emergencies; log a warning when used.
    pub insecure_skip_verify: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{setting}: cannot read certificates from {path}: {reason}")]
    Certificates {
        setting: String,
        path: String,
        reason: String,
    },
    #[error("{setting}: no certificate in {path}")]
    NoCertificate { setting: String, path: String },
    #[error("{setting}: cannot read a private key from {path}: {reason}")]
    Key {
        setting: String,
        path: String,
        reason: String,
    },
    #[error("{cert} / {key}: certificate and key do not fit together: {reason}")]
    Mismatch {
        cert: String,
        key: String,
        reason: String,
    },
    #[error("no system CA certificates found; set {0}")]
    NoSystemRoots(String),
    #[error("TLS setup failed: {0}")]
    Other(String),
}

/// Builds a rustls client configuration (aws-lc-rs provider).
pub fn client_config(
    files: TlsFiles<'_>,
    names: SettingNames<'_>,
) -> Result<ClientConfig, TlsError> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Other(e.to_string()))?;
    let builder = if files.insecure_skip_verify {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerification(provider)))
    } else {
        builder.with_root_certificates(roots(files.ca_file, names)?)
    };
    match files.client {
        Some((cert_path, key_path)) => {
            let certs = read_certs(cert_path, names.cert_file)?;
            let key = PrivateKeyDer::from_pem_file(key_path).map_err(|e| TlsError::Key {
                setting: names.key_file.to_owned(),
                path: key_path.display().to_string(),
                reason: e.to_string(),
            })?;
            builder
                .with_client_auth_cert(certs, key)
                .map_err(|e| TlsError::Mismatch {
                    cert: names.cert_file.to_owned(),
                    key: names.key_file.to_owned(),
                    reason: e.to_string(),
                })
        }
        None => Ok(builder.with_no_client_auth()),
    }
}

/// Builds a rustls server configuration (aws-lc-rs provider) from a PEM certificate chain and
/// key; `chain` (optional) adds intermediate certificates sent after the server's own. Clients
/// are not asked for certificates.
pub fn server_config(
    cert_path: &Path,
    key_path: &Path,
    chain: Option<&Path>,
    names: SettingNames<'_>,
) -> Result<rustls::ServerConfig, TlsError> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut certs = read_certs(cert_path, names.cert_file)?;
    if let Some(chain) = chain {
        certs.extend(read_certs(chain, names.ca_file)?);
    }
    let key = PrivateKeyDer::from_pem_file(key_path).map_err(|e| TlsError::Key {
        setting: names.key_file.to_owned(),
        path: key_path.display().to_string(),
        reason: e.to_string(),
    })?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Other(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| TlsError::Mismatch {
            cert: names.cert_file.to_owned(),
            key: names.key_file.to_owned(),
            reason: e.to_string(),
        })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

fn read_certs(path: &Path, setting: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| TlsError::Certificates {
            setting: setting.to_owned(),
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            setting: setting.to_owned(),
            path: path.display().to_string(),
        });
    }
    Ok(certs)
}

fn roots(ca_file: Option<&Path>, names: SettingNames<'_>) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    match ca_file {
        Some(path) => {
            for cert in read_certs(path, names.ca_file)? {
                roots.add(cert).map_err(|e| TlsError::Certificates {
                    setting: names.ca_file.to_owned(),
                    path: path.display().to_string(),
                    reason: e.to_string(),
                })?;
            }
        }
        None => {
            for cert in rustls_native_certs::load_native_certs().certs {
                // Skip the odd unparsable system certificate, as browsers do.
                let _ = roots.add(cert);
            }
            if roots.is_empty() {
                return Err(TlsError::NoSystemRoots(names.ca_file.to_owned()));
            }
        }
    }
    Ok(roots)
}

/// Accepts any server certificate but still checks handshake signatures.
#[derive(Debug)]
struct NoVerification(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
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
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NAMES: SettingNames<'static> = SettingNames {
        ca_file: "MQTT_CA_FILE",
        cert_file: "MQTT_CLIENT_CERT_FILE",
        key_file: "MQTT_CLIENT_KEY_FILE",
    };

    #[test]
    fn errors_name_the_setting_and_file() {
        let missing = Path::new("/nonexistent/ca.pem");
        let e = client_config(
            TlsFiles {
                ca_file: Some(missing),
                ..Default::default()
            },
            NAMES,
        )
        .unwrap_err();
        assert!(
            e.to_string()
                .starts_with("MQTT_CA_FILE: cannot read certificates from /nonexistent/ca.pem"),
            "{e}"
        );

        let dir = std::env::temp_dir().join(format!("qlik-events-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "no pem here").unwrap();
        let e = client_config(
            TlsFiles {
                ca_file: Some(&empty),
                ..Default::default()
            },
            NAMES,
        )
        .unwrap_err();
        assert!(
            e.to_string().contains("MQTT_CA_FILE: no certificate in"),
            "{e}"
        );
        let e = client_config(
            TlsFiles {
                ca_file: None,
                client: Some((&empty, &empty)),
                insecure_skip_verify: true,
            },
            NAMES,
        )
        .unwrap_err();
        assert!(
            e.to_string()
                .starts_with("MQTT_CLIENT_CERT_FILE: no certificate"),
            "{e}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn system_roots_or_insecure() {
        // The system roots exist on any machine that can reach a real broker.
        assert!(client_config(TlsFiles::default(), NAMES).is_ok());
        assert!(client_config(
            TlsFiles {
                insecure_skip_verify: true,
                ..Default::default()
            },
            NAMES
        )
        .is_ok());
    }
}
