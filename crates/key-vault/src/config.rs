//! The key vault's config file. It holds no secret: the API keys and the PostgreSQL password are
//! read from the environment variables the file names, and the recipients are public keys.
//!
//! The types live in `mxstack-service-config`, shared with the writer, so the file written and
//! the file read cannot disagree. Loading is here, with everything that needs the vault's own
//! dependencies (age recipients, the warrant signer's Ed25519 key, tokio-postgres) or the
//! environment (API keys, the password), as extension traits.

use std::path::Path;

pub use mxstack_service_config::key_vault::{Database, PgDatabase, Recipients, VaultConfig};

/// The two API keys, read from the environment at start, and the keys a rotation is retiring.
pub struct ApiKeys {
    pub store: String,
    pub retrieval: String,
    /// `<store_api_key_env>_OTHER`, set while `mxstack rotate` replaces the store key (the key
    /// being retired, or on Kubernetes first the one being introduced): the vault accepts both
    /// until the escrow module has switched (docs/ROTATION.md).
    pub store_other: Option<String>,
    /// `<retrieval_api_key_env>_OTHER`, likewise while the LI console switches.
    pub retrieval_other: Option<String>,
}

/// The variable holding the second accepted key, beside the variable `var` of the current key.
pub fn other_env(var: &str) -> String {
    format!("{var}{OTHER_SUFFIX}")
}

/// Suffix of [`other_env`].
pub const OTHER_SUFFIX: &str = "_OTHER";

/// Shortest API key accepted (bytes).
pub const MIN_API_KEY_LEN: usize = 16;

/// Loading and checking a [`VaultConfig`], and what the vault derives from it.
pub trait VaultConfigExt: Sized {
    fn load(path: &Path) -> Result<Self, String>;
    /// Parses and checks the file: the recipients and the warrant signer must be keys, and the
    /// store and retrieval keys must come from different variables.
    fn from_yaml(text: &str) -> Result<Self, String>;
    /// The parsed recipients: the vault key, then the break-glass key if any.
    fn recipients(&self) -> Result<Vec<age::x25519::Recipient>, String>;
    /// The API keys from the environment. Errors name the variable, never a value.
    fn api_keys(&self) -> Result<ApiKeys, String>;
}

impl VaultConfigExt for VaultConfig {
    fn load(path: &Path) -> Result<VaultConfig, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
        VaultConfig::from_yaml(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    fn from_yaml(text: &str) -> Result<VaultConfig, String> {
        let c: VaultConfig = serde_saphyr::from_str(text).map_err(|e| e.to_string())?;
        c.recipients()?;
        if let Some(k) = &c.warrant_signer {
            crate::warrant::parse_public_key(k)?;
        }
        if c.store_api_key_env == c.retrieval_api_key_env {
            return Err(
                "`store_api_key_env` and `retrieval_api_key_env` name the same variable: the store and retrieval keys must differ"
                    .into(),
            );
        }
        Ok(c)
    }

    fn recipients(&self) -> Result<Vec<age::x25519::Recipient>, String> {
        let parse = |what: &str, s: &str| {
            s.trim().parse::<age::x25519::Recipient>().map_err(|e| {
                format!("recipients.{what}: not an age X25519 public key (age1...): {e}")
            })
        };
        let mut r = vec![parse("vault", &self.recipients.vault)?];
        if let Some(b) = &self.recipients.break_glass {
            let b = parse("break_glass", b)?;
            if b.to_string() == r[0].to_string() {
                return Err("recipients.break_glass is the vault key itself".into());
            }
            r.push(b);
        }
        Ok(r)
    }

    fn api_keys(&self) -> Result<ApiKeys, String> {
        let get = |name: &str| -> Result<String, String> {
            let v = std::env::var(name)
                .map_err(|_| format!("environment variable {name} (an API key) is not set"))?;
            let v = v.trim().to_string();
            if v.len() < MIN_API_KEY_LEN {
                return Err(format!(
                    "environment variable {name}: an API key needs at least {MIN_API_KEY_LEN} characters"
                ));
            }
            Ok(v)
        };
        // A retiring key is optional; when set it must be a usable key too.
        let other = |var: &str| -> Result<Option<String>, String> {
            let name = other_env(var);
            match std::env::var(&name) {
                Ok(v) if !v.trim().is_empty() => get(&name).map(Some),
                _ => Ok(None),
            }
        };
        let keys = ApiKeys {
            store: get(&self.store_api_key_env)?,
            retrieval: get(&self.retrieval_api_key_env)?,
            store_other: other(&self.store_api_key_env)?,
            retrieval_other: other(&self.retrieval_api_key_env)?,
        };
        if keys.store == keys.retrieval {
            return Err(format!(
                "{} and {} hold the same key: the store and retrieval keys must differ",
                self.store_api_key_env, self.retrieval_api_key_env
            ));
        }
        Ok(keys)
    }
}

/// How the vault connects to a [`PgDatabase`].
pub trait PgDatabaseExt {
    /// The password from the environment. The error names the variable, never a value.
    fn password(&self) -> Result<String, String>;
    fn pg_config(&self, password: &str) -> tokio_postgres::Config;
}

impl PgDatabaseExt for PgDatabase {
    fn password(&self) -> Result<String, String> {
        std::env::var(&self.password_env).map_err(|_| {
            format!(
                "environment variable {} (password of {}@{}) is not set",
                self.password_env, self.user, self.host
            )
        })
    }

    fn pg_config(&self, password: &str) -> tokio_postgres::Config {
        let mut c = tokio_postgres::Config::new();
        c.host(&self.host)
            .port(self.port)
            .dbname(&self.dbname)
            .user(&self.user)
            .password(password)
            .application_name("mxstack-key-vault")
            .connect_timeout(std::time::Duration::from_secs(10));
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PK: &str = "age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p";

    #[test]
    fn parses_both_database_forms() {
        let c = VaultConfig::from_yaml(&format!(
            "listen: 127.0.0.1:8095\ndatabase:\n  sqlite: /var/lib/kv/vault.db\nrecipients:\n  vault: {PK}\nstore_api_key_env: S\nretrieval_api_key_env: R\n"
        ))
        .unwrap();
        assert!(
            matches!(c.database, Database::Sqlite(ref p) if p == Path::new("/var/lib/kv/vault.db"))
        );
        assert_eq!(c.recipients().unwrap().len(), 1);
        let c = VaultConfig::from_yaml(&format!(
            "listen: 127.0.0.1:8095\ndatabase:\n  postgres: {{host: db, port: 5432, dbname: kv, user: kv, password_env: P}}\nrecipients: {{vault: {PK}}}\nstore_api_key_env: S\nretrieval_api_key_env: R\n"
        ))
        .unwrap();
        assert!(
            matches!(c.database, Database::Postgres(ref p) if p.port == 5432 && p.password_env == "P")
        );
    }

    #[test]
    fn refuses_bad_recipients_and_shared_key_variables() {
        let base = |vault: &str, s: &str, r: &str| {
            VaultConfig::from_yaml(&format!(
                "listen: 127.0.0.1:1\ndatabase: {{sqlite: /tmp/x.db}}\nrecipients: {{vault: {vault}}}\nstore_api_key_env: {s}\nretrieval_api_key_env: {r}\n"
            ))
        };
        assert!(base("age1nope", "S", "R")
            .unwrap_err()
            .contains("recipients.vault"));
        assert!(base(PK, "S", "S").unwrap_err().contains("must differ"));
        assert!(base(PK, "S", "R").is_ok());
    }
}
