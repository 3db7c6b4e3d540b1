//! Who may join a QUIC link, and who the remote is: TLS 1.3 with mutual
//! authentication, admission by an app key.
//!
//! Until peers have identities of their own (the identity issue), every
//! peer of an app holds the same *app key*. From it each peer derives the
//! same *app CA* key pair, deterministically: HKDF-SHA256 of the key (salt
//! [`CA_SALT`], info [`CA_INFO`]) gives a 32-byte Ed25519 seed. Each peer
//! then issues itself a fresh leaf certificate (a new Ed25519 key per
//! start), signed by the app CA, whose subject alternative names are the
//! shared name [`SERVER_NAME`] and the peer's own name
//! `p<peer id, 16 hex digits>.`[`SERVER_NAME`].
//!
//! Both sides of a connection verify the other's chain to the app CA
//! (rustls' WebPKI verifiers, the client also checking [`SERVER_NAME`]), so
//! a peer without the app key cannot complete a handshake: it can neither
//! read nor write. After the handshake each side names its peer id in a
//! preamble ([`super`]), and the other checks that the certificate holds
//! that peer's name (`certifies`); the sync session then checks that
//! its Hello names the same peer.
//!
//! Limits: anyone holding the app key can make a certificate for any peer
//! id, so insiders can impersonate each other; and a leaked key admits
//! anyone until every peer changes it. Per-peer identities (keys bound to
//! peer ids by an authority) replace this with the identity issue.

use rhizome_engine::hlc::PeerId;
use ring::hkdf;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use std::fmt;
use std::sync::Arc;

/// The name every peer's certificate carries (the client's SNI); `.invalid`
/// is reserved, so it never clashes with a real host.
pub const SERVER_NAME: &str = "peers.rhizome.invalid";
/// HKDF salt of the app CA's seed (versioned: a new scheme changes it).
pub const CA_SALT: &[u8] = b"rhizome app CA v1";
/// HKDF info of the app CA's seed.
pub const CA_INFO: &[u8] = b"ed25519 seed";
/// ALPN protocol id of Rhizome sync over QUIC.
pub const ALPN: &[u8] = b"rhizome-sync/1";
/// Shortest app key accepted, in bytes.
pub const MIN_APP_KEY_BYTES: usize = 8;
/// HKDF salt of the app's public tag ([`AppKey::tag`]).
pub const TAG_SALT: &[u8] = b"rhizome app tag v1";

/// The secret shared by all peers of an app; admission to its links.
#[derive(Clone, PartialEq, Eq)]
pub struct AppKey(Vec<u8>);

impl AppKey {
    /// An app key from its bytes (at least [`MIN_APP_KEY_BYTES`]).
    pub fn new(bytes: impl Into<Vec<u8>>) -> Result<AppKey, IdentityError> {
        let bytes = bytes.into();
        if bytes.len() < MIN_APP_KEY_BYTES {
            return Err(IdentityError::AppKeyTooShort { len: bytes.len() });
        }
        Ok(AppKey(bytes))
    }

    /// The secret's bytes (for the other links' derivations, such as the
    /// BLE app tag and auth key).
    pub(crate) fn bytes(&self) -> &[u8] {
        &self.0
    }

    /// The app's public tag, 16 hex digits: HKDF-SHA256 of the key (salt
    /// [`TAG_SALT`]), a one-way function, so discovery can advertise it to
    /// keep apps apart without revealing the key. Like the app CA's public
    /// key, which every handshake shows, it lets whoever sees it test
    /// guesses of the key offline: app keys must be long random strings.
    pub fn tag(&self) -> String {
        let mut tag = [0u8; 8];
        let filled = hkdf::Salt::new(hkdf::HKDF_SHA256, TAG_SALT)
            .extract(&self.0)
            .expand(&[b"discovery tag"], Len(tag.len()))
            .and_then(|okm| okm.fill(&mut tag));
        // Only a length over 255 hash blocks fails; 8 bytes never do.
        debug_assert!(filled.is_ok());
        tag.iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// An HKDF output length.
struct Len(usize);

impl hkdf::KeyType for Len {
    fn len(&self) -> usize {
        self.0
    }
}

impl fmt::Debug for AppKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print the secret.
        write!(f, "AppKey({} bytes)", self.0.len())
    }
}

/// Why a peer's TLS identity could not be made.
#[derive(Debug)]
#[non_exhaustive]
pub enum IdentityError {
    /// The app key is shorter than [`MIN_APP_KEY_BYTES`].
    AppKeyTooShort {
        /// Its length, in bytes.
        len: usize,
    },
    /// Making a key pair or certificate failed.
    Certificate(rcgen::Error),
    /// rustls refused the configuration.
    Tls(rustls::Error),
    /// The client certificate verifier could not be built.
    Verifier(rustls::server::VerifierBuilderError),
    /// quinn refused the TLS configuration (no TLS 1.3 suite QUIC can use).
    Quic(quinn::crypto::rustls::NoInitialCipherSuite),
}

impl fmt::Display for IdentityError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IdentityError::AppKeyTooShort { len } => {
                write!(
                    f,
                    "the app key has {len} bytes; at least {MIN_APP_KEY_BYTES} are needed"
                )
            }
            IdentityError::Certificate(e) => write!(f, "certificate: {e}"),
            IdentityError::Tls(e) => write!(f, "TLS configuration: {e}"),
            IdentityError::Verifier(e) => write!(f, "client verifier: {e}"),
            IdentityError::Quic(e) => write!(f, "QUIC TLS configuration: {e}"),
        }
    }
}

impl std::error::Error for IdentityError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            IdentityError::Certificate(e) => Some(e),
            IdentityError::Tls(e) => Some(e),
            IdentityError::Verifier(e) => Some(e),
            IdentityError::Quic(e) => Some(e),
            IdentityError::AppKeyTooShort { .. } => None,
        }
    }
}

