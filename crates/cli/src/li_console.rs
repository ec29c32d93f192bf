//! `mxstack li console ...`, `mxstack li audit verify`, `mxstack li export verify`: the LI
//! console's accounts, its audit chain and its evidence packages (crates/li-console).
//!
//! Commands find the console's SQLite file from `--config mxstack.yaml` (a local stack: in its
//! state directory), `--console-config FILE` (inside the console's pod) or `--database FILE`.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use mxstack_li_console::config::ConsoleConfig;
use mxstack_li_console::store::Role;
use mxstack_spec::{SecretName, Secrets};
use mxstack_topology::li_console::CONSOLE_SQLITE_FILE;
use serde_json::json;

use crate::local::Target;

type CmdResult = Result<ExitCode, String>;

/// Where the console's database is.
pub struct ConsoleSource {
    pub config: Option<PathBuf>,
    pub state: Option<PathBuf>,
    pub console_config: Option<PathBuf>,
    pub database: Option<PathBuf>,
}

impl ConsoleSource {
    fn database(&self) -> Result<PathBuf, String> {
        if let Some(d) = &self.database {
            return Ok(d.clone());
        }
        if let Some(c) = &self.console_config {
            return Ok(ConsoleConfig::load(c)?.database);
        }
        let Some(config) = &self.config else {
            return Err("give --config mxstack.yaml (a local stack), --console-config FILE (in the console's pod) or --database FILE".into());
        };
        let t = Target::new(config, self.state.as_deref(), None);
        let path = t.layout.root.join("li-console").join(CONSOLE_SQLITE_FILE);
        if !path.exists() {
            return Err(format!(
                "{} does not exist: is feature `li` on and the stack started with `mxstack up --config {}`?",
                path.display(),
                config.display()
            ));
        }
        Ok(path)
    }
}

/// Creates a console account. The password comes from stdin (`--password-stdin`) or is
/// generated; the TOTP secret is printed once, for the person's authenticator app.
pub fn add_user(
    source: &ConsoleSource,
    username: &str,
    role: &str,
    password_stdin: bool,
    json_out: bool,
) -> CmdResult {
    let role: Role = role
        .parse()
        .map_err(|_| format!("unknown role {role:?}: use investigator, supervisor or auditor"))?;
    let db = source.database()?;
    let (password, generated) = if password_stdin {
        let mut p = String::new();
        std::io::stdin()
            .read_to_string(&mut p)
            .map_err(|e| format!("reading the password from stdin: {e}"))?;
        (p.trim_end_matches(['\r', '\n']).to_string(), false)
    } else {
        (
            mxstack_spec::generate(mxstack_spec::SecretShape::Alnum(24))
                .map_err(|e| e.to_string())?,
            true,
        )
    };
    let account = mxstack_li_console::add_user(&db, username, role, &password)?;
    if json_out {
        let mut v = json!({
            "username": username,
            "role": role.as_str(),
            "totp_secret": account.totp_secret_base32,
            "otpauth_uri": account.otpauth_uri,
        });
        if generated {
            v["password"] = json!(password);
        }
        println!("{}", serde_json::to_string_pretty(&v).expect("json"));
    } else {
        println!("account {username} ({}) created", role.as_str());
        if generated {
            println!("password: {password}");
        }
        println!(
            "TOTP secret (enter it in an authenticator app): {}",
            account.totp_secret_base32
        );
        println!("otpauth URI: {}", account.otpauth_uri);
        eprintln!("these are shown once: hand them to the person over a channel you trust");
    }
    Ok(ExitCode::SUCCESS)
}

/// Walks the audit chain. Exit 0: intact; exit 2: broken (the first bad row is named).
pub fn audit_verify(
    source: &ConsoleSource,
    expect_head: Option<&str>,
    json_out: bool,
) -> CmdResult {
    let db = source.database()?;
    match mxstack_li_console::audit::verify(&db, expect_head) {
        Ok(r) => {
            if json_out {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&json!({
                        "ok": true, "database": db, "rows": r.rows, "head_hash": r.head_hash,
                        "first_at_ms": r.first_at_ms, "last_at_ms": r.last_at_ms,
                    }))
                    .expect("json")
                );
            } else {
                println!(
                    "audit chain intact: {} entries, head {} ({})",
                    r.rows,
                    r.head_hash,
                    db.display()
                );
                if expect_head.is_none() {
                    eprintln!("note: removal of the newest entries is detected only with --expect-head (the head hash from the console's log)");
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            if json_out {
                println!(
                    "{}",
                    serde_json::to_string_pretty(
                        &json!({"ok": false, "database": db, "error": e.to_string()})
                    )
                    .expect("json")
                );
            } else {
                eprintln!("audit chain BROKEN ({}): {e}", db.display());
            }
            Ok(ExitCode::from(2))
        }
    }
}

/// Verifies an evidence package. The signer's key: `--public-key`, or the local stack's console
/// key (`--config`), else only the package's own key (integrity, not origin; said so).
pub fn export_verify(
    file: &Path,
    public_key: Option<&str>,
    config: Option<&Path>,
    json_out: bool,
) -> CmdResult {
    let bytes = std::fs::read(file).map_err(|e| format!("{}: {e}", file.display()))?;
    let pinned = match (public_key, config) {
        (Some(k), _) => Some(k.to_string()),
        (None, Some(c)) => {
            let t = Target::new(c, None, None);
            let secrets = Secrets::load(&t.secrets).map_err(|e| e.to_string())?;
            let key = mxstack_li_console::export::signing_key(
                secrets.get(SecretName::LiConsoleSigningKey),
            )?;
            Some(mxstack_li_console::export::public_key_b64(&key))
        }
        (None, None) => None,
    };
    match mxstack_li_console::export::verify(&bytes, pinned.as_deref()) {
        Ok(v) => {
            if json_out {
                let mut out = serde_json::to_value(&v).expect("json");
                out["ok"] = json!(true);
                println!("{}", serde_json::to_string_pretty(&out).expect("json"));
            } else {
                println!(
                    "evidence package verified: warrant {} ({}), {} files, {} bytes, exported by {}, signed by {}",
                    v.warrant_id, v.case_ref, v.files, v.bytes, v.exported_by, v.public_key
                );
                if !v.key_pinned {
                    eprintln!("note: checked against the key inside the package (integrity only); give --public-key to prove which console signed it");
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            if json_out {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&json!({"ok": false, "error": e})).expect("json")
                );
            } else {
                eprintln!("evidence package NOT verified ({}): {e}", file.display());
            }
            Ok(ExitCode::from(2))
        }
    }
}
