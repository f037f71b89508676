//! Workload files (TOML): the table and its key space, how keys are picked, item sizes, the
//! operation mix, and the rate timeline as a list of phases. `bench/workloads/` holds the
//! shipped ones; `Workload::load` refuses a bad file with a message naming the field.
//!
//! ```toml
//! [table]
//! name = "orders"
//! keys = 1_000_000          # key-0000000000 ..
//! partitions = 8            # when tessera-load creates it (--create)
//!
//! [keys]
//! distribution = "zipfian"  # or "uniform", or "hotset" (hot_fraction, hot_share)
//! theta = 0.99
//!
//! [items]
//! min_bytes = 512           # each write's size, uniform between the two
//! max_bytes = 2048
//!
//! [mix]                     # relative weights
//! get = 50
//! put = 45
//! delete = 5
//!
//! [[phase]]
//! name = "ramp"
//! seconds = 60
//! rate = { from = 5000, to = 40000 }        # or a number, or { base, amplitude, period }
//!
//! [[phase]]
//! name = "flash sale"
//! seconds = 30
//! rate = 400000
//! hot = { keys = 100, share = 0.9 }         # share of this phase's calls on a hot set
//! ```

use serde::Deserialize;

/// A workload, as read from its file and checked.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Workload {
    pub table: TableSpec,
    #[serde(default)]
    pub keys: KeySpec,
    #[serde(default)]
    pub items: ItemSpec,
    pub mix: Mix,
    #[serde(rename = "phase")]
    pub phases: Vec<Phase>,
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TableSpec {
    pub name: String,
    /// Keys `0..keys` exist once the table is prefilled; inserts go past them.
    pub keys: u64,
    #[serde(default = "default_partitions")]
    pub partitions: u32,
    /// Items sharing each partition key: above 1 the table has a sort key `n` (a number),
    /// and key `i` is the item (`id` of `i / items_per_key`, `n` of `i % items_per_key`), so a
    /// Query reads a run of a partition's items. 1: a partition key only.
    #[serde(default = "default_items_per_key")]
    pub items_per_key: u32,
}

fn default_partitions() -> u32 {
    8
}

fn default_items_per_key() -> u32 {
    1
}

/// How a call picks its key.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(tag = "distribution", rename_all = "lowercase", deny_unknown_fields)]
pub enum KeySpec {
    #[default]
    Uniform,
    /// Key ranks drawn from a Zipfian distribution of constant `theta` (YCSB's 0.99: a few
    /// keys take most calls), the ranks scattered over the key space so the hot keys fall in
    /// different partitions.
    Zipfian { theta: f64 },
    /// `hot_share` of the calls go to the first `hot_fraction` of the keys (scattered the same
    /// way), the rest uniformly to all.
    Hotset { hot_fraction: f64, hot_share: f64 },
    /// YCSB's "latest": Zipfian over recency, the most recently inserted keys the hottest.
    Latest { theta: f64 },
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ItemSpec {
    pub min_bytes: usize,
    pub max_bytes: usize,
}

impl Default for ItemSpec {
    fn default() -> ItemSpec {
        ItemSpec { min_bytes: 1024, max_bytes: 1024 }
    }
}

/// The operations, by relative weight.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Mix {
    /// GetItem, strongly consistent.
    #[serde(default)]
    pub get: u32,
    /// GetItem with ConsistentRead false.
    #[serde(default)]
    pub get_eventual: u32,
    /// PutItem of an existing key.
    #[serde(default)]
    pub put: u32,
    /// UpdateItem: a counter added to, on an item that must exist (a conditional write).
    #[serde(default)]
    pub update: u32,
    #[serde(default)]
    pub delete: u32,
    /// PutItem of a new key, past the key space (YCSB's inserts).
    #[serde(default)]
    pub insert: u32,
    /// A strong GetItem, then a PutItem of the same key (YCSB's read-modify-write).
    #[serde(default)]
    pub read_modify_write: u32,
    /// A short Scan: from a chosen key, 1 to `scan_items_max` items in the table's order
    /// (YCSB's short ranges).
    #[serde(default)]
    pub scan: u32,
    #[serde(default = "default_scan_items_max")]
    pub scan_items_max: u32,
    /// A Query of the chosen item's partition key from its sort key on, of 1 to
    /// `query_items_max` items (a table with `items_per_key` above 1).
    #[serde(default)]
    pub query: u32,
    #[serde(default = "default_query_items_max")]
    pub query_items_max: u32,
    /// BatchGetItem and BatchWriteItem (puts) of `batch_items` keys: the chosen one and those
    /// after it in the key space.
    #[serde(default)]
    pub batch_get: u32,
    #[serde(default)]
    pub batch_write: u32,
    #[serde(default = "default_batch_items")]
    pub batch_items: u32,
}

