//! The plane peers stand on, and which of them their radios link.
//!
//! Positions are in meters. Every peer has Bluetooth LE (range
//! [`BLE_RANGE_M`]); some also have peer-to-peer Wi-Fi ([`WIFI_RANGE_M`]);
//! peers of one *site* share a LAN, which links all of them whatever the
//! distance. Two peers in range are linked over the best kind both have
//! (LAN, then Wi-Fi, then BLE), unless a *wall* (a partition line of the
//! scenario) stands between them.
//!
//! A transport keeps only a few sessions per radio, so not every pair in
//! range is linked: [`topology`] keeps the links that still work, then adds
//! the shortest links that join separate parts of the mesh (a minimum
//! spanning forest of the pairs in range, so in-range peers always end up
//! connected), then the shortest remaining pairs while both peers have
//! fewer than [`MAX_RADIO_LINKS`] radio links. Every choice is ordered by
//! (distance, peer indexes), so the same positions give the same links.

use rhizome_actors::LinkKind;
use std::collections::{BTreeMap, BTreeSet};

/// Range of Bluetooth LE, in meters.
pub const BLE_RANGE_M: f64 = 30.0;
/// Range of peer-to-peer Wi-Fi, in meters.
pub const WIFI_RANGE_M: f64 = 100.0;
/// Radio links (BLE and Wi-Fi) a peer keeps beyond those that hold the
/// mesh together (the transports' session limits are 3 BLE and 4 Wi-Fi).
pub const MAX_RADIO_LINKS: usize = 4;

/// A point on the plane, in meters.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Pos {
    /// East.
    pub x: f64,
    /// North.
    pub y: f64,
}

impl Pos {
    /// Distance to `o`, in meters.
    pub fn dist(&self, o: &Pos) -> f64 {
        ((self.x - o.x).powi(2) + (self.y - o.y).powi(2)).sqrt()
    }
}

/// What a peer can link with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Radio {
    /// Has peer-to-peer Wi-Fi (everyone has BLE).
    pub wifi: bool,
    /// The LAN site it is on, if any.
    pub site: Option<u32>,
}

/// A partition line: no radio link crosses it (LANs are not affected).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Wall {
    /// The line `x = c`.
    Vertical(f64),
    /// The line `y = c`.
    Horizontal(f64),
}

impl Wall {
    fn separates(&self, a: &Pos, b: &Pos) -> bool {
        match *self {
            Wall::Vertical(c) => (a.x < c) != (b.x < c),
            Wall::Horizontal(c) => (a.y < c) != (b.y < c),
        }
    }
}

/// The kind of link `a` and `b` would have at this distance, if any.
pub fn link_kind(a: &Radio, b: &Radio, dist: f64) -> Option<LinkKind> {
    if a.site.is_some() && a.site == b.site {
        Some(LinkKind::Lan)
    } else if a.wifi && b.wifi && dist <= WIFI_RANGE_M {
        Some(LinkKind::P2pWifi)
    } else if dist <= BLE_RANGE_M {
        Some(LinkKind::Ble)
    } else {
        None
    }
}

/// One peer as the topology sees it (`None` position: not present).
#[derive(Clone, Copy, Debug)]
pub struct Node {
    /// Where it is, if it is up and around.
    pub pos: Option<Pos>,
    /// Its radios.
    pub radio: Radio,
}

/// Every pair that could be linked now: (distance, a, b, kind), a < b, in
/// order. Radio pairs are found through a grid of Wi-Fi-range cells, so
/// this costs about the number of pairs in range.
fn candidates(nodes: &[Node], walls: &[Wall]) -> Vec<(f64, usize, usize, LinkKind)> {
    let cell = |p: &Pos| ((p.x / WIFI_RANGE_M).floor() as i64, (p.y / WIFI_RANGE_M).floor() as i64);
    let mut grid: BTreeMap<(i64, i64), Vec<usize>> = BTreeMap::new();
    let mut sites: BTreeMap<u32, Vec<usize>> = BTreeMap::new();
    for (i, n) in nodes.iter().enumerate() {
        if let Some(p) = &n.pos {
            grid.entry(cell(p)).or_default().push(i);
            if let Some(s) = n.radio.site {
                sites.entry(s).or_default().push(i);
            }
        }
    }
    let mut out = Vec::new();
    let mut seen = BTreeSet::new();
    for members in sites.values() {
        for (k, &a) in members.iter().enumerate() {
            for &b in &members[k + 1..] {
                if let (Some(pa), Some(pb)) = (nodes[a].pos, nodes[b].pos) {
                    out.push((pa.dist(&pb), a.min(b), a.max(b), LinkKind::Lan));
                }
                seen.insert((a.min(b), a.max(b)));
            }
        }
    }
    for (i, n) in nodes.iter().enumerate() {
        let Some(p) = &n.pos else { continue };
        let (cx, cy) = cell(p);
        for dx in -1..=1 {
            for dy in -1..=1 {
                let Some(others) = grid.get(&(cx + dx, cy + dy)) else {
                    continue;
                };
                for &j in others {
                    if j <= i || seen.contains(&(i, j)) {
                        continue;
                    }
                    let Some(q) = &nodes[j].pos else { continue };
                    let d = p.dist(q);
                    if walls.iter().any(|w| w.separates(p, q)) {
                        continue;
                    }
                    if let Some(kind) = link_kind(&n.radio, &nodes[j].radio, d) {
                        out.push((d, i, j, kind));
                    }
                }
            }
        }
    }
    out.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
    out
}

