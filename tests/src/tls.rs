//! A throw-away certificate authority for TLS tests: a CA, a server certificate for
//! `localhost`/127.0.0.1 and client certificates, written as PEM files.

use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use std::path::{Path, PathBuf};

pub struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    pub ca_file: PathBuf,
    dir: PathBuf,
}

/// A certificate and its key on disk.
pub struct CertFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl TestCa {
    /// Creates a CA named `name` and writes `<name>-ca.pem` into `dir`.
    pub fn new(dir: &Path, name: &str) -> TestCa {
        let key = KeyPair::generate().expect("CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, format!("{name} test CA"));
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let cert = params.self_signed(&key).expect("CA certificate");
        let ca_file = dir.join(format!("{name}-ca.pem"));
        std::fs::write(&ca_file, cert.pem()).expect("write CA");
        TestCa {
            issuer: Issuer::new(params, key),
            ca_file,
            dir: dir.to_owned(),
        }
    }

    /// Issues a certificate for `names` (DNS names or IP addresses), written as `<file>.pem`
    /// and `<file>-key.pem`.
    pub fn issue(&self, file: &str, names: &[&str]) -> CertFiles {
        let key = KeyPair::generate().expect("key");
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = CertificateParams::new(names).expect("params");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, file);
        let cert = params.signed_by(&key, &self.issuer).expect("certificate");
        let files = CertFiles {
            cert: self.dir.join(format!("{file}.pem")),
            key: self.dir.join(format!("{file}-key.pem")),
        };
        std::fs::write(&files.cert, cert.pem()).expect("write cert");
        std::fs::write(&files.key, key.serialize_pem()).expect("write key");
        files
    }
}
