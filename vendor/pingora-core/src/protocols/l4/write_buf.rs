// Copyright 2026 Cloudflare, Inc.
//
// Licensed under the Apache License, Version 2.0 (the "License");
// you may not use this file except in compliance with the License.
// You may obtain a copy of the License at
//
// http://www.apache.org/licenses/LICENSE-2.0
//
// Unless required by applicable law or agreed to in writing, software
// distributed under the License is distributed on an "AS IS" BASIS,
// WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
// See the License for the specific language governing permissions and
// limitations under the License.

//! Patched (see vendor/README.md).
//!
//! The L4 write buffer, holding memory only while it holds bytes.
//!
//! It buffers the way tokio's [`BufWriter`](tokio::io::BufWriter) does: small
//! writes are gathered up to the capacity, a write as large as the capacity
//! goes straight through. The difference is memory: tokio's buffer is
//! allocated with the writer and lives as long as the connection, which for a
//! kept-alive connection waiting for its next request is most of its life.
//! Here the buffer is allocated by the first write that needs it and freed by
//! the flush that empties it, so an idle connection holds none (1,460 bytes
//! less per kept-alive connection at the default capacity), at the price of
//! one allocation per flushed message.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

#[derive(Debug)]
pub(crate) struct WriteBuf<W> {
    inner: W,
    buf: Vec<u8>,
    /// Bytes of `buf` already written by a flush that has not finished.
    written: usize,
    capacity: usize,
}

impl<W> WriteBuf<W> {
    pub(crate) fn with_capacity(capacity: usize, inner: W) -> Self {
        WriteBuf {
            inner,
            buf: Vec::new(),
            written: 0,
            capacity,
        }
    }

    pub(crate) fn get_ref(&self) -> &W {
        &self.inner
    }

    pub(crate) fn get_mut(&mut self) -> &mut W {
        &mut self.inner
    }

    /// The inner writer. Bytes still buffered are lost.
    pub(crate) fn into_inner(self) -> W {
        self.inner
    }

    /// Bytes held and not yet written.
    #[cfg(test)]
    pub(crate) fn buffer(&self) -> &[u8] {
        &self.buf[self.written..]
    }

    /// Memory the buffer holds.
    pub(crate) fn allocated(&self) -> usize {
        self.buf.capacity()
    }

    fn space(&self) -> usize {
        self.capacity - self.buf.len()
    }

    fn push(&mut self, bytes: &[u8]) {
        if self.buf.capacity() == 0 {
            self.buf.reserve_exact(self.capacity);
        }
        self.buf.extend_from_slice(bytes);
    }
}

impl<W: AsyncWrite + Unpin> WriteBuf<W> {
    fn poll_flush_buf(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut ret = Ok(());
        while self.written < self.buf.len() {
            match ready!(Pin::new(&mut self.inner).poll_write(cx, &self.buf[self.written..])) {
                Ok(0) => {
                    ret = Err(io::Error::new(
                        io::ErrorKind::WriteZero,
                        "failed to write the buffered data",
                    ));
                    break;
                }
                Ok(n) => self.written += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    ret = Err(e);
                    break;
                }
            }
        }
        if self.written > 0 {
            self.buf.drain(..self.written);
        }
        self.written = 0;
        Poll::Ready(ret)
    }

    /// Flushes what is buffered and, when that empties the buffer, frees it.
    fn poll_flush_and_free(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_flush_buf(cx))?;
        if self.buf.is_empty() && self.buf.capacity() > 0 {
            self.buf = Vec::new();
        }
        Poll::Ready(Ok(()))
    }
}

impl<W: AsyncWrite + Unpin> AsyncWrite for WriteBuf<W> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bytes: &[u8],
    ) -> Poll<io::Result<usize>> {
        let me = &mut *self;
        if bytes.len() > me.space() {
            ready!(me.poll_flush_buf(cx))?;
        }
        if bytes.len() >= me.capacity {
            Pin::new(&mut me.inner).poll_write(cx, bytes)
        } else {
            me.push(bytes);
            Poll::Ready(Ok(bytes.len()))
        }
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let me = &mut *self;
        if me.inner.is_write_vectored() {
            let total = bufs.iter().fold(0usize, |n, b| n.saturating_add(b.len()));
            if total > me.space() {
                ready!(me.poll_flush_buf(cx))?;
            }
            if total >= me.capacity {
                return Pin::new(&mut me.inner).poll_write_vectored(cx, bufs);
            }
            for b in bufs {
                me.push(b);
            }
            return Poll::Ready(Ok(total));
        }
        // The inner writer takes one slice at a time: buffer whole slices while
        // they fit, as tokio's `BufWriter` does.
        let mut bufs = bufs;
        while bufs.first().is_some_and(|b| b.is_empty()) {
            bufs = &bufs[1..];
        }
        let Some(first) = bufs.first() else {
            return Poll::Ready(Ok(0));
        };
        if first.len() > me.space() {
            ready!(me.poll_flush_buf(cx))?;
        }
        if first.len() >= me.capacity {
            return Pin::new(&mut me.inner).poll_write(cx, first);
        }
        me.push(first);
        let mut total = first.len();
        for b in &bufs[1..] {
            if b.len() > me.space() {
                break;
            }
            me.push(b);
            total += b.len();
        }
        Poll::Ready(Ok(total))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_flush_and_free(cx))?;
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_flush_and_free(cx))?;
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

