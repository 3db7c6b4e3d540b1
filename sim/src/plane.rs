//! The plane peers stand on, and which of them their radios reach.
//!
//! Positions are in meters. Every peer has Bluetooth LE (range
//! [`BLE_RANGE_M`]); some also have peer-to-peer Wi-Fi ([`WIFI_RANGE_M`]);
//! peers of one *site* share a LAN, which reaches all of them whatever the
//! distance. [`reach`] lists, for every pair, each kind of link it could
//! use now: the LAN if they share a site, Wi-Fi if both have it and are in
//! its range, BLE if they are in its range; a *wall* (a partition line of
//! the scenario) stands in the way of radios, not of LANs.
//!
//! Which of those pairs hold sessions is not decided here: each peer's
//! connection planner picks a few per kind (see `crate::board`).

use rhizome_actors::LinkKind;
use std::collections::{BTreeMap, BTreeSet};

/// Range of Bluetooth LE, in meters.
pub const BLE_RANGE_M: f64 = 30.0;
/// Range of peer-to-peer Wi-Fi, in meters.
pub const WIFI_RANGE_M: f64 = 100.0;
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

/// One peer as the plane sees it (`None` position: not present).
#[derive(Clone, Copy, Debug)]
pub struct Node {
    /// Where it is, if it is up and around.
    pub pos: Option<Pos>,
    /// Its radios.
    pub radio: Radio,
}

/// Every kind of link `a` and `b` could use at this distance (walls
/// aside), fastest first.
pub fn link_kinds(a: &Radio, b: &Radio, dist: f64) -> impl Iterator<Item = LinkKind> {
    let lan = a.site.is_some() && a.site == b.site;
    let wifi = a.wifi && b.wifi && dist <= WIFI_RANGE_M;
    let ble = dist <= BLE_RANGE_M;
    [(lan, LinkKind::Lan), (wifi, LinkKind::P2pWifi), (ble, LinkKind::Ble)]
        .into_iter()
        .filter(|(ok, _)| *ok)
        .map(|(_, k)| k)
}

/// Every (a, b, kind) with a < b such that peers `a` and `b` (both
/// present) could link over `kind` now. Radio pairs are found through a
/// grid of Wi-Fi-range cells, so this costs about the number of pairs in
/// range.
pub fn reach(nodes: &[Node], walls: &[Wall]) -> BTreeSet<(usize, usize, LinkKind)> {
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
    let mut out = BTreeSet::new();
    for members in sites.values() {
        for (k, &a) in members.iter().enumerate() {
            for &b in &members[k + 1..] {
                out.insert((a.min(b), a.max(b), LinkKind::Lan));
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
                    if j <= i {
                        continue;
                    }
                    let Some(q) = &nodes[j].pos else { continue };
                    if walls.iter().any(|w| w.separates(p, q)) {
                        continue;
                    }
                    for kind in link_kinds(&n.radio, &nodes[j].radio, p.dist(q)) {
                        if kind != LinkKind::Lan {
                            out.insert((i, j, kind));
                        }
                    }
                }
            }
        }
    }
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

/// Groups of peers that can reach each other over the pairs `pairs`, by
/// smallest member (present peers only).
pub fn components(nodes: &[Node], pairs: impl IntoIterator<Item = (usize, usize)>) -> BTreeMap<usize, Vec<usize>> {
    let mut parts = Parts((0..nodes.len()).collect());
    for (a, b) in pairs {
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

    fn pairs(r: &BTreeSet<(usize, usize, LinkKind)>) -> impl Iterator<Item = (usize, usize)> + '_ {
        r.iter().map(|(a, b, _)| (*a, *b))
    }

    #[test]
    fn ranges_kinds_sites_and_walls() {
        let mut nodes = vec![
            node(0.0, 0.0, true),
            node(20.0, 0.0, true),
            node(45.0, 0.0, false),
            node(500.0, 0.0, true),
        ];
        let r = reach(&nodes, &[]);
        assert!(r.contains(&(0, 1, LinkKind::P2pWifi)) && r.contains(&(0, 1, LinkKind::Ble)));
        assert!(r.contains(&(1, 2, LinkKind::Ble)) && !r.contains(&(1, 2, LinkKind::P2pWifi)));
        assert!(
            !r.iter().any(|(a, b, _)| (*a, *b) == (0, 2)),
            "BLE-only peer 2 is 45 m from 0"
        );
        assert_eq!(components(&nodes, pairs(&r)).len(), 2, "peer 3 is out of range");
        let walled = reach(&nodes, &[Wall::Vertical(30.0)]);
        assert!(!walled.iter().any(|(a, b, _)| (*a, *b) == (1, 2)));
        // A site reaches across walls and distance.
        nodes[0].radio.site = Some(0);
        nodes[3].radio.site = Some(0);
        let r = reach(&nodes, &[Wall::Vertical(30.0)]);
        assert!(r.contains(&(0, 3, LinkKind::Lan)));
        // A crowd in a small room: every pair in range.
        let crowd: Vec<Node> = (0..40)
            .map(|i| node(f64::from(i % 7), f64::from(i / 7), true))
            .collect();
        let r = reach(&crowd, &[]);
        assert_eq!(r.len(), 2 * 40 * 39 / 2);
        assert_eq!(components(&crowd, pairs(&r)).len(), 1);
    }
}
