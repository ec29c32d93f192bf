//! Results, their aggregation into a report, the exit code, and the table and JSON outputs.

use serde::Serialize;

use crate::catalog::Check;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Status {
    Pass,
    Skip,
    Warn,
    Fail,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pass => "PASS",
            Status::Skip => "SKIP",
            Status::Warn => "WARN",
            Status::Fail => "FAIL",
        }
    }
}

/// One check's outcome: the evidence (PASS), the reason it does not apply (SKIP), or what is
/// wrong (WARN/FAIL, with the catalog's fix).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CheckResult {
    pub id: &'static str,
    pub title: &'static str,
    pub status: Status,
    pub detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<&'static str>,
}

impl CheckResult {
    pub fn new(check: &Check, status: Status, detail: impl Into<String>) -> CheckResult {
        CheckResult {
            id: check.id,
            title: check.title,
            status,
            detail: detail.into(),
            fix: matches!(status, Status::Warn | Status::Fail).then_some(check.fix),
        }
    }
    pub fn pass(check: &Check, detail: impl Into<String>) -> CheckResult {
        CheckResult::new(check, Status::Pass, detail)
    }
    pub fn skip(check: &Check, reason: impl Into<String>) -> CheckResult {
        CheckResult::new(check, Status::Skip, reason)
    }
    pub fn warn(check: &Check, detail: impl Into<String>) -> CheckResult {
        CheckResult::new(check, Status::Warn, detail)
    }
    pub fn fail(check: &Check, detail: impl Into<String>) -> CheckResult {
        CheckResult::new(check, Status::Fail, detail)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    pub pass: usize,
    pub warn: usize,
    pub fail: usize,
    pub skip: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub target: String,
    pub results: Vec<CheckResult>,
    pub summary: Summary,
}

impl Report {
    pub fn new(target: String, results: Vec<CheckResult>) -> Report {
        let mut summary = Summary::default();
        for r in &results {
            match r.status {
                Status::Pass => summary.pass += 1,
                Status::Warn => summary.warn += 1,
                Status::Fail => summary.fail += 1,
                Status::Skip => summary.skip += 1,
            }
        }
        Report {
            target,
            results,
            summary,
        }
    }

    /// 0 when nothing failed (warnings allowed), 1 on any failure, as `mxstack check` does.
    pub fn exit_code(&self) -> u8 {
        u8::from(self.summary.fail > 0)
    }

    /// The human table: id, check, status, detail, and the fix under a WARN or FAIL.
    pub fn table(&self) -> String {
        let mut out = format!("verify {}\n", self.target);
        out += &format!("{:<14} {:<44} {:<5} detail\n", "id", "check", "");
        for r in &self.results {
            out += &format!(
                "{:<14} {:<44} {:<5} {}\n",
                r.id,
                r.title,
                r.status.as_str(),
                r.detail
            );
            if let Some(fix) = r.fix {
                out += &format!("{:<14} {:<44} {:<5} fix: {fix}\n", "", "", "");
            }
        }
        let s = &self.summary;
        out += &format!(
            "{} passed, {} warnings, {} failed, {} skipped\n",
            s.pass, s.warn, s.fail, s.skip
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog;

    fn report(statuses: &[Status]) -> Report {
        let results = statuses
            .iter()
            .zip(catalog::ALL)
            .map(|(s, c)| CheckResult::new(&c, *s, "x"))
            .collect();
        Report::new("t".into(), results)
    }

    #[test]
    fn warnings_and_skips_exit_0_any_failure_exits_1() {
        assert_eq!(
            report(&[Status::Pass, Status::Skip, Status::Warn]).exit_code(),
            0
        );
        assert_eq!(
            report(&[Status::Pass, Status::Fail, Status::Warn]).exit_code(),
            1
        );
        assert_eq!(report(&[]).exit_code(), 0);
    }

    #[test]
    fn the_summary_counts_each_status() {
        let r = report(&[
            Status::Pass,
            Status::Pass,
            Status::Fail,
            Status::Skip,
            Status::Warn,
        ]);
        assert_eq!(
            r.summary,
            Summary {
                pass: 2,
                warn: 1,
                fail: 1,
                skip: 1
            }
        );
    }

    #[test]
    fn only_warn_and_fail_carry_the_fix() {
        let r = report(&[Status::Pass, Status::Skip, Status::Warn, Status::Fail]);
        let fixes: Vec<bool> = r.results.iter().map(|r| r.fix.is_some()).collect();
        assert_eq!(fixes, [false, false, true, true]);
        assert!(r.table().contains(&format!("fix: {}", catalog::TLS.fix)));
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["results"][3]["status"], "FAIL");
        assert!(json["results"][0].get("fix").is_none());
    }
}
