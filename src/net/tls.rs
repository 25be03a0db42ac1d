//! TLS with rustls (ring, the provider reqwest and the AWS client already use): server
//! settings for listeners (certificate, key, optional client CA for mutual TLS, minimum
//! version), re-read when the files change, and client settings for exporters (CA, client
//! certificate, server name override, `insecure_skip_verify`).
//!
//! Files are PEM. A certificate file may hold a chain (leaf first); a key file holds one
//! PKCS#8, PKCS#1 or SEC1 key.

use crate::config::HumanDuration;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

/// The one crypto provider: ring.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
pub enum TlsVersion {
    #[default]
    #[serde(rename = "1.2")]
    V12,
    #[serde(rename = "1.3")]
    V13,
}

impl TlsVersion {
    fn versions(self) -> &'static [&'static rustls::SupportedProtocolVersion] {
        static BOTH: [&rustls::SupportedProtocolVersion; 2] =
            [&rustls::version::TLS13, &rustls::version::TLS12];
        static ONLY_13: [&rustls::SupportedProtocolVersion; 1] = [&rustls::version::TLS13];
        match self {
            TlsVersion::V12 => &BOTH,
            TlsVersion::V13 => &ONLY_13,
        }
    }
}

/// `[receivers.otlp.tls]`, `[service.tls]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerTlsConfig {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    /// Clients must present a certificate signed by one of these CAs (mutual TLS).
    #[serde(default)]
    pub client_ca_file: Option<PathBuf>,
    #[serde(default)]
    pub min_version: TlsVersion,
    /// How often the files are checked for changes; "0s" turns re-reading off.
    #[serde(default = "default_reload_interval")]
    pub reload_interval: HumanDuration,
}

fn default_reload_interval() -> HumanDuration {
    HumanDuration::from_secs(10)
}

/// A problem with a TLS file, with the key (`cert_file`, …) that names it.
#[derive(Debug, Clone)]
pub struct TlsFileError {
    pub key: &'static str,
    pub message: String,
}

impl std::fmt::Display for TlsFileError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

fn file_error(key: &'static str, message: String) -> TlsFileError {
    TlsFileError { key, message }
}

/// Server TLS settings with paths resolved (relative to the configuration file).
#[derive(Debug, Clone)]
pub struct ServerTlsFiles {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    pub client_ca_file: Option<PathBuf>,
    pub min_version: TlsVersion,
    pub reload_interval: Duration,
}

impl ServerTlsConfig {
    /// Resolves the paths and reads the files once, so `validate` and start-up report a
    /// missing file, a file that does not parse, a key that does not match the
    /// certificate or an expired certificate.
    pub fn check(
        &self,
        resolve: impl Fn(&Path) -> PathBuf,
    ) -> Result<ServerTlsFiles, TlsFileError> {
        let files = ServerTlsFiles {
            cert_file: resolve(&self.cert_file),
            key_file: resolve(&self.key_file),
            client_ca_file: self.client_ca_file.as_deref().map(&resolve),
            min_version: self.min_version,
            reload_interval: self.reload_interval.get(),
        };
        files.read()?.build()?;
        Ok(files)
    }
}

/// The bytes of the files, as read at one moment.
#[derive(Clone, PartialEq, Eq)]
struct FileContents {
    cert: Vec<u8>,
    key: Vec<u8>,
    client_ca: Option<Vec<u8>>,
}

impl ServerTlsFiles {
    fn read(&self) -> Result<ServerTlsRead<'_>, TlsFileError> {
        let read = |key: &'static str, p: &Path| {
            std::fs::read(p)
                .map_err(|e| file_error(key, format!("cannot read {}: {e}", p.display())))
        };
        Ok(ServerTlsRead {
            files: self,
            contents: FileContents {
                cert: read("cert_file", &self.cert_file)?,
                key: read("key_file", &self.key_file)?,
                client_ca: match &self.client_ca_file {
                    Some(p) => Some(read("client_ca_file", p)?),
                    None => None,
                },
            },
        })
    }
}

struct ServerTlsRead<'a> {
    files: &'a ServerTlsFiles,
    contents: FileContents,
}

