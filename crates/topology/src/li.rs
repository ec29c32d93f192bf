//! The lawful-intercept data path: the replica, the roles, the publication and li-sync's config.
//!
//! Names here are shared by the Kubernetes render (CloudNativePG roles, Publication, Subscription,
//! NetworkPolicies) and the local runner, so both build the same replica.

use mxstack_service_config::li_sync::{
    Database, LiSyncConfig, MediaConfig, Subscription, SyncMode, WorkingCopyConfig,
};
use mxstack_spec::LiSyncMode;
use serde_json::Value;

use crate::addressing::Addressing;
use crate::synapse::DATABASE_NAME;
use crate::Topology;

/// Role on main that the replica subscribes with: LOGIN REPLICATION and SELECT, no write grant.
pub const REPLICATION_ROLE: &str = "li_replicator";
/// Role on the LI cluster that li-sync uses (owns the replica database and its history).
pub const LI_ROLE: &str = "li_sync";
/// The replica database on the LI cluster.
pub const LI_DATABASE: &str = "synapse_li";
/// The LI browsing stack's working copy, refreshed from the replica (never replicated into).
pub const WORKING_COPY_DATABASE: &str = "synapse_li_work";
/// Synapse LI's role on the LI PostgreSQL: owns the working copy, nothing else.
pub const WORKING_COPY_ROLE: &str = "synapse_li";
pub const PUBLICATION: &str = "mxstack_li";
pub const SUBSCRIPTION: &str = "mxstack_li";
/// Schema on main (replica identity function, event trigger) and on the replica (history).
pub const LI_SCHEMA: &str = "mxstack_li";

/// Environment variables li-sync reads its credentials from (never from its config file).
pub const ENV_MAIN_PASSWORD: &str = "MXSTACK_LI_MAIN_PASSWORD";
pub const ENV_LI_PASSWORD: &str = "MXSTACK_LI_DB_PASSWORD";
pub const ENV_S3_ACCESS_KEY: &str = "MXSTACK_LI_S3_ACCESS_KEY";
pub const ENV_S3_SECRET_KEY: &str = "MXSTACK_LI_S3_SECRET_KEY";

/// li-sync's config file (no secrets: passwords and keys come from the environment), as the
/// value the targets write out. See [`li_sync_config_typed`].
pub fn li_sync_config(t: &Topology, addr: &dyn Addressing, listen: &str) -> Value {
    crate::service_config_value(&li_sync_config_typed(t, addr, listen))
}

/// li-sync's config as the type li-sync reads.
///
/// `subscription.main_*` is main as the LI PostgreSQL reaches it (the subscription's conninfo);
/// `main` is main as li-sync reaches it. They are the same address on both targets today.
/// `dump_interval_secs` is left unset: on Kubernetes a CronJob runs the dumps (the local runner
/// sets it).
pub fn li_sync_config_typed(t: &Topology, addr: &dyn Addressing, listen: &str) -> LiSyncConfig {
    let config = &t.config;
    let main = addr.postgres();
    let li = addr.li_postgres();
    LiSyncConfig {
        listen: listen.to_string(),
        mode: match config.li.sync {
            LiSyncMode::Logical => SyncMode::Logical,
            LiSyncMode::Dump => SyncMode::Dump,
        },
        main: Database {
            host: main.host.clone(),
            port: main.port,
            dbname: DATABASE_NAME.into(),
            user: REPLICATION_ROLE.into(),
            password_env: ENV_MAIN_PASSWORD.into(),
        },
        replica: Database {
            host: li.host,
            port: li.port,
            dbname: LI_DATABASE.into(),
            user: LI_ROLE.into(),
            password_env: ENV_LI_PASSWORD.into(),
        },
        subscription: Subscription {
            name: SUBSCRIPTION.into(),
            publication: PUBLICATION.into(),
            main_host: main.host,
            main_port: main.port,
        },
        media: Some(MediaConfig {
            endpoint: addr.s3_endpoint(),
            region: config.media.region.clone(),
            main_bucket: config.media.bucket.clone(),
            li_bucket: config.li.media_bucket(&config.media),
            access_key_env: ENV_S3_ACCESS_KEY.into(),
            secret_key_env: ENV_S3_SECRET_KEY.into(),
            interval_secs: 10,
        }),
        schema_check_interval_secs: 5,
        status_interval_secs: 1,
        working_copy: Some(WorkingCopyConfig {
            dbname: WORKING_COPY_DATABASE.into(),
            owner: WORKING_COPY_ROLE.into(),
        }),
        dump_interval_secs: None,
    }
}

