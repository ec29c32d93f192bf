//! The shape of a database as logical replication cares about it (tables, columns, keys, indexes,
//! replica identities, sequences), read from the catalogs, and the additive DDL that brings the
//! replica up to main.
//!
//! Only additions are applied: a column or table main dropped stays on the replica (its rows are
//! evidence, and a subscriber tolerates extra columns); a changed column type is reported, never
//! applied, because it can rewrite data.

use std::collections::{BTreeMap, BTreeSet};

use tokio_postgres::GenericClient;

/// Synapse keeps everything in `public`.
pub const SCHEMA: &str = "public";

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Schema {
    pub tables: BTreeMap<String, Table>,
    pub sequences: BTreeSet<String>,
    /// Tables main's event trigger saw created, with their columns (main only; see
    /// `mxstack_topology::li::main_setup_sql`). Those since dropped on main are still created on
    /// the replica, so changes already in the stream for them do not stall the subscription.
    pub created_tables: BTreeMap<String, Vec<Column>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Table {
    pub columns: Vec<Column>,
    /// Primary key, unique, check and exclusion constraints (foreign keys are left out: the
    /// replica must accept a row whose parent main has since deleted).
    pub constraints: Vec<NamedDef>,
    /// Indexes that do not back a constraint, as `pg_get_indexdef` prints them.
    pub indexes: Vec<NamedDef>,
    pub identity: Identity,
    /// UNLOGGED (Synapse's read-write locks): never published, so never filled on the replica,
    /// but created there empty and unlogged, so a working copy has what Synapse LI needs.
    pub unlogged: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    pub name: String,
    pub type_sql: String,
    pub not_null: bool,
    pub default: Option<String>,
    /// Expression of a stored generated column.
    pub generated: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamedDef {
    pub name: String,
    pub def: String,
}

/// `pg_class.relreplident`, with the index name for USING INDEX.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Identity {
    /// The primary key (or nothing, if there is none).
    #[default]
    Default,
    Full,
    Index(String),
    Nothing,
}

/// Quote an identifier the way `quote_ident` does.
pub fn ident(name: &str) -> String {
    let plain = name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && !name.is_empty();
    if plain && !RESERVED.contains(&name) {
        name.to_string()
    } else {
        format!("\"{}\"", name.replace('"', "\"\""))
    }
}

/// Reserved words Synapse might plausibly use as names; quoting them is always safe.
const RESERVED: [&str; 12] = [
    "user", "order", "group", "table", "select", "where", "from", "to", "end", "limit", "offset",
    "default",
];

pub fn qualified(table: &str) -> String {
    format!("{SCHEMA}.{}", ident(table))
}

/// A string literal.
pub fn literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

impl Schema {
    /// Read the schema of `public` from the catalogs (any role can: no table is read).
    pub async fn read(db: &impl GenericClient) -> Result<Schema, tokio_postgres::Error> {
        let mut schema = Schema::default();
        for row in db
            .query(
                "SELECT c.relname::text, c.relreplident::text,
                        (SELECT ic.relname::text FROM pg_catalog.pg_index i
                           JOIN pg_catalog.pg_class ic ON ic.oid = i.indexrelid
                          WHERE i.indrelid = c.oid AND i.indisreplident),
                        c.relpersistence = 'u'
                   FROM pg_catalog.pg_class c
                   JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
                  WHERE n.nspname = $1 AND c.relkind IN ('r', 'p') AND NOT c.relispartition
                    AND c.relpersistence IN ('p', 'u')",
                &[&SCHEMA],
            )
            .await?
        {
            let name: String = row.get(0);
            let ident: String = row.get(1);
            let index: Option<String> = row.get(2);
            let identity = match (ident.as_str(), index) {
                ("f", _) => Identity::Full,
                ("n", _) => Identity::Nothing,
                ("i", Some(ix)) => Identity::Index(ix),
                // 'i' whose index is gone behaves as NOTHING.
                ("i", None) => Identity::Nothing,
                _ => Identity::Default,
            };
            schema.tables.insert(
                name,
                Table {
                    identity,
                    unlogged: row.get(3),
                    ..Table::default()
                },
            );
        }
        for row in db
            .query(
                "SELECT c.relname::text, a.attname::text,
                        pg_catalog.format_type(a.atttypid, a.atttypmod), a.attnotnull,
                        pg_catalog.pg_get_expr(d.adbin, d.adrelid), a.attgenerated::text
                   FROM pg_catalog.pg_attribute a
                   JOIN pg_catalog.pg_class c ON c.oid = a.attrelid
                   JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
                   LEFT JOIN pg_catalog.pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
                  WHERE n.nspname = $1 AND c.relkind IN ('r', 'p') AND NOT c.relispartition
                    AND a.attnum > 0 AND NOT a.attisdropped
                  ORDER BY c.relname, a.attnum",
                &[&SCHEMA],
            )
            .await?
        {
            let table: String = row.get(0);
            let expr: Option<String> = row.get(4);
            let generated: String = row.get(5);
            let (default, generated) = if generated == "s" {
                (None, expr)
            } else {
                (expr, None)
            };
            if let Some(t) = schema.tables.get_mut(&table) {
                t.columns.push(Column {
                    name: row.get(1),
                    type_sql: row.get(2),
                    not_null: row.get(3),
                    default,
                    generated,
                });
            }
        }
        for row in db
            .query(
                "SELECT c.relname::text, con.conname::text, pg_catalog.pg_get_constraintdef(con.oid)
                   FROM pg_catalog.pg_constraint con
                   JOIN pg_catalog.pg_class c ON c.oid = con.conrelid
                   JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
                  WHERE n.nspname = $1 AND con.contype IN ('p', 'u', 'c', 'x')
                  ORDER BY c.relname, con.contype <> 'p', con.conname",
                &[&SCHEMA],
            )
            .await?
        {
            let table: String = row.get(0);
            // Like pg_get_indexdef below, NULL if the constraint vanished while this ran.
            let def: Option<String> = row.get(2);
            if let (Some(t), Some(def)) = (schema.tables.get_mut(&table), def) {
                t.constraints.push(NamedDef {
                    name: row.get(1),
                    def,
                });
            }
        }
        for row in db
            .query(
                "SELECT c.relname::text, ic.relname::text, pg_catalog.pg_get_indexdef(i.indexrelid)
                   FROM pg_catalog.pg_index i
                   JOIN pg_catalog.pg_class c ON c.oid = i.indrelid
                   JOIN pg_catalog.pg_class ic ON ic.oid = i.indexrelid
                   JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
                  WHERE n.nspname = $1 AND i.indisvalid
                    AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_constraint con
                                     WHERE con.conindid = i.indexrelid AND con.conrelid = i.indrelid
                                       AND con.contype IN ('p', 'u', 'x'))
                  ORDER BY c.relname, ic.relname",
                &[&SCHEMA],
            )
            .await?
        {
            let table: String = row.get(0);
            // NULL when the index was dropped after this query's snapshot (pg_get_indexdef
            // reads the latest catalog; Synapse's background updates drop indexes): skip it.
            let def: Option<String> = row.get(2);
            if let (Some(t), Some(def)) = (schema.tables.get_mut(&table), def) {
                t.indexes.push(NamedDef {
                    name: row.get(1),
                    def,
                });
            }
        }
        for row in db
            .query(
                "SELECT c.relname::text FROM pg_catalog.pg_class c
                   JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
                  WHERE n.nspname = $1 AND c.relkind = 'S'",
                &[&SCHEMA],
            )
            .await?
        {
            schema.sequences.insert(row.get(0));
        }
        let registry = db
            .query_opt(
                "SELECT 1 FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
                  WHERE n.nspname = 'mxstack_li' AND c.relname = 'created_tables'
                    AND pg_catalog.has_table_privilege(c.oid, 'SELECT')",
                &[],
            )
            .await?
            .is_some();
        if registry {
            for row in db
                .query(
                    "SELECT table_name, columns::text FROM mxstack_li.created_tables",
                    &[],
                )
                .await?
            {
                let columns: Vec<serde_json::Value> =
                    serde_json::from_str(row.get::<_, &str>(1)).unwrap_or_default();
                let columns = columns
                    .iter()
                    .filter_map(|c| {
                        Some(Column {
                            name: c.get("name")?.as_str()?.to_string(),
                            type_sql: c.get("type")?.as_str()?.to_string(),
                            not_null: false,
                            default: None,
                            generated: None,
                        })
                    })
                    .collect();
                schema.created_tables.insert(row.get(0), columns);
            }
        }
        Ok(schema)
    }

    /// Tables whose UPDATE/DELETE would fail on main under a FOR ALL TABLES publication.
    pub fn tables_without_identity(&self) -> Vec<String> {
        self.tables
            .iter()
            .filter(|(_, t)| !t.unlogged)
            .filter(|(_, t)| match &t.identity {
                Identity::Default => !t
                    .constraints
                    .iter()
                    .any(|c| c.def.starts_with("PRIMARY KEY")),
                Identity::Nothing => true,
                _ => false,
            })
            .map(|(n, _)| n.clone())
            .collect()
    }
}

