//! The console's config file. It holds no secret: every credential is read from the environment
//! variable the file names (the Kubernetes Secret or `mxstack up` sets them).
//!
//! The types and their loading live in `mxstack-service-config`, shared with the writer, so the
//! file written and the file read cannot disagree. Reading the credentials is here.

pub use mxstack_service_config::li_console::{ConsoleConfig, KeyVault, Media, Replica};

/// Reads a credential from the environment variable a config field names; the error names the
/// variable and the field, never a value.
pub fn env_secret(var: &str, field: &str) -> Result<String, String> {
    match std::env::var(var) {
        Ok(v) if !v.trim().is_empty() => Ok(v.trim().to_string()),
        _ => Err(format!(
            "environment variable {var} (named by `{field}`) is not set: the console needs it"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mxstack_topology::li_console::{console_config, ConsoleEndpoints};

    #[test]
    fn the_topology_renders_a_config_the_console_reads() {
        let v = console_config(&ConsoleEndpoints {
            listen: "0.0.0.0:8093",
            database: "/data/li-console.sqlite3",
            server_name: "acme.test",
            replica: ("li-pg-rw", 5432, "synapse_li"),
            key_vault_url: "http://key-vault:8092",
            media: ("http://s3:8333", "media-li", "us-east-1"),
            clamd: Some("clamav:3310".into()),
            secure_cookies: true,
            metrics_listen: Some("0.0.0.0:9094"),
        });
        let text = serde_saphyr::to_string(&v).unwrap();
        let c: ConsoleConfig = serde_saphyr::from_str(&text).unwrap();
        assert_eq!(c.replica.user, "li_console");
        assert_eq!(c.clamd.as_deref(), Some("clamav:3310"));
        assert_eq!(c.media.unwrap().bucket, "media-li");
        assert!(c.secure_cookies);
        assert_eq!(c.metrics_listen.as_deref(), Some("0.0.0.0:9094"));
        let missing = env_secret("MXSTACK_TEST_SURELY_UNSET", "replica.password_env").unwrap_err();
        assert!(
            missing.contains("MXSTACK_TEST_SURELY_UNSET")
                && missing.contains("replica.password_env")
        );
    }
}