impl ServerTlsRead<'_> {
    fn build(&self) -> Result<(Arc<ServerConfig>, CertSummary), TlsFileError> {
        let f = self.files;
        let key = identity(
            &self.contents.cert,
            &f.cert_file,
            &self.contents.key,
            &f.key_file,
        )?;
        let summary = CertSummary::of(&key.cert[0]);
        let provider = provider();
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(f.min_version.versions())
            .map_err(|e| file_error("min_version", e.to_string()))?;
        let builder = match (&self.contents.client_ca, &f.client_ca_file) {
            (Some(pem), Some(path)) => {
                let roots = roots(pem, path).map_err(|m| file_error("client_ca_file", m))?;
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                        .build()
                        .map_err(|e| {
                            file_error(
                                "client_ca_file",
                                format!("{}: unusable CA: {e}", path.display()),
                            )
                        })?;
                builder.with_client_cert_verifier(verifier)
            }
            _ => builder.with_no_client_auth(),
        };
        let mut config = builder.with_cert_resolver(Arc::new(Fixed(Arc::new(key))));
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok((Arc::new(config), summary))
    }
}

#[derive(Debug)]
struct Fixed(Arc<CertifiedKey>);

impl ResolvesServerCert for Fixed {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
}

/// Certificates in a PEM file; an error names the file and what is wrong.
fn certs(pem: &[u8], path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{}: not a PEM certificate file: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "{}: holds no certificate (expected -----BEGIN CERTIFICATE-----)",
            path.display()
        ));
    }
    Ok(certs)
}

fn roots(pem: &[u8], path: &Path) -> Result<RootCertStore, String> {
    let mut store = RootCertStore::empty();
    for c in certs(pem, path)? {
        store
            .add(c)
            .map_err(|e| format!("{}: not a usable CA certificate: {e}", path.display()))?;
    }
    Ok(store)
}

/// A certificate chain and its key, checked: both parse, the key is one rustls can sign
/// with, it belongs to the certificate, and the certificate is valid now.
fn identity(
    cert_pem: &[u8],
    cert_path: &Path,
    key_pem: &[u8],
    key_path: &Path,
) -> Result<CertifiedKey, TlsFileError> {
    let chain = certs(cert_pem, cert_path).map_err(|m| file_error("cert_file", m))?;
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| {
        file_error(
            "key_file",
            format!(
                "{}: not a PEM private key (PKCS#8, PKCS#1 or SEC1): {e}",
                key_path.display()
            ),
        )
    })?;
    let signer = rustls::crypto::ring::sign::any_supported_type(&key).map_err(|e| {
        file_error(
            "key_file",
            format!("{}: unusable private key: {e}", key_path.display()),
        )
    })?;
    let certified = CertifiedKey::new(chain, signer);
    certified.keys_match().map_err(|_| {
        file_error(
            "key_file",
            format!(
                "{} does not match the certificate in {} (a key of another certificate?)",
                key_path.display(),
                cert_path.display()
            ),
        )
    })?;
    if let Some((not_before, not_after)) = validity(&certified.cert[0]) {
        let now = SystemTime::now();
        if now > not_after {
            return Err(file_error(
                "cert_file",
                format!(
                    "{}: the certificate expired on {}",
                    cert_path.display(),
                    humantime::format_rfc3339_seconds(not_after)
                ),
            ));
        }
        if now < not_before {
            return Err(file_error(
                "cert_file",
                format!(
                    "{}: the certificate is not valid before {}",
                    cert_path.display(),
                    humantime::format_rfc3339_seconds(not_before)
                ),
            ));
        }
    }
    Ok(certified)
}

/// What `/status` says about the certificate in use.
#[derive(Debug, Clone, Default)]
struct CertSummary {
    not_after: Option<SystemTime>,
}

impl CertSummary {
    fn of(cert: &CertificateDer<'_>) -> CertSummary {
        CertSummary {
            not_after: validity(cert).map(|v| v.1),
        }
    }
}

/// A listener's TLS: the current server configuration (new handshakes take it; open
/// connections keep the one they started with) and its reloading.
pub struct ServerTls {
    files: ServerTlsFiles,
    current: RwLock<Arc<ServerConfig>>,
    state: Mutex<ReloadState>,
}

struct ReloadState {
    /// What the current configuration was built from.
    good: FileContents,
    /// The last contents that failed, so a bad file is reported once, not every poll.
    bad: Option<FileContents>,
    summary: CertSummary,
    last_reload: Option<SystemTime>,
    last_error: Option<String>,
}

/// The outcome of one poll of the files.
#[derive(Debug, PartialEq, Eq)]
pub enum Reload {
    Unchanged,
    Reloaded,
    /// The files changed but do not make a working configuration; the old one stays.
    Refused(String),
    /// After a refusal, the files hold what is in use again (a rollback, a file back in
    /// place): nothing to swap, the error is over.
    Restored,
}

