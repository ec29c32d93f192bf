//! Verdict cache: (media key, content SHA-256) -> verdict. It holds no media bytes, so a cached
//! verdict never lets anything skip the homeserver's authorization: every request still fetches
//! the bytes from the media worker with the caller's own token, and only the clamd scan is saved
//! when the bytes hash to what was scanned before. Changed bytes under the same media ID (an
//! object replaced in S3) miss the cache and are scanned again.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use crate::clamd::Verdict;

pub type Digest = [u8; 32];

pub struct VerdictCache {
    inner: Mutex<Inner>,
    capacity: usize,
}

struct Inner {
    map: HashMap<String, (Digest, Verdict)>,
    order: VecDeque<String>,
}

impl VerdictCache {
    pub fn new(capacity: usize) -> Self {
        VerdictCache {
            inner: Mutex::new(Inner {
                map: HashMap::new(),
                order: VecDeque::new(),
            }),
            capacity,
        }
    }

    /// The verdict for exactly these bytes under this key, if scanned before.
    pub fn get(&self, key: &str, digest: &Digest) -> Option<Verdict> {
        let inner = self.inner.lock().expect("cache lock");
        match inner.map.get(key) {
            Some((d, v)) if d == digest => Some(v.clone()),
            _ => None,
        }
    }

    /// The digest last scanned under this key (lets a large file skip clamd on its first pass
    /// when its hash turns out unchanged).
    pub fn digest_of(&self, key: &str) -> Option<(Digest, Verdict)> {
        let inner = self.inner.lock().expect("cache lock");
        inner.map.get(key).cloned()
    }

    /// Records a clean or infected verdict (never an error or a size refusal).
    pub fn put(&self, key: &str, digest: Digest, verdict: &Verdict) {
        if self.capacity == 0 || matches!(verdict, Verdict::TooLarge { .. }) {
            return;
        }
        let mut inner = self.inner.lock().expect("cache lock");
        if inner
            .map
            .insert(key.to_string(), (digest, verdict.clone()))
            .is_none()
        {
            inner.order.push_back(key.to_string());
        }
        while inner.map.len() > self.capacity {
            match inner.order.pop_front() {
                Some(old) => {
                    inner.map.remove(&old);
                }
                None => break,
            }
        }
    }

    pub fn len(&self) -> usize {
        self.inner.lock().expect("cache lock").map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_key_different_bytes_is_a_miss_and_capacity_holds() {
        let c = VerdictCache::new(2);
        c.put("a", [1; 32], &Verdict::Clean);
        assert_eq!(c.get("a", &[1; 32]), Some(Verdict::Clean));
        assert_eq!(
            c.get("a", &[2; 32]),
            None,
            "replaced content must be rescanned"
        );
        c.put("b", [1; 32], &Verdict::Infected("X".into()));
        c.put("c", [1; 32], &Verdict::Clean);
        assert_eq!(c.len(), 2);
        assert_eq!(c.get("a", &[1; 32]), None, "oldest entry evicted");
        c.put("d", [1; 32], &Verdict::TooLarge { limit: 1 });
        assert_eq!(c.get("d", &[1; 32]), None);
    }
}