fn default_batch_items() -> u32 {
    10
}

fn default_scan_items_max() -> u32 {
    100
}

fn default_query_items_max() -> u32 {
    10
}

/// An operation of the mix.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Op {
    Get,
    GetEventual,
    Put,
    Update,
    Delete,
    Insert,
    ReadModifyWrite,
    Scan,
    Query,
    BatchGet,
    BatchWrite,
}

impl Op {
    pub const ALL: [Op; 11] = [
        Op::Get,
        Op::GetEventual,
        Op::Put,
        Op::Update,
        Op::Delete,
        Op::Insert,
        Op::ReadModifyWrite,
        Op::Scan,
        Op::Query,
        Op::BatchGet,
        Op::BatchWrite,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Op::Get => "get",
            Op::GetEventual => "get_eventual",
            Op::Put => "put",
            Op::Update => "update",
            Op::Delete => "delete",
            Op::Insert => "insert",
            Op::ReadModifyWrite => "read_modify_write",
            Op::Scan => "scan",
            Op::Query => "query",
            Op::BatchGet => "batch_get",
            Op::BatchWrite => "batch_write",
        }
    }
}

impl Default for Mix {
    fn default() -> Mix {
        Mix {
            get: 0,
            get_eventual: 0,
            put: 0,
            update: 0,
            delete: 0,
            insert: 0,
            read_modify_write: 0,
            scan: 0,
            scan_items_max: default_scan_items_max(),
            query: 0,
            query_items_max: default_query_items_max(),
            batch_get: 0,
            batch_write: 0,
            batch_items: default_batch_items(),
        }
    }
}

impl Mix {
    pub fn weight(&self, op: Op) -> u32 {
        match op {
            Op::Get => self.get,
            Op::GetEventual => self.get_eventual,
            Op::Put => self.put,
            Op::Update => self.update,
            Op::Delete => self.delete,
            Op::Insert => self.insert,
            Op::ReadModifyWrite => self.read_modify_write,
            Op::Scan => self.scan,
            Op::Query => self.query,
            Op::BatchGet => self.batch_get,
            Op::BatchWrite => self.batch_write,
        }
    }

    /// The operation a uniform draw `unit` in [0, 1) picks.
    pub fn pick(&self, unit: f64) -> Op {
        let total: u32 = Op::ALL.iter().map(|&op| self.weight(op)).sum();
        let mut target = unit * f64::from(total);
        for op in Op::ALL {
            let weight = f64::from(self.weight(op));
            if target < weight {
                return op;
            }
            target -= weight;
        }
        *Op::ALL.iter().rev().find(|&&op| self.weight(op) > 0).expect("a mix with weight")
    }
}

/// A stretch of the run at one rate shape.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Phase {
    pub name: String,
    pub seconds: f64,
    pub rate: Rate,
    #[serde(default)]
    pub hot: Option<Hot>,
}

/// Calls per second over a phase.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq)]
#[serde(untagged, deny_unknown_fields)]
pub enum Rate {
    Steady(f64),
    /// Linear from `from` to `to`.
    Ramp {
        from: f64,
        to: f64,
    },
    /// `base + amplitude * sin(2 pi t / period)` (diurnal traffic, compressed).
    Wave {
        base: f64,
        amplitude: f64,
        period: f64,
    },
}

