//! What a run measured: per operation a latency histogram (HdrHistogram, microseconds), errors
//! by kind, and a timeline of each second of the schedule (calls due, answered, errors, p99).
//! Printed as a table on the terminal and written as JSON (`--json`).

use std::collections::BTreeMap;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use tessera_wire::client::ClientError;
use tessera_wire::ErrorCode;

use crate::workload::Op;

/// Latencies recorded up to a minute, at 3 significant digits.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds")
}

/// A second's histogram: 2 significant digits are enough for its p99, and keep a long run's
/// timeline small.
fn second_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 2).expect("histogram bounds")
}

/// Why a call failed, as a capacity planner counts failures.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// ProvisionedThroughputExceeded or Throttling, after the client's retries.
    Throttled,
    /// No answer in time, or the connection failed.
    Timeout,
    /// A condition did not hold (an update of an item that was deleted meanwhile).
    ConditionalFailed,
    /// Not sent: the generator already had `--outstanding-max` calls waiting (a client with a
    /// bounded number of calls in progress gives up on the rest).
    Shed,
    Other,
}

impl ErrorKind {
    pub fn of(error: &ClientError) -> ErrorKind {
        match error {
            ClientError::Io(_) => ErrorKind::Timeout,
            ClientError::Service(error) => match error.code {
                ErrorCode::ProvisionedThroughputExceededException | ErrorCode::ThrottlingException => {
                    ErrorKind::Throttled
                }
                ErrorCode::ConditionalCheckFailedException => ErrorKind::ConditionalFailed,
                _ => ErrorKind::Other,
            },
            ClientError::Protocol(_) => ErrorKind::Other,
        }
    }
}

/// One second of the schedule.
#[derive(Clone)]
pub struct Second {
    pub due: u64,
    pub errors: u64,
    pub latencies: Histogram<u64>,
}

impl Second {
    fn new() -> Second {
        Second { due: 0, errors: 0, latencies: second_histogram() }
    }
}

/// What one generator thread measured (merged across threads by `add`).
#[derive(Clone)]
pub struct Report {
    pub ops: BTreeMap<Op, Histogram<u64>>,
    pub errors: BTreeMap<ErrorKind, u64>,
    pub timeline: Vec<Second>,
    /// Calls due in the measured part of the run.
    pub due: u64,
    /// The first error of each kind, as the client put it.
    pub first_errors: BTreeMap<ErrorKind, String>,
}

impl Report {
    pub fn new() -> Report {
        Report {
            ops: BTreeMap::new(),
            errors: BTreeMap::new(),
            timeline: Vec::new(),
            due: 0,
            first_errors: BTreeMap::new(),
        }
    }

    /// A call due `second` seconds into the measured run.
    pub fn due(&mut self, second: usize) {
        self.due += 1;
        self.second(second).due += 1;
    }

    /// A call due in `second` finished after `micros` from its due time (or its issue, in a
    /// closed loop), or failed.
    pub fn record(&mut self, second: usize, op: Op, micros: u64, result: Result<(), ErrorKind>) {
        match result {
            Ok(()) => {
                self.ops.entry(op).or_insert_with(histogram).saturating_record(micros.max(1));
                self.second(second).latencies.saturating_record(micros.max(1));
            }
            Err(kind) => {
                *self.errors.entry(kind).or_default() += 1;
                self.second(second).errors += 1;
            }
        }
    }

    /// A call sent, answered or failed: `record`, keeping the first error of each kind.
    pub fn answered(&mut self, second: usize, op: Op, micros: u64, result: Result<(), ClientError>) {
        let result = result.map_err(|error| {
            let kind = ErrorKind::of(&error);
            self.first_errors.entry(kind).or_insert_with(|| error.to_string());
            kind
        });
        self.record(second, op, micros, result);
    }

    fn second(&mut self, second: usize) -> &mut Second {
        if self.timeline.len() <= second {
            self.timeline.resize_with(second + 1, Second::new);
        }
        &mut self.timeline[second]
    }

    pub fn add(&mut self, other: &Report) {
        for (op, histogram) in &other.ops {
            self.ops.entry(*op).or_insert_with(self::histogram).add(histogram).expect("same bounds");
        }
        for (kind, count) in &other.errors {
            *self.errors.entry(*kind).or_default() += count;
        }
        for (at, second) in other.timeline.iter().enumerate() {
            let mine = self.second(at);
            mine.due += second.due;
            mine.errors += second.errors;
            mine.latencies.add(&second.latencies).expect("same bounds");
        }
        self.due += other.due;
        for (kind, error) in &other.first_errors {
            self.first_errors.entry(*kind).or_insert_with(|| error.clone());
        }
    }

    /// Every operation's latencies together.
    pub fn all(&self) -> Histogram<u64> {
        let mut all = histogram();
        for histogram in self.ops.values() {
            all.add(histogram).expect("same bounds");
        }
        all
    }
}

/// One operation's figures, in milliseconds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OpSummary {
    pub count: u64,
    pub ops_per_s: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

