//! Chunked reads handed from a producer (an SFTP read-ahead thread, an object store
//! stream) to a blocking parser, with an explicit end marker: a producer that stops
//! without sending the empty end chunk makes the reader fail, so a read cut short is
//! never taken for the end of a file.

use std::io::Read;

/// A `Read` over chunks a producer thread or task sends; an empty chunk marks the end.
/// Consumed chunks go back to the reader through `spare`.
pub struct ChunkReader {
    rx: std::sync::mpsc::Receiver<std::io::Result<Vec<u8>>>,
    spare: std::sync::mpsc::SyncSender<Vec<u8>>,
    cur: Vec<u8>,
    pos: usize,
    done: bool,
}

impl ChunkReader {
    /// Reads from `rx`; consumed chunks go back through `spare` for reuse.
    pub fn new(
        rx: std::sync::mpsc::Receiver<std::io::Result<Vec<u8>>>,
        spare: std::sync::mpsc::SyncSender<Vec<u8>>,
    ) -> ChunkReader {
        ChunkReader {
            rx,
            spare,
            cur: Vec::new(),
            pos: 0,
            done: false,
        }
    }
}

impl Read for ChunkReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.pos >= self.cur.len() {
            if self.done {
                return Ok(0);
            }
            match self.rx.recv() {
                Ok(chunk) => {
                    let used = std::mem::replace(&mut self.cur, chunk?);
                    if used.capacity() > 0 {
                        let _ = self.spare.try_send(used);
                    }
                    self.pos = 0;
                    self.done = self.cur.is_empty();
                }
                Err(_) => {
                    return Err(std::io::Error::other(
                        "the read stopped before the end of the file",
                    ));
                }
            }
        }
        let n = buf.len().min(self.cur.len() - self.pos);
        buf[..n].copy_from_slice(&self.cur[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_read_cut_short_is_an_error_not_an_end() {
        let (tx, rx) = std::sync::mpsc::sync_channel(4);
        let (spare, _spare_rx) = std::sync::mpsc::sync_channel(4);
        tx.send(Ok(b"ab".to_vec())).unwrap();
        drop(tx);
        let mut s = String::new();
        assert!(
            ChunkReader::new(rx, spare.clone())
                .read_to_string(&mut s)
                .is_err()
        );
        let (tx, rx) = std::sync::mpsc::sync_channel(4);
        tx.send(Ok(b"ab".to_vec())).unwrap();
        tx.send(Ok(Vec::new())).unwrap();
        drop(tx);
        let mut s = String::new();
        ChunkReader::new(rx, spare).read_to_string(&mut s).unwrap();
        assert_eq!(s, "ab");
    }
}