/// What the replica lacks, as statements to run in order, and what cannot be applied.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SchemaDiff {
    pub new_tables: Vec<String>,
    pub statements: Vec<String>,
    /// Differences left alone (a changed column type), for status and logs.
    pub not_applied: Vec<String>,
}

impl SchemaDiff {
    pub fn is_empty(&self) -> bool {
        self.statements.is_empty()
    }
}

fn column_sql(c: &Column, with_not_null: bool) -> String {
    let mut s = format!("{} {}", ident(&c.name), c.type_sql);
    if let Some(g) = &c.generated {
        s.push_str(&format!(" GENERATED ALWAYS AS ({g}) STORED"));
    } else if let Some(d) = &c.default {
        s.push_str(&format!(" DEFAULT {d}"));
    }
    if with_not_null && c.not_null {
        s.push_str(" NOT NULL");
    }
    s
}

fn identity_sql(table: &str, identity: &Identity) -> Option<String> {
    let t = qualified(table);
    match identity {
        Identity::Default => None,
        Identity::Full => Some(format!("ALTER TABLE {t} REPLICA IDENTITY FULL")),
        Identity::Index(ix) => Some(format!(
            "ALTER TABLE {t} REPLICA IDENTITY USING INDEX {}",
            ident(ix)
        )),
        Identity::Nothing => None,
    }
}

