//! The frame: how messages are cut out of a byte stream.
//!
//! ```text
//! offset size  field
//!  0     u32   length of the rest of the frame (16 + payload), little-endian
//!  4     u32   CRC32C (Castagnoli) of bytes 8.. to the end of the frame
//!  8     u64   request id, chosen by the client, echoed in the answer
//! 16     u16   message type (`MessageType`)
//! 18     u16   flags: in a request, bits 0-1 its ReturnConsumedCapacity (0 NONE, 1 TOTAL,
//!              2 INDEXES), bit 2 "routed by the client's partition map" and bit 15
//!              "forwarded by a node" (`RequestFlags`); in an answer, zero
//! 20     ...   payload: a flatbuffer whose root is the table the message type names
//! ```
//!
//! Requests on one connection may be pipelined; answers carry the request id and may come in
//! any order. What a receiver does with a frame that is wrong:
//! - a length below 16 or above `FRAME_LEN_MAX`: the framing is lost, nothing after it can be
//!   trusted; answer `FrameTooLarge` (request id 0) and close;
//! - a checksum mismatch, flags it does not know, an unknown type or a payload that does not verify:
//!   the framing is intact; answer with the typed error and go on reading.

/// What a frame's payload is. Requests have types below `0x8000`, answers at or above it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum MessageType {
    CreateTable = 1,
    DeleteTable = 2,
    DescribeTable = 3,
    ListTables = 4,
    PutItem = 5,
    GetItem = 6,
    DeleteItem = 7,
    UpdateItem = 13,
    Query = 8,
    Scan = 9,
    BatchGetItem = 10,
    BatchWriteItem = 11,
    /// Which core serves this connection (for clients that route by partition).
    Hello = 12,
    /// Cluster administration: the replicas a node hosts; a configuration change at a
    /// partition's leader; a replica its group removed, stopped for good.
    DescribeReplicas = 14,
    ChangeMembers = 15,
    RetireReplica = 16,
    /// Proves the connection holds a key (`AuthenticateRequest`); answered with a Hello answer.
    Authenticate = 17,
    /// A table's tags: added, removed, listed; answered with `TagsResponse`.
    TagResource = 18,
    UntagResource = 19,
    ListTagsOfResource = 20,
    /// A batch of Multi-Paxos messages on a peer link (node to node; `replication.rs`).
    Replication = 0x4000,
    /// The internal RPC: work on one partition, from a cluster member to the node that leads
    /// it (`partition_op.rs`), answered with `PartitionAnswer`.
    PartitionOp = 0x4001,
    /// CreateTable, DeleteTable and DescribeTable answers.
    TableResponse = 0x8001,
    ListTablesResponse = 0x8002,
    /// PutItem, GetItem and DeleteItem answers.
    ItemResponse = 0x8003,
    /// Query and Scan answers.
    ItemsResponse = 0x8004,
    BatchGetItemResponse = 0x8005,
    BatchWriteItemResponse = 0x8006,
    HelloResponse = 0x8007,
    ReplicasResponse = 0x8008,
    /// ChangeMembers and RetireReplica answers.
    AdminResponse = 0x8009,
    /// TagResource, UntagResource and ListTagsOfResource answers.
    TagsResponse = 0x800A,
    PartitionAnswer = 0xC001,
    Error = 0xFFFF,
}

impl MessageType {
    const ALL: [MessageType; 34] = [
        MessageType::CreateTable,
        MessageType::DeleteTable,
        MessageType::DescribeTable,
        MessageType::ListTables,
        MessageType::PutItem,
        MessageType::GetItem,
        MessageType::DeleteItem,
        MessageType::UpdateItem,
        MessageType::Query,
        MessageType::Scan,
        MessageType::BatchGetItem,
        MessageType::BatchWriteItem,
        MessageType::Hello,
        MessageType::DescribeReplicas,
        MessageType::ChangeMembers,
        MessageType::RetireReplica,
        MessageType::Authenticate,
        MessageType::TagResource,
        MessageType::UntagResource,
        MessageType::ListTagsOfResource,
        MessageType::Replication,
        MessageType::PartitionOp,
        MessageType::TableResponse,
        MessageType::ListTablesResponse,
        MessageType::ItemResponse,
        MessageType::ItemsResponse,
        MessageType::BatchGetItemResponse,
        MessageType::BatchWriteItemResponse,
        MessageType::HelloResponse,
        MessageType::ReplicasResponse,
        MessageType::AdminResponse,
        MessageType::TagsResponse,
        MessageType::PartitionAnswer,
        MessageType::Error,
    ];

    /// The message type with this number, if it is one.
    pub fn from_u16(value: u16) -> Option<MessageType> {
        MessageType::ALL.into_iter().find(|kind| *kind as u16 == value)
    }
}