/// Union-find over peer indexes.
struct Parts(Vec<usize>);

impl Parts {
    fn find(&mut self, mut i: usize) -> usize {
        while self.0[i] != i {
            self.0[i] = self.0[self.0[i]];
            i = self.0[i];
        }
        i
    }

    /// Joins the parts of `a` and `b`; false if they were one already.
    fn join(&mut self, a: usize, b: usize) -> bool {
        let (ra, rb) = (self.find(a), self.find(b));
        if ra == rb {
            return false;
        }
        self.0[ra.max(rb)] = ra.min(rb);
        true
    }
}

/// The links the peers have now, given the links they had (`keep`: kept
/// while still possible, with the kind they have now).
pub fn topology(
    nodes: &[Node],
    walls: &[Wall],
    keep: &BTreeMap<(usize, usize), LinkKind>,
) -> BTreeMap<(usize, usize), LinkKind> {
    let pairs = candidates(nodes, walls);
    let mut parts = Parts((0..nodes.len()).collect());
    let mut degree = vec![0usize; nodes.len()];
    let mut links = BTreeMap::new();
    let add = |links: &mut BTreeMap<(usize, usize), LinkKind>, degree: &mut [usize], a, b, kind| {
        if kind != LinkKind::Lan {
            degree[a] += 1;
            degree[b] += 1;
        }
        links.insert((a, b), kind);
    };
    // LANs, and the links that still work.
    for &(_, a, b, kind) in &pairs {
        if kind == LinkKind::Lan || keep.contains_key(&(a, b)) {
            parts.join(a, b);
            add(&mut links, &mut degree, a, b, kind);
        }
    }
    // The shortest links joining separate parts.
    for &(_, a, b, kind) in &pairs {
        if !links.contains_key(&(a, b)) && parts.join(a, b) {
            add(&mut links, &mut degree, a, b, kind);
        }
    }
    // Then the shortest pairs while both have room.
    for &(_, a, b, kind) in &pairs {
        if !links.contains_key(&(a, b)) && degree[a] < MAX_RADIO_LINKS && degree[b] < MAX_RADIO_LINKS {
            add(&mut links, &mut degree, a, b, kind);
        }
    }
    links
}

/// Groups of peers that can reach each other over `links`, by smallest
/// member (present peers only).
pub fn components(nodes: &[Node], links: &BTreeMap<(usize, usize), LinkKind>) -> BTreeMap<usize, Vec<usize>> {
    let mut parts = Parts((0..nodes.len()).collect());
    for &(a, b) in links.keys() {
        parts.join(a, b);
    }
    let mut out: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for (i, n) in nodes.iter().enumerate() {
        if n.pos.is_some() {
            let root = parts.find(i);
            out.entry(root).or_default().push(i);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(x: f64, y: f64, wifi: bool) -> Node {
        Node {
            pos: Some(Pos { x, y }),
            radio: Radio { wifi, site: None },
        }
    }

    #[test]
    fn ranges_kinds_walls_and_caps() {
        let nodes = vec![
            node(0.0, 0.0, true),
            node(50.0, 0.0, true),
            node(75.0, 0.0, false),
            node(500.0, 0.0, true),
        ];
        let links = topology(&nodes, &[], &BTreeMap::new());
        assert_eq!(links.get(&(0, 1)), Some(&LinkKind::P2pWifi));
        assert_eq!(links.get(&(1, 2)), Some(&LinkKind::Ble));
        assert!(!links.contains_key(&(0, 2)), "BLE-only peer 2 is 75 m from 0");
        assert_eq!(components(&nodes, &links).len(), 2, "peer 3 is out of range");
        let walled = topology(&nodes, &[Wall::Vertical(60.0)], &links);
        assert!(!walled.contains_key(&(1, 2)));
        // A crowd: everyone in range of everyone, still connected, few
        // links each.
        let crowd: Vec<Node> = (0..40)
            .map(|i| node(f64::from(i % 7), f64::from(i / 7), true))
            .collect();
        let links = topology(&crowd, &[], &BTreeMap::new());
        assert_eq!(components(&crowd, &links).len(), 1);
        assert!(links.len() <= 40 * MAX_RADIO_LINKS / 2 + 40);
    }
}
