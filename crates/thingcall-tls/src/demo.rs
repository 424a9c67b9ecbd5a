//! A local CA and a server certificate for `thingcall serve --demo`.
//!
//! Made once, in `DIR/tls/`: `ca.pem` (the CA certificate, to give to every
//! SDK), `server.pem` (the server certificate followed by the CA) and
//! `server-key.pem`. The CA's own key is not kept: nothing else can be
//! signed with it later. Files are only readable by their owner.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};

use crate::{TlsError, TlsFiles};

/// The demo certificate's files.
#[derive(Clone, Debug)]
pub struct DemoTls {
    /// The server's chain and key, for [`crate::ServerTls::load`].
    pub files: TlsFiles,
    /// The CA certificate the SDKs must trust.
    pub ca: PathBuf,
    /// Whether they were made now (false: found from an earlier start).
    pub created: bool,
}

/// The names the demo server certificate is valid for.
pub const DEMO_NAMES: [&str; 3] = ["localhost", "127.0.0.1", "::1"];

fn gen_err(e: impl std::fmt::Display) -> TlsError {
    TlsError::Generate(e.to_string())
}

fn write_private(path: &Path, contents: &str) -> Result<(), TlsError> {
    use std::io::Write as _;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let mut f = options
        .open(path)
        .map_err(|e| gen_err(format!("{}: {e}", path.display())))?;
    f.write_all(contents.as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(|e| gen_err(format!("{}: {e}", path.display())))
}

/// Finds the demo certificate in `data_dir/tls`, or makes it.
pub fn ensure(data_dir: &Path) -> Result<DemoTls, TlsError> {
    let dir = data_dir.join("tls");
    let files = TlsFiles::new(dir.join("server.pem"), dir.join("server-key.pem"));
    let ca = dir.join("ca.pem");
    if files.cert.exists() && files.key.exists() && ca.exists() {
        return Ok(DemoTls {
            files,
            ca,
            created: false,
        });
    }
    std::fs::create_dir_all(&dir).map_err(|e| gen_err(format!("{}: {e}", dir.display())))?;

    let ca_key = KeyPair::generate().map_err(gen_err)?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(gen_err)?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "thingcall demo");
    dn.push(DnType::CommonName, "thingcall demo CA");
    ca_params.distinguished_name = dn;
    let ca_cert = ca_params.self_signed(&ca_key).map_err(gen_err)?;
    let issuer = Issuer::new(ca_params, ca_key);

    let server_key = KeyPair::generate().map_err(gen_err)?;
    let mut params =
        CertificateParams::new(DEMO_NAMES.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .map_err(gen_err)?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "localhost");
    params.distinguished_name = dn;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let server_cert = params.signed_by(&server_key, &issuer).map_err(gen_err)?;

    // The key first: a chain without its key would be found next time and
    // fail to load.
    write_private(&files.key, &server_key.serialize_pem())?;
    write_private(
        &files.cert,
        &format!("{}{}", server_cert.pem(), ca_cert.pem()),
    )?;
    std::fs::write(&ca, ca_cert.pem()).map_err(|e| gen_err(format!("{}: {e}", ca.display())))?;
    Ok(DemoTls {
        files,
        ca,
        created: true,
    })
}