impl Rate {
    /// The rate `t` seconds into its phase of `seconds`.
    pub fn at(&self, t: f64, seconds: f64) -> f64 {
        match *self {
            Rate::Steady(rate) => rate,
            Rate::Ramp { from, to } => from + (to - from) * (t / seconds).clamp(0.0, 1.0),
            Rate::Wave { base, amplitude, period } => base + amplitude * (std::f64::consts::TAU * t / period).sin(),
        }
    }

    /// The highest rate it reaches.
    pub fn max(&self) -> f64 {
        match *self {
            Rate::Steady(rate) => rate,
            Rate::Ramp { from, to } => from.max(to),
            Rate::Wave { base, amplitude, .. } => base + amplitude.abs(),
        }
    }
}

/// Part of a phase's calls aimed at a small set of hot keys (a flash sale's products).
#[derive(Clone, Copy, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Hot {
    pub keys: u64,
    pub share: f64,
}

impl Workload {
    /// Reads and checks the workload file at `path`.
    pub fn load(path: &str) -> Result<Workload, String> {
        let text = std::fs::read_to_string(path).map_err(|error| format!("cannot read {path}: {error}"))?;
        Workload::parse(&text).map_err(|error| format!("{path}: {error}"))
    }

    pub fn parse(text: &str) -> Result<Workload, String> {
        let workload: Workload = toml::from_str(text).map_err(|error| error.to_string())?;
        workload.validate()?;
        Ok(workload)
    }

    /// The whole run, in seconds.
    pub fn seconds(&self) -> f64 {
        self.phases.iter().map(|phase| phase.seconds).sum()
    }

