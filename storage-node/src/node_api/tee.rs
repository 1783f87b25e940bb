//! A buffered reader that writes what it hands on: the bytes of an append reach the pack file
//! as the verifier consumes them, so a record is hashed and written in one pass through one
//! buffer, never held whole. Bytes can also be read *held* (a header, checked before a byte of
//! it is written) and written through afterwards.

use std::io::{self, BufRead, Read, Write};

/// Reads `input` and writes every consumed byte to `output`. The first write failure is kept
/// (a buffered reader cannot report it from `consume`); every read after it fails.
pub(crate) struct Tee<R, W> {
    input: R,
    output: W,
    failed: Option<io::Error>,
}

impl<R: BufRead, W: Write> Tee<R, W> {
    pub(crate) fn new(input: R, output: W) -> Self {
        Tee { input, output, failed: None }
    }

    /// Fills `buf` from the input without writing it.
    pub(crate) fn read_held(&mut self, buf: &mut [u8]) -> io::Result<()> {
        self.input.read_exact(buf)
    }

    /// Writes `bytes` (held ones, once checked) to the output.
    pub(crate) fn write_through(&mut self, bytes: &[u8]) {
        if self.failed.is_none()
            && let Err(err) = self.output.write_all(bytes)
        {
            self.failed = Some(err);
        }
    }

    /// Flushes the output.
    pub(crate) fn flush_output(&mut self) -> io::Result<()> {
        self.output.flush()
    }

    /// The write failure, if one happened.
    pub(crate) fn take_failure(&mut self) -> Option<io::Error> {
        self.failed.take()
    }

    /// The output, once done with.
    pub(crate) fn into_output(self) -> W {
        self.output
    }
}

impl<R: BufRead, W: Write> Read for Tee<R, W> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let available = self.fill_buf()?;
        let len = available.len().min(buf.len());
        buf[..len].copy_from_slice(&available[..len]);
        self.consume(len);
        Ok(len)
    }
}

impl<R: BufRead, W: Write> BufRead for Tee<R, W> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        if self.failed.is_some() {
            return Err(io::Error::other("the pack file cannot be written"));
        }
        self.input.fill_buf()
    }

    fn consume(&mut self, amount: usize) {
        if self.failed.is_none() {
            // The bytes consumed are at the front of the input's buffer: no I/O here.
            let written = match self.input.fill_buf() {
                Ok(buffered) => self.output.write_all(&buffered[..amount.min(buffered.len())]),
                Err(err) => Err(err),
            };
            if let Err(err) = written {
                self.failed = Some(err);
            }
        }
        self.input.consume(amount);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consumed_bytes_are_written_and_held_ones_only_when_told() {
        let input = io::BufReader::with_capacity(4, &b"headbody and more"[..]);
        let mut tee = Tee::new(input, Vec::new());
        let mut head = [0u8; 4];
        tee.read_held(&mut head).expect("held");
        assert_eq!(&head, b"head");
        assert!(tee.output.is_empty(), "held bytes are not written");
        tee.write_through(&head);
        let mut body = String::new();
        tee.read_to_string(&mut body).expect("read");
        assert_eq!(body, "body and more");
        assert!(tee.take_failure().is_none());
        assert_eq!(tee.into_output(), b"headbody and more");
    }

    #[test]
    fn a_write_failure_stops_the_reads() {
        struct Full;
        impl Write for Full {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                Err(io::Error::from_raw_os_error(libc::ENOSPC))
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let mut tee = Tee::new(&b"some bytes"[..], Full);
        let mut buf = [0u8; 4];
        assert_eq!(tee.read(&mut buf).expect("the first read hands its bytes on"), 4);
        assert!(tee.read(&mut buf).is_err(), "then nothing more");
        assert_eq!(tee.take_failure().and_then(|err| err.raw_os_error()), Some(libc::ENOSPC));
    }
}
