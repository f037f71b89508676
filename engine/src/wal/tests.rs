//! The WAL's group commit, segment rollover and recycling, damage inside acknowledged records,
//! torn tails, and a full disk that blocks appends until space returns.

use std::rc::Rc;

use super::*;
use crate::testing::{run, scratch_dir};

fn small() -> WalConfig {
    WalConfig { segment_bytes: 256 << 10, record_bytes_max: 64 << 10, flush_bytes_max: 64 << 10, spare_segments_max: 1 }
}

fn payload(lsn: u64) -> Vec<u8> {
    (0..(lsn * 37 % 5000) as usize).map(|i| (i as u64 + lsn) as u8).collect()
}

#[test]
fn group_commit_makes_concurrent_appends_durable_together() {
    let dir = scratch_dir("wal-group");
    run(async move {
        let wal = Wal::open(&dir, small(), 0).await.unwrap().wal;
        let wal = Rc::new(wal);
        let tasks: Vec<_> = (0..256u64)
            .map(|partition| {
                let wal = wal.clone();
                glommio::spawn_local(async move {
                    let lsn = wal.append(partition, 1, 1, &payload(partition + 1)).unwrap();
                    wal.durable(lsn).await.unwrap();
                    lsn
                })
            })
            .collect();
        for task in tasks {
            let lsn = task.await;
            assert!(wal.durable_lsn() >= lsn);
        }
        assert!(wal.flush_count() < 256, "flushes: {}", wal.flush_count());
        wal.close().await.unwrap();
        let recovered = Wal::open(&dir, small(), 0).await.unwrap();
        assert_eq!(recovered.records.len(), 256);
        for (index, record) in recovered.records.iter().enumerate() {
            assert_eq!(record.lsn, index as u64 + 1);
            assert_eq!(record.payload, payload(record.partition + 1));
        }
    });
}

#[test]
fn segments_roll_over_recycle_and_recover() {
    let dir = scratch_dir("wal-segments");
    run(async move {
        let wal = Wal::open(&dir, small(), 0).await.unwrap().wal;
        for lsn in 1..=400u64 {
            let appended = wal.append(1, lsn, 1, &payload(lsn)).unwrap();
            assert_eq!(appended, lsn);
            if lsn % 7 == 0 {
                wal.durable(lsn).await.unwrap();
            }
        }
        wal.durable(400).await.unwrap();
        assert!(wal.segments_in_use() > 3);
        wal.recycle_through(300).await.unwrap();
        assert!(wal.segments_in_use() <= 3);
        wal.close().await.unwrap();
        let recovered = Wal::open(&dir, small(), 300).await.unwrap();
        let lsns: Vec<u64> = recovered.records.iter().map(|r| r.lsn).collect();
        assert_eq!(lsns, (301..=400).collect::<Vec<_>>());
        // Reused spare segments keep the log readable after more writes.
        let wal = recovered.wal;
        for lsn in 401..=900u64 {
            wal.append(1, lsn, 1, &payload(lsn)).unwrap();
        }
        wal.durable(900).await.unwrap();
        wal.recycle_through(800).await.unwrap();
        wal.close().await.unwrap();
        let recovered = Wal::open(&dir, small(), 800).await.unwrap();
        assert_eq!(recovered.records.first().map(|r| r.lsn), Some(801));
        assert_eq!(recovered.records.last().map(|r| r.lsn), Some(900));
        assert_eq!(recovered.wal.next_lsn(), 901);
    });
}

/// Writes records 1..=3, each made durable (one flush each), and returns the segment's path.
fn three_flushes(dir: &std::path::Path, payload: fn(u64) -> Vec<u8>) -> std::path::PathBuf {
    let dir = dir.to_path_buf();
    run(async move {
        let wal = Wal::open(&dir, small(), 0).await.unwrap().wal;
        for lsn in 1..=3u64 {
            let lsn = wal.append(1, lsn, 1, &payload(lsn)).unwrap();
            wal.durable(lsn).await.unwrap();
        }
        wal.close().await.unwrap();
        dir.join("00000000.wal")
    })
}

