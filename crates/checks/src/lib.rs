//! Checks as data. Each [`Rule`] names the seed defect or checklist item it exists for; a
//! [`Finding`] is one problem, with where it is and how to fix it.
//!
//! Three layers run in order: the config as written ([`config`]), the derived topology
//! ([`topology`]), and the rendered objects ([`rendered`]). `mxstack check` runs all three; `render`
//! refuses to write anything while an error-level finding exists.

pub mod config;
pub mod rendered;
pub mod rules;
pub mod topology;

use mxstack_spec::SourceLocation;
use serde::Serialize;

pub use rules::{rule, Rule, RULES};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Warning,
    Error,
}

#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    pub rule: &'static str,
    pub title: &'static str,
    pub covers: &'static str,
    pub severity: Severity,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub location: Option<SourceLocation>,
    /// For findings in rendered output: `kind/name` of the object.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub object: Option<String>,
    pub message: String,
    pub fix: String,
}

impl Finding {
    pub fn new(rule_id: &'static str, message: impl Into<String>) -> Finding {
        let r = rule(rule_id);
        Finding {
            rule: r.id,
            title: r.title,
            covers: r.covers,
            severity: r.severity,
            location: None,
            object: None,
            message: message.into(),
            fix: r.fix.to_string(),
        }
    }
    pub fn at(mut self, location: SourceLocation) -> Finding {
        self.location = Some(location);
        self
    }
    pub fn on(mut self, object: impl Into<String>) -> Finding {
        self.object = Some(object.into());
        self
    }
    pub fn fix(mut self, fix: impl Into<String>) -> Finding {
        self.fix = fix.into();
        self
    }
    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let sev = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        write!(f, "{sev}[{}]", self.rule)?;
        if let Some(l) = &self.location {
            write!(f, " {l}")?;
        }
        if let Some(o) = &self.object {
            write!(f, " {o}")?;
        }
        write!(
            f,
            ": {}\n  fix: {}\n  covers: {}",
            self.message, self.fix, self.covers
        )
    }
}