impl ServerTls {
    pub fn load(files: ServerTlsFiles) -> Result<Arc<ServerTls>, TlsFileError> {
        let read = files.read()?;
        let (config, summary) = read.build()?;
        let good = read.contents;
        Ok(Arc::new(ServerTls {
            files,
            current: RwLock::new(config),
            state: Mutex::new(ReloadState {
                good,
                bad: None,
                summary,
                last_reload: None,
                last_error: None,
            }),
        }))
    }

    /// The configuration a new handshake uses.
    pub fn config(&self) -> Arc<ServerConfig> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn reload_interval(&self) -> Duration {
        self.files.reload_interval
    }

    /// Reads the files; if they changed, builds a new configuration and swaps it in.
    pub fn poll(&self) -> Reload {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let read = match self.files.read() {
            Ok(r) => r,
            Err(e) => {
                // A file briefly missing while it is replaced: report, keep the old one.
                let message = format!("TLS files not reloaded, still using the previous ones: {e}");
                if st.last_error.as_deref() == Some(message.as_str()) {
                    return Reload::Unchanged;
                }
                st.last_error = Some(message.clone());
                return Reload::Refused(message);
            }
        };
        if read.contents == st.good {
            if st.last_error.take().is_some() {
                st.bad = None;
                return Reload::Restored;
            }
            return Reload::Unchanged;
        }
        if st.bad.as_ref() == Some(&read.contents) {
            return Reload::Unchanged;
        }
        match read.build() {
            Ok((config, summary)) => {
                *self.current.write().unwrap_or_else(|e| e.into_inner()) = config;
                st.good = read.contents;
                st.bad = None;
                st.summary = summary;
                st.last_reload = Some(SystemTime::now());
                st.last_error = None;
                Reload::Reloaded
            }
            Err(e) => {
                let message = format!(
                    "TLS files changed but were refused, still using the previous ones: {e}"
                );
                st.bad = Some(read.contents);
                st.last_error = Some(message.clone());
                Reload::Refused(message)
            }
        }
    }

    /// Polls the files every `reload_interval` (unless 0) until `shutdown`, telling
    /// `on` what each poll found.
    pub fn spawn_watch(
        self: &Arc<Self>,
        shutdown: tokio_util::sync::CancellationToken,
        on: impl Fn(Reload) + Send + 'static,
    ) {
        let every = self.files.reload_interval;
        if every.is_zero() {
            return;
        }
        let tls = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tick.tick() => {}
                }
                let t = tls.clone();
                // File reads and certificate parsing: off the async workers.
                match tokio::task::spawn_blocking(move || t.poll()).await {
                    Ok(r) => on(r),
                    Err(e) => on(Reload::Refused(format!("reloading TLS files failed: {e}"))),
                }
            }
        });
    }

    /// One line for `/status`.
    pub fn describe(&self) -> String {
        let st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let mut s = format!(
            "tls: {}{}",
            self.files.cert_file.display(),
            if self.files.client_ca_file.is_some() {
                " (mutual TLS)"
            } else {
                ""
            }
        );
        if let Some(t) = st.summary.not_after {
            s.push_str(&format!(
                ", expires {}",
                humantime::format_rfc3339_seconds(t)
            ));
        }
        if let Some(t) = st.last_reload {
            s.push_str(&format!(
                ", reloaded {}",
                humantime::format_rfc3339_seconds(t)
            ));
        }
        if let Some(e) = &st.last_error {
            s.push_str(&format!("; {e}"));
        }
        s
    }
}

// ---------------------------------------------------------------------------------------
// Clients

/// `[exporters.otlp.tls]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientTlsConfig {
    /// CAs that sign the server's certificate; the system's roots when unset.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// A client certificate and key, for servers that ask for one (mutual TLS).
    #[serde(default)]
    pub cert_file: Option<PathBuf>,
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    /// The name the server's certificate must carry, when it is not the endpoint's host.
    #[serde(default)]
    pub server_name: Option<String>,
    /// Accept any server certificate. For tests only: the connection is encrypted but
    /// anyone in the path can read it.
    #[serde(default)]
    pub insecure_skip_verify: bool,
    #[serde(default)]
    pub min_version: TlsVersion,
}

