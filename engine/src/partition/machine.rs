//! The partition's state machine: what applying one log entry does, as a pure function of the
//! entry, the partition's state and the items the entry reads. It does no I/O: the host reads
//! the old images the entry names (`reads`) from the tree, calls `apply`, and writes the
//! effects it returns. Every replica that applies the same entries in the same order computes
//! the same outcomes and effects, byte for byte.

use bytes::Bytes;

use super::keyspace::Sequence;
use super::schema::{ChangeView, PartitionSchema};
use crate::codec::{decode_item, encode_item, put_bytes, put_varint, same_attributes, ItemMeta, Reader};
use crate::command::{Command, ConditionalCommand, ConditionalWrite, Outcome, Stamped};
use crate::value::validate_item;

/// The old images an entry reads, by item key (absent: no item), as they stand while its
/// effects are computed: each effect on an item updates its image, so a later write of the
/// same entry sees it.
#[derive(Default)]
pub struct Images {
    images: ahash::HashMap<Vec<u8>, Option<Bytes>>,
}

impl Images {
    /// Whether `key`'s image is known.
    pub fn contains(&self, key: &[u8]) -> bool {
        self.images.contains_key(key)
    }

    /// Sets `key`'s image as read from the tree.
    pub fn insert(&mut self, key: Vec<u8>, image: Option<Vec<u8>>) {
        self.images.insert(key, image.map(Bytes::from));
    }

    fn get(&self, key: &[u8]) -> Option<Bytes> {
        self.images.get(key).unwrap_or_else(|| panic!("the host read every image `reads` named, not {key:?}")).clone()
    }

    fn set(&mut self, key: &[u8], image: Option<Bytes>) {
        *self.images.get_mut(key).expect("an image read before it is written") = image;
    }
}

/// A write the host makes to the partition's keyspaces.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Effect {
    /// Stores `value` under the item key `key` (data keyspace).
    Put { key: Vec<u8>, value: Bytes },
    /// Removes the item under `key` (data keyspace).
    Delete { key: Vec<u8> },
    /// Appends a record to the change log (`ChangeRecord::encode`).
    Change { sequence: Sequence, record: Vec<u8> },
}

/// What applying an entry produced.
#[derive(Debug, PartialEq, Eq)]
pub struct Applied {
    pub outcome: Outcome,
    /// In the order the host must make them.
    pub effects: Vec<Effect>,
    /// The entry changed the partition's schema (the host saves it with its metadata).
    pub schema_changed: bool,
    /// Applied without old images (`needs_images`): the host writes each item effect with the
    /// tree's length-returning write and reports the length it replaced (`count`).
    pub blind: bool,
}

/// A partition's state that entries change, beside its items: its applied slot, its counts and
/// its schema.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PartitionMachine {
    pub applied_slot: u64,
    /// Items held, and their bytes (keys and stored values).
    pub items: u64,
    pub bytes: u64,
    pub schema: PartitionSchema,
}

impl PartitionMachine {
    /// Whether applying `command` needs the old images of the items it writes: for the change
    /// log, for a proposer that takes the values it replaced (`keep`), or for a condition or an
    /// update. Otherwise nothing needs them, and the host writes blind: one tree operation a
    /// write, the replaced length coming back from it (`Applied::blind`).
    pub fn needs_images(&self, command: &Command, keep: bool) -> bool {
        fn conditional(command: &Command) -> bool {
            match command {
                Command::Conditional(_) => true,
                Command::Batch(commands) => commands.iter().any(conditional),
                Command::Put { .. } | Command::Delete { .. } | Command::Schema(_) => false,
            }
        }
        keep || self.schema.changes != ChangeView::Off || conditional(command)
    }

