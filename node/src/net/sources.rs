//! Per-source state with a bound: a map from [`Source`] to a budget that
//! remembers at most a fixed number of sources, so that a flood of source
//! addresses (an IPv6 /48 holds 65,536 /64s) or of minted node ids cannot
//! grow memory.
//!
//! When full, a new source takes the place of the entry its owner ranks
//! most spare (a budget as full as a new one's: forgetting it gives its
//! source nothing it would not get as a newcomer), as the gate's per-source
//! handshake rate does ([`super::gate`]); an entry ranked `None` (work of
//! its source in preparation) is never forgotten. With every entry
//! pinned, the new source is not remembered and its request is refused.
//! Sans-IO: the owner ranks with the time it was given.

use std::collections::HashMap;

use super::Source;

/// Sources remembered by each serving budget: as many as the gate keeps
/// handshake rates for.
pub const MAX_SOURCES: usize = super::gate::MAX_RATED_SOURCES;

/// At most `cap` sources' state (see the module docs).
#[derive(Debug)]
pub struct SourceMap<V> {
    map: HashMap<Source, V>,
    cap: usize,
}

impl<V> Default for SourceMap<V> {
    fn default() -> Self {
        Self::new(MAX_SOURCES)
    }
}

impl<V> SourceMap<V> {
    pub fn new(cap: usize) -> Self {
        SourceMap {
            map: HashMap::new(),
            cap: cap.max(1),
        }
    }

    /// The state of `key`, made by `make` if new. To make room, the entry
    /// `spare` ranks highest goes (`None`: it stays); `None` when every
    /// entry stays.
    pub fn entry<R: PartialOrd>(
        &mut self,
        key: Source,
        make: impl FnOnce() -> V,
        spare: impl Fn(&V) -> Option<R>,
    ) -> Option<&mut V> {
        if !self.map.contains_key(&key) && self.map.len() >= self.cap {
            let victim = self
                .map
                .iter()
                .filter_map(|(k, v)| spare(v).map(|r| (*k, r)))
                .max_by(|a, b| a.1.partial_cmp(&b.1).unwrap_or(std::cmp::Ordering::Equal))
                .map(|(k, _)| k)?;
            self.map.remove(&victim);
        }
        Some(self.map.entry(key).or_insert_with(make))
    }

    pub fn get_mut(&mut self, key: &Source) -> Option<&mut V> {
        self.map.get_mut(key)
    }

    /// Sources remembered.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A flood of new sources never holds more than the bound; the most
    /// spare goes first, and a pinned entry never: with every entry
    /// pinned, a new source is refused.
    #[test]
    fn a_flood_of_sources_is_bounded_and_the_most_spare_goes_first() {
        let mut m: SourceMap<(bool, u32)> = SourceMap::new(4);
        let spare = |v: &(bool, u32)| (!v.0).then_some(v.1);
        let local = |i: u16| Source::Local(i);
        m.entry(local(0), || (true, 0), spare).unwrap(); // pinned
        m.entry(local(1), || (false, 5), spare).unwrap();
        m.entry(local(2), || (false, 9), spare).unwrap();
        m.entry(local(3), || (false, 1), spare).unwrap();
        assert_eq!(m.len(), 4);
        m.entry(local(4), || (false, 0), spare).unwrap();
        assert_eq!(m.len(), 4);
        assert!(m.get_mut(&local(2)).is_none(), "the most spare went");
        for i in 5..1000 {
            m.entry(local(i), || (false, 3), spare).unwrap();
            assert!(m.len() <= 4);
        }
        assert!(m.get_mut(&local(0)).is_some(), "the pinned one stays");
        // An entry already known is never refused, even when full.
        assert!(m.entry(local(0), || (true, 0), spare).is_some());
        let mut pinned: SourceMap<(bool, u32)> = SourceMap::new(2);
        pinned.entry(local(0), || (true, 0), spare).unwrap();
        pinned.entry(local(1), || (true, 0), spare).unwrap();
        assert!(pinned.entry(local(2), || (false, 0), spare).is_none());
        assert_eq!(pinned.len(), 2);
    }
}
