//! Sizing per tier, from seed 003's tables (100 CCU and 20K CCU are the seed's; 1K, 5K and 10K are
//! interpolated between them). Totals are computed from the role table, never typed in: the seed's
//! own totals do not add up (100 CCU: its roles sum to 72 vCPU / 168 GB, its total says 92 / 180).

use mxstack_spec::{Component, Config, Feature, Tier};
use serde::Serialize;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NodeRole {
    pub role: &'static str,
    pub count: u32,
    pub vcpu: u32,
    pub ram_gb: u32,
    pub storage_gb: u32,
    pub disk: &'static str,
    pub purpose: &'static str,
}

/// CPU request and memory request (= limit) for one container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Resources {
    /// Millicores.
    pub cpu_millis: u32,
    /// MiB.
    pub memory_mib: u32,
}

impl Resources {
    pub fn cpu(&self) -> String {
        if self.cpu_millis.is_multiple_of(1000) {
            (self.cpu_millis / 1000).to_string()
        } else {
            format!("{}m", self.cpu_millis)
        }
    }
    pub fn memory(&self) -> String {
        if self.memory_mib.is_multiple_of(1024) {
            format!("{}Gi", self.memory_mib / 1024)
        } else {
            format!("{}Mi", self.memory_mib)
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PostgresSizing {
    pub instances: u32,
    pub max_connections: u32,
    pub shared_buffers: String,
    pub effective_cache_size: String,
    pub work_mem: String,
    pub maintenance_work_mem: String,
    pub storage: String,
    pub wal_storage: String,
    pub resources: Resources,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RedisSizing {
    /// Master + replicas.
    pub instances: u32,
    pub sentinel_quorum: u32,
    pub maxmemory_mib: u32,
    pub resources: Resources,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Sizing {
    pub tier: Tier,
    pub concurrent_users: u32,
    pub messages_per_minute_peak: u32,
    pub nodes: Vec<NodeRole>,
    pub total_nodes: u32,
    pub total_vcpu: u32,
    pub total_ram_gb: u32,
    pub total_storage_gb: u32,
    pub postgres: PostgresSizing,
    pub redis: RedisSizing,
    pub media_storage: String,
    pub haproxy_replicas: u32,
}

/// Scale factor for per-process resources: small tiers get the base, large tiers up to 4x.
fn factor(tier: Tier) -> u32 {
    match tier {
        Tier::T100 => 1,
        Tier::T1k => 2,
        Tier::T5k => 3,
        Tier::T10k | Tier::T20k => 4,
    }
}

fn base_resources(c: Component) -> (u32, u32) {
    use Component::*;
    match c {
        SynapseMain => (1000, 2048),
        Synchrotron | Generic | MediaRepository | EventPersister | Background => (500, 1024),
        FederationSender | Pusher | StreamWriter => (250, 512),
        Haproxy => (250, 256),
        Postgres => (2000, 4096),
        Valkey => (250, 1024),
        Seaweedfs => (500, 1024),
        Element => (50, 64),
        Coturn => (500, 512),
        Livekit => (1000, 1024),
        Sygnal => (250, 256),
        ContentScanner => (250, 128),
        // clamd holds the whole signature set in memory and briefly twice during a reload (ClamAV
        // documents 3 GiB as the minimum).
        Clamav => (500, 3072),
        RtcAuth => (50, 64),
    }
}

/// One node pool's size: (count, vCPU, RAM GB, storage GB); vCPU, RAM and storage per node.
type PoolSize = (u32, u32, u32, u32);

/// The node pools of a tier (calls and LI only deploy with their features).
struct Pools {
    control_plane: PoolSize,
    application: PoolSize,
    database: PoolSize,
    storage: PoolSize,
    calls: PoolSize,
    li: PoolSize,
}

fn pools(tier: Tier) -> Pools {
    let (control_plane, application, database, storage, calls, li) = match tier {
        Tier::T100 => (
            (3, 4, 8, 100),
            (3, 8, 16, 200),
            (3, 4, 16, 500),
            (4, 4, 8, 1000),
            (2, 4, 8, 50),
            (2, 4, 16, 500),
        ),
        Tier::T1k => (
            (3, 4, 8, 100),
            (10, 16, 32, 500),
            (3, 16, 64, 1000),
            (8, 8, 16, 2000),
            (6, 8, 16, 100),
            (2, 8, 32, 1000),
        ),
        Tier::T5k => (
            (3, 8, 16, 200),
            (14, 32, 64, 1000),
            (3, 32, 128, 2000),
            (8, 16, 32, 4000),
            (8, 16, 32, 200),
            (2, 16, 64, 2000),
        ),
        Tier::T10k => (
            (3, 8, 16, 200),
            (17, 32, 128, 2000),
            (5, 32, 128, 4000),
            (12, 16, 32, 4000),
            (8, 16, 32, 200),
            (2, 16, 64, 4000),
        ),
        Tier::T20k => (
            (3, 8, 16, 200),
            (21, 32, 128, 2000),
            (5, 32, 128, 4000),
            (12, 16, 32, 4000),
            (10, 16, 32, 200),
            (3, 32, 128, 4000),
        ),
    };
    Pools {
        control_plane,
        application,
        database,
        storage,
        calls,
        li,
    }
}

fn role(
    role: &'static str,
    (count, vcpu, ram_gb, storage_gb): PoolSize,
    disk: &'static str,
    purpose: &'static str,
) -> NodeRole {
    NodeRole {
        role,
        count,
        vcpu,
        ram_gb,
        storage_gb,
        disk,
        purpose,
    }
}

fn node_roles(pools: &Pools, config: &Config) -> Vec<NodeRole> {
    let mut nodes = vec![
        role(
            "control-plane",
            pools.control_plane,
            "SSD",
            "Kubernetes control plane",
        ),
        role(
            "application",
            pools.application,
            "SSD",
            "Synapse, HAProxy, Valkey, Element, monitoring",
        ),
        role(
            "database",
            pools.database,
            "NVMe",
            "PostgreSQL (CloudNativePG)",
        ),
        role(
            "storage",
            pools.storage,
            "HDD",
            "S3 media storage (SeaweedFS volumes)",
        ),
    ];
    if config.has(Feature::Calls) {
        nodes.push(role(
            "calls",
            pools.calls,
            "SSD",
            "LiveKit and coturn (public IPs)",
        ));
    }
    if config.has(Feature::Li) {
        nodes.push(role(
            "lawful-intercept",
            pools.li,
            "NVMe",
            "LI replica, LI browsing stack, key vault",
        ));
    }
    nodes
}

/// Main's PostgreSQL, sized from the database node it runs on.
fn postgres(tier: Tier, (_, db_vcpu, db_ram_gb, _): PoolSize) -> PostgresSizing {
    PostgresSizing {
        instances: match tier {
            Tier::T100 => 2,
            Tier::T20k => 5,
            _ => 3,
        },
        max_connections: match tier {
            Tier::T100 => 200,
            Tier::T1k => 300,
            Tier::T5k => 500,
            Tier::T10k => 800,
            Tier::T20k => 1000,
        },
        // 25% of the database node's memory for shared buffers, 75% as the cache estimate.
        shared_buffers: format!("{}GB", db_ram_gb / 4),
        effective_cache_size: format!("{}GB", db_ram_gb * 3 / 4),
        work_mem: match tier {
            Tier::T100 | Tier::T1k => "16MB".into(),
            _ => "32MB".into(),
        },
        maintenance_work_mem: format!("{}MB", (db_ram_gb * 1024 / 16).min(2048)),
        storage: postgres_storage(tier).into(),
        wal_storage: match tier {
            Tier::T100 => "20Gi",
            Tier::T1k => "50Gi",
            _ => "200Gi",
        }
        .into(),
        resources: Resources {
            cpu_millis: db_vcpu * 1000 * 3 / 4,
            memory_mib: (db_ram_gb - 2) * 1024,
        },
    }
}

fn postgres_storage(tier: Tier) -> &'static str {
    match tier {
        Tier::T100 => "100Gi",
        Tier::T1k => "500Gi",
        Tier::T5k => "1Ti",
        Tier::T10k => "2Ti",
        Tier::T20k => "3Ti",
    }
}

fn valkey(tier: Tier) -> RedisSizing {
    // Seed 004 issue 2.4: 2 GB is too little at 10K-20K; 4-8 GB there.
    let maxmemory_mib = match tier {
        Tier::T100 => 512,
        Tier::T1k => 2048,
        Tier::T5k => 4096,
        Tier::T10k => 6144,
        Tier::T20k => 8192,
    };
    RedisSizing {
        instances: 3,
        sentinel_quorum: 2,
        maxmemory_mib,
        // Headroom for replication buffers and fork-on-save copy-on-write.
        resources: Resources {
            cpu_millis: 250 * factor(tier),
            memory_mib: maxmemory_mib * 3 / 2,
        },
    }
}

fn media_storage(tier: Tier) -> &'static str {
    match tier {
        Tier::T100 => "500Gi",
        Tier::T1k => "2Ti",
        Tier::T5k => "8Ti",
        Tier::T10k => "16Ti",
        Tier::T20k => "32Ti",
    }
}

fn haproxy_replicas(tier: Tier) -> u32 {
    match tier {
        Tier::T100 | Tier::T1k => 2,
        Tier::T5k | Tier::T10k => 3,
        Tier::T20k => 4,
    }
}

impl Sizing {
    pub fn for_tier(tier: Tier, config: &Config) -> Sizing {
        let pools = pools(tier);
        let nodes = node_roles(&pools, config);
        Sizing {
            tier,
            concurrent_users: tier.concurrent_users(),
            // Seed 003: 100 CCU = 140-400 messages/min at peak; 20K = 28,000-80,000.
            messages_per_minute_peak: tier.concurrent_users() * 4,
            total_nodes: nodes.iter().map(|n| n.count).sum(),
            total_vcpu: nodes.iter().map(|n| n.count * n.vcpu).sum(),
            total_ram_gb: nodes.iter().map(|n| n.count * n.ram_gb).sum(),
            total_storage_gb: nodes.iter().map(|n| n.count * n.storage_gb).sum(),
            nodes,
            postgres: postgres(tier, pools.database),
            redis: valkey(tier),
            media_storage: media_storage(tier).into(),
            haproxy_replicas: haproxy_replicas(tier),
        }
    }

    /// Resources of one container of a component, with the config's overrides applied.
    pub fn resources_for(&self, c: Component, config: &Config) -> Resources {
        let (cpu, mem) = base_resources(c);
        let f = match c {
            Component::Element | Component::Haproxy | Component::Clamav => 1,
            Component::Postgres => return self.postgres.resources.clone(),
            Component::Valkey => return self.redis.resources.clone(),
            _ => factor(self.tier),
        };
        let mut r = Resources {
            cpu_millis: cpu * f,
            memory_mib: mem * f,
        };
        let o = config.override_for(c);
        if let Some(cpu) = o.cpu.as_deref().and_then(parse_cpu) {
            r.cpu_millis = cpu;
        }
        if let Some(mem) = o.memory.as_deref().and_then(parse_memory_mib) {
            r.memory_mib = mem;
        }
        r
    }
}

/// `500m` -> 500, `2` -> 2000.
pub fn parse_cpu(s: &str) -> Option<u32> {
    let s = s.trim();
    if let Some(m) = s.strip_suffix('m') {
        return m.parse().ok().filter(|v| *v > 0);
    }
    s.parse::<f64>()
        .ok()
        .filter(|v| *v > 0.0)
        .map(|v| (v * 1000.0).round() as u32)
}

/// `512Mi` -> 512, `2Gi` -> 2048.
pub fn parse_memory_mib(s: &str) -> Option<u32> {
    let s = s.trim();
    if let Some(g) = s.strip_suffix("Gi") {
        return g.parse::<u32>().ok().filter(|v| *v > 0).map(|v| v * 1024);
    }
    if let Some(m) = s.strip_suffix("Mi") {
        return m.parse().ok().filter(|v| *v > 0);
    }
    None
}
