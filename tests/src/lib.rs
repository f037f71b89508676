//! Shared pieces of Tessera's cross-crate tests: the workload that the crash tests run in a
//! child process and check afterwards. Keys and values are deterministic, so a checker can
//! tell a correct value from a damaged one without any record of what was written.

use std::future::Future;

/// Partitions the crash workload spreads over.
pub const PARTITIONS: u64 = 4;

/// The value stored under `key`: its length and bytes follow from the key alone.
pub fn value_for(key: &str) -> Vec<u8> {
    let seed =
        key.bytes().fold(0xcbf2_9ce4_8422_2325u64, |hash, byte| (hash ^ u64::from(byte)).wrapping_mul(0x100_0000_01b3));
    let len = 64 + (seed % 3000) as usize;
    (0..len).map(|index| (seed >> (index % 57)) as u8 ^ index as u8).collect()
}

/// The partition a key of the workload lives in.
pub fn partition_for(key: &str) -> u64 {
    key.bytes().map(u64::from).sum::<u64>() % PARTITIONS
}

/// Runs a future on a single-core glommio executor with a small registered buffer.
pub fn run<T: 'static>(future: impl Future<Output = T> + 'static) -> T {
    glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
        .io_memory(1 << 20)
        .make()
        .expect("executor starts")
        .run(future)
}

/// Store settings small enough that a short run crosses many checkpoints and WAL segments.
pub fn crash_config() -> tessera_engine::StoreConfig {
    tessera_engine::StoreConfig {
        cache_pages: tessera_engine::CACHE_PAGES_MIN,
        wal: tessera_engine::WalConfig {
            segment_bytes: 1 << 20,
            record_bytes_max: 256 << 10,
            flush_bytes_max: 256 << 10,
            spare_segments_max: 2,
        },
        checkpoint_dirty_pages: 300,
        checkpoint_wal_segments: 3,
        replicated: false,
        ..Default::default()
    }
}
pub mod sim;
