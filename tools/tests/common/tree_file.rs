//! Reading a store's tree file (`engine/FORMAT.md`, "Pages"), to damage a chosen page.

use std::path::Path;

const PAGE: usize = 4096;

fn u16_at(page: &[u8], at: usize) -> usize {
    usize::from(u16::from_le_bytes([page[at], page[at + 1]]))
}

fn u64_at(page: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(page[at..at + 8].try_into().unwrap())
}

/// The leaves reachable from the newest checkpoint of the tree file at `path` whose keys
/// (their first and last) all lie in partitions `wanted` accepts: (page id, partition of the
/// first key, number of keys).
pub fn leaves(path: &Path, wanted: impl Fn(u64) -> bool) -> Vec<(u64, u64, usize)> {
    let file = std::fs::read(path).unwrap();
    let page = |id: u64| &file[id as usize * PAGE..(id as usize + 1) * PAGE];
    let valid = |slot: u64| {
        let bytes = page(slot);
        let crc = u32::from_le_bytes(bytes[..4].try_into().unwrap());
        &bytes[32..40] == b"TESSTREE" && crc == crc32c::crc32c(&bytes[4..])
    };
    let meta =
        (0..2).filter(|&slot| valid(slot)).max_by_key(|&slot| u64_at(page(slot), 40)).expect("a valid meta page");
    let mut stack = vec![u64_at(page(meta), 48)];
    let mut found = Vec::new();
    let key = |bytes: &[u8], index: usize| {
        let slot = 32 + 12 * index;
        let (offset, len) = (u16_at(bytes, slot + 8), u16_at(bytes, slot + 10) & 0x7fff);
        (offset, len)
    };
    while let Some(id) = stack.pop() {
        let bytes = page(id);
        let count = u16_at(bytes, 6);
        match bytes[4] {
            2 => {
                stack.push(u64_at(bytes, 24));
                for index in 0..count {
                    let (offset, len) = key(bytes, index);
                    stack.push(u64_at(bytes, offset + len));
                }
            }
            1 if count > 0 => {
                let partition = |index: usize| {
                    let (offset, _) = key(bytes, index);
                    u64::from_be_bytes(bytes[offset..offset + 8].try_into().unwrap())
                };
                if wanted(partition(0)) && wanted(partition(count - 1)) {
                    found.push((id, partition(0), count));
                }
            }
            _ => {}
        }
    }
    found
}

/// Flips one byte in the middle of page `id` of the tree file at `path`.
pub fn flip_byte(path: &Path, id: u64) {
    let mut file = std::fs::read(path).unwrap();
    file[id as usize * PAGE + PAGE / 2] ^= 0x40;
    std::fs::write(path, &file).unwrap();
}

/// A partition of a table (`tessera_net::table_of` not 0), not the catalog's nor the metadata's.
pub fn is_table_partition(partition: u64) -> bool {
    tessera_net::table_of(partition) != 0 && partition != u64::MAX
}
