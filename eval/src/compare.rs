//! `eval compare OLD NEW`: what got worse (and better) between two reports of a suite.
//!
//! Compared: each case's pass ratio (passed runs / runs, so `repeat` smooths a noisy model),
//! the overall pass rate, p95 latency and total cost. A change is a regression *beyond the
//! threshold* when a pass ratio or the pass rate drops by more than `threshold` (absolute:
//! 0.1 = ten points; so with one run per case any case going from pass to fail is beyond it),
//! or when p95 latency or cost grows by more than its threshold relative to the old value
//! (a cost rising from zero is beyond any threshold). Smaller worsenings are listed as
//! within the threshold; only regressions beyond it fail the command.

use std::{collections::BTreeMap, fmt::Write as _};

use crate::report::{Outcome, Report};

/// How much worse counts as a regression; see the module docs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Thresholds {
    /// Largest allowed drop of a case's pass ratio and of the pass rate (absolute, 0..=1).
    pub pass_rate: f64,
    /// Largest allowed relative growth of p95 latency (0.25 = +25%).
    pub latency: f64,
    /// Largest allowed relative growth of total cost.
    pub cost: f64,
}

/// What changed for one measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Worse by more than the threshold: fails the comparison.
    Regression,
    /// Worse, but within the threshold.
    Tolerated,
    Improvement,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Finding {
    pub change: Change,
    /// The case or measure, e.g. `case "calc"` or `p95 latency`.
    pub subject: String,
    pub detail: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Comparison {
    pub findings: Vec<Finding>,
    /// Cases in only one of the reports: (name, in new).
    pub unmatched: Vec<(String, bool)>,
    /// Set when the reports are of different suites.
    pub warning: Option<String>,
}

impl Comparison {
    /// Whether anything got worse beyond its threshold.
    pub fn regressed(&self) -> bool {
        self.findings.iter().any(|f| f.change == Change::Regression)
    }

    pub fn markdown(&self, thresholds: &Thresholds) -> String {
        let mut md = String::new();
        if let Some(warning) = &self.warning {
            let _ = writeln!(md, "warning: {warning}\n");
        }
        let sections = [
            (Change::Regression, "Regressions beyond the threshold"),
            (Change::Tolerated, "Worse, within the threshold"),
            (Change::Improvement, "Improvements"),
        ];
        for (change, title) in sections {
            let found: Vec<&Finding> = self.findings.iter().filter(|f| f.change == change).collect();
            let _ = writeln!(md, "## {title} ({})\n", found.len());
            for f in &found {
                let _ = writeln!(md, "- {}: {}", f.subject, f.detail);
            }
            if found.is_empty() {
                let _ = writeln!(md, "none");
            }
            let _ = writeln!(md);
        }
        for (name, in_new) in &self.unmatched {
            let where_ = if *in_new { "only in the new report" } else { "only in the old report" };
            let _ = writeln!(md, "- case {name:?} is {where_}, not compared");
        }
        let _ = writeln!(
            md,
            "Thresholds: pass rate −{:.0} points, p95 latency +{:.0}%, cost +{:.0}%.",
            thresholds.pass_rate * 100.0,
            thresholds.latency * 100.0,
            thresholds.cost * 100.0
        );
        let verdict = if self.regressed() { "REGRESSED" } else { "no regression beyond the threshold" };
        let _ = writeln!(md, "\nVerdict: {verdict}.");
        md
    }
}

/// Compares `new` to `old`; see the module docs.
pub fn compare(old: &Report, new: &Report, thresholds: &Thresholds) -> Comparison {
    let mut findings = Vec::new();
    let (old_cases, new_cases) = (ratios(old), ratios(new));
    for (name, &(old_passed, old_runs)) in &old_cases {
        let Some(&(new_passed, new_runs)) = new_cases.get(name) else { continue };
        let (was, is) = (old_passed as f64 / old_runs as f64, new_passed as f64 / new_runs as f64);
        let detail = format!("passed {old_passed}/{old_runs} → {new_passed}/{new_runs} runs");
        if let Some(change) = drop_change(was, is, thresholds.pass_rate) {
            findings.push(Finding { change, subject: format!("case {name:?}"), detail });
        }
    }
    let (was, is) = (old.totals.pass_rate, new.totals.pass_rate);
    if let Some(change) = drop_change(was, is, thresholds.pass_rate) {
        let detail = format!("{:.1}% → {:.1}%", was * 100.0, is * 100.0);
        findings.push(Finding { change, subject: "pass rate".into(), detail });
    }
    let (was, is) = (old.totals.latency_ms.p95, new.totals.latency_ms.p95);
    if let Some(change) = growth_change(was, is, thresholds.latency) {
        let detail = format!("{was:.0} ms → {is:.0} ms ({})", relative(was, is));
        findings.push(Finding { change, subject: "p95 latency".into(), detail });
    }
    let (was, is) = (old.totals.cost_usd, new.totals.cost_usd);
    if let Some(change) = growth_change(was, is, thresholds.cost) {
        let detail = format!("${was:.4} → ${is:.4} ({})", relative(was, is));
        findings.push(Finding { change, subject: "cost".into(), detail });
    }
    let mut unmatched: Vec<(String, bool)> = old_cases
        .keys()
        .filter(|n| !new_cases.contains_key(*n))
        .map(|n| (n.clone(), false))
        .chain(new_cases.keys().filter(|n| !old_cases.contains_key(*n)).map(|n| (n.clone(), true)))
        .collect();
    unmatched.sort();
    let warning = (old.suite != new.suite)
        .then(|| format!("the reports are of different suites ({:?} and {:?})", old.suite, new.suite));
    Comparison { findings, unmatched, warning }
}

/// (passed runs, runs) of each case, by name.
fn ratios(report: &Report) -> BTreeMap<String, (usize, usize)> {
    let mut cases: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    for r in &report.results {
        let entry = cases.entry(r.case.clone()).or_default();
        entry.0 += usize::from(r.outcome == Outcome::Passed);
        entry.1 += 1;
    }
    cases
}

/// A change of a measure where higher is better; `None` when it did not change.
fn drop_change(was: f64, is: f64, threshold: f64) -> Option<Change> {
    // Compare in whole ten-thousandths so 2/3 computed two ways is not a change.
    let (was, is) = ((was * 1e4).round(), (is * 1e4).round());
    let threshold = (threshold * 1e4).round();
    match was - is {
        drop if drop > threshold => Some(Change::Regression),
        drop if drop > 0.0 => Some(Change::Tolerated),
        drop if drop < 0.0 => Some(Change::Improvement),
        _ => None,
    }
}

/// A change of a measure where lower is better, relative to the old value.
fn growth_change(was: f64, is: f64, threshold: f64) -> Option<Change> {
    if is == was {
        return None;
    }
    if is < was {
        return Some(Change::Improvement);
    }
    if was <= 0.0 || (is - was) / was > threshold { Some(Change::Regression) } else { Some(Change::Tolerated) }
}

fn relative(was: f64, is: f64) -> String {
    if was > 0.0 { format!("{:+.0}%", (is - was) / was * 100.0) } else { "from zero".to_owned() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{
        Totals,
        fixtures::{report, result},
    };

    const TEN_PERCENT: Thresholds = Thresholds { pass_rate: 0.1, latency: 0.1, cost: 0.1 };

    fn changes(comparison: &Comparison) -> Vec<(Change, &str, &str)> {
        comparison.findings.iter().map(|f| (f.change, f.subject.as_str(), f.detail.as_str())).collect()
    }

    #[test]
    fn identical_reports_show_no_change() {
        let old = report(vec![result("a", Outcome::Passed, Some(100.0), 0.1)]);
        let comparison = compare(&old, &old.clone(), &TEN_PERCENT);
        assert_eq!(comparison.findings, []);
        assert!(!comparison.regressed());
        assert!(comparison.markdown(&TEN_PERCENT).contains("Verdict: no regression beyond the threshold."));
    }

    #[test]
    fn a_case_going_from_pass_to_fail_is_a_regression() {
        let old = report(vec![
            result("a", Outcome::Passed, Some(100.0), 0.0),
            result("b", Outcome::Failed, Some(100.0), 0.0),
        ]);
        let new =
            report(vec![result("a", Outcome::Error, Some(100.0), 0.0), result("b", Outcome::Passed, Some(100.0), 0.0)]);
        let comparison = compare(&old, &new, &TEN_PERCENT);
        assert_eq!(
            changes(&comparison),
            [
                (Change::Regression, "case \"a\"", "passed 1/1 → 0/1 runs"),
                (Change::Improvement, "case \"b\"", "passed 0/1 → 1/1 runs"),
            ]
        );
        assert!(comparison.regressed());
        let md = comparison.markdown(&TEN_PERCENT);
        assert!(md.contains("## Regressions beyond the threshold (1)\n\n- case \"a\": passed 1/1 → 0/1 runs"), "{md}");
        assert!(md.contains("## Improvements (1)"), "{md}");
        assert!(md.ends_with("Verdict: REGRESSED.\n"), "{md}");
    }

    #[test]
    fn drops_within_the_threshold_are_tolerated() {
        let runs = |passed: usize| {
            (0..10)
                .map(|i| {
                    let mut r =
                        result("noisy", if i < passed { Outcome::Passed } else { Outcome::Failed }, Some(100.0), 0.0);
                    r.run = i as u32 + 1;
                    r
                })
                .collect::<Vec<_>>()
        };
        // 9/10 → 8/10 is a drop of exactly ten points: within a 0.1 threshold.
        let comparison = compare(&report(runs(9)), &report(runs(8)), &TEN_PERCENT);
        assert_eq!(
            changes(&comparison),
            [
                (Change::Tolerated, "case \"noisy\"", "passed 9/10 → 8/10 runs"),
                (Change::Tolerated, "pass rate", "90.0% → 80.0%"),
            ]
        );
        assert!(!comparison.regressed());
        let comparison = compare(&report(runs(9)), &report(runs(7)), &TEN_PERCENT);
        assert!(comparison.regressed());
    }

    #[test]
    fn latency_and_cost_growth_beyond_the_threshold_are_regressions() {
        let with = |p95: f64, cost: f64| {
            let mut r = report(vec![result("a", Outcome::Passed, Some(p95), cost)]);
            r.totals = Totals::of(1, &r.results);
            r
        };
        let comparison = compare(&with(100.0, 0.10), &with(125.0, 0.105), &TEN_PERCENT);
        assert_eq!(
            changes(&comparison),
            [
                (Change::Regression, "p95 latency", "100 ms → 125 ms (+25%)"),
                (Change::Tolerated, "cost", "$0.1000 → $0.1050 (+5%)"),
            ]
        );
        let loose = Thresholds { latency: 0.5, ..TEN_PERCENT };
        assert!(!compare(&with(100.0, 0.10), &with(125.0, 0.105), &loose).regressed());
        let comparison = compare(&with(100.0, 0.0), &with(90.0, 0.01), &TEN_PERCENT);
        assert_eq!(
            changes(&comparison),
            [
                (Change::Improvement, "p95 latency", "100 ms → 90 ms (-10%)"),
                (Change::Regression, "cost", "$0.0000 → $0.0100 (from zero)"),
            ]
        );
    }

    #[test]
    fn cases_in_one_report_only_and_other_suites_are_named() {
        let old = report(vec![result("gone", Outcome::Passed, Some(1.0), 0.0)]);
        let mut new = report(vec![result("added", Outcome::Passed, Some(1.0), 0.0)]);
        new.suite = "other".into();
        let comparison = compare(&old, &new, &TEN_PERCENT);
        assert_eq!(comparison.unmatched, [("added".to_owned(), true), ("gone".to_owned(), false)]);
        assert_eq!(comparison.warning.as_deref(), Some("the reports are of different suites (\"s\" and \"other\")"));
        assert!(!comparison.regressed());
    }
}
