//! Hostile remotes against a real [`QuicTransport`] on loopback: an
//! outsider that skips certificate checks, and insiders (holding the app
//! key) that lie about their peer id or send bad frames. None gets a link
//! or writes anything; the listener says why with a close code.

use super::*;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use serde_json::json;

const KEY: &[u8] = b"the app key of the unit tests";

/// A listening peer holding one document, and its transport's events.
async fn listener() -> (Peer, QuicTransport, mpsc::Receiver<LinkEvent>) {
    let peer = Peer::open(rhizome_actors::PeerConfig::memory()).await.expect("open");
    peer.store()
        .execute("INSERT INTO t DOCUMENTS ({'_id': 'mine'})", json!({}))
        .await
        .expect("insert");
    let mut config = QuicConfig::new(AppKey::new(KEY).expect("key"));
    config.listen = SocketAddr::from(([127, 0, 0, 1], 0));
    let t = QuicTransport::start(peer.clone(), config).await.expect("start");
    let events = t.take_events().expect("events");
    (peer, t, events)
}

async fn documents(peer: &Peer) -> usize {
    let out = peer
        .store()
        .execute("SELECT * FROM t", json!({}))
        .await
        .expect("select");
    out.items.len()
}

/// Dials `to` with `client`; the connection, if the handshake passes on
/// this side.
async fn dial(client: quinn::ClientConfig, to: SocketAddr) -> Result<quinn::Connection, quinn::ConnectionError> {
    let mut endpoint = quinn::Endpoint::client(SocketAddr::from(([127, 0, 0, 1], 0))).expect("client endpoint");
    endpoint.set_default_client_config(client);
    let connecting = endpoint.connect(to, tls::SERVER_NAME).expect("connect");
    tokio::time::timeout(Duration::from_secs(5), connecting)
        .await
        .expect("handshake in time")
}

/// How the listener closed `conn` (its application close code).
async fn close_code(conn: &quinn::Connection) -> Option<u64> {
    match tokio::time::timeout(Duration::from_secs(5), conn.closed()).await {
        Ok(quinn::ConnectionError::ApplicationClosed(c)) => Some(c.error_code.into_inner()),
        Ok(_) => None,
        Err(_) => panic!("the listener did not close the connection"),
    }
}

fn preamble(id: PeerId) -> [u8; PREAMBLE_BYTES] {
    let mut p = [0u8; PREAMBLE_BYTES];
    p[..4].copy_from_slice(&PREAMBLE_MAGIC);
    p[4..].copy_from_slice(&id.0.to_be_bytes());
    p
}

