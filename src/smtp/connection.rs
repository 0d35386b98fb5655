//! One client connection's bytes: the stream, the sans-IO decoder that turns what was read
//! into events, and the buffer replies collect in until the next flush (so pipelined
//! replies go out in one write). The session works on events and replies only.

use crate::smtp::codec::{Decoder, Event, Limits};
use crate::smtp::reply::Reply;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Bytes read at most per read call.
const READ_CHUNK: usize = 16 * 1024;

/// A client connection: stream, decoder, output buffer.
pub(crate) struct Connection<S> {
    stream: S,
    decoder: Decoder,
    out: Vec<u8>,
    /// An event taken from the decoder and given back (read ahead while gathering
    /// pipelined commands).
    pending: Option<Event>,
    /// Bytes read since the client was told 354.
    data_bytes: u64,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Connection<S> {
    /// A connection over `stream` with the codec's `limits`.
    pub fn new(stream: S, limits: Limits) -> Self {
        Connection {
            stream,
            decoder: Decoder::new(limits),
            out: Vec::with_capacity(1024),
            pending: None,
            data_bytes: 0,
        }
    }

    /// Queue a reply for the next flush.
    pub fn reply(&mut self, r: Reply) {
        self.out.extend_from_slice(&r.to_wire());
    }

    /// Write the queued replies.
    pub async fn flush(&mut self) -> std::io::Result<()> {
        if !self.out.is_empty() {
            self.stream.write_all(&self.out).await?;
            self.stream.flush().await?;
            self.out.clear();
        }
        Ok(())
    }

    /// The next complete event from what was read, if any.
    pub fn next_event(&mut self) -> Option<Event> {
        self.pending.take().or_else(|| self.decoder.next_event())
    }

    /// Give an event back: it is the next one [`Connection::next_event`] returns.
    pub(crate) fn push_back(&mut self, event: Event) {
        self.pending = Some(event);
    }

    /// True when an event was given back and not taken again.
    pub(crate) fn has_pushed_back(&self) -> bool {
        self.pending.is_some()
    }

    /// True while message content is being received.
    pub(crate) fn in_data(&self) -> bool {
        self.decoder.in_data()
    }

    /// The client was told 354: what follows is message content, `declared_size` bytes of
    /// it when the client said (MAIL FROM's SIZE=).
    pub fn begin_data(&mut self, declared_size: Option<u64>) {
        self.decoder.begin_data(declared_size);
        self.data_bytes = 0;
    }

    /// Stop keeping the message being received; its end will be an error.
    pub fn abandon_data(&mut self) {
        self.decoder.abandon_data();
    }

    /// Bytes of message content read since 354.
    pub fn data_bytes(&self) -> u64 {
        self.data_bytes
    }

    /// True when part of a command line was read and not its end.
    pub fn has_partial_line(&self) -> bool {
        self.decoder.in_command_line()
    }

    /// Read more bytes into the decoder; 0 means the client closed the connection.
    pub async fn read(&mut self) -> std::io::Result<usize> {
        let target = self.decoder.read_target(READ_CHUNK);
        let n = self.stream.read_buf(target).await?;
        if self.decoder.in_data() {
            self.data_bytes += n as u64;
        }
        Ok(n)
    }
}
