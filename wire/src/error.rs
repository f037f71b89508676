//! Errors that travel on the wire: DynamoDB's error names, and the protocol's own.

use std::fmt;

use tessera_engine::Item;

use crate::generated::tessera::fb;

/// What went wrong, by name. The first group are DynamoDB's exception names, as its SDKs know
/// them; the second are this protocol's own (damaged or unknown frames).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    ValidationException,
    ResourceNotFoundException,
    ResourceInUseException,
    LimitExceededException,
    ProvisionedThroughputExceededException,
    ThrottlingException,
    InternalServerError,
    ServiceUnavailable,
    /// A write's condition did not hold; nothing was written.
    ConditionalCheckFailedException,
    /// An item collection (the items of one partition key) would outgrow 10 GB. DynamoDB's
    /// limit applies only to tables with local secondary indexes, which do not exist yet:
    /// nothing raises it today; the name is reserved on the wire for them.
    ItemCollectionSizeLimitExceededException,
    /// The server takes requests only on an authenticated connection, and this one is not.
    MissingAuthenticationTokenException,
    /// The key is not one the server knows, or the proof does not match it.
    UnrecognizedClientException,
    /// The connection's key does not allow the request (administration without the cluster's
    /// secret).
    AccessDeniedException,
    /// The frame's checksum did not match its bytes.
    ChecksumMismatch,
    /// The message type is not one the receiver knows.
    UnknownMessageType,
    /// The payload is not a valid flatbuffer of the message type's root table.
    MalformedMessage,
    /// The frame is larger than the limit; the connection is closed after this answer.
    FrameTooLarge,
    /// The partition's replica on this node does not lead (a write or a strong read):
    /// `WireError::leader` is the address of the node to ask, when one is known.
    NotLeader,
    /// A request its client routed by a partition map reached a core that does not own its
    /// partition (the client's copy of the map is stale): `WireError::epoch` is the epoch of
    /// the server's. The client refreshes its map; the server has done nothing.
    WrongPartition,
    /// A code this side does not know (sent by a newer peer).
    Unknown(u16),
}

const CODES: [(ErrorCode, fb::ErrorCode); 19] = [
    (ErrorCode::ValidationException, fb::ErrorCode::ValidationException),
    (ErrorCode::ResourceNotFoundException, fb::ErrorCode::ResourceNotFoundException),
    (ErrorCode::ResourceInUseException, fb::ErrorCode::ResourceInUseException),
    (ErrorCode::LimitExceededException, fb::ErrorCode::LimitExceededException),
    (ErrorCode::ProvisionedThroughputExceededException, fb::ErrorCode::ProvisionedThroughputExceededException),
    (ErrorCode::ThrottlingException, fb::ErrorCode::ThrottlingException),
    (ErrorCode::InternalServerError, fb::ErrorCode::InternalServerError),
    (ErrorCode::ServiceUnavailable, fb::ErrorCode::ServiceUnavailable),
    (ErrorCode::ConditionalCheckFailedException, fb::ErrorCode::ConditionalCheckFailedException),
    (ErrorCode::ItemCollectionSizeLimitExceededException, fb::ErrorCode::ItemCollectionSizeLimitExceededException),
    (ErrorCode::MissingAuthenticationTokenException, fb::ErrorCode::MissingAuthenticationTokenException),
    (ErrorCode::UnrecognizedClientException, fb::ErrorCode::UnrecognizedClientException),
    (ErrorCode::AccessDeniedException, fb::ErrorCode::AccessDeniedException),
    (ErrorCode::ChecksumMismatch, fb::ErrorCode::ChecksumMismatch),
    (ErrorCode::UnknownMessageType, fb::ErrorCode::UnknownMessageType),
    (ErrorCode::MalformedMessage, fb::ErrorCode::MalformedMessage),
    (ErrorCode::FrameTooLarge, fb::ErrorCode::FrameTooLarge),
    (ErrorCode::NotLeader, fb::ErrorCode::NotLeader),
    (ErrorCode::WrongPartition, fb::ErrorCode::WrongPartition),
];

impl ErrorCode {
    pub(crate) fn to_fb(self) -> fb::ErrorCode {
        match self {
            ErrorCode::Unknown(code) => fb::ErrorCode(code),
            known => {
                CODES.iter().find(|(code, _)| *code == known).map(|(_, wire)| *wire).expect("every code is listed")
            }
        }
    }

    pub(crate) fn from_fb(code: fb::ErrorCode) -> ErrorCode {
        CODES.iter().find(|(_, wire)| *wire == code).map_or(ErrorCode::Unknown(code.0), |(known, _)| *known)
    }

    /// The name as DynamoDB's SDKs print it.
    pub fn name(self) -> String {
        match self {
            ErrorCode::Unknown(code) => format!("UnknownError{code}"),
            known => format!("{known:?}"),
        }
    }

    /// Whether a request failing this way may succeed later, unchanged.
    pub fn retryable(self) -> bool {
        matches!(
            self,
            ErrorCode::ProvisionedThroughputExceededException
                | ErrorCode::ThrottlingException
                | ErrorCode::InternalServerError
                | ErrorCode::ServiceUnavailable
                | ErrorCode::ChecksumMismatch
        )
    }
}

/// An error answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WireError {
    pub code: ErrorCode,
    pub message: String,
    pub retryable: bool,
    /// The item as it was, for a ConditionalCheckFailedException whose request asked for it.
    pub item: Option<Item>,
    /// NotLeader: the client address of the node that leads, if known.
    pub leader: Option<String>,
    /// WrongPartition: the epoch of the partition map the server routes by.
    pub epoch: Option<u64>,
}

impl WireError {
    /// An error with `code`'s own retryability.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> WireError {
        WireError { code, message: message.into(), retryable: code.retryable(), item: None, leader: None, epoch: None }
    }
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code.name(), self.message)
    }
}

impl std::error::Error for WireError {}