/// An insider: holds the app key, so its certificate (for `cert_for`)
/// passes; opens the stream and sends `preamble(claims)`.
async fn insider(
    to: SocketAddr,
    cert_for: PeerId,
    claims: PeerId,
) -> (quinn::Connection, quinn::SendStream, quinn::RecvStream) {
    let (_, client) = tls::configs(&AppKey::new(KEY).expect("key"), cert_for).expect("configs");
    let conn = dial(client, to).await.expect("an insider's handshake passes");
    let (mut send, recv) = conn.open_bi().await.expect("stream");
    send.write_all(&preamble(claims)).await.expect("preamble");
    (conn, send, recv)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_insider_claiming_another_peer_id_is_closed_with_the_identity_code() {
    let (peer, t, mut events) = listener().await;
    let addr = t.local_addr().expect("addr");
    let (conn, _send, _recv) = insider(addr, PeerId(7), PeerId(8)).await;
    assert_eq!(close_code(&conn).await, Some(u64::from(CLOSE_IDENTITY)));
    let ev = events.recv().await.expect("event");
    assert!(
        matches!(
            ev,
            LinkEvent::Failed {
                reason: LinkError::NotCertified { claimed: PeerId(8) },
                ..
            }
        ),
        "{ev:?}"
    );
    assert!(peer.presence().graph().peers.is_empty());
    t.close().await;
    peer.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frame_over_the_limit_closes_the_link_with_the_protocol_code() {
    let (peer, t, mut events) = listener().await;
    let addr = t.local_addr().expect("addr");
    let (conn, mut send, _recv) = insider(addr, PeerId(7), PeerId(7)).await;
    let up = events.recv().await.expect("event");
    assert!(matches!(up, LinkEvent::Up { remote: PeerId(7), .. }), "{up:?}");
    send.write_all(&u32::MAX.to_be_bytes()).await.expect("length");
    assert_eq!(close_code(&conn).await, Some(u64::from(CLOSE_PROTOCOL)));
    let down = events.recv().await.expect("event");
    assert!(
        matches!(
            down,
            LinkEvent::Down {
                reason: LinkError::FrameTooLarge { len: u32::MAX, .. },
                ..
            }
        ),
        "{down:?}"
    );
    t.close().await;
    peer.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_frames_end_the_session_and_the_link_without_writing() {
    let (peer, t, mut events) = listener().await;
    let addr = t.local_addr().expect("addr");
    let (conn, mut send, _recv) = insider(addr, PeerId(7), PeerId(7)).await;
    let garbage: Vec<u8> = (0..64u8).map(|i| i.wrapping_mul(37)).collect();
    for _ in 0..3 {
        send.write_all(&(garbage.len() as u32).to_be_bytes())
            .await
            .expect("length");
        send.write_all(&garbage).await.expect("frame");
    }
    // The session refuses the frame and ends; so does the link.
    assert_eq!(close_code(&conn).await, Some(u64::from(CLOSE_NORMAL)));
    let mut saw_down = false;
    while let Ok(Some(ev)) = tokio::time::timeout(Duration::from_secs(2), events.recv()).await {
        saw_down |= matches!(ev, LinkEvent::Down { remote: PeerId(7), .. });
    }
    assert!(saw_down);
    assert_eq!(documents(&peer).await, 1);
    t.close().await;
    peer.close().await;
}

/// A client that accepts any server certificate (an outsider skipping the
/// checks on its side).
#[derive(Debug)]
struct AcceptAnything(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AcceptAnything {
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
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outsider_that_skips_checks_can_neither_read_nor_write() {
    let (peer, t, mut events) = listener().await;
    let addr = t.local_addr().expect("addr");
    // A self-signed certificate naming the right server name and a peer.
    let fake = rcgen::generate_simple_self_signed(vec![tls::SERVER_NAME.to_string(), tls::peer_name(PeerId(9))])
        .expect("self-signed");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut crypto = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("tls13")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAnything(provider)))
        .with_client_auth_cert(
            vec![fake.cert.der().clone()],
            PrivatePkcs8KeyDer::from(fake.key_pair.serialize_der()).into(),
        )
        .expect("client auth");
    crypto.alpn_protocols = vec![tls::ALPN.to_vec()];
    let client = quinn::ClientConfig::new(Arc::new(
        quinn::crypto::rustls::QuicClientConfig::try_from(crypto).expect("quic"),
    ));
    // Its side of the handshake may complete (TLS 1.3 clients finish
    // first); the listener refuses its certificate all the same.
    if let Ok(conn) = dial(client, addr).await {
        let mut read = Vec::new();
        if let Ok((mut send, mut recv)) = conn.open_bi().await {
            let _ = send.write_all(&preamble(PeerId(9))).await;
            let _ = send.write_all(&[0, 0, 0, 4, 1, 2, 3, 4]).await;
            let mut buf = [0u8; 64];
            if let Ok(Ok(Some(n))) = tokio::time::timeout(Duration::from_secs(5), recv.read(&mut buf)).await {
                read.extend_from_slice(&buf[..n]);
            }
        }
        assert!(read.is_empty(), "the outsider read {read:?}");
        assert!(
            !matches!(conn.closed().await, quinn::ConnectionError::ApplicationClosed(_)),
            "refused in the handshake, not by the link"
        );
    }
    let ev = tokio::time::timeout(Duration::from_secs(5), events.recv())
        .await
        .expect("an event")
        .expect("event");
    assert!(
        matches!(
            ev,
            LinkEvent::Failed {
                reason: LinkError::Connection(_),
                ..
            }
        ),
        "{ev:?}"
    );
    assert!(t.links().is_empty());
    assert!(peer.presence().graph().peers.is_empty());
    assert_eq!(documents(&peer).await, 1);
    t.close().await;
    peer.close().await;
}
