//! WAL byte layout (FORMAT.md, "WAL") and the pure scan that recovery runs over a segment.
//!
//! A segment is a preallocated file of `segment_bytes`. Its first block is the segment header;
//! records follow. Each flush (one group commit) writes whole blocks starting at a block
//! boundary: its records back to back, the first one flagged `FLUSH_START`, then zeros to the
//! end of the last block. A flush never rewrites a block of an earlier flush, so a torn write
//! can only damage the flush in progress, which nobody was told is durable.
//!
//! Fault model: blocks of the flush in progress may be missing, stale (from the segment's
//! previous use) or torn; any block may rot later. Recovery stops cleanly at the end of the
//! last complete flush. Damage followed by a later valid flush start means the damaged records
//! had been acknowledged: that is reported as corruption, never skipped.

/// Unit of every WAL write and the alignment of O_DIRECT I/O.
pub(crate) const BLOCK: usize = 4096;
pub(crate) const SEGMENT_HEADER_LEN: usize = 64;
pub(crate) const RECORD_HEADER_LEN: usize = 40;
/// WAL layout version written in every segment header.
pub(crate) const WAL_FORMAT_VERSION: u16 = 1;
const SEGMENT_MAGIC: &[u8; 4] = b"TWAL";
/// Record flag: first record of a flush.
pub(crate) const FLUSH_START: u16 = 1;

/// One record as recovery sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub lsn: u64,
    pub partition: u64,
    pub slot: u64,
    pub kind: u8,
    pub payload: Vec<u8>,
}

/// A segment header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SegmentHeader {
    pub(crate) sequence: u64,
    pub(crate) first_lsn: u64,
    pub(crate) segment_bytes: u64,
}

impl SegmentHeader {
    pub(crate) fn encode(&self) -> [u8; SEGMENT_HEADER_LEN] {
        let mut bytes = [0u8; SEGMENT_HEADER_LEN];
        bytes[4..8].copy_from_slice(SEGMENT_MAGIC);
        bytes[8..10].copy_from_slice(&WAL_FORMAT_VERSION.to_le_bytes());
        bytes[12..16].copy_from_slice(&(BLOCK as u32).to_le_bytes());
        bytes[16..24].copy_from_slice(&self.sequence.to_le_bytes());
        bytes[24..32].copy_from_slice(&self.first_lsn.to_le_bytes());
        bytes[32..40].copy_from_slice(&self.segment_bytes.to_le_bytes());
        let crc = crc32c::crc32c(&bytes[4..]);
        bytes[..4].copy_from_slice(&crc.to_le_bytes());
        bytes
    }

    /// `None` for a block that is not a valid header (never written, torn, or rotten).
    pub(crate) fn decode(bytes: &[u8]) -> Option<SegmentHeader> {
        let bytes = bytes.get(..SEGMENT_HEADER_LEN)?;
        let crc = u32::from_le_bytes(bytes[..4].try_into().ok()?);
        if crc != crc32c::crc32c(&bytes[4..]) || &bytes[4..8] != SEGMENT_MAGIC {
            return None;
        }
        let version = u16::from_le_bytes(bytes[8..10].try_into().ok()?);
        let block = u32::from_le_bytes(bytes[12..16].try_into().ok()?);
        if version != WAL_FORMAT_VERSION || block as usize != BLOCK {
            return None;
        }
        Some(SegmentHeader {
            sequence: u64::from_le_bytes(bytes[16..24].try_into().ok()?),
            first_lsn: u64::from_le_bytes(bytes[24..32].try_into().ok()?),
            segment_bytes: u64::from_le_bytes(bytes[32..40].try_into().ok()?),
        })
    }
}

/// Appends one record. `flags` carries `FLUSH_START` for the first record of a flush.
#[cfg(test)]
pub(crate) fn encode_record(
    out: &mut Vec<u8>,
    lsn: u64,
    partition: u64,
    slot: u64,
    kind: u8,
    flags: u16,
    payload: &[u8],
) {
    let start = out.len();
    out.extend_from_slice(&[0; RECORD_HEADER_LEN]);
    out.extend_from_slice(payload);
    finish_record(out, start, lsn, partition, slot, kind, flags);
}

/// Fills in the header of the record whose header placeholder starts at `start` and whose
/// payload runs to the end of `out`.
pub(crate) fn finish_record(out: &mut [u8], start: usize, lsn: u64, partition: u64, slot: u64, kind: u8, flags: u16) {
    let payload_len = out.len() - start - RECORD_HEADER_LEN;
    let header = &mut out[start..start + RECORD_HEADER_LEN];
    header[4..8].copy_from_slice(&(payload_len as u32).to_le_bytes());
    header[8..16].copy_from_slice(&lsn.to_le_bytes());
    header[16..24].copy_from_slice(&partition.to_le_bytes());
    header[24..32].copy_from_slice(&slot.to_le_bytes());
    header[32..34].copy_from_slice(&flags.to_le_bytes());
    header[34] = kind;
    header[35..40].fill(0);
    let crc = crc32c::crc32c(&out[start + 4..]);
    out[start..start + 4].copy_from_slice(&crc.to_le_bytes());
}