/// Tables whose rows are bookkeeping rewritten every few seconds (locks, stream positions,
/// background-update progress). The replica mirrors them, but their UPDATEs are not kept in
/// history: they carry no user content and would grow the history without bound.
pub const HISTORY_SKIPS_UPDATES_OF: [&str; 4] = [
    "worker_locks",
    "worker_read_write_locks",
    "stream_positions",
    "background_updates",
];

/// The SQL main needs, run once as a superuser (CloudNativePG `postInitApplicationSQL` on a new
/// cluster, `mxstack li prepare-main` on an existing one, `postgres-setup` locally). Idempotent.
///
/// Order matters: every table gets a usable replica identity and the event trigger is in place
/// before the FOR ALL TABLES publication exists, because from that moment an UPDATE or DELETE on
/// a table without one fails on main (FACTS: that breaks Synapse). `replication_password` is
/// `None` where the operator manages the role (CloudNativePG `managed.roles`).
pub fn main_setup_sql(synapse_owner: &str, replication_password: Option<&str>) -> String {
    let role = REPLICATION_ROLE;
    let schema = LI_SCHEMA;
    let db = DATABASE_NAME;
    let publication = PUBLICATION;
    let password = match replication_password {
        Some(pw) => crate::pgsql::with_secret(&format!(
            "ALTER ROLE {role} WITH PASSWORD '{}';",
            pw.replace('\'', "''")
        )),
        None => String::new(),
    };
    format!(
        r#"CREATE SCHEMA IF NOT EXISTS {schema};
REVOKE ALL ON SCHEMA {schema} FROM PUBLIC;

-- Primary key, else a unique, non-partial, non-expression index on NOT NULL columns, else FULL.
-- Returns how many tables it changed. Runs as its owner (a superuser) so that it may alter
-- tables whatever role ran the DDL; search_path is pinned.
CREATE OR REPLACE FUNCTION {schema}.ensure_replica_identity() RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog AS $fn$
DECLARE
  t record;
  usable_index name;
  changed integer := 0;
BEGIN
  FOR t IN
    SELECT c.oid, c.relname, c.relreplident,
           EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisprimary) AS has_pk,
           EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisreplident) AS has_ident_index
    FROM pg_class c JOIN pg_namespace ns ON ns.oid = c.relnamespace
    WHERE ns.nspname = 'public' AND c.relkind IN ('r', 'p') AND NOT c.relispartition
      AND c.relpersistence = 'p'
  LOOP
    CONTINUE WHEN t.relreplident = 'd' AND t.has_pk;
    CONTINUE WHEN t.relreplident = 'i' AND t.has_ident_index;
    IF t.has_pk THEN
      EXECUTE format('ALTER TABLE public.%I REPLICA IDENTITY DEFAULT', t.relname);
      changed := changed + 1;
      CONTINUE;
    END IF;
    SELECT ic.relname INTO usable_index
    FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid
    WHERE i.indrelid = t.oid AND i.indisunique AND i.indisvalid AND i.indimmediate
      AND i.indpred IS NULL AND i.indexprs IS NULL
      AND NOT EXISTS (
        SELECT 1 FROM unnest(i.indkey[0:i.indnkeyatts - 1]) AS k(attnum)
        JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = k.attnum
        WHERE NOT a.attnotnull)
    ORDER BY i.indnkeyatts, ic.relname
    LIMIT 1;
    IF usable_index IS NOT NULL THEN
      EXECUTE format('ALTER TABLE public.%I REPLICA IDENTITY USING INDEX %I', t.relname, usable_index);
      changed := changed + 1;
    ELSIF t.relreplident <> 'f' THEN
      EXECUTE format('ALTER TABLE public.%I REPLICA IDENTITY FULL', t.relname);
      changed := changed + 1;
    END IF;
  END LOOP;
  RETURN changed;
END
$fn$;