    /// Appends the item keys whose old images applying `command` reads, if it needs them
    /// (`needs_images`): the host reads each from the tree into `Images` before `apply`.
    pub fn reads<'c>(&self, command: &'c Command, keep: bool, keys: &mut Vec<&'c [u8]>) {
        fn item_keys<'c>(command: &'c Command, keys: &mut Vec<&'c [u8]>) {
            match command {
                Command::Put { key, .. } | Command::Delete { key } => keys.push(key),
                Command::Conditional(conditional) => keys.push(&conditional.key),
                Command::Batch(commands) => commands.iter().for_each(|command| item_keys(command, keys)),
                Command::Schema(_) => {}
            }
        }
        if self.needs_images(command, keep) {
            item_keys(command, keys);
        }
    }

    /// Applies `entry`, chosen at `slot` (past the applied slot), given the old images it
    /// reads. `keep`: the proposer takes the outcome (a plain write's is then the value it
    /// replaced, not only its length). An error is a stored item that does not decode.
    pub fn apply(&mut self, slot: u64, entry: &Stamped, images: &mut Images, keep: bool) -> Result<Applied, String> {
        assert!(slot > self.applied_slot, "slot {slot} applied after slot {}", self.applied_slot);
        let blind = !self.needs_images(&entry.command, keep);
        let mut applying =
            Applying { machine: self, slot, at_us: entry.at_us, images, effects: Vec::new(), keep, blind };
        let outcome = applying.command(&entry.command)?;
        let effects = std::mem::take(&mut applying.effects);
        let schema_changed = matches!(entry.command, Command::Schema(_));
        self.applied_slot = slot;
        Ok(Applied { outcome, effects, schema_changed, blind })
    }

    /// Accounts for `key` now holding a value of `value` bytes (or nothing) where it held one
    /// of `previous` bytes (or nothing).
    pub fn count(&mut self, key: &[u8], previous: Option<usize>, value: Option<usize>) {
        if let Some(previous) = previous {
            assert!(self.items > 0 && self.bytes >= (key.len() + previous) as u64, "counts below what they hold");
            self.items -= 1;
            self.bytes -= (key.len() + previous) as u64;
        }
        if let Some(value) = value {
            self.items += 1;
            self.bytes += (key.len() + value) as u64;
        }
    }
}

/// One entry's apply in progress.
struct Applying<'a> {
    machine: &'a mut PartitionMachine,
    slot: u64,
    at_us: u64,
    images: &'a mut Images,
    effects: Vec<Effect>,
    keep: bool,
    /// No images were read: writes are counted by the host (`Applied::blind`).
    blind: bool,
}