/// Marks the record at `offset` of `buffer` as the first of a flush (and re-checksums it).
pub(crate) fn mark_flush_start(buffer: &mut [u8], offset: usize) {
    let len = u32::from_le_bytes(buffer[offset + 4..offset + 8].try_into().expect("4 bytes")) as usize;
    buffer[offset + 32..offset + 34].copy_from_slice(&FLUSH_START.to_le_bytes());
    let end = offset + RECORD_HEADER_LEN + len;
    let crc = crc32c::crc32c(&buffer[offset + 4..end]);
    buffer[offset..offset + 4].copy_from_slice(&crc.to_le_bytes());
}

/// A record parsed at some offset, or why there is none.
enum Parsed {
    Valid {
        record: Record,
        flags: u16,
        len: usize,
    },
    /// Zero bytes where a header would be: padding or never-written space.
    Zero,
    Invalid,
}

fn parse_at(bytes: &[u8], offset: usize, payload_max: usize) -> Parsed {
    // Zeros up to the block's end (or a whole zero header) are padding or unwritten space.
    let zero_end = (offset + RECORD_HEADER_LEN).min(align_up(offset + 1)).min(bytes.len());
    if bytes[offset..zero_end].iter().all(|&b| b == 0) {
        return Parsed::Zero;
    }
    let Some(header) = bytes.get(offset..offset + RECORD_HEADER_LEN) else {
        return Parsed::Invalid;
    };
    let len = u32::from_le_bytes(header[4..8].try_into().expect("4 bytes")) as usize;
    if len > payload_max || header[35..40] != [0; 5] {
        return Parsed::Invalid;
    }
    let Some(body) = bytes.get(offset + 4..offset + RECORD_HEADER_LEN + len) else {
        return Parsed::Invalid;
    };
    let crc = u32::from_le_bytes(header[..4].try_into().expect("4 bytes"));
    if crc != crc32c::crc32c(body) {
        return Parsed::Invalid;
    }
    let field = |at: usize| u64::from_le_bytes(header[at..at + 8].try_into().expect("8 bytes"));
    Parsed::Valid {
        record: Record {
            lsn: field(8),
            partition: field(16),
            slot: field(24),
            kind: header[34],
            payload: bytes[offset + RECORD_HEADER_LEN..offset + RECORD_HEADER_LEN + len].to_vec(),
        },
        flags: u16::from_le_bytes(header[32..34].try_into().expect("2 bytes")),
        len: RECORD_HEADER_LEN + len,
    }
}

/// How the scan of one segment ended.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum ScanEnd {
    /// The log ends at `offset` (block-aligned position where the next flush goes).
    Clean { offset: usize },
    /// Bytes at `offset` are damaged although a later flush (at `later`) was durable.
    Corrupt { offset: usize, later: usize },
    /// The log ends at `offset` (block-aligned), but the record before it claims the next LSN
    /// and fails its checksum: the last flush was torn by a crash while it was written (then
    /// nothing in it was acknowledged) or damaged after it was (then its writes are lost).
    /// Nothing on the disk tells which; recovery ends the log there and reports it.
    DamagedTail { offset: usize, lsn: u64 },
}

/// Result of scanning one segment's bytes.
pub(crate) struct SegmentScan {
    pub(crate) records: Vec<Record>,
    pub(crate) end: ScanEnd,
}

fn align_up(value: usize) -> usize {
    value.div_ceil(BLOCK) * BLOCK
}

