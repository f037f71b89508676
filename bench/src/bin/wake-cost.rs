//! `wake-cost`: the CPU one sleep-and-wake-up costs on this machine, for a plain thread
//! (`nanosleep`) and for a glommio executor (a timer, as Tessera's servers and `tessera-load`
//! wait). Nothing else runs, so what it prints is the floor a reactor pass costs before any
//! work is done: at low and middling loads a server's CPU is mostly such passes.
//!
//! `wake-cost [GAP_MICROS] [SECONDS]` (defaults 300 and 5): each waiter sleeps GAP_MICROS
//! at a time for SECONDS, and the CPU its thread used is divided by the wake-ups it had.

use std::time::{Duration, Instant};

/// CPU time (user and system) this thread has used.
fn thread_cpu() -> Duration {
    let mut spec = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `spec` is a valid timespec for the call to fill.
    let status = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut spec) };
    assert_eq!(status, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID) failed");
    Duration::new(spec.tv_sec as u64, spec.tv_nsec as u32)
}

/// Sleeps `gap` at a time until `run` has passed: (wake-ups, CPU used).
fn thread_sleeps(gap: Duration, run: Duration) -> (u64, Duration) {
    let (began, cpu) = (Instant::now(), thread_cpu());
    let mut wakes = 0;
    while began.elapsed() < run {
        std::thread::sleep(gap);
        wakes += 1;
    }
    (wakes, thread_cpu() - cpu)
}

/// The same on a glommio executor, each sleep a glommio timer.
fn executor_sleeps(gap: Duration, run: Duration) -> (u64, Duration) {
    glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
        .name("wake-cost")
        .io_memory(1 << 20)
        .spawn(move || async move {
            let (began, cpu) = (Instant::now(), thread_cpu());
            let mut wakes = 0;
            while began.elapsed() < run {
                glommio::timer::sleep(gap).await;
                wakes += 1;
            }
            (wakes, thread_cpu() - cpu)
        })
        .expect("glommio executor")
        .join()
        .expect("glommio executor thread")
}

fn main() {
    let mut args = std::env::args().skip(1).map(|arg| arg.parse::<u64>());
    let (gap, seconds) = match (args.next().unwrap_or(Ok(300)), args.next().unwrap_or(Ok(5))) {
        (Ok(gap), Ok(seconds)) if gap > 0 && seconds > 0 => (gap, seconds),
        _ => {
            eprintln!("usage: wake-cost [GAP_MICROS] [SECONDS] (positive integers)");
            std::process::exit(2);
        }
    };
    let (gap, run) = (Duration::from_micros(gap), Duration::from_secs(seconds));
    for (name, (wakes, cpu)) in
        [("thread (nanosleep)", thread_sleeps(gap, run)), ("glommio timer", executor_sleeps(gap, run))]
    {
        println!(
            "{name:<20} {wakes:>8} wake-ups in {seconds} s  {:>6.1} µs CPU per wake-up",
            cpu.as_secs_f64() * 1e6 / wakes.max(1) as f64
        );
    }
}
