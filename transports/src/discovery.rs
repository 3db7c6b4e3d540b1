//! Finding the app's other peers with no configuration: DNS-SD over mDNS
//! (the `mdns-sd` crate), for QUIC links on a LAN and on peer-to-peer
//! Wi-Fi interfaces.
//!
//! A [`Discovery`] advertises one [`QuicTransport`] as a service of type
//! [`SERVICE_TYPE`]: the instance is named after the peer id, the SRV
//! record gives the transport's port, and the TXT record carries
//! [`TXT_PEER`] (the peer id, 16 hex digits), [`TXT_PROTOCOL`] (the sync
//! protocol version it speaks) and [`TXT_APP`] (the app's public tag,
//! [`AppKey::tag`]: a one-way hash of the app key, never the key). It
//! browses for the same type and dials each peer it finds through
//! [`QuicTransport::dial`], unless the peer belongs to another app (its tag
//! differs), speaks too old a protocol, or is this peer.
//!
//! Of two peers that find each other only the one with the lower peer id
//! dials, so one connection is made where two would race (the transport's
//! crossed-dial rule would close one of them anyway). A peer that leaves
//! (an mDNS goodbye, its records expire, or the interface goes down) is
//! redialled for [`DiscoveryConfig::linger_ms`] more, since a link that
//! flaps comes back before mDNS finds it again, then no longer; one that
//! comes back on a new port is dialled there instead. The table of peers
//! found is bounded ([`DiscoveryConfig::max_peers`]).
//!
//! [`Scope`] selects where: every interface (a LAN transport, skipping the
//! peer-to-peer ones), or a single interface, IPv6 only, for a
//! peer-to-peer Wi-Fi link (AWDL, Wi-Fi Direct, Wi-Fi Aware). Such links
//! appear to the OS as an interface with only an IPv6 link-local address:
//! the transport listens on that address with the interface as its scope
//! ([`LinkLocal`]), and discovered peers are dialled at their link-local
//! address with the same scope (`SocketAddrV6::scope_id` = the interface
//! index).
//!
//! Built only without `--cfg madsim`: mDNS needs real multicast sockets.

use crate::planned::LinkPlanner;
use crate::quic::{AppKey, Dial, QuicTransport};
use crate::Transport;
use mdns_sd::{IfKind, IfPredicate, ResolvedService, ScopedIp, ServiceDaemon, ServiceEvent, ServiceInfo};
use rhizome_actors::PeerId;
use rhizome_engine::sync::wire::{MIN_PROTOCOL_VERSION, PROTOCOL_VERSION};
use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv6Addr, SocketAddr, SocketAddrV6};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

/// The DNS-SD service type of Rhizome peers.
pub const SERVICE_TYPE: &str = "_rhizome._udp.local.";
/// TXT key: the peer id, 16 hex digits.
pub const TXT_PEER: &str = "peer";
/// TXT key: the newest sync protocol version the peer speaks.
pub const TXT_PROTOCOL: &str = "proto";
/// TXT key: the app's public tag ([`AppKey::tag`]).
pub const TXT_APP: &str = "app";
/// How often a peer-to-peer interface's discovery checks that interface
/// for changes, in seconds (the daemon's default is 5).
const P2P_IP_CHECK_INTERVAL_SECS: u32 = 2;
/// How long closing waits for the mDNS goodbye to go out, in milliseconds.
const GOODBYE_WAIT_MS: u64 = 1_000;

/// Where a [`Discovery`] advertises and browses.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Scope {
    /// Every interface that is up (loopback included) except the ones
    /// named: a LAN transport, leaving peer-to-peer interfaces to their own
    /// discovery.
    AllExcept(Vec<String>),
    /// One interface, IPv6 link-local only: a peer-to-peer Wi-Fi link.
    Interface(LinkLocal),
}

/// How a [`Discovery`] runs. Build with [`DiscoveryConfig::new`] and set
/// fields.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct DiscoveryConfig {
    /// Where to advertise and browse.
    pub scope: Scope,
    /// Most peers kept in the table of peers found; more are ignored
    /// until some leave.
    pub max_peers: usize,
    /// Events kept for [`Discovery::take_events`]'s reader; more are
    /// dropped while it lags.
    pub event_capacity: usize,
    /// How long a peer that left is still redialled, in milliseconds.
    pub linger_ms: u64,
    /// The connection planner to report found peers to, which decides whom
    /// to dial (none: the lower peer id of every pair dials).
    pub planner: Option<Arc<LinkPlanner>>,
}