impl From<rcgen::Error> for IdentityError {
    fn from(e: rcgen::Error) -> Self {
        IdentityError::Certificate(e)
    }
}

impl From<rustls::Error> for IdentityError {
    fn from(e: rustls::Error) -> Self {
        IdentityError::Tls(e)
    }
}

/// A peer's name in certificates.
pub fn peer_name(peer: PeerId) -> String {
    format!("p{peer}.{SERVER_NAME}")
}

/// The PKCS#8 v1 prefix of an Ed25519 private key (RFC 8410): the 32-byte
/// seed follows.
const ED25519_PKCS8_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];

/// The app CA's key pair, the same on every peer holding `key`.
fn ca_key(key: &AppKey) -> Result<rcgen::KeyPair, IdentityError> {
    let mut seed = [0u8; 32];
    hkdf::Salt::new(hkdf::HKDF_SHA256, CA_SALT)
        .extract(&key.0)
        .expand(&[CA_INFO], Len(seed.len()))
        .and_then(|okm| okm.fill(&mut seed))
        .map_err(|_| IdentityError::Certificate(rcgen::Error::CouldNotParseKeyPair))?;
    let mut pkcs8 = ED25519_PKCS8_PREFIX.to_vec();
    pkcs8.extend_from_slice(&seed);
    Ok(rcgen::KeyPair::try_from(&PrivatePkcs8KeyDer::from(pkcs8))?)
}

/// The app CA's certificate. Its bytes may differ between peers (rcgen
/// picks the serial), but its subject and key, which is what a trust
/// anchor is, are the same.
fn ca_cert(ca: &rcgen::KeyPair) -> Result<rcgen::Certificate, IdentityError> {
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "rhizome app CA");
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign, rcgen::KeyUsagePurpose::CrlSign];
    Ok(params.self_signed(ca)?)
}

/// A leaf certificate for `peer` signed by the app CA, and its key.
fn leaf(
    peer: PeerId,
    ca: &rcgen::KeyPair,
    ca_cert: &rcgen::Certificate,
) -> Result<(CertificateDer<'static>, PrivateKeyDer<'static>), IdentityError> {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519)?;
    let mut params = rcgen::CertificateParams::new(vec![SERVER_NAME.to_string(), peer_name(peer)])?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, format!("rhizome peer {peer}"));
    params.extended_key_usages = vec![
        rcgen::ExtendedKeyUsagePurpose::ServerAuth,
        rcgen::ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.use_authority_key_identifier_extension = true;
    let cert = params.signed_by(&key, ca_cert, ca)?;
    let der = PrivatePkcs8KeyDer::from(key.serialize_der());
    Ok((cert.der().clone(), PrivateKeyDer::Pkcs8(der)))
}

/// The QUIC endpoint configurations of peer `me` in the app of `key`:
/// TLS 1.3 only, client certificates required, both sides verifying the
/// other's chain to the app CA.
pub(crate) fn configs(key: &AppKey, me: PeerId) -> Result<(quinn::ServerConfig, quinn::ClientConfig), IdentityError> {
    let ca = ca_key(key)?;
    let ca_cert = ca_cert(&ca)?;
    let (cert, private) = leaf(me, &ca, &ca_cert)?;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca_cert.der().clone())?;
    let roots = Arc::new(roots);
    let provider = Arc::new(rustls::crypto::ring::default_provider());

    let client_verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
        .build()
        .map_err(IdentityError::Verifier)?;
    let mut server = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(client_verifier)
        .with_single_cert(vec![cert.clone()], private.clone_key())?;
    server.alpn_protocols = vec![ALPN.to_vec()];

    let mut client = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots)
        .with_client_auth_cert(vec![cert], private)?;
    client.alpn_protocols = vec![ALPN.to_vec()];

    let server = quinn::crypto::rustls::QuicServerConfig::try_from(server).map_err(IdentityError::Quic)?;
    let client = quinn::crypto::rustls::QuicClientConfig::try_from(client).map_err(IdentityError::Quic)?;
    Ok((
        quinn::ServerConfig::with_crypto(Arc::new(server)),
        quinn::ClientConfig::new(Arc::new(client)),
    ))
}

/// Whether the remote's certificate on `conn` (already verified against
/// the app CA by the handshake) names `claimed`.
pub(crate) fn certifies(conn: &quinn::Connection, claimed: PeerId) -> bool {
    let Some(identity) = conn.peer_identity() else {
        return false;
    };
    let Ok(chain) = identity.downcast::<Vec<CertificateDer<'static>>>() else {
        return false;
    };
    let Some(end_entity) = chain.first() else {
        return false;
    };
    let Ok(parsed) = rustls::server::ParsedCertificate::try_from(end_entity) else {
        return false;
    };
    let Ok(name) = ServerName::try_from(peer_name(claimed)) else {
        return false;
    };
    rustls::client::verify_server_name(&parsed, &name).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_app_ca_key_is_a_function_of_the_app_key() {
        let a = AppKey::new(*b"app key one").unwrap();
        let b = AppKey::new(*b"app key two").unwrap();
        let pk = |k: &AppKey| ca_key(k).unwrap().public_key_raw().to_vec();
        assert_eq!(pk(&a), pk(&a));
        assert_ne!(pk(&a), pk(&b));
    }

    #[test]
    fn short_app_keys_are_refused() {
        assert!(matches!(
            AppKey::new(*b"short"),
            Err(IdentityError::AppKeyTooShort { len: 5 })
        ));
        assert_eq!(
            format!("{:?}", AppKey::new(*b"secret key").unwrap()),
            "AppKey(10 bytes)"
        );
    }
}