-- Tables and indexes created or dropped by later Synapse migrations get an identity at once.
-- A failure here must never fail Synapse's migration: it becomes a warning, and li-sync reports
-- any table left without a usable identity.
--
-- It also records every table created in `public` with its columns: Synapse creates scratch
-- tables and drops them minutes later, and if one is gone before li-sync copies it, the replica
-- stalls on "target relation does not exist". UNLOGGED: never published, nothing to replicate.
CREATE UNLOGGED TABLE IF NOT EXISTS {schema}.created_tables (
  table_name text PRIMARY KEY,
  columns jsonb NOT NULL,
  created_at timestamptz NOT NULL DEFAULT pg_catalog.now()
);
CREATE OR REPLACE FUNCTION {schema}.on_ddl() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog AS $fn$
DECLARE
  cmd record;
BEGIN
  FOR cmd IN SELECT * FROM pg_event_trigger_ddl_commands()
             WHERE command_tag IN ('CREATE TABLE', 'CREATE TABLE AS', 'SELECT INTO') AND schema_name = 'public'
  LOOP
    INSERT INTO {schema}.created_tables (table_name, columns)
    SELECT c.relname, jsonb_agg(jsonb_build_object('name', a.attname, 'type', format_type(a.atttypid, a.atttypmod)) ORDER BY a.attnum)
      FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
     WHERE c.oid = cmd.objid AND c.relkind = 'r' AND c.relpersistence = 'p'
     GROUP BY c.relname
    ON CONFLICT (table_name) DO UPDATE SET columns = EXCLUDED.columns, created_at = pg_catalog.now();
  END LOOP;
  PERFORM {schema}.ensure_replica_identity();
EXCEPTION WHEN OTHERS THEN
  RAISE WARNING 'mxstack_li: replica identity not set: %', SQLERRM;
END
$fn$;
REVOKE ALL ON FUNCTION {schema}.ensure_replica_identity() FROM PUBLIC;
REVOKE ALL ON FUNCTION {schema}.on_ddl() FROM PUBLIC;

SELECT {schema}.ensure_replica_identity();
DROP EVENT TRIGGER IF EXISTS mxstack_li_replica_identity;
CREATE EVENT TRIGGER mxstack_li_replica_identity ON ddl_command_end
  WHEN TAG IN ('CREATE TABLE', 'CREATE TABLE AS', 'SELECT INTO', 'ALTER TABLE', 'CREATE INDEX', 'DROP INDEX')
  EXECUTE FUNCTION {schema}.on_ddl();

-- The replica's role: log in, replicate, read. No write grant anywhere.
DO $do$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{role}') THEN
    CREATE ROLE {role} LOGIN REPLICATION;
  END IF;
END $do$;
ALTER ROLE {role} WITH LOGIN REPLICATION NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS;
{password}GRANT CONNECT ON DATABASE {db} TO {role};
GRANT USAGE ON SCHEMA public TO {role};
GRANT SELECT ON ALL TABLES IN SCHEMA public TO {role};
GRANT SELECT ON ALL SEQUENCES IN SCHEMA public TO {role};
ALTER DEFAULT PRIVILEGES FOR ROLE {synapse_owner} IN SCHEMA public GRANT SELECT ON TABLES TO {role};
ALTER DEFAULT PRIVILEGES FOR ROLE {synapse_owner} IN SCHEMA public GRANT SELECT ON SEQUENCES TO {role};
GRANT pg_read_all_stats TO {role};
GRANT USAGE ON SCHEMA {schema} TO {role};
GRANT SELECT ON {schema}.created_tables TO {role};

-- Last: from here on every UPDATE/DELETE needs the identities set above. TRUNCATE is published
-- so the replica never keeps rows main has re-inserted (user directory rebuilds); the replica's
-- history trigger keeps the truncated rows.
DO $do$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_publication WHERE pubname = '{publication}') THEN
    CREATE PUBLICATION {publication} FOR ALL TABLES WITH (publish = 'insert, update, delete, truncate');
  END IF;
END $do$;
"#
    )
}

/// Environment variables `mxstack li prepare-main` reads main's superuser from (the Kubernetes
/// Job `li-prepare-main` sets them from CloudNativePG's `main-pg-superuser` Secret).
pub const ENV_MAIN_ADMIN_USER: &str = "MXSTACK_LI_MAIN_ADMIN_USER";
pub const ENV_MAIN_ADMIN_PASSWORD: &str = "MXSTACK_LI_MAIN_ADMIN_PASSWORD";
