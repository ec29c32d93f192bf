//! The metric names a PromQL expression selects, from a real parser (promql-parser, the
//! grammar Prometheus uses), so that `sum(rate(x[5m]))` and `x{a="b"} / on (a) y` both count.

use std::collections::BTreeSet;

use promql_parser::parser::{self, Expr};
use promql_parser::util::{walk_expr, ExprVisitor};

struct Names(BTreeSet<String>);

impl ExprVisitor for Names {
    type Error = String;

    fn pre_visit(&mut self, e: &Expr) -> Result<bool, String> {
        let selector = match e {
            Expr::VectorSelector(v) => Some(v),
            Expr::MatrixSelector(m) => Some(&m.vs),
            _ => None,
        };
        if let Some(v) = selector {
            // `{__name__="x"}` names its metric in a matcher.
            let name = v.name.clone().or_else(|| {
                v.matchers
                    .matchers
                    .iter()
                    .find(|m| m.name == "__name__")
                    .map(|m| m.value.clone())
            });
            self.0.extend(name);
        }
        Ok(true)
    }
}

/// Every metric name `expr` selects, or the parser's message.
pub fn metric_names(expr: &str) -> Result<BTreeSet<String>, String> {
    let ast = parser::parse(expr)?;
    let mut names = Names(BTreeSet::new());
    walk_expr(&mut names, &ast)?;
    Ok(names.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_every_selected_metric() {
        let n = metric_names(
            "sum by (pod) (rate(a_total{x=\"1\"}[5m])) / on (pod) max by (pod) (b) > 0 or absent(c == 1)",
        )
        .unwrap();
        assert_eq!(n, ["a_total", "b", "c"].map(String::from).into());
        assert_eq!(
            metric_names("histogram_quantile(0.95, sum by (le) (rate(h_bucket[5m])))").unwrap(),
            ["h_bucket".to_string()].into()
        );
    }

    #[test]
    fn refuses_what_prometheus_refuses() {
        assert!(metric_names("sum(rate(x[5m])").is_err());
    }
}
