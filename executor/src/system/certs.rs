//! TLS certificates for the emulation's inter-router links, made with rcgen: one CA per
//! emulation, and per router cluster a certificate with IP SANs signed by it. Pure: the
//! files are returned, a [`super::System`] writes them.

use super::{SysError, SysResult};
use knetsim_compiler::plan::GenerateCerts;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, SanType,
};

/// A file to write: name inside the request's `dir`, contents, and whether it is a key (0600).
pub struct CertFile {
    pub name: &'static str,
    pub contents: String,
    pub secret: bool,
}

fn err(what: &str, e: impl std::fmt::Display) -> SysError {
    SysError::Invalid {
        what: what.to_string(),
        detail: e.to_string(),
    }
}

/// The files for `req`; `ca` is the signing CA's (certificate PEM, key PEM) when `req.ca_dir` is set.
pub fn generate(req: &GenerateCerts, ca: Option<(&str, &str)>) -> SysResult<Vec<CertFile>> {
    let mut p = CertificateParams::default();
    p.distinguished_name.push(DnType::CommonName, req.common_name.as_str());
    let key = KeyPair::generate().map_err(|e| err("certificate key", e))?;
    match ca {
        None => {
            p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
            let cert = p.self_signed(&key).map_err(|e| err("CA certificate", e))?;
            Ok(vec![
                CertFile {
                    name: "ca.crt",
                    contents: cert.pem(),
                    secret: false,
                },
                CertFile {
                    name: "ca.key",
                    contents: key.serialize_pem(),
                    secret: true,
                },
            ])
        }
        Some((ca_pem, ca_key_pem)) => {
            for ip in &req.ip_sans {
                let ip = ip.parse().map_err(|e| err(&format!("IP SAN '{ip}'"), e))?;
                p.subject_alt_names.push(SanType::IpAddress(ip));
            }
            p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
            let ca_key = KeyPair::from_pem(ca_key_pem).map_err(|e| err("CA key", e))?;
            let ca_params = CertificateParams::from_ca_cert_pem(ca_pem).map_err(|e| err("CA certificate", e))?;
            let ca_cert = ca_params.self_signed(&ca_key).map_err(|e| err("CA certificate", e))?;
            let cert = p
                .signed_by(&key, &ca_cert, &ca_key)
                .map_err(|e| err("certificate", e))?;
            Ok(vec![
                CertFile {
                    name: "ca.crt",
                    contents: ca_pem.to_string(),
                    secret: false,
                },
                CertFile {
                    name: "tls.crt",
                    contents: cert.pem(),
                    secret: false,
                },
                CertFile {
                    name: "tls.key",
                    contents: key.serialize_pem(),
                    secret: true,
                },
            ])
        }
    }
}