#[test]
fn damage_inside_acknowledged_records_is_reported() {
    let dir = scratch_dir("wal-corrupt");
    let path = three_flushes(&dir, |_| b"acknowledged".to_vec());
    // Flip a byte of the second record (the second flush, in block 2).
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[2 * BLOCK + 45] ^= 0x10;
    std::fs::write(&path, &bytes).unwrap();
    let error = run(async move { Wal::open(&dir, small(), 0).await.err().expect("corruption reported") });
    match error {
        Error::Corrupt { path: reported, offset, .. } => {
            assert_eq!(reported, path);
            assert_eq!(offset, 2 * BLOCK as u64);
        }
        other => panic!("expected corruption, got {other}"),
    }
}

#[test]
fn torn_tail_ends_the_log_and_is_overwritten_safely() {
    let dir = scratch_dir("wal-torn");
    let path = three_flushes(&dir, |lsn| vec![lsn as u8; 3000]);
    // The last flush (block 3) was torn: garbage in its first half.
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[3 * BLOCK..3 * BLOCK + 2048].fill(0xEE);
    std::fs::write(&path, &bytes).unwrap();
    run(async move {
        let recovered = Wal::open(&dir, small(), 0).await.unwrap();
        assert_eq!(recovered.records.len(), 2);
        let wal = recovered.wal;
        let lsn = wal.append(1, 3, 1, b"after").unwrap();
        assert_eq!(lsn, 3);
        wal.durable(lsn).await.unwrap();
        wal.close().await.unwrap();
        let recovered = Wal::open(&dir, small(), 0).await.unwrap();
        assert_eq!(recovered.records.len(), 3);
        assert_eq!(recovered.records[2].payload, b"after");
    });
}

/// A WAL that needs a new segment on a full disk refuses appends (retryable, nothing
/// written), keeps the ones queued before, and resumes by itself once space is freed; every
/// record it made durable recovers.
#[test]
fn a_full_disk_blocks_appends_until_space_returns() {
    let Some(fs) = crate::testing::small_filesystem("wal-full", 64) else { return };
    let dir = fs.dir.join("wal");
    run(async move {
        let config = WalConfig { spare_segments_max: 0, ..small() };
        let wal = Wal::open(&dir, config.clone(), 0).await.unwrap().wal;
        let filler = fs.fill();
        // The first segment fills, the next cannot be made: appends are refused.
        let mut durable = Vec::new();
        let refused = loop {
            match wal.append(1, 1, 1, &payload(durable.len() as u64 + 1)) {
                Ok(lsn) => durable.push(lsn),
                Err(error) => break error,
            }
            // Let the flusher run (and find the disk full).
            glommio::timer::sleep(std::time::Duration::from_millis(1)).await;
            assert!(durable.len() < 10_000, "a full disk never refused an append");
        };
        assert!(matches!(&refused, Error::NoSpace(reason) if reason.contains(" free)")), "{refused}");
        let waiting = *durable.last().unwrap();
        assert!(wal.durable_lsn() < waiting, "the record that needs a new segment waits for one");
        let partial =
            std::fs::read_dir(&dir).unwrap().flatten().filter(|entry| entry.path().extension() == Some("tmp".as_ref()));
        assert_eq!(partial.count(), 0, "no partial segment is left behind");

        std::fs::remove_file(&filler).unwrap();
        wal.durable(waiting).await.unwrap();
        let lsn = wal.append(1, 1, 1, b"after").unwrap();
        wal.durable(lsn).await.unwrap();
        wal.close().await.unwrap();
        let recovered = Wal::open(&dir, config, 0).await.unwrap();
        assert_eq!(recovered.records.len() as u64, lsn);
        assert_eq!(recovered.records.last().unwrap().payload, b"after");
    });
}