/// The additive difference from `replica` to `main`.
pub fn diff(main: &Schema, replica: &Schema) -> SchemaDiff {
    let mut d = SchemaDiff::default();
    for seq in main.sequences.difference(&replica.sequences) {
        d.statements
            .push(format!("CREATE SEQUENCE IF NOT EXISTS {}", qualified(seq)));
    }
    for (name, columns) in &main.created_tables {
        if !main.tables.contains_key(name) && !replica.tables.contains_key(name) {
            // Created and dropped on main before the replica saw it: an empty table of the same
            // shape, so the apply worker finds it (PostgreSQL skips changes of a table the
            // subscription never listed, so no rows arrive; Synapse uses these for scratch).
            d.new_tables.push(name.clone());
            let cols: Vec<String> = columns.iter().map(|c| column_sql(c, false)).collect();
            d.statements.push(format!(
                "CREATE TABLE {} ({})",
                qualified(name),
                cols.join(", ")
            ));
        }
    }
    for (name, table) in &main.tables {
        let t = qualified(name);
        match replica.tables.get(name) {
            None => {
                d.new_tables.push(name.clone());
                let cols: Vec<String> = table.columns.iter().map(|c| column_sql(c, true)).collect();
                d.statements.push(format!(
                    "CREATE {}TABLE {t} ({})",
                    if table.unlogged { "UNLOGGED " } else { "" },
                    cols.join(", ")
                ));
                for c in &table.constraints {
                    d.statements.push(format!(
                        "ALTER TABLE {t} ADD CONSTRAINT {} {}",
                        ident(&c.name),
                        c.def
                    ));
                }
                for ix in &table.indexes {
                    d.statements.push(ix.def.clone());
                }
                d.statements.extend(identity_sql(name, &table.identity));
            }
            Some(have) => {
                for c in &table.columns {
                    match have.columns.iter().find(|h| h.name == c.name) {
                        None => {
                            // NOT NULL only when a default fills the rows the replica already has.
                            let keep_not_null = c.default.is_some();
                            d.statements.push(format!(
                                "ALTER TABLE {t} ADD COLUMN IF NOT EXISTS {}",
                                column_sql(c, keep_not_null)
                            ));
                        }
                        Some(h) if h.type_sql != c.type_sql => d.not_applied.push(format!(
                            "{name}.{}: type {} on main, {} on the replica",
                            c.name, c.type_sql, h.type_sql
                        )),
                        Some(_) => {}
                    }
                }
                for c in &table.constraints {
                    if !have.constraints.iter().any(|h| h.name == c.name) {
                        d.statements.push(format!(
                            "ALTER TABLE {t} ADD CONSTRAINT {} {}",
                            ident(&c.name),
                            c.def
                        ));
                    }
                }
                for ix in &table.indexes {
                    if !have.indexes.iter().any(|h| h.name == ix.name) {
                        d.statements.push(ix.def.clone());
                    }
                }
                if have.identity != table.identity {
                    d.statements.extend(identity_sql(name, &table.identity));
                }
            }
        }
    }
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    fn col(name: &str, ty: &str, not_null: bool) -> Column {
        Column {
            name: name.into(),
            type_sql: ty.into(),
            not_null,
            default: None,
            generated: None,
        }
    }

    #[test]
    fn a_new_table_is_created_with_its_keys_indexes_and_identity() {
        let mut main = Schema::default();
        main.tables.insert(
            "t".into(),
            Table {
                columns: vec![col("a", "text", true), col("user", "bigint", false)],
                constraints: vec![],
                indexes: vec![NamedDef {
                    name: "t_a".into(),
                    def: "CREATE UNIQUE INDEX t_a ON public.t USING btree (a)".into(),
                }],
                identity: Identity::Index("t_a".into()),
                unlogged: false,
            },
        );
        let d = diff(&main, &Schema::default());
        assert_eq!(d.new_tables, vec!["t".to_string()]);
        assert_eq!(
            d.statements,
            vec![
                "CREATE TABLE public.t (a text NOT NULL, \"user\" bigint)".to_string(),
                "CREATE UNIQUE INDEX t_a ON public.t USING btree (a)".to_string(),
                "ALTER TABLE public.t REPLICA IDENTITY USING INDEX t_a".to_string(),
            ]
        );
    }

    #[test]
    fn only_additions_are_applied_and_type_changes_are_reported() {
        let mut main = Schema::default();
        main.tables.insert(
            "t".into(),
            Table {
                columns: vec![col("a", "bigint", true), col("b", "text", true)],
                ..Table::default()
            },
        );
        let mut replica = Schema::default();
        replica.tables.insert(
            "t".into(),
            Table {
                columns: vec![col("a", "integer", true), col("gone", "text", false)],
                ..Table::default()
            },
        );
        replica
            .tables
            .insert("dropped_on_main".into(), Table::default());
        let d = diff(&main, &replica);
        // b is added nullable: it has no default to fill existing rows.
        assert_eq!(
            d.statements,
            vec!["ALTER TABLE public.t ADD COLUMN IF NOT EXISTS b text".to_string()]
        );
        assert_eq!(d.not_applied.len(), 1, "{:?}", d.not_applied);
        assert!(diff(&main, &main).is_empty());
    }

    #[test]
    fn unlogged_tables_are_created_unlogged_and_never_as_dropped_ones() {
        let mut main = Schema::default();
        main.tables.insert(
            "locks".into(),
            Table {
                columns: vec![col("a", "text", false)],
                unlogged: true,
                ..Table::default()
            },
        );
        // The event trigger saw Synapse create it: still not a "dropped" table to create again.
        main.created_tables
            .insert("locks".into(), vec![col("a", "text", false)]);
        let d = diff(&main, &Schema::default());
        assert_eq!(
            d.statements,
            vec!["CREATE UNLOGGED TABLE public.locks (a text)".to_string()]
        );
        assert!(main.tables_without_identity().is_empty(), "never published");
    }
}