impl Applying<'_> {
    fn command(&mut self, command: &Command) -> Result<Outcome, String> {
        match command {
            Command::Put { key, value } => {
                let old = self.write(key, Some(value.clone()));
                Ok(self.plain(old))
            }
            Command::Delete { key } => {
                let old = self.write(key, None);
                Ok(self.plain(old))
            }
            Command::Batch(commands) => {
                Ok(Outcome::Batch(commands.iter().map(|command| self.command(command)).collect::<Result<_, _>>()?))
            }
            Command::Conditional(conditional) => self.conditional(conditional),
            Command::Schema(schema) => {
                self.machine.schema = *schema;
                Ok(Outcome::Batch(Vec::new()))
            }
        }
    }

    fn plain(&self, old: Option<Bytes>) -> Outcome {
        if self.keep {
            Outcome::Previous(old.map(|old| old.to_vec()))
        } else {
            Outcome::Written
        }
    }

    fn conditional(&mut self, conditional: &ConditionalCommand) -> Result<Outcome, String> {
        let ConditionalCommand { key, condition, write } = conditional;
        let old = self.images.get(key);
        let old_item = match &old {
            None => None,
            Some(bytes) => Some(decode_item(bytes).map_err(|reason| format!("a stored item: {reason}"))?.0),
        };
        let old_bytes = || old.as_ref().map(|old| old.to_vec());
        let passed =
            condition.as_ref().is_none_or(|condition| condition.evaluate(&old_item.clone().unwrap_or_default()));
        if !passed {
            return Ok(Outcome::Conditional { passed, old: old_bytes(), new: None });
        }
        let new = match write {
            ConditionalWrite::Put(value) => Some(value.clone()),
            ConditionalWrite::Delete => None,
            ConditionalWrite::Update { key_item, update, write_timestamp } => {
                let item = match update.apply_to(old_item, key_item) {
                    Ok(Some(item)) => item,
                    Ok(None) => return Ok(Outcome::Conditional { passed, old: old_bytes(), new: None }),
                    Err(error) => return Ok(Outcome::Invalid(error.reason())),
                };
                if let Err(error) = validate_item(&item) {
                    return Ok(Outcome::Invalid(error.reason()));
                }
                let mut bytes = Vec::new();
                encode_item(&item, ItemMeta { write_timestamp: *write_timestamp, pending_transaction: 0 }, &mut bytes);
                Some(bytes)
            }
        };
        self.write(key, new.clone().map(Bytes::from));
        Ok(Outcome::Conditional { passed, old: old_bytes(), new })
    }

    /// Writes `value` (or nothing) under `key`: the effect, the counts, the change record.
    /// Returns the old image.
    fn write(&mut self, key: &[u8], value: Option<Bytes>) -> Option<Bytes> {
        if self.blind {
            self.effects.push(match value {
                Some(value) => Effect::Put { key: key.to_vec(), value },
                None => Effect::Delete { key: key.to_vec() },
            });
            return None;
        }
        let old = self.images.get(key);
        self.machine.count(key, old.as_ref().map(Bytes::len), value.as_ref().map(Bytes::len));
        self.effects.push(match &value {
            Some(value) => Effect::Put { key: key.to_vec(), value: value.clone() },
            None => Effect::Delete { key: key.to_vec() },
        });
        self.record(key, old.as_ref(), value.as_ref());
        self.images.set(key, value);
        old
    }

    /// The change record of `key` going from `old` to `new`, if the schema keeps one and the
    /// item changed (a write that leaves it as it was makes none, as DynamoDB's streams).
    fn record(&mut self, key: &[u8], old: Option<&Bytes>, new: Option<&Bytes>) {
        let view = self.machine.schema.changes;
        let kind = match (old, new) {
            _ if view == ChangeView::Off => return,
            (None, None) => return,
            (Some(old), Some(new)) if same_attributes(old, new) => return,
            (None, Some(_)) => ChangeKind::Insert,
            (Some(_), Some(_)) => ChangeKind::Modify,
            (Some(_), None) => ChangeKind::Remove,
        };
        let position = self.effects.iter().filter(|effect| matches!(effect, Effect::Change { .. })).count();
        let sequence = Sequence { slot: self.slot, position: u32::try_from(position).expect("changes per entry fit") };
        let record = ChangeRecord {
            kind,
            at_us: self.at_us,
            key: key.to_vec(),
            old: old.filter(|_| view.keeps_old()).map(|old| old.to_vec()),
            new: new.filter(|_| view.keeps_new()).map(|new| new.to_vec()),
        };
        self.effects.push(Effect::Change { sequence, record: record.encode() });
    }
}

/// What a change did to its item.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChangeKind {
    Insert = 1,
    Modify = 2,
    Remove = 3,
}

const CHANGE_FORMAT_VERSION: u8 = 1;

/// A change log record (FORMAT.md, "Change log"): what a write did to one item, when its entry
/// was proposed, and the item's images before and after as far as the schema's view keeps them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChangeRecord {
    pub kind: ChangeKind,
    /// When the entry was proposed, in microseconds since the Unix epoch (`Stamped::at_us`).
    pub at_us: u64,
    /// The item's key (encoded primary key).
    pub key: Vec<u8>,
    /// Encoded items.
    pub old: Option<Vec<u8>>,
    pub new: Option<Vec<u8>>,
}

