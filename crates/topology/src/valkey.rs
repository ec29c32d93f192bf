//! Valkey and Sentinel settings, the same on every target; only addresses, paths and the
//! password differ. The local stack proves what Kubernetes runs (a test compares the two).
//!
//! Eviction: Synapse (1.163) keeps one kind of key in Valkey, its external cache
//! (`synapse/replication/tcp/external_cache.py`: `SET key value PX expiry`, every key expires; a
//! miss is read from PostgreSQL). Replication between its processes is pub/sub, which holds no
//! key and is never evicted, and its locks live in PostgreSQL. Under memory pressure
//! `noeviction` fails the SET, an error inside event sending (handlers/message.py caches joined
//! hosts there), while evicting the least recently used entry costs one cache miss:
//! `allkeys-lru` (`volatile-lru` would do the same for Synapse's keys, and also refuse writes of
//! any key without an expiry).

/// The name Sentinel monitors the master under.
pub const SENTINEL_MASTER_NAME: &str = "mxstack";

/// The lines of valkey.conf that are neither addresses nor secrets.
pub fn server_settings(maxmemory_mib: u32) -> String {
    format!(
        "maxmemory {maxmemory_mib}mb\n\
         # Synapse only keeps expiring cache entries in Valkey; its replication traffic is pub/sub, which is\n\
         # not a key and is never evicted. Evicting the least recently used cache entry under pressure is\n\
         # harmless, while noeviction would turn a full cache into write errors inside Synapse.\n\
         maxmemory-policy allkeys-lru\n\
         # Nothing here needs to survive a restart: replicas resynchronise from the master.\n\
         save \"\"\n\
         appendonly no\n"
    )
}

/// Sentinel's failover timing: a master unanswered for 5 s is down (long enough to ride out a
/// pause or a slow network on a cluster); a failover that has not finished in 60 s is retried.
pub fn sentinel_settings() -> String {
    let m = SENTINEL_MASTER_NAME;
    format!(
        "sentinel down-after-milliseconds {m} 5000\n\
         sentinel failover-timeout {m} 60000\n\
         sentinel parallel-syncs {m} 1\n"
    )
}