    /// Checks what the file's types cannot: ranges, and that something is asked for.
    pub fn validate(&self) -> Result<(), String> {
        if self.table.keys == 0 {
            return Err("table.keys must be at least 1".into());
        }
        if !(1..=1 << 20).contains(&self.table.partitions) {
            return Err("table.partitions must be 1 to 1048576".into());
        }
        match self.keys {
            KeySpec::Zipfian { theta } | KeySpec::Latest { theta } if !(theta > 0.0 && theta < 1.0) => {
                return Err(format!("keys.theta must be between 0 and 1 (exclusive), not {theta}"))
            }
            KeySpec::Hotset { hot_fraction, hot_share }
                if !(hot_fraction > 0.0 && hot_fraction <= 1.0 && (0.0..=1.0).contains(&hot_share)) =>
            {
                return Err("keys.hot_fraction must be in (0, 1] and keys.hot_share in [0, 1]".into())
            }
            _ => {}
        }
        if self.items.min_bytes > self.items.max_bytes || self.items.max_bytes > 350_000 {
            return Err(
                "items: min_bytes must not exceed max_bytes, nor max_bytes 350000 (items are under 400 KB)".into()
            );
        }
        if self.mix.scan_items_max == 0 || self.mix.query_items_max == 0 {
            return Err("mix.scan_items_max and mix.query_items_max must be at least 1".into());
        }
        if self.table.items_per_key == 0 {
            return Err("table.items_per_key must be at least 1".into());
        }
        if self.mix.query > 0 && self.table.items_per_key == 1 {
            return Err(
                "mix.query needs a table whose partition keys hold several items (table.items_per_key above 1)".into(),
            );
        }
        if !(1..=25).contains(&self.mix.batch_items) {
            return Err("mix.batch_items must be 1 to 25 (BatchWriteItem's limit)".into());
        }
        if Op::ALL.iter().all(|&op| self.mix.weight(op) == 0) {
            return Err("mix: at least one operation needs a weight".into());
        }
        if self.phases.is_empty() {
            return Err("at least one [[phase]] is needed".into());
        }
        for phase in &self.phases {
            let name = &phase.name;
            if !(phase.seconds > 0.0 && phase.seconds.is_finite()) {
                return Err(format!("phase {name:?}: seconds must be positive"));
            }
            let lowest = match phase.rate {
                Rate::Steady(rate) => rate,
                Rate::Ramp { from, to } => from.min(to),
                Rate::Wave { base, amplitude, period } => {
                    if period.is_nan() || period <= 0.0 {
                        return Err(format!("phase {name:?}: a wave's period must be positive"));
                    }
                    base - amplitude.abs()
                }
            };
            if !(lowest >= 0.0 && phase.rate.max().is_finite()) {
                return Err(format!("phase {name:?}: the rate must stay at or above 0"));
            }
            if let Some(hot) = phase.hot {
                if hot.keys == 0 || hot.keys > self.table.keys || !(0.0..=1.0).contains(&hot.share) {
                    return Err(format!("phase {name:?}: hot.keys must be 1 to table.keys, hot.share in [0, 1]"));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_workloads_parse() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/workloads");
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|entry| entry.unwrap().path().display().to_string())
            .filter(|path| path.ends_with(".toml"))
            .collect();
        names.sort();
        for path in &names {
            let workload = Workload::load(path).unwrap_or_else(|error| panic!("{error}"));
            assert!(workload.seconds() > 0.0);
        }
        let prime = Workload::load(&format!("{dir}/prime-day.toml")).unwrap();
        let sales = prime.phases.iter().filter(|phase| phase.hot.is_some()).count();
        assert_eq!(sales, 3, "three flash sales");
        for letter in ["a", "b", "c", "d", "e", "f"] {
            let ycsb = Workload::load(&format!("{dir}/ycsb-{letter}.toml")).unwrap();
            assert!(matches!(ycsb.keys, KeySpec::Zipfian { theta: 0.99 } | KeySpec::Latest { theta: 0.99 }));
        }
    }

    #[test]
    fn bad_workloads_are_refused_by_name() {
        let good = r#"
            [table]
            name = "t"
            keys = 100
            [mix]
            get = 1
            [[phase]]
            name = "p"
            seconds = 1
            rate = 10
        "#;
        assert!(Workload::parse(good).is_ok());
        let cases = [
            (good.replace("get = 1", "gett = 1"), "unknown field `gett`"),
            (good.replace("get = 1", "get = 0"), "at least one operation"),
            (good.replace("keys = 100", "keys = 0"), "table.keys"),
            (good.replace("rate = 10", "rate = -5"), "at or above 0"),
            (good.replace("seconds = 1", "seconds = 0"), "seconds must be positive"),
            (good.replace("rate = 10", "rate = { from = 1 }"), "did not match any variant"),
            (good.to_string() + "[keys]\ndistribution = \"zipfian\"\ntheta = 1.5\n", "keys.theta"),
            (good.to_string() + "[keys]\ndistribution = \"pareto\"\n", "unknown variant `pareto`"),
            (good.replace("rate = 10", "rate = 10\nhot = { keys = 1000, share = 0.5 }"), "hot.keys"),
            (good.replace("get = 1", "query = 1"), "table.items_per_key above 1"),
            (good.replace("keys = 100", "keys = 100\nitems_per_key = 0"), "items_per_key must be at least 1"),
            (good.replace("get = 1", "get = 1\nquery_items_max = 0"), "query_items_max"),
            (good.to_string() + "[items]\nmin_bytes = 10\nmax_bytes = 5\n", "min_bytes"),
            (good.replace("get = 1", "get = 1\nbatch_items = 26"), "batch_items"),
        ];
        for (text, expected) in cases {
            let error = Workload::parse(&text).expect_err(&text);
            assert!(error.contains(expected), "{expected:?} not in {error}");
        }
    }

    #[test]
    fn the_mix_picks_by_weight() {
        let mix = Mix { get: 3, put: 1, ..Mix::default() };
        let picks: Vec<Op> = (0..8).map(|i| mix.pick(f64::from(i) / 8.0)).collect();
        assert_eq!(picks.iter().filter(|&&op| op == Op::Get).count(), 6);
        assert_eq!(picks.iter().filter(|&&op| op == Op::Put).count(), 2);
        assert_eq!(mix.pick(0.999_999), Op::Put);
    }
}