impl DiscoveryConfig {
    /// Discovery in `scope`, with default limits.
    pub fn new(scope: Scope) -> DiscoveryConfig {
        DiscoveryConfig {
            scope,
            max_peers: 256,
            event_capacity: 256,
            linger_ms: 120_000,
            planner: None,
        }
    }
}

/// An interface for peer-to-peer links: its name, index and IPv6
/// link-local address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkLocal {
    /// The interface's name (e.g. `awdl0`, `p2p-wlan0`).
    pub name: String,
    /// Its index: the scope of its link-local addresses.
    pub index: u32,
    /// Its IPv6 link-local address.
    pub addr: Ipv6Addr,
}

impl LinkLocal {
    /// Looks up interface `name` and its IPv6 link-local address (the
    /// lowest, if it has several).
    pub fn of(name: &str) -> Result<LinkLocal, DiscoveryError> {
        let all = if_addrs::get_if_addrs().map_err(DiscoveryError::Interfaces)?;
        let named: Vec<_> = all.iter().filter(|i| i.name == name).collect();
        if named.is_empty() {
            return Err(DiscoveryError::NoSuchInterface { name: name.to_string() });
        }
        let found = named
            .iter()
            .filter_map(|i| match (i.ip(), i.index) {
                (IpAddr::V6(a), Some(index)) if is_link_local(&a) => Some((a, index)),
                _ => None,
            })
            .min();
        let (addr, index) = found.ok_or_else(|| DiscoveryError::NoLinkLocal { name: name.to_string() })?;
        Ok(LinkLocal {
            name: name.to_string(),
            index,
            addr,
        })
    }

    /// The socket address at `port` on this interface (scope = its index).
    pub fn socket_addr(&self, port: u16) -> SocketAddr {
        SocketAddr::V6(SocketAddrV6::new(self.addr, port, 0, self.index))
    }
}

/// Whether `a` is an IPv6 link-local unicast address (fe80::/10).
fn is_link_local(a: &Ipv6Addr) -> bool {
    a.segments()[0] & 0xffc0 == 0xfe80
}

/// Why discovery could not start.
#[derive(Debug)]
#[non_exhaustive]
pub enum DiscoveryError {
    /// The interfaces could not be listed.
    Interfaces(std::io::Error),
    /// No interface has this name.
    NoSuchInterface {
        /// The name asked for.
        name: String,
    },
    /// The interface has no IPv6 link-local address (it may be down, or
    /// its address still tentative).
    NoLinkLocal {
        /// The interface.
        name: String,
    },
    /// The transport's address could not be read.
    LocalAddr(std::io::Error),
    /// The mDNS daemon refused (no multicast socket, a bad record).
    Mdns(mdns_sd::Error),
    /// A setting is out of range.
    Config {
        /// Which setting, and why.
        reason: &'static str,
    },
}

impl fmt::Display for DiscoveryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DiscoveryError::Interfaces(e) => write!(f, "cannot list the network interfaces: {e}"),
            DiscoveryError::NoSuchInterface { name } => write!(f, "no network interface is named {name:?}"),
            DiscoveryError::NoLinkLocal { name } => {
                write!(f, "interface {name:?} has no IPv6 link-local address (is it up?)")
            }
            DiscoveryError::LocalAddr(e) => write!(f, "the transport's address: {e}"),
            DiscoveryError::Mdns(e) => write!(f, "mDNS: {e}"),
            DiscoveryError::Config { reason } => write!(f, "configuration: {reason}"),
        }
    }
}

impl std::error::Error for DiscoveryError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            DiscoveryError::Interfaces(e) | DiscoveryError::LocalAddr(e) => Some(e),
            DiscoveryError::Mdns(e) => Some(e),
            _ => None,
        }
    }
}

impl From<mdns_sd::Error> for DiscoveryError {
    fn from(e: mdns_sd::Error) -> Self {
        DiscoveryError::Mdns(e)
    }
}

