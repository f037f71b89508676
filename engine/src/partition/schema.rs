//! A partition's view of its table, set by schema entries in its log (`Command::Schema`) and
//! saved with its metadata: what its change log keeps, and for how long. Room for what the
//! partition will maintain beside its items (local secondary indexes, time to live).

use crate::codec::{put_varint, Reader};

/// What the change log keeps of each change, as DynamoDB's stream view types.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ChangeView {
    /// No change log.
    #[default]
    Off = 0,
    /// The changed item's key.
    Keys = 1,
    NewImage = 2,
    OldImage = 3,
    NewAndOldImages = 4,
}

impl ChangeView {
    pub fn keeps_old(self) -> bool {
        matches!(self, ChangeView::OldImage | ChangeView::NewAndOldImages)
    }

    pub fn keeps_new(self) -> bool {
        matches!(self, ChangeView::NewImage | ChangeView::NewAndOldImages)
    }
}

/// How long change records are kept by default: DynamoDB's streams keep 24 hours.
pub const CHANGE_RETENTION_DEFAULT_S: u64 = 24 * 3600;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PartitionSchema {
    pub changes: ChangeView,
    /// Change records older than this (by their entry's time) are trimmed.
    pub retention_s: u64,
}

impl Default for PartitionSchema {
    fn default() -> PartitionSchema {
        PartitionSchema { changes: ChangeView::Off, retention_s: CHANGE_RETENTION_DEFAULT_S }
    }
}

const SCHEMA_FORMAT_VERSION: u8 = 1;

impl PartitionSchema {
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.push(SCHEMA_FORMAT_VERSION);
        out.push(self.changes as u8);
        put_varint(out, self.retention_s);
    }

    pub(crate) fn decode_from(reader: &mut Reader<'_>) -> Result<PartitionSchema, String> {
        let version = reader.u8()?;
        if version != SCHEMA_FORMAT_VERSION {
            return Err(format!("unknown partition schema format version {version}"));
        }
        let changes = match reader.u8()? {
            0 => ChangeView::Off,
            1 => ChangeView::Keys,
            2 => ChangeView::NewImage,
            3 => ChangeView::OldImage,
            4 => ChangeView::NewAndOldImages,
            view => return Err(format!("unknown change view {view}")),
        };
        Ok(PartitionSchema { changes, retention_s: reader.varint()? })
    }

    pub fn decode(bytes: &[u8]) -> Result<PartitionSchema, String> {
        let mut reader = Reader::new(bytes);
        let schema = PartitionSchema::decode_from(&mut reader)?;
        if !reader.is_empty() {
            return Err("trailing bytes after a partition schema".to_string());
        }
        Ok(schema)
    }
}
