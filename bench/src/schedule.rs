//! The open loop's schedule: when each call is due, from a workload's rate timeline. Call `k`
//! is due when the integral of the rate since the start reaches `k` (integrated in 1 ms
//! steps, linear within a step), so ramps and waves are followed as closely as steady rates.

use crate::workload::Phase;

/// Integration step, in seconds.
const STEP: f64 = 0.001;

/// The due times of a run's calls, in order: seconds from the start, and the phase.
pub struct Schedule {
    phases: Vec<Phase>,
    /// Where each phase starts, in seconds from the start.
    starts: Vec<f64>,
    end: f64,
    /// The last integration step: from (t0, area0) to (t1, area1), in phase `phase`.
    step: (f64, f64, f64, f64, usize),
    due: u64,
}

impl Schedule {
    pub fn new(phases: &[Phase]) -> Schedule {
        let mut starts = Vec::with_capacity(phases.len());
        let mut end = 0.0;
        for phase in phases {
            starts.push(end);
            end += phase.seconds;
        }
        Schedule { phases: phases.to_vec(), starts, end, step: (0.0, 0.0, 0.0, 0.0, 0), due: 0 }
    }

    /// The rate at `t`, in phase `phase`.
    fn rate(&self, phase: usize, t: f64) -> f64 {
        let spec = &self.phases[phase];
        spec.rate.at(t - self.starts[phase], spec.seconds).max(0.0)
    }
}

impl Iterator for Schedule {
    type Item = (f64, usize);

    fn next(&mut self) -> Option<(f64, usize)> {
        let target = self.due as f64;
        loop {
            let (t0, area0, t1, area1, phase) = self.step;
            if area1 >= target {
                self.due += 1;
                let at = if area1 > area0 { t0 + (target - area0) / (area1 - area0) * (t1 - t0) } else { t0 };
                return Some((at, phase));
            }
            if t1 >= self.end {
                return None;
            }
            let phase = (phase..self.phases.len())
                .find(|&phase| t1 < self.starts[phase] + self.phases[phase].seconds)
                .unwrap_or(self.phases.len() - 1);
            let phase_end = self.starts[phase] + self.phases[phase].seconds;
            let next = (t1 + STEP).min(phase_end);
            let area = area1 + (self.rate(phase, t1) + self.rate(phase, next)) / 2.0 * (next - t1);
            self.step = (t1, area1, next, area, phase);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workload::Rate;

    fn phase(seconds: f64, rate: Rate) -> Phase {
        Phase { name: "p".into(), seconds, rate, hot: None }
    }

    /// Calls due in each window of `width` seconds.
    fn counts(schedule: Schedule, width: f64, windows: usize) -> Vec<u64> {
        let mut counts = vec![0; windows];
        for (at, _) in schedule {
            counts[((at / width) as usize).min(windows - 1)] += 1;
        }
        counts
    }

    #[test]
    fn the_schedule_hits_the_target_rate() {
        // Steady: exactly the rate in every 100 ms.
        let steady = counts(Schedule::new(&[phase(2.0, Rate::Steady(10_000.0))]), 0.1, 20);
        assert!(steady.iter().all(|&count| (999..=1001).contains(&count)), "{steady:?}");
        // A ramp from 0 to 20,000/s over 2 s: 20,000 calls, a quarter in the first second.
        let ramp = counts(Schedule::new(&[phase(2.0, Rate::Ramp { from: 0.0, to: 20_000.0 })]), 1.0, 2);
        assert!((4_999..=5_001).contains(&ramp[0]) && (14_999..=15_001).contains(&ramp[1]), "{ramp:?}");
        // A wave: base 5,000, amplitude 4,000, period 1 s: the first half second above base.
        let wave = Rate::Wave { base: 5_000.0, amplitude: 4_000.0, period: 1.0 };
        let halves = counts(Schedule::new(&[phase(1.0, wave)]), 0.5, 2);
        let crest = 2_500.0 + 4_000.0 / std::f64::consts::PI;
        assert!((halves[0] as f64 - crest).abs() <= 2.0, "{halves:?}");
        assert!((halves.iter().sum::<u64>() as i64 - 5_000).abs() <= 1, "{halves:?}");
        // Phases follow each other, and each call says which it falls in.
        let spike = [phase(1.0, Rate::Steady(1_000.0)), phase(0.5, Rate::Steady(10_000.0))];
        let calls: Vec<(f64, usize)> = Schedule::new(&spike).collect();
        assert!((calls.len() as i64 - 6_000).abs() <= 1, "{}", calls.len());
        assert!(calls.iter().all(|&(at, phase)| (phase == 0) == (at < 1.0)));
        assert!(calls.windows(2).all(|pair| pair[0].0 <= pair[1].0), "due times never go back");
        // A phase at rate 0 is a pause.
        let pause = [phase(1.0, Rate::Steady(100.0)), phase(1.0, Rate::Steady(0.0)), phase(1.0, Rate::Steady(100.0))];
        let paused = counts(Schedule::new(&pause), 1.0, 3);
        assert_eq!(paused[1], 0, "{paused:?}");
    }
}