/// Bytes before the payload.
pub const HEADER_LEN: usize = 20;
/// Largest value of the length field: a 16 MiB payload (DynamoDB's BatchWriteItem limit) and
/// room for the flatbuffer's own tables.
pub const FRAME_LEN_MAX: usize = (16 << 20) + (64 << 10);

/// The fixed part of a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    pub request_id: u64,
    /// The raw message type (it may be one this side does not know).
    pub message_type: u16,
    pub flags: u16,
}

/// A frame whose framing is intact.
#[derive(Debug, PartialEq, Eq)]
pub struct Frame<'a> {
    pub header: Header,
    pub payload: &'a [u8],
    /// Whether the CRC32C matched.
    pub checksum_ok: bool,
}

/// What `decode` found at the start of a buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded<'a> {
    /// A whole frame, and how many bytes of the buffer it took.
    Frame(Frame<'a>, usize),
    /// More bytes are needed: at least this many in all.
    Incomplete(usize),
}

/// The framing is lost: the length field cannot be right.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FramingLost {
    /// The length field's value.
    pub len: u64,
}

impl std::fmt::Display for FramingLost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "frame length field {} is outside 16..={FRAME_LEN_MAX}; the stream cannot be read further", self.len)
    }
}

/// Cuts the first frame out of `buffer`.
pub fn decode(buffer: &[u8]) -> Result<Decoded<'_>, FramingLost> {
    let Some(length) = buffer.get(..4) else {
        return Ok(Decoded::Incomplete(4));
    };
    let len = u32::from_le_bytes(length.try_into().expect("4 bytes")) as usize;
    if !(HEADER_LEN - 4..=FRAME_LEN_MAX).contains(&len) {
        return Err(FramingLost { len: len as u64 });
    }
    let total = 4 + len;
    let Some(frame) = buffer.get(..total) else {
        return Ok(Decoded::Incomplete(total));
    };
    let checksum = u32::from_le_bytes(frame[4..8].try_into().expect("4 bytes"));
    let header = Header {
        request_id: u64::from_le_bytes(frame[8..16].try_into().expect("8 bytes")),
        message_type: u16::from_le_bytes(frame[16..18].try_into().expect("2 bytes")),
        flags: u16::from_le_bytes(frame[18..20].try_into().expect("2 bytes")),
    };
    let checksum_ok = crc32c::crc32c(&frame[8..]) == checksum;
    Ok(Decoded::Frame(Frame { header, payload: &frame[HEADER_LEN..], checksum_ok }, total))
}

/// Appends a frame holding `payload` to `out`.
pub fn encode(request_id: u64, message_type: MessageType, flags: u16, payload: &[u8], out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(&((HEADER_LEN - 4 + payload.len()) as u32).to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&request_id.to_le_bytes());
    out.extend_from_slice(&(message_type as u16).to_le_bytes());
    out.extend_from_slice(&flags.to_le_bytes());
    out.extend_from_slice(payload);
    let checksum = crc32c::crc32c(&out[start + 8..]);
    out[start + 4..start + 8].copy_from_slice(&checksum.to_le_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_split_anywhere() {
        let mut stream = Vec::new();
        encode(7, MessageType::GetItem, 0, b"first", &mut stream);
        encode(8, MessageType::PutItem, 2, b"", &mut stream);
        let first_len = HEADER_LEN + 5;
        for cut in 0..first_len {
            assert!(matches!(decode(&stream[..cut]), Ok(Decoded::Incomplete(_))), "cut at {cut}");
        }
        let Ok(Decoded::Frame(frame, used)) = decode(&stream) else { panic!("a frame") };
        assert_eq!(used, first_len);
        assert_eq!(frame.header, Header { request_id: 7, message_type: MessageType::GetItem as u16, flags: 0 });
        assert_eq!(frame.payload, b"first");
        assert!(frame.checksum_ok);
        let Ok(Decoded::Frame(frame, _)) = decode(&stream[used..]) else { panic!("a frame") };
        assert_eq!((frame.header.request_id, frame.header.flags, frame.payload), (8, 2, &b""[..]));
    }

    #[test]
    fn a_flipped_bit_fails_the_checksum_and_bad_lengths_lose_the_framing() {
        let mut stream = Vec::new();
        encode(1, MessageType::Scan, 0, b"payload", &mut stream);
        for byte in 4..stream.len() {
            let mut damaged = stream.clone();
            damaged[byte] ^= 0x10;
            let Ok(Decoded::Frame(frame, _)) = decode(&damaged) else { panic!("framing intact") };
            assert!(!frame.checksum_ok, "flip at byte {byte} went unnoticed");
        }
        let too_long = ((FRAME_LEN_MAX + 1) as u32).to_le_bytes();
        assert_eq!(decode(&too_long), Err(FramingLost { len: FRAME_LEN_MAX as u64 + 1 }));
        assert_eq!(decode(&15u32.to_le_bytes()), Err(FramingLost { len: 15 }));
    }
}