impl ClientTlsConfig {
    /// A rustls client configuration with `alpn` offered.
    pub fn build(
        &self,
        resolve: impl Fn(&Path) -> PathBuf,
        alpn: &[&[u8]],
    ) -> Result<ClientConfig, TlsFileError> {
        let provider = provider();
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(self.min_version.versions())
            .map_err(|e| file_error("min_version", e.to_string()))?;
        let roots = match &self.ca_file {
            Some(p) => {
                let p = resolve(p);
                let pem = std::fs::read(&p).map_err(|e| {
                    file_error("ca_file", format!("cannot read {}: {e}", p.display()))
                })?;
                roots(&pem, &p).map_err(|m| file_error("ca_file", m))?
            }
            None => system_roots(),
        };
        let roots = Arc::new(roots);
        let verifier: Arc<dyn ServerCertVerifier> = if self.insecure_skip_verify {
            Arc::new(NoVerification(provider.clone()))
        } else {
            let webpki =
                rustls::client::WebPkiServerVerifier::builder_with_provider(roots, provider)
                    .build()
                    .map_err(|e| file_error("ca_file", format!("unusable CA: {e}")))?;
            match &self.server_name {
                Some(name) => {
                    let name = ServerName::try_from(name.clone()).map_err(|e| {
                        file_error("server_name", format!("invalid server name {name:?}: {e}"))
                    })?;
                    Arc::new(FixedName {
                        inner: webpki,
                        name,
                    })
                }
                None => webpki,
            }
        };
        let builder = builder
            .dangerous()
            .with_custom_certificate_verifier(verifier);
        let mut config = match (&self.cert_file, &self.key_file) {
            (Some(c), Some(k)) => {
                let (c, k) = (resolve(c), resolve(k));
                let read = |key: &'static str, p: &Path| {
                    std::fs::read(p)
                        .map_err(|e| file_error(key, format!("cannot read {}: {e}", p.display())))
                };
                let (cert_pem, key_pem) = (read("cert_file", &c)?, read("key_file", &k)?);
                let id = identity(&cert_pem, &c, &key_pem, &k)?;
                let key = PrivateKeyDer::from_pem_slice(&key_pem)
                    .map_err(|e| file_error("key_file", e.to_string()))?;
                builder
                    .with_client_auth_cert(id.cert.clone(), key)
                    .map_err(|e| file_error("key_file", e.to_string()))?
            }
            (None, None) => builder.with_no_client_auth(),
            (Some(_), None) => {
                return Err(file_error(
                    "key_file",
                    "cert_file is set without key_file: set both, or neither".into(),
                ))
            }
            (None, Some(_)) => {
                return Err(file_error(
                    "cert_file",
                    "key_file is set without cert_file: set both, or neither".into(),
                ))
            }
        };
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(config)
    }
}

/// The operating system's trusted roots (`/etc/ssl/certs` and the like).
fn system_roots() -> RootCertStore {
    let mut store = RootCertStore::empty();
    let found = rustls_native_certs::load_native_certs();
    for e in &found.errors {
        tracing::warn!(error = %e, "reading the system's trusted certificates");
    }
    let (added, _ignored) = store.add_parsable_certificates(found.certs);
    if added == 0 {
        tracing::warn!("no trusted certificates found on this system: set tls.ca_file");
    }
    store
}

/// Checks the server's certificate against a configured name instead of the endpoint's
/// host (an endpoint by IP address, a certificate by name).
#[derive(Debug)]
struct FixedName {
    inner: Arc<rustls::client::WebPkiServerVerifier>,
    name: ServerName<'static>,
}