impl<W: AsyncRead + Unpin> AsyncRead for WriteBuf<W> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    /// A writer that records each write it takes.
    #[derive(Default)]
    struct Sink {
        writes: Vec<Vec<u8>>,
        vectored: bool,
    }

    impl AsyncWrite for Sink {
        fn poll_write(
            mut self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            self.writes.push(buf.to_vec());
            Poll::Ready(Ok(buf.len()))
        }
        fn poll_write_vectored(
            mut self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
            bufs: &[IoSlice<'_>],
        ) -> Poll<io::Result<usize>> {
            let all: Vec<u8> = bufs.iter().flat_map(|b| b.iter().copied()).collect();
            let n = all.len();
            self.writes.push(all);
            Poll::Ready(Ok(n))
        }
        fn is_write_vectored(&self) -> bool {
            self.vectored
        }
        fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn holds_no_memory_until_written_and_after_a_flush() {
        let mut w = WriteBuf::with_capacity(1460, Sink::default());
        assert_eq!(w.allocated(), 0);
        w.write_all(b"HTTP/1.1 200 OK\r\n\r\n").await.unwrap();
        w.write_all(b"body").await.unwrap();
        assert!(w.allocated() >= 1460);
        assert!(w.get_ref().writes.is_empty(), "small writes are gathered");
        w.flush().await.unwrap();
        assert_eq!(w.allocated(), 0, "a flushed buffer is freed");
        assert_eq!(w.get_ref().writes, vec![b"HTTP/1.1 200 OK\r\n\r\nbody".to_vec()]);
    }

    #[tokio::test]
    async fn large_writes_go_straight_through_after_what_is_buffered() {
        let mut w = WriteBuf::with_capacity(8, Sink::default());
        w.write_all(b"head").await.unwrap();
        w.write_all(b"0123456789").await.unwrap();
        assert_eq!(
            w.get_ref().writes,
            vec![b"head".to_vec(), b"0123456789".to_vec()]
        );
        w.write_all(b"abc").await.unwrap();
        w.write_all(b"defgh").await.unwrap(); // 3 + 5 = 8: fits exactly
        assert_eq!(w.buffer(), b"abcdefgh");
        w.write_all(b"i").await.unwrap(); // no room: the 8 go out first
        assert_eq!(w.get_ref().writes.last().unwrap(), b"abcdefgh");
        assert_eq!(w.buffer(), b"i");
        w.shutdown().await.unwrap();
        assert_eq!(w.get_ref().writes.last().unwrap(), b"i");
        assert_eq!(w.allocated(), 0);
    }

    #[tokio::test]
    async fn vectored_writes_are_gathered_either_way() {
        for vectored in [true, false] {
            let sink = Sink {
                vectored,
                ..Sink::default()
            };
            let mut w = WriteBuf::with_capacity(16, sink);
            let n = w
                .write_vectored(&[IoSlice::new(b""), IoSlice::new(b"ab"), IoSlice::new(b"cd")])
                .await
                .unwrap();
            assert_eq!(n, 4);
            assert_eq!(w.buffer(), b"abcd", "vectored={vectored}");
            let big = [b'x'; 20];
            let n = w.write_vectored(&[IoSlice::new(&big)]).await.unwrap();
            assert_eq!(n, 20);
            assert_eq!(w.get_ref().writes, vec![b"abcd".to_vec(), big.to_vec()]);
            w.flush().await.unwrap();
            assert_eq!(w.allocated(), 0);
        }
    }

    #[tokio::test]
    async fn a_zero_capacity_writes_straight_through() {
        let mut w = WriteBuf::with_capacity(0, Sink::default());
        w.write_all(b"a").await.unwrap();
        w.write_all(b"b").await.unwrap();
        assert_eq!(w.get_ref().writes, vec![b"a".to_vec(), b"b".to_vec()]);
        assert_eq!(w.allocated(), 0);
    }
}
