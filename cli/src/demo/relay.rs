//! A UDP relay that stands for one network link of the demo.
//!
//! The dialling peer sends its QUIC datagrams to the relay's address; the
//! relay forwards them to the listening peer and the answers back. Cutting
//! the relay drops every datagram both ways, which to the peers looks like
//! a radio link going out of range: nothing is refused, nothing arrives,
//! and QUIC's idle timeout is what notices. Restoring it lets the next
//! redial through.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// Largest datagram relayed, in bytes (the UDP maximum).
const MAX_DATAGRAM_BYTES: usize = 65_535;

/// How often a relay thread wakes to see whether it should stop.
const POLL_MS: u64 = 50;

/// What both directions of a relay share.
#[derive(Default)]
struct State {
    cut: AtomicBool,
    stop: AtomicBool,
    /// The listening peer; datagrams wait (are dropped) until it is known.
    target: Mutex<Option<SocketAddr>>,
    /// The dialling peer, learnt from its first datagram.
    client: Mutex<Option<SocketAddr>>,
    dropped: AtomicU64,
}

impl State {
    fn get(slot: &Mutex<Option<SocketAddr>>) -> Option<SocketAddr> {
        *slot.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// One relayed link on loopback; its threads stop when it drops.
pub struct Relay {
    addr: SocketAddr,
    state: Arc<State>,
    threads: Vec<JoinHandle<()>>,
}

impl Relay {
    /// Binds the relay's two sockets on loopback and starts forwarding.
    pub fn start() -> io::Result<Relay> {
        let front = UdpSocket::bind("127.0.0.1:0")?;
        let back = UdpSocket::bind("127.0.0.1:0")?;
        for s in [&front, &back] {
            s.set_read_timeout(Some(Duration::from_millis(POLL_MS)))?;
        }
        let addr = front.local_addr()?;
        let state = Arc::new(State::default());
        let (front2, back2) = (front.try_clone()?, back.try_clone()?);
        let (s1, s2) = (state.clone(), state.clone());
        let threads = vec![
            std::thread::spawn(move || forward(&front, &back, &s1, true)),
            std::thread::spawn(move || forward(&back2, &front2, &s2, false)),
        ];
        Ok(Relay { addr, state, threads })
    }

    /// Where the dialling peer should connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Sets the listening peer datagrams go to.
    pub fn set_target(&self, target: SocketAddr) {
        *self.state.target.lock().unwrap_or_else(|p| p.into_inner()) = Some(target);
    }

    /// Drops every datagram from now on, both ways.
    pub fn cut(&self) {
        self.state.cut.store(true, Ordering::SeqCst);
    }

    /// Forwards datagrams again.
    pub fn restore(&self) {
        self.state.cut.store(false, Ordering::SeqCst);
    }

    /// Datagrams dropped so far (while cut, or before the target was set).
    pub fn dropped_datagrams(&self) -> u64 {
        self.state.dropped.load(Ordering::SeqCst)
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.state.stop.store(true, Ordering::SeqCst);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Moves datagrams from `from` to `to` until the relay stops: from the
/// client to the target (`outward`), or from the target to the client.
fn forward(from: &UdpSocket, to: &UdpSocket, state: &State, outward: bool) {
    let mut buf = vec![0u8; MAX_DATAGRAM_BYTES];
    // Bounded by the stop flag, checked at least every POLL_MS.
    while !state.stop.load(Ordering::SeqCst) {
        let (n, sender) = match from.recv_from(&mut buf) {
            Ok(got) => got,
            // Timeouts, and ICMP errors of earlier sends surfacing here.
            Err(_) => continue,
        };
        let dest = if outward {
            *state.client.lock().unwrap_or_else(|p| p.into_inner()) = Some(sender);
            State::get(&state.target)
        } else if State::get(&state.target) == Some(sender) {
            State::get(&state.client)
        } else {
            continue;
        };
        match dest {
            Some(dest) if !state.cut.load(Ordering::SeqCst) => {
                // A lost datagram is what UDP allows; QUIC resends.
                let _ = to.send_to(&buf[..n], dest);
            }
            _ => {
                state.dropped.fetch_add(1, Ordering::SeqCst);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Relay;
    use std::net::UdpSocket;
    use std::time::Duration;

    fn socket() -> UdpSocket {
        let s = UdpSocket::bind("127.0.0.1:0").expect("bind");
        s.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
        s
    }

    #[test]
    fn relays_both_ways_and_drops_while_cut() {
        let relay = Relay::start().expect("relay");
        let (client, server) = (socket(), socket());
        relay.set_target(server.local_addr().expect("addr"));
        let mut buf = [0u8; 16];
        client.send_to(b"ping", relay.addr()).expect("send");
        let (n, via) = server.recv_from(&mut buf).expect("forwarded");
        assert_eq!(&buf[..n], b"ping");
        server.send_to(b"pong", via).expect("send back");
        let (n, from) = client.recv_from(&mut buf).expect("answered");
        assert_eq!((&buf[..n], from), (&b"pong"[..], relay.addr()));

        relay.cut();
        client.send_to(b"lost", relay.addr()).expect("send");
        // Restore only once the relay has seen (and dropped) it.
        for _ in 0..500 {
            if relay.dropped_datagrams() == 1 {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        relay.restore();
        client.send_to(b"again", relay.addr()).expect("send");
        let (n, _) = server.recv_from(&mut buf).expect("after restore");
        assert_eq!(&buf[..n], b"again");
        assert_eq!(relay.dropped_datagrams(), 1);
    }
}