impl OpSummary {
    pub fn of(histogram: &Histogram<u64>, seconds: f64) -> OpSummary {
        let ms = |quantile: f64| histogram.value_at_quantile(quantile) as f64 / 1000.0;
        OpSummary {
            count: histogram.len(),
            ops_per_s: histogram.len() as f64 / seconds,
            p50_ms: ms(0.5),
            p90_ms: ms(0.9),
            p99_ms: ms(0.99),
            p999_ms: ms(0.999),
            max_ms: histogram.max() as f64 / 1000.0,
        }
    }

    /// The terminal line: name, count, ops/s, p50, p90, p99, p99.9 and max in ms.
    pub fn line(&self, name: &str) -> String {
        format!(
            "{name:<17} {:>10} {:>10.0} {:>8.3} {:>8.3} {:>8.3} {:>8.3} {:>8.3}",
            self.count, self.ops_per_s, self.p50_ms, self.p90_ms, self.p99_ms, self.p999_ms, self.max_ms
        )
    }
}

/// One second of the timeline, as written out.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SecondSummary {
    pub second: usize,
    pub phase: String,
    /// The rate the schedule asked for at the second's start.
    pub target_per_s: f64,
    pub due: u64,
    pub completed: u64,
    pub errors: u64,
    pub p99_ms: f64,
}

/// A run's results, as `--json` writes them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub workload: String,
    pub seconds: f64,
    pub due: u64,
    pub ops: BTreeMap<String, OpSummary>,
    pub all: OpSummary,
    pub errors: BTreeMap<ErrorKind, u64>,
    /// The first error of each kind, as the client put it.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub first_errors: BTreeMap<ErrorKind, String>,
    pub timeline: Vec<SecondSummary>,
}

impl Summary {
    /// `target(second)`: the phase and the rate due at the start of that measured second.
    pub fn new(workload: &str, report: &Report, seconds: f64, target: impl Fn(usize) -> (String, f64)) -> Summary {
        let ops = report.ops.iter().map(|(op, histogram)| (op.name().to_string(), OpSummary::of(histogram, seconds)));
        let timeline = report
            .timeline
            .iter()
            .enumerate()
            .map(|(second, measured)| {
                let (phase, target_per_s) = target(second);
                SecondSummary {
                    second,
                    phase,
                    target_per_s,
                    due: measured.due,
                    completed: measured.latencies.len(),
                    errors: measured.errors,
                    p99_ms: measured.latencies.value_at_quantile(0.99) as f64 / 1000.0,
                }
            })
            .collect();
        Summary {
            workload: workload.to_string(),
            seconds,
            due: report.due,
            ops: ops.collect(),
            all: OpSummary::of(&report.all(), seconds),
            errors: report.errors.clone(),
            first_errors: report.first_errors.clone(),
            timeline,
        }
    }

    /// When calls were due and not one was answered: what they failed with.
    pub fn all_failed(&self) -> Option<String> {
        if self.due == 0 || self.all.count > 0 {
            return None;
        }
        let errors: Vec<String> = self
            .errors
            .iter()
            .map(|(kind, count)| match self.first_errors.get(kind) {
                Some(error) => format!("{kind:?} {count} (the first: {error})"),
                None => format!("{kind:?} {count}"),
            })
            .collect();
        Some(format!("every one of the {} calls due failed: {}", self.due, errors.join(", ")))
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a summary serializes")
    }

    /// The terminal table.
    pub fn print(&self) {
        let errors: Vec<String> = self.errors.iter().map(|(kind, count)| format!("{kind:?} {count}")).collect();
        println!(
            "{}: {} calls due over {:.1} s, {} answered ({:.0}/s); errors: {}",
            self.workload,
            self.due,
            self.seconds,
            self.all.count,
            self.all.ops_per_s,
            if errors.is_empty() { "none".to_string() } else { errors.join(", ") }
        );
        println!(
            "{:<17} {:>10} {:>10} {:>8} {:>8} {:>8} {:>8} {:>8}",
            "op", "count", "ops/s", "p50 ms", "p90 ms", "p99 ms", "p99.9 ms", "max ms"
        );
        for (name, op) in &self.ops {
            println!("{}", op.line(name));
        }
        println!("{}", self.all.line("all"));
        for (kind, error) in &self.first_errors {
            eprintln!("tessera-load: the first {kind:?} error: {error}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_json_parses_back() {
        let mut report = Report::new();
        for micros in 1..=1000 {
            report.due(micros as usize % 3);
            report.record(micros as usize % 3, Op::Get, micros, Ok(()));
        }
        report.due(1);
        report.record(1, Op::Put, 0, Err(ErrorKind::Throttled));
        let mut merged = Report::new();
        merged.add(&report);
        merged.add(&report);
        let summary = Summary::new("test", &merged, 3.0, |second| ("steady".into(), 100.0 * second as f64));
        assert_eq!((summary.due, summary.all.count, summary.errors[&ErrorKind::Throttled]), (2002, 2000, 2));
        assert_eq!(summary.timeline.len(), 3);
        assert_eq!(summary.timeline[1].errors, 2);
        assert!((summary.ops["get"].p99_ms - 0.99).abs() < 0.01, "{:?}", summary.ops["get"]);
        assert_eq!(serde_json::from_str::<Summary>(&summary.to_json()).unwrap(), summary);
        assert!(serde_json::from_str::<Summary>("{\"workload\": 3}").is_err());
    }
}