impl ChangeRecord {
    pub fn encode(&self) -> Vec<u8> {
        let image_len = |image: &Option<Vec<u8>>| image.as_ref().map_or(0, Vec::len);
        let mut out = Vec::with_capacity(32 + self.key.len() + image_len(&self.old) + image_len(&self.new));
        out.push(CHANGE_FORMAT_VERSION);
        out.push(self.kind as u8);
        put_varint(&mut out, self.at_us);
        put_bytes(&mut out, &self.key);
        for image in [&self.old, &self.new] {
            match image {
                None => out.push(0),
                Some(image) => {
                    out.push(1);
                    put_bytes(&mut out, image);
                }
            }
        }
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<ChangeRecord, String> {
        let mut reader = Reader::new(bytes);
        let version = reader.u8()?;
        if version != CHANGE_FORMAT_VERSION {
            return Err(format!("unknown change record format version {version}"));
        }
        let kind = match reader.u8()? {
            1 => ChangeKind::Insert,
            2 => ChangeKind::Modify,
            3 => ChangeKind::Remove,
            kind => return Err(format!("unknown change kind {kind}")),
        };
        let at_us = reader.varint()?;
        let key = reader.bytes()?.to_vec();
        let mut image = || match reader.u8()? {
            0 => Ok(None),
            1 => Ok(Some(reader.bytes()?.to_vec())),
            flag => Err(format!("image flag {flag}")),
        };
        let (old, new) = (image()?, image()?);
        if !reader.is_empty() {
            return Err("trailing bytes after a change record".to_string());
        }
        Ok(ChangeRecord { kind, at_us, key, old, new })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::value::{AttributeValue, Item};

    fn item(pairs: &[(&str, &str)]) -> Vec<u8> {
        let item: Item =
            pairs.iter().map(|(name, value)| (name.to_string(), AttributeValue::S(value.to_string()))).collect();
        let mut bytes = Vec::new();
        encode_item(&item, ItemMeta::default(), &mut bytes);
        bytes
    }

    /// Applies `command` as a host would, over `stored` (the tree), returning the outcome.
    fn apply(
        machine: &mut PartitionMachine,
        stored: &mut std::collections::BTreeMap<Vec<u8>, Vec<u8>>,
        changes: &mut Vec<(Sequence, ChangeRecord)>,
        command: Command,
    ) -> Outcome {
        apply_keeping(machine, stored, changes, command, true)
    }

    fn apply_keeping(
        machine: &mut PartitionMachine,
        stored: &mut std::collections::BTreeMap<Vec<u8>, Vec<u8>>,
        changes: &mut Vec<(Sequence, ChangeRecord)>,
        command: Command,
        keep: bool,
    ) -> Outcome {
        let mut keys = Vec::new();
        machine.reads(&command, keep, &mut keys);
        let mut images = Images::default();
        for key in keys {
            images.insert(key.to_vec(), stored.get(key).cloned());
        }
        let slot = machine.applied_slot + 1;
        let applied = machine.apply(slot, &Stamped { at_us: 1000 * slot, command }, &mut images, keep).unwrap();
        for effect in applied.effects {
            // Blind, the host counts each write by what the tree says it replaced.
            match effect {
                Effect::Put { key, value } => {
                    let previous = stored.insert(key.clone(), value.to_vec()).map(|old| old.len());
                    if applied.blind {
                        machine.count(&key, previous, Some(value.len()));
                    }
                }
                Effect::Delete { key } => {
                    let previous = stored.remove(&key).map(|old| old.len());
                    if applied.blind {
                        machine.count(&key, previous, None);
                    }
                }
                Effect::Change { sequence, record } => changes.push((sequence, ChangeRecord::decode(&record).unwrap())),
            }
        }
        applied.outcome
    }

    #[test]
    fn the_change_log_records_each_change_with_the_images_its_view_keeps() {
        let (mut machine, mut stored, mut changes) = Default::default();
        let put = |key: &str, value: &[u8]| Command::Put { key: key.into(), value: value.to_vec().into() };
        apply(&mut machine, &mut stored, &mut changes, put("a", &item(&[("v", "1")])));
        assert!(changes.is_empty(), "no change log without a view");
        let schema = PartitionSchema { changes: ChangeView::NewAndOldImages, ..PartitionSchema::default() };
        apply(&mut machine, &mut stored, &mut changes, Command::Schema(schema));
        assert_eq!(machine.schema, schema);
        let batch = Command::Batch(vec![
            put("a", &item(&[("v", "2")])),
            put("b", &item(&[("v", "1")])),
            put("b", &item(&[("v", "1")])),
            Command::Delete { key: b"a".to_vec() },
            Command::Delete { key: b"missing".to_vec() },
        ]);
        apply(&mut machine, &mut stored, &mut changes, batch);
        let kinds: Vec<_> =
            changes.iter().map(|(sequence, record)| (sequence.slot, sequence.position, record.kind)).collect();
        assert_eq!(
            kinds,
            [(3, 0, ChangeKind::Modify), (3, 1, ChangeKind::Insert), (3, 2, ChangeKind::Remove)],
            "an unchanged put and a delete of nothing make no record"
        );
        assert_eq!(changes[0].1.old, Some(item(&[("v", "1")])));
        assert_eq!(changes[0].1.new, Some(item(&[("v", "2")])));
        assert_eq!(changes[2].1.old, Some(item(&[("v", "2")])), "the delete sees the batch's own put");
        assert_eq!(changes[2].1.at_us, 3000);
        assert_eq!((machine.items, machine.applied_slot), (1, 3));
        let keys_only = PartitionSchema { changes: ChangeView::Keys, ..PartitionSchema::default() };
        apply(&mut machine, &mut stored, &mut changes, Command::Schema(keys_only));
        let values = [(":v".to_string(), AttributeValue::S("3".into()))].into();
        let names = Default::default();
        let update =
            crate::expr::parse_update("SET v = :v", &mut crate::expr::Placeholders::new(&names, &values)).unwrap();
        let conditional = Command::conditional(
            b"b".to_vec(),
            None,
            ConditionalWrite::Update { key_item: Item::new(), update, write_timestamp: 5 },
        );
        let outcome = apply(&mut machine, &mut stored, &mut changes, conditional);
        assert!(matches!(outcome, Outcome::Conditional { passed: true, .. }));
        let last = &changes.last().unwrap().1;
        assert_eq!(
            (last.kind, last.key.as_slice(), &last.old, &last.new),
            (ChangeKind::Modify, &b"b"[..], &None, &None)
        );
    }

    /// Plain writes nothing needs the old images of are written blind, and counted alike.
    #[test]
    fn blind_writes_count_as_writes_with_images_do() {
        let put = |key: &str, value: &[u8]| Command::Put { key: key.into(), value: value.to_vec().into() };
        let writes = || {
            vec![
                put("a", b"1"),
                Command::Batch(vec![put("b", b"22"), put("a", b"333"), Command::Delete { key: b"b".to_vec() }]),
                Command::Delete { key: b"missing".to_vec() },
                put("c", b"4444"),
            ]
        };
        let mut counts = Vec::new();
        for keep in [true, false] {
            let (mut machine, mut stored, mut changes) = Default::default();
            for command in writes() {
                assert_eq!(PartitionMachine::default().needs_images(&command, keep), keep);
                let outcome = apply_keeping(&mut machine, &mut stored, &mut changes, command, keep);
                assert!(keep || matches!(outcome, Outcome::Written | Outcome::Batch(_)), "{outcome:?}");
            }
            counts.push((machine.items, machine.bytes, stored));
        }
        assert_eq!(counts[0], counts[1]);
        assert_eq!((counts[1].0, counts[1].1), (2, 2 + 3 + 4));
        // A condition, or a change log, needs the images.
        let schema = PartitionSchema { changes: ChangeView::Keys, ..PartitionSchema::default() };
        assert!(PartitionMachine { schema, ..PartitionMachine::default() }.needs_images(&put("a", b"1"), false));
        let conditional = Command::conditional(b"a".to_vec(), None, ConditionalWrite::Delete);
        assert!(PartitionMachine::default().needs_images(&Command::Batch(vec![conditional]), false));
    }

    #[test]
    fn change_records_round_trip_and_refuse_garbage() {
        let record =
            ChangeRecord { kind: ChangeKind::Remove, at_us: 99, key: b"k".to_vec(), old: Some(vec![1, 2]), new: None };
        assert_eq!(ChangeRecord::decode(&record.encode()), Ok(record.clone()));
        let mut bytes = record.encode();
        bytes.push(0);
        assert!(ChangeRecord::decode(&bytes).is_err());
        assert!(ChangeRecord::decode(&[2]).is_err());
    }
}
