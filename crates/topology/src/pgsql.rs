//! SQL text that carries a secret (a role's password, a subscription's conninfo).
//!
//! PostgreSQL writes the whole text of a statement that fails to its log
//! (`log_min_error_statement`, default `error`): an `ALTER ROLE ... PASSWORD` or an
//! `ALTER SUBSCRIPTION ... CONNECTION` that meets a deadlock, a lost client or a shutdown would
//! put its password in the server log (seen once in CI, in the LI cluster's log after a
//! rotation). Such a statement runs between [`QUIET`] and [`RESET`]: the error is still logged,
//! the statement is not. The settings are superuser-only; every script that sets a password
//! runs as one.

/// Turns off every setting that logs a statement's text, for this session.
pub const QUIET: &str = "SET log_min_error_statement = panic;\n\
SET log_statement = none;\n\
SET log_min_duration_statement = -1;\n";

/// Back to the server's settings.
pub const RESET: &str = "RESET log_min_error_statement;\n\
RESET log_statement;\n\
RESET log_min_duration_statement;\n";

/// `statement` (one or more statements, each ended by `;`) between [`QUIET`] and [`RESET`],
/// for a script run statement by statement (psql, an init SQL file).
pub fn with_secret(statement: &str) -> String {
    format!("{QUIET}{}\n{RESET}", statement.trim_end())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_statement_sits_between_the_quiet_settings_and_their_reset() {
        let s = with_secret("ALTER ROLE r PASSWORD 'x';\n");
        let (q, r, st) = (s.find(QUIET), s.find(RESET), s.find("ALTER ROLE"));
        assert_eq!(q, Some(0));
        assert!(q < st && st < r, "{s}");
        assert!(s.ends_with(RESET));
        // The same settings are set and reset.
        for line in QUIET.lines() {
            let name = line.trim_start_matches("SET ").split(' ').next().unwrap();
            assert!(RESET.contains(&format!("RESET {name};")), "{name}");
        }
    }
}