/// What discovery saw (see [`Discovery::take_events`]).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum DiscoveryEvent {
    /// A peer of this app was found, or found at a new address.
    Found {
        /// The peer, as its advertisement says (its link, once up, is
        /// vouched for by its certificate).
        remote: PeerId,
        /// The address it is reached at.
        addr: SocketAddr,
        /// Whether this peer dials it (the lower peer id dials).
        dialling: bool,
    },
    /// A peer found before left (its goodbye, or its records expired).
    Lost {
        /// The peer.
        remote: PeerId,
    },
}

/// A peer in the table of peers found.
struct Found {
    addr: SocketAddr,
    /// Redials while it lives; `None` when the remote dials.
    _dial: Option<Dial>,
    /// When it left, if it did (it is redialled a while longer).
    lost_at: Option<Instant>,
}

/// Advertising and browsing for one transport (see the module doc).
pub struct Discovery {
    daemon: ServiceDaemon,
    fullname: String,
    scope: Scope,
    stop: watch::Sender<bool>,
    found: Arc<Mutex<BTreeMap<PeerId, SocketAddr>>>,
    events: Mutex<Option<mpsc::Receiver<DiscoveryEvent>>>,
    dropped_events: Arc<AtomicU64>,
}

impl fmt::Debug for Discovery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Discovery")
            .field("fullname", &self.fullname)
            .field("scope", &self.scope)
            .finish_non_exhaustive()
    }
}

impl Discovery {
    /// Advertises `transport` (of peer `me`, in the app of `app_key`) and
    /// dials the peers found. Must be called inside a tokio runtime.
    pub fn start(
        transport: Arc<QuicTransport>,
        me: PeerId,
        app_key: &AppKey,
        config: DiscoveryConfig,
    ) -> Result<Discovery, DiscoveryError> {
        if config.max_peers == 0 || config.event_capacity == 0 {
            return Err(DiscoveryError::Config {
                reason: "max_peers and event_capacity must be at least 1",
            });
        }
        let local = transport.local_addr().map_err(DiscoveryError::LocalAddr)?;
        let daemon = ServiceDaemon::new()?;
        if let Err(e) = select_interfaces(&daemon, &config.scope, local) {
            let _ = daemon.shutdown();
            return Err(e);
        }
        let tag = app_key.tag();
        let info = match advertisement(me, &tag, &config.scope, local) {
            Ok(info) => info,
            Err(e) => {
                let _ = daemon.shutdown();
                return Err(e);
            }
        };
        let fullname = info.get_fullname().to_string();
        let browse = daemon.register(info).and_then(|()| daemon.browse(SERVICE_TYPE));
        let browse = match browse {
            Ok(b) => b,
            Err(e) => {
                let _ = daemon.shutdown();
                return Err(e.into());
            }
        };
        let (stop, stopped) = watch::channel(false);
        let (events_tx, events_rx) = mpsc::channel(config.event_capacity);
        let found = Arc::new(Mutex::new(BTreeMap::new()));
        let dropped_events = Arc::new(AtomicU64::new(0));
        let browser = Browser {
            me,
            tag,
            transport,
            local,
            max_peers: config.max_peers,
            linger: Duration::from_millis(config.linger_ms),
            planner: config.planner.clone(),
            peers: BTreeMap::new(),
            names: BTreeMap::new(),
            found: found.clone(),
            events: events_tx,
            dropped_events: dropped_events.clone(),
        };
        tokio::spawn(browser.run(browse, stopped));
        Ok(Discovery {
            daemon,
            fullname,
            scope: config.scope,
            stop,
            found,
            events: Mutex::new(Some(events_rx)),
            dropped_events,
        })
    }

    /// The peers found and not lost, with the addresses they are reached
    /// at, in peer id order.
    pub fn found(&self) -> Vec<(PeerId, SocketAddr)> {
        let found = self.found.lock().unwrap_or_else(|p| p.into_inner());
        found.iter().map(|(p, a)| (*p, *a)).collect()
    }

    /// The events of discovery (once: later calls get `None`).
    pub fn take_events(&self) -> Option<mpsc::Receiver<DiscoveryEvent>> {
        self.events.lock().unwrap_or_else(|p| p.into_inner()).take()
    }

    /// Events dropped so far because nobody read them.
    pub fn dropped_events(&self) -> u64 {
        self.dropped_events.load(Ordering::Relaxed)
    }

