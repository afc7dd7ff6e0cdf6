//! A chunked request body, decoded as nginx decodes it and handed on in a
//! canonical form.
//!
//! nginx's `ngx_http_parse_chunked` is the model, in its strict form (nginx
//! 1.29.4 and later, RFC 9112 errata 7633): every line ends in CRLF, a chunk
//! extension is skipped up to its CR, trailer fields are read and dropped.
//! Anything else is a 400 at the byte where it goes wrong, so a malformed
//! body is answered at once instead of leaving the reader waiting for a line
//! end that will never come.
//!
//! The bytes handed on are re-encoded: `<hex size>\r\n<data>\r\n` per piece
//! of data and a bare `0\r\n\r\n` at the end, without extensions or
//! trailers (nginx drops both too). Pingora's own chunked parser then only
//! ever sees framing we wrote, so it cannot read the body differently from
//! us, and the end of the body is exactly where we decided it is.

use bytes::{BufMut, BytesMut};

use super::h1_guard::Reject;

/// nginx refuses a chunk size above `NGX_MAX_OFF_T_VALUE / 16` before the
/// next digit.
const MAX_SIZE_BEFORE_DIGIT: u64 = (i64::MAX as u64) / 16;

const fn bad(reason: &'static str) -> Reject {
    Reject {
        status: 400,
        reason,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Start,
    Size,
    Ext,
    ExtLf,
    Data,
    DataCr,
    DataLf,
    LastExt,
    LastExtLf,
    Trailer,
    TrailerLf,
    TrailerField,
    TrailerFieldLf,
    Done,
}

/// Streaming decoder of one chunked body.
#[derive(Debug)]
pub struct ChunkDecoder {
    state: State,
    /// Bytes left in the current chunk (or the size being parsed).
    size: u64,
    /// Decoded body bytes so far, including the announced current chunk.
    announced: u64,
    /// `client_max_body_size`; 0 is unlimited.
    max_body: u64,
    /// Extension and trailer bytes so far, bounded by `max_meta`.
    meta: usize,
    max_meta: usize,
}

impl ChunkDecoder {
    /// `max_body`: nginx `client_max_body_size` (0 = unlimited), counted on
    /// the decoded body. `max_meta`: a bound on extension and trailer bytes,
    /// which nginx skips without limit but which no client needs in bulk.
    pub fn new(max_body: u64, max_meta: usize) -> Self {
        ChunkDecoder {
            state: State::Start,
            size: 0,
            announced: 0,
            max_body,
            meta: 0,
            max_meta,
        }
    }

    /// The terminating chunk and trailer section have been read.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    fn count_meta(&mut self) -> Result<(), Reject> {
        self.meta += 1;
        if self.meta > self.max_meta {
            return Err(bad("chunk extensions or trailers too large"));
        }
        Ok(())
    }

    /// Decodes from `input`, appending the canonical encoding to `out`.
    /// Returns how many input bytes belong to the body; it stops right after
    /// the body's last byte, so what follows (a pipelined request) is left.
    pub fn decode(&mut self, input: &[u8], out: &mut BytesMut) -> Result<usize, Reject> {
        let mut i = 0;
        while i < input.len() {
            if self.state == State::Done {
                break;
            }
            if self.state == State::Data {
                let n = usize::try_from(self.size)
                    .unwrap_or(usize::MAX)
                    .min(input.len() - i);
                write_chunk(out, &input[i..i + n]);
                self.size -= n as u64;
                i += n;
                if self.size == 0 {
                    self.state = State::DataCr;
                }
                continue;
            }
            let ch = input[i];
            i += 1;
            self.state = match self.state {
                State::Start => match hex(ch) {
                    Some(d) => {
                        self.size = u64::from(d);
                        State::Size
                    }
                    None => return Err(bad("invalid chunk size")),
                },
                State::Size => {
                    if let Some(d) = hex(ch) {
                        if self.size > MAX_SIZE_BEFORE_DIGIT {
                            return Err(bad("chunk size too large"));
                        }
                        self.size = self.size * 16 + u64::from(d);
                        State::Size
                    } else {
                        let last = self.size == 0;
                        match (ch, last) {
                            (b'\r', false) => State::ExtLf,
                            (b';' | b' ' | b'\t', false) => State::Ext,
                            (b'\r', true) => State::LastExtLf,
                            (b';' | b' ' | b'\t', true) => State::LastExt,
                            _ => return Err(bad("invalid chunk size")),
                        }
                    }
                }
                State::Ext | State::LastExt => match ch {
                    b'\r' if self.state == State::Ext => State::ExtLf,
                    b'\r' => State::LastExtLf,
                    b'\n' => return Err(bad("chunk extension ends in a bare LF")),
                    _ => {
                        self.count_meta()?;
                        self.state
                    }
                },
                State::ExtLf => {
                    if ch != b'\n' {
                        return Err(bad("chunk size line without LF"));
                    }
                    self.announce()?;
                    State::Data
                }
                State::DataCr => match ch {
                    b'\r' => State::DataLf,
                    _ => return Err(bad("chunk data longer than its size")),
                },
                State::DataLf => match ch {
                    b'\n' => State::Start,
                    _ => return Err(bad("chunk data without CRLF")),
                },
                State::LastExtLf => match ch {
                    b'\n' => State::Trailer,
                    _ => return Err(bad("last chunk line without LF")),
                },
                State::Trailer => match ch {
                    b'\r' => State::TrailerLf,
                    b'\n' => return Err(bad("bare LF in trailer section")),
                    _ => {
                        self.count_meta()?;
                        State::TrailerField
                    }
                },
                State::TrailerLf => match ch {
                    b'\n' => {
                        out.put_slice(b"0\r\n\r\n");
                        State::Done
                    }
                    _ => return Err(bad("trailer section without CRLF")),
                },
                State::TrailerField => match ch {
                    b'\r' => State::TrailerFieldLf,
                    b'\n' => return Err(bad("bare LF in trailer field")),
                    _ => {
                        self.count_meta()?;
                        State::TrailerField
                    }
                },
                State::TrailerFieldLf => match ch {
                    b'\n' => State::Trailer,
                    _ => return Err(bad("trailer field without CRLF")),
                },
                State::Data | State::Done => self.state,
            };
        }
        Ok(i)
    }

    /// A chunk's size is known: nginx answers 413 as soon as the announced
    /// total passes `client_max_body_size`, before the data arrives.
    fn announce(&mut self) -> Result<(), Reject> {
        self.announced = self.announced.saturating_add(self.size);
        if self.max_body > 0 && self.announced > self.max_body {
            return Err(Reject {
                status: 413,
                reason: "chunked body larger than client_max_body_size",
            });
        }
        Ok(())
    }
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn write_chunk(out: &mut BytesMut, data: &[u8]) {
    if data.is_empty() {
        return;
    }
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut digits = [0u8; 16];
    let mut n = data.len();
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = HEX[n & 0xf];
        n >>= 4;
        if n == 0 {
            break;
        }
    }
    out.reserve(digits.len() - at + data.len() + 4);
    out.put_slice(&digits[at..]);
    out.put_slice(b"\r\n");
    out.put_slice(data);
    out.put_slice(b"\r\n");
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Decodes `input` fed in pieces of `step` bytes; returns (consumed,
    /// canonical output) or the refusal.
    fn run(input: &[u8], step: usize, max_body: u64) -> Result<(usize, Vec<u8>), Reject> {
        let mut d = ChunkDecoder::new(max_body, 1024);
        let mut out = BytesMut::new();
        let mut used = 0;
        for piece in input.chunks(step.max(1)) {
            let n = d.decode(piece, &mut out)?;
            used += n;
            if d.is_done() {
                break;
            }
        }
        Ok((used, out.to_vec()))
    }

    /// The data a canonical encoding carries (a minimal strict reader).
    fn data_of(canonical: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut rest = canonical;
        loop {
            let nl = rest.windows(2).position(|w| w == b"\r\n").unwrap();
            let size =
                usize::from_str_radix(std::str::from_utf8(&rest[..nl]).unwrap(), 16).unwrap();
            rest = &rest[nl + 2..];
            if size == 0 {
                assert_eq!(rest, b"\r\n");
                return out;
            }
            out.extend_from_slice(&rest[..size]);
            assert_eq!(&rest[size..size + 2], b"\r\n");
            rest = &rest[size + 2..];
        }
    }

    #[test]
    fn valid_bodies_decode_and_stop_at_their_end() {
        let body =
            b"3\r\nabc\r\n2;ext=1\r\nde\r\nA \r\n0123456789\r\n0\r\nX-T: 1\r\n\r\nGET / HTTP/1.1";
        for step in [1, 2, 3, 7, 100] {
            let (used, out) = run(body, step, 0).unwrap();
            assert_eq!(&body[used..], b"GET / HTTP/1.1", "step {step}");
            assert_eq!(data_of(&out), b"abcde0123456789");
            assert!(out.ends_with(b"0\r\n\r\n"));
            assert!(!out.windows(3).any(|w| w == b"ext"));
        }
        let (used, out) = run(b"0\r\n\r\n", 1, 0).unwrap();
        assert_eq!((used, out.as_slice()), (5, &b"0\r\n\r\n"[..]));
        let (_, out) = run(b"000;x\r\n\r\n", 4, 0).unwrap();
        assert_eq!(out, b"0\r\n\r\n");
    }

    #[test]
    fn malformed_framing_is_refused_at_once() {
        for bad in [
            &b"3;ext\nabc\r\n0\r\n\r\n"[..], // extension ended by a bare LF
            b"3\nabc\r\n0\r\n\r\n",          // size line ended by a bare LF
            b"3\r\nabc\n0\r\n\r\n",          // data ended by a bare LF
            b"3\r\nabcd\r\n0\r\n\r\n",       // data longer than announced
            b"x\r\n",
            b"\r\n",
            b"-1\r\n",
            b"+1\r\n",
            b"0x3\r\n",
            b"3 \r\nabc\r\n0\n\r\n",
            b"0\r\n\n",
            b"0\r\nX: 1\n\r\n",
            b"0\r\r\n",
            b"fffffffffffffffff\r\n",
        ] {
            let r = run(bad, 1, 0);
            assert!(
                matches!(r, Err(Reject { status: 400, .. })),
                "{:?} -> {r:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn max_body_is_counted_on_decoded_data_when_announced() {
        assert!(run(b"5\r\nhello\r\n0\r\n\r\n", 1, 5).is_ok());
        let r = run(b"3\r\nabc\r\n3\r\n", 100, 5);
        assert_eq!(r.unwrap_err().status, 413);
        // Refused at the size line, before the data.
        let mut d = ChunkDecoder::new(10, 1024);
        let mut out = BytesMut::new();
        assert_eq!(d.decode(b"ff\r\n", &mut out).unwrap_err().status, 413);
    }

    #[test]
    fn extension_and_trailer_bytes_are_bounded() {
        let mut d = ChunkDecoder::new(0, 8);
        let mut out = BytesMut::new();
        assert!(d.decode(b"1;aaaaaaaaa", &mut out).is_err());
    }

    proptest! {
        /// Any body written as chunks with extensions and trailers decodes to
        /// its data however it is split, and Pingora-style canonical framing
        /// comes out.
        #[test]
        fn roundtrip(
            chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 1..40), 0..6),
            ext in proptest::option::of("[a-z=;]{0,6}"),
            trailer in proptest::option::of("[A-Za-z-]{1,8}: [a-z]{0,5}"),
            step in 1usize..20,
        ) {
            let mut wire = Vec::new();
            let mut data = Vec::new();
            for c in &chunks {
                wire.extend_from_slice(format!("{:X}", c.len()).as_bytes());
                if let Some(e) = &ext {
                    wire.push(b';');
                    wire.extend_from_slice(e.as_bytes());
                }
                wire.extend_from_slice(b"\r\n");
                wire.extend_from_slice(c);
                wire.extend_from_slice(b"\r\n");
                data.extend_from_slice(c);
            }
            wire.extend_from_slice(b"0\r\n");
            if let Some(t) = &trailer {
                wire.extend_from_slice(t.as_bytes());
                wire.extend_from_slice(b"\r\n");
            }
            wire.extend_from_slice(b"\r\nNEXT");
            let (used, out) = run(&wire, step, 0).unwrap();
            prop_assert_eq!(used, wire.len() - 4);
            prop_assert_eq!(data_of(&out), data);
        }

        /// Arbitrary bytes never panic, never consume past a finished body,
        /// and whatever is accepted decodes to a well-formed canonical stream.
        #[test]
        fn arbitrary_input(input in proptest::collection::vec(any::<u8>(), 0..200), step in 1usize..10) {
            let mut d = ChunkDecoder::new(0, 64);
            let mut out = BytesMut::new();
            let mut used = 0;
            for piece in input.chunks(step) {
                match d.decode(piece, &mut out) {
                    Ok(n) => {
                        prop_assert!(n <= piece.len());
                        used += n;
                        if d.is_done() {
                            break;
                        }
                    }
                    Err(_) => return Ok(()),
                }
            }
            prop_assert!(used <= input.len());
            if d.is_done() {
                let _ = data_of(&out);
            }
        }
    }
}