impl ServerCertVerifier for FixedName {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.inner
            .verify_server_cert(end_entity, intermediates, &self.name, ocsp, now)
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// `insecure_skip_verify`: any certificate is taken; signatures are still checked, so the
/// handshake is a real one.
#[derive(Debug)]
struct NoVerification(Arc<CryptoProvider>);

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
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

/// A connector for tonic channels (and any hyper client): opens a TCP connection to the
/// URI's host and port and runs the TLS handshake with `config`. tonic is built without its
/// own TLS, so the CA, client certificate, server name override and `insecure_skip_verify`
/// come from [`ClientTlsConfig`], as for the HTTP transport.
#[derive(Clone)]
pub struct TlsConnect {
    config: std::sync::Arc<rustls::ClientConfig>,
}

impl tower::Service<http::Uri> for TlsConnect {
    type Response = hyper_util::rt::TokioIo<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>;
    type Error = std::io::Error;
    type Future = futures_util::future::BoxFuture<'static, Result<Self::Response, std::io::Error>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), std::io::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let config = self.config.clone();
        Box::pin(async move {
            use std::io::{Error, ErrorKind};
            let host = uri
                .host()
                .ok_or_else(|| Error::new(ErrorKind::InvalidInput, "the endpoint has no host"))?
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned();
            let port = uri.port_u16().unwrap_or(443);
            let tcp = tokio::net::TcpStream::connect((host.as_str(), port)).await?;
            tcp.set_nodelay(true)?;
            let name = rustls::pki_types::ServerName::try_from(host.clone())
                .map_err(|e| Error::new(ErrorKind::InvalidInput, format!("{host}: {e}")))?;
            let tls = tokio_rustls::TlsConnector::from(config)
                .connect(name, tcp)
                .await
                .map_err(|e| {
                    Error::new(
                        e.kind(),
                        format!("TLS handshake with {host}:{port} failed: {e}"),
                    )
                })?;
            Ok(hyper_util::rt::TokioIo::new(tls))
        })
    }
}

impl TlsConnect {
    pub fn new(config: Arc<ClientConfig>) -> TlsConnect {
        TlsConnect { config }
    }
}

// ---------------------------------------------------------------------------------------
// Reading a certificate's validity (a few DER elements; no X.509 library needed)

/// `(notBefore, notAfter)` of a DER certificate, `None` if it cannot be read.
fn validity(cert: &CertificateDer<'_>) -> Option<(SystemTime, SystemTime)> {
    let (tag, cert, _) = der(cert.as_ref())?;
    if tag != 0x30 {
        return None;
    }
    let (tag, mut tbs, _) = der(cert)?;
    if tag != 0x30 {
        return None;
    }
    // [0] version (optional), serialNumber, signature, issuer, validity.
    let mut skipped = 0;
    loop {
        let (tag, _, rest) = der(tbs)?;
        if tag == 0xa0 {
            tbs = rest;
            continue;
        }
        if skipped == 3 {
            break;
        }
        tbs = rest;
        skipped += 1;
    }
    let (tag, validity, _) = der(tbs)?;
    if tag != 0x30 {
        return None;
    }
    let (t1, v1, rest) = der(validity)?;
    let (t2, v2, _) = der(rest)?;
    Some((time(t1, v1)?, time(t2, v2)?))
}

/// One DER element: (tag, contents, the rest).
fn der(b: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let tag = *b.first()?;
    let first = *b.get(1)? as usize;
    let (len, start) = if first < 0x80 {
        (first, 2)
    } else {
        let n = first & 0x7f;
        if n == 0 || n > 4 {
            return None;
        }
        let mut len = 0usize;
        for i in 0..n {
            len = (len << 8) | *b.get(2 + i)? as usize;
        }
        (len, 2 + n)
    };
    let end = start.checked_add(len)?;
    Some((tag, b.get(start..end)?, b.get(end..)?))
}

/// UTCTime (`YYMMDDHHMMSSZ`) or GeneralizedTime (`YYYYMMDDHHMMSSZ`).
fn time(tag: u8, v: &[u8]) -> Option<SystemTime> {
    let s = std::str::from_utf8(v).ok()?.strip_suffix('Z')?;
    let (year, rest) = match tag {
        0x17 => {
            let yy: i64 = s.get(..2)?.parse().ok()?;
            (if yy < 50 { 2000 + yy } else { 1900 + yy }, s.get(2..)?)
        }
        0x18 => (s.get(..4)?.parse().ok()?, s.get(4..)?),
        _ => return None,
    };
    let n = |i: usize| -> Option<i64> { rest.get(i..i + 2)?.parse().ok() };
    let (month, day, h, m, sec) = (n(0)?, n(2)?, n(4)?, n(6)?, n(8)?);
    let days = days_from_civil(year, month, day);
    let secs = days * 86_400 + h * 3600 + m * 60 + sec;
    if secs >= 0 {
        Some(SystemTime::UNIX_EPOCH + Duration::from_secs(secs as u64))
    } else {
        Some(SystemTime::UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs()))
    }
}

/// Days since 1970-01-01 (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_days() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(
            time(0x17, b"491231235959Z"),
            Some(SystemTime::UNIX_EPOCH + Duration::from_secs(2_524_607_999))
        );
        assert_eq!(
            time(0x18, b"20000301000000Z"),
            Some(SystemTime::UNIX_EPOCH + Duration::from_secs(11_017 * 86_400))
        );
    }
}