    /// Stops dialling, says goodbye (waiting up to a second for it to go
    /// out), and stops the mDNS daemon.
    pub async fn close(&self) {
        self.stop.send_replace(true);
        if let Ok(status) = self.daemon.unregister(&self.fullname) {
            let wait = Duration::from_millis(GOODBYE_WAIT_MS);
            let _ = tokio::time::timeout(wait, status.recv_async()).await;
        }
        let _ = self.daemon.shutdown();
    }
}

impl Drop for Discovery {
    fn drop(&mut self) {
        self.stop.send_replace(true);
        let _ = self.daemon.shutdown();
    }
}

/// Enables the daemon's interfaces for `scope`, in the address family the
/// transport listens on.
fn select_interfaces(daemon: &ServiceDaemon, scope: &Scope, local: SocketAddr) -> Result<(), DiscoveryError> {
    match scope {
        Scope::Interface(ll) => {
            // Apple's AWDL and LLW interfaces are skipped unless asked for.
            daemon.include_apple_p2p(true)?;
            // Peer-to-peer interfaces come and go: notice them sooner.
            daemon.set_ip_check_interval(P2P_IP_CHECK_INTERVAL_SECS)?;
            daemon.disable_interface(IfKind::All)?;
            daemon.enable_interface(IfKind::IndexV6(ll.index))?;
        }
        Scope::AllExcept(names) => {
            if !names.is_empty() {
                daemon.disable_interface(names.iter().map(|n| IfKind::Name(n.clone())).collect::<Vec<_>>())?;
            }
            // An IPv4 socket cannot reach IPv6 peers: advertise and browse
            // in its family only (an IPv6 one may be dual-stack).
            if local.is_ipv4() {
                daemon.disable_interface(IfKind::IPv6)?;
            }
        }
    }
    Ok(())
}

/// The service record of peer `me` listening at `local`.
fn advertisement(me: PeerId, tag: &str, scope: &Scope, local: SocketAddr) -> Result<ServiceInfo, DiscoveryError> {
    let instance = format!("{me}");
    let host = format!("rhizome-{me}.local.");
    let txt = [
        (TXT_PEER, instance.clone()),
        (TXT_PROTOCOL, PROTOCOL_VERSION.to_string()),
        (TXT_APP, tag.to_string()),
    ];
    // Addresses are always the daemon's to fill in, from the interfaces
    // chosen: it announces a service on an interface that comes up later
    // (one still coming up when the peer starts, say) only if they are.
    let mut info = ServiceInfo::new(SERVICE_TYPE, &instance, &host, "", local.port(), &txt[..])?.enable_addr_auto();
    let chosen = match scope {
        Scope::Interface(ll) => IfKind::IndexV6(ll.index),
        Scope::AllExcept(names) if local.ip().is_unspecified() => {
            let (names, v4_only) = (names.clone(), local.is_ipv4());
            IfKind::Predicate(IfPredicate::new(move |i| {
                !names.contains(&i.name) && (!v4_only || i.ip().is_ipv4())
            }))
        }
        Scope::AllExcept(_) => IfKind::Addr(local.ip()),
    };
    info.set_interfaces(vec![chosen]);
    Ok(info)
}

/// Why an advertisement is passed by.
#[derive(Debug)]
enum Ignored {
    OtherApp,
    NoPeerId,
    OldProtocol,
    Myself,
    NoUsableAddress,
    TableFull,
}

/// The browsing task's state.
struct Browser {
    me: PeerId,
    tag: String,
    transport: Arc<QuicTransport>,
    local: SocketAddr,
    max_peers: usize,
    linger: Duration,
    planner: Option<Arc<LinkPlanner>>,
    peers: BTreeMap<PeerId, Found>,
    /// Service instance names to the peers they advertise.
    names: BTreeMap<String, PeerId>,
    found: Arc<Mutex<BTreeMap<PeerId, SocketAddr>>>,
    events: mpsc::Sender<DiscoveryEvent>,
    dropped_events: Arc<AtomicU64>,
}

