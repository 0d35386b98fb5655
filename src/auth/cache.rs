//! The cache of parsed DNS records mail-auth looks up (SPF, DKIM keys, DMARC policies, and
//! the addresses SPF's `a`/`mx` mechanisms need), each kept until its TTL ends. The resolver
//! below already caches the answers; this keeps mail-auth from parsing the same record again
//! for every message. Bounded: when full, expired entries go, and if that is not enough,
//! everything (a cold cache is only slower).

use prometheus::IntCounter;
use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::Instant;

/// A bounded map whose entries expire; its hits and misses are counted in the metrics.
pub(crate) struct TtlCache<K, V> {
    map: Mutex<HashMap<K, (V, Instant)>>,
    capacity: usize,
    hits: IntCounter,
    misses: IntCounter,
}

impl<K: Hash + Eq, V: Clone> TtlCache<K, V> {
    /// A cache of at most `capacity` entries of records of `kind` (the metrics' label).
    pub(crate) fn new(capacity: usize, kind: &str) -> Self {
        let counts = &crate::metrics::METRICS.dns_cache;
        TtlCache {
            map: Mutex::new(HashMap::new()),
            capacity: capacity.max(1),
            hits: counts.with_label_values(&[kind, "hit"]),
            misses: counts.with_label_values(&[kind, "miss"]),
        }
    }
}

impl<K: Hash + Eq, V: Clone> mail_auth::ResolverCache<K, V> for TtlCache<K, V> {
    fn get<Q>(&self, name: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        let found = map
            .get(name)
            .filter(|(_, until)| Instant::now() < *until)
            .map(|(v, _)| v.clone());
        match found {
            Some(_) => self.hits.inc(),
            None => self.misses.inc(),
        }
        found
    }

    fn remove<Q>(&self, name: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        map.remove(name).map(|(v, _)| v)
    }

    fn insert(&self, key: K, value: V, valid_until: Instant) {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= self.capacity {
            let now = Instant::now();
            map.retain(|_, (_, until)| now < *until);
            if map.len() >= self.capacity {
                map.clear();
            }
        }
        map.insert(key, (value, valid_until));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mail_auth::ResolverCache;
    use std::time::Duration;

    #[test]
    fn entries_expire_and_the_size_is_bounded() {
        let c: TtlCache<Box<str>, u32> = TtlCache::new(2, "test");
        let later = Instant::now() + Duration::from_secs(60);
        c.insert("a".into(), 1, later);
        assert_eq!(c.get("a"), Some(1));
        c.insert("old".into(), 2, Instant::now());
        assert_eq!(c.get("old"), None, "expired");
        c.insert("b".into(), 3, later);
        c.insert("c".into(), 4, later);
        assert!(c.map.lock().unwrap().len() <= 2);
        assert_eq!(c.get("c"), Some(4));
    }
}