/// Reads the records of a segment (its whole content in `bytes`, header block included),
/// expecting LSNs from `first_lsn` on, consecutive.
pub(crate) fn scan_segment(bytes: &[u8], first_lsn: u64, payload_max: usize) -> SegmentScan {
    let mut records = Vec::new();
    let mut offset = BLOCK;
    let mut expected = first_lsn;
    loop {
        if offset >= bytes.len() {
            return SegmentScan { records, end: ScanEnd::Clean { offset: bytes.len() } };
        }
        match parse_at(bytes, offset, payload_max) {
            Parsed::Valid { record, len, .. } if record.lsn == expected => {
                expected += 1;
                offset += len;
                records.push(record);
            }
            Parsed::Zero if !offset.is_multiple_of(BLOCK) => offset = align_up(offset),
            _ => {
                // The end of the log, unless a later flush start proves otherwise.
                let end = offset;
                let mut probe = if end.is_multiple_of(BLOCK) { end + BLOCK } else { align_up(end) };
                while probe < bytes.len() {
                    if let Parsed::Valid { record, flags, .. } = parse_at(bytes, probe, payload_max) {
                        if flags & FLUSH_START != 0 && record.lsn >= expected {
                            return SegmentScan { records, end: ScanEnd::Corrupt { offset: end, later: probe } };
                        }
                    }
                    probe += BLOCK;
                }
                // A header that names the next LSN (whatever its checksum says) was written by
                // the flush that followed the last good one, not left from an earlier life.
                let claimed = bytes.get(end + 8..end + 16).map(|lsn| u64::from_le_bytes(lsn.try_into().expect("8")));
                if claimed == Some(expected) {
                    return SegmentScan { records, end: ScanEnd::DamagedTail { offset: align_up(end), lsn: expected } };
                }
                return SegmentScan { records, end: ScanEnd::Clean { offset: align_up(end) } };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds a segment from flushes of payloads, as the writer lays them out.
    fn segment(flushes: &[&[&[u8]]], size: usize) -> Vec<u8> {
        let mut bytes = vec![0u8; size];
        let header = SegmentHeader { sequence: 1, first_lsn: 1, segment_bytes: size as u64 }.encode();
        bytes[..SEGMENT_HEADER_LEN].copy_from_slice(&header);
        let (mut offset, mut lsn) = (BLOCK, 1);
        for flush in flushes {
            let mut buffer = Vec::new();
            for (index, payload) in flush.iter().enumerate() {
                let flags = if index == 0 { FLUSH_START } else { 0 };
                encode_record(&mut buffer, lsn, 9, lsn * 10, 1, flags, payload);
                lsn += 1;
            }
            bytes[offset..offset + buffer.len()].copy_from_slice(&buffer);
            offset = align_up(offset + buffer.len());
        }
        bytes
    }

    #[test]
    fn reads_flushes_and_stops_at_the_end() {
        let big = vec![7u8; 5000];
        let bytes = segment(&[&[b"a", b"bb"], &[&big], &[b"c"]], 8 * BLOCK);
        let scan = scan_segment(&bytes, 1, 1 << 20);
        assert_eq!(scan.records.iter().map(|r| r.lsn).collect::<Vec<_>>(), vec![1, 2, 3, 4]);
        assert_eq!(scan.records[2].payload, big);
        assert_eq!(scan.records[1].slot, 20);
        assert_eq!(scan.end, ScanEnd::Clean { offset: 5 * BLOCK });
    }

    #[test]
    fn padding_shorter_than_a_header_is_skipped() {
        // First flush ends 39 bytes before its block's end.
        let payload = vec![3u8; BLOCK - 2 * RECORD_HEADER_LEN - 39 - 5];
        let bytes = segment(&[&[b"12345", &payload], &[b"next"]], 4 * BLOCK);
        let scan = scan_segment(&bytes, 1, 1 << 20);
        assert_eq!(scan.records.len(), 3);
        assert_eq!(scan.end, ScanEnd::Clean { offset: 3 * BLOCK });
    }

    #[test]
    fn torn_last_flush_is_a_clean_end() {
        let big = vec![7u8; 9000];
        let mut bytes = segment(&[&[b"a"], &[&big, b"tail"]], 8 * BLOCK);
        // The second flush spans blocks 2..5; lose its first block.
        bytes[2 * BLOCK..3 * BLOCK].fill(0xAB);
        let scan = scan_segment(&bytes, 1, 1 << 20);
        assert_eq!(scan.records.len(), 1);
        assert_eq!(scan.end, ScanEnd::Clean { offset: 2 * BLOCK });
    }

    #[test]
    fn a_damaged_last_record_is_told_from_the_end_of_the_log() {
        let mut bytes = segment(&[&[b"a"], &[b"b"]], 8 * BLOCK);
        bytes[2 * BLOCK + RECORD_HEADER_LEN] ^= 1;
        let scan = scan_segment(&bytes, 1, 1 << 20);
        assert_eq!(scan.records.len(), 1);
        assert_eq!(scan.end, ScanEnd::DamagedTail { offset: 2 * BLOCK, lsn: 2 });
    }

    #[test]
    fn damage_before_a_later_flush_is_corruption() {
        let mut bytes = segment(&[&[b"a"], &[b"b"], &[b"c"]], 8 * BLOCK);
        bytes[2 * BLOCK + 20] ^= 1;
        let scan = scan_segment(&bytes, 1, 1 << 20);
        assert_eq!(scan.records.len(), 1);
        assert_eq!(scan.end, ScanEnd::Corrupt { offset: 2 * BLOCK, later: 3 * BLOCK });
    }

    #[test]
    fn stale_records_from_an_earlier_life_end_the_log() {
        let old = segment(&[&[b"x"], &[b"y"], &[b"z"]], 8 * BLOCK);
        let mut bytes = old.clone();
        // Reused for LSNs starting at 100: one flush written over block 1.
        let mut buffer = Vec::new();
        encode_record(&mut buffer, 100, 9, 1, 1, FLUSH_START, b"new");
        bytes[BLOCK..2 * BLOCK].fill(0);
        bytes[BLOCK..BLOCK + buffer.len()].copy_from_slice(&buffer);
        let scan = scan_segment(&bytes, 100, 1 << 20);
        assert_eq!(scan.records.len(), 1);
        assert_eq!(scan.end, ScanEnd::Clean { offset: 2 * BLOCK });
    }

    #[test]
    fn segment_header_round_trips_and_rejects_damage() {
        let header = SegmentHeader { sequence: 3, first_lsn: 77, segment_bytes: 1 << 20 };
        let mut bytes = header.encode();
        assert_eq!(SegmentHeader::decode(&bytes), Some(header));
        bytes[20] ^= 1;
        assert_eq!(SegmentHeader::decode(&bytes), None);
    }
}