impl Browser {
    /// Handles the daemon's events until discovery stops or the daemon
    /// ends. Bounded: every pass takes one event, and the loop ends with
    /// the daemon or the stop signal.
    async fn run(mut self, browse: mdns_sd::Receiver<ServiceEvent>, mut stopped: watch::Receiver<bool>) {
        let mut sweep = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = sweep.tick() => self.forget_lost(),
                ev = browse.recv_async() => match ev {
                    Ok(ServiceEvent::ServiceResolved(svc)) => self.resolved(&svc),
                    Ok(ServiceEvent::ServiceRemoved(_, fullname)) => self.removed(&fullname),
                    Ok(_) => {}
                    Err(_) => break,
                },
                _ = stopped.wait_for(|s| *s) => break,
            }
        }
        // Dropping the table stops every redial.
        self.peers.clear();
        self.publish();
    }

    fn resolved(&mut self, svc: &ResolvedService) {
        match self.admit(svc) {
            Ok((remote, addr)) => self.found_at(&svc.fullname, remote, addr),
            Err(why) => tracing::debug!(me = %self.me, instance = %svc.fullname, ?why, "mDNS service ignored"),
        }
    }

    /// The peer an advertisement names and the address to reach it at, if
    /// it is one to link with.
    fn admit(&self, svc: &ResolvedService) -> Result<(PeerId, SocketAddr), Ignored> {
        if svc.get_property_val_str(TXT_APP) != Some(self.tag.as_str()) {
            return Err(Ignored::OtherApp);
        }
        let remote = svc
            .get_property_val_str(TXT_PEER)
            .and_then(parse_peer_id)
            .ok_or(Ignored::NoPeerId)?;
        let protocol = svc
            .get_property_val_str(TXT_PROTOCOL)
            .and_then(|v| v.parse::<u16>().ok());
        if protocol.is_none_or(|v| v < MIN_PROTOCOL_VERSION) {
            return Err(Ignored::OldProtocol);
        }
        if remote == self.me {
            return Err(Ignored::Myself);
        }
        let addr = choose_addr(svc.addresses.iter(), svc.port, self.local).ok_or(Ignored::NoUsableAddress)?;
        if !self.peers.contains_key(&remote) && self.peers.len() >= self.max_peers {
            return Err(Ignored::TableFull);
        }
        Ok((remote, addr))
    }

    fn found_at(&mut self, fullname: &str, remote: PeerId, addr: SocketAddr) {
        self.names.insert(fullname.to_string(), remote);
        let dialling = self.planner.is_none() && self.me < remote;
        match self.peers.get_mut(&remote) {
            Some(f) if f.addr == addr && f.lost_at.is_none() => return,
            // Back where it was: its dial never stopped.
            Some(f) if f.addr == addr => f.lost_at = None,
            _ => {
                // Replacing an entry drops its dial: the old address is
                // not redialled.
                let dial = dialling.then(|| self.transport.dial(addr));
                let found = Found {
                    addr,
                    _dial: dial,
                    lost_at: None,
                };
                self.peers.insert(remote, found);
            }
        }
        if let Some(planner) = &self.planner {
            planner.found(remote, &self.transport, addr);
        }
        self.publish();
        self.emit(DiscoveryEvent::Found { remote, addr, dialling });
    }

    fn removed(&mut self, fullname: &str) {
        let Some(remote) = self.names.remove(fullname) else {
            return;
        };
        if self.names.values().any(|p| *p == remote) {
            // Still advertised under another name.
            return;
        }
        if let Some(f) = self.peers.get_mut(&remote) {
            f.lost_at.get_or_insert_with(Instant::now);
            self.publish();
            self.emit(DiscoveryEvent::Lost { remote });
        }
    }

    /// Stops redialling peers that left longer than the linger time ago
    /// (with a planner: tells it they are lost).
    fn forget_lost(&mut self) {
        let linger = self.linger;
        let gone: Vec<PeerId> = self
            .peers
            .iter()
            .filter(|(_, f)| f.lost_at.is_some_and(|t| t.elapsed() >= linger))
            .map(|(p, _)| *p)
            .collect();
        for peer in &gone {
            self.peers.remove(peer);
            if let Some(planner) = &self.planner {
                planner.lost(*peer, self.transport.kind());
            }
        }
        if !gone.is_empty() {
            self.publish();
        }
    }

    fn publish(&self) {
        let mut found = self.found.lock().unwrap_or_else(|p| p.into_inner());
        *found = self
            .peers
            .iter()
            .filter(|(_, f)| f.lost_at.is_none())
            .map(|(p, f)| (*p, f.addr))
            .collect();
    }

    fn emit(&self, event: DiscoveryEvent) {
        if self.events.try_send(event).is_err() {
            self.dropped_events.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// A peer id as [`TXT_PEER`] carries it: 16 hex digits.
fn parse_peer_id(text: &str) -> Option<PeerId> {
    if text.len() != 16 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u64::from_str_radix(text, 16).ok().map(PeerId)
}

/// The address to dial of those advertised, as seen from a transport
/// listening at `local`: one of its family (an IPv6 socket bound to a
/// link-local address reaches only link-local addresses on its own
/// interface, with that interface as scope), non-loopback first, then the
/// lowest (so the choice is stable).
fn choose_addr<'a>(advertised: impl Iterator<Item = &'a ScopedIp>, port: u16, local: SocketAddr) -> Option<SocketAddr> {
    let candidates = advertised.filter_map(|ip| match (ip, local) {
        (ScopedIp::V4(v4), SocketAddr::V4(_)) => Some(SocketAddr::from((*v4.addr(), port))),
        (ScopedIp::V4(v4), SocketAddr::V6(l)) if l.ip().is_unspecified() => Some(SocketAddr::from((*v4.addr(), port))),
        (ScopedIp::V6(v6), SocketAddr::V6(l)) => {
            let addr = *v6.addr();
            let scope = if is_link_local(&addr) { v6.scope_id().index } else { 0 };
            let bound_link_local = is_link_local(l.ip());
            let usable = !bound_link_local || (is_link_local(&addr) && scope == l.scope_id());
            usable.then(|| SocketAddr::V6(SocketAddrV6::new(addr, port, 0, scope)))
        }
        _ => None,
    });
    candidates.min_by_key(|a| (a.ip().is_loopback(), *a))
}

#[cfg(test)]
mod tests {
    use super::*;
    use mdns_sd::{InterfaceId, ScopedIpV4};
    use std::net::Ipv4Addr;

    #[test]
    fn peer_ids_parse_from_sixteen_hex_digits_only() {
        assert_eq!(parse_peer_id("00000000000000ff"), Some(PeerId(255)));
        assert_eq!(parse_peer_id(&format!("{}", PeerId(u64::MAX))), Some(PeerId(u64::MAX)));
        assert_eq!(parse_peer_id("ff"), None);
        assert_eq!(parse_peer_id("zz00000000000000"), None);
        assert_eq!(parse_peer_id("+000000000000000"), None);
    }

    fn v4(a: [u8; 4]) -> ScopedIp {
        ScopedIp::V4(ScopedIpV4::new(Ipv4Addr::from(a), InterfaceId::default()))
    }

    #[test]
    fn an_ipv4_transport_dials_an_ipv4_address_not_loopback_first() {
        let ips = [v4([127, 0, 0, 1]), v4([192, 168, 1, 9]), v4([10, 0, 0, 7])];
        let local = SocketAddr::from(([0, 0, 0, 0], 0));
        assert_eq!(
            choose_addr(ips.iter(), 7, local),
            Some(SocketAddr::from(([10, 0, 0, 7], 7)))
        );
        let loopback_only = [v4([127, 0, 0, 1])];
        assert_eq!(
            choose_addr(loopback_only.iter(), 7, local),
            Some(SocketAddr::from(([127, 0, 0, 1], 7)))
        );
    }

    #[test]
    fn a_link_local_transport_dials_nothing_but_its_own_link() {
        let ll = LinkLocal {
            name: "p2p0".into(),
            index: 5,
            addr: "fe80::1".parse().expect("address"),
        };
        let local = ll.socket_addr(4000);
        assert_eq!(choose_addr([v4([10, 0, 0, 7])].iter(), 7, local), None);
    }

    #[test]
    fn tags_differ_between_apps_and_never_show_the_key() {
        let a = AppKey::new(b"first app's key".to_vec()).expect("key");
        let b = AppKey::new(b"second app's key".to_vec()).expect("key");
        assert_eq!(a.tag(), AppKey::new(b"first app's key".to_vec()).expect("key").tag());
        assert_ne!(a.tag(), b.tag());
        assert_eq!(a.tag().len(), 16);
        assert!(!a.tag().contains("first"));
    }
}
