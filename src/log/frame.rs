//! The write-ahead log's framing: how records sit in a segment file and how a reader tells a
//! torn tail from damage.
//!
//! A frame is `len(4, LE) ‖ crc(4, LE) ‖ payload(len) ‖ zero padding to a multiple of 8`, where
//! `crc = CRC32C(len ‖ payload)` and `payload = kind(1) ‖ data`. Segments are preallocated with
//! zeros, so a `len` of 0 is where the written part of a segment ends (no frame is empty: the
//! kind byte is always there). Frames start on 8-byte boundaries, which lets a reader that has
//! met a bad frame look for valid frames after it without knowing where the bad one ended.

use super::Hash;

pub const FRAME_HEADER: usize = 8;
pub const ALIGN: usize = 8;
/// No frame is larger: a commit body is bounded to a few KiB by the domain (DESIGN rule 7), so
/// a larger `len` is garbage, not a frame.
pub const MAX_PAYLOAD: usize = 16 << 20;

const KIND_HEADER: u8 = 1;
const KIND_COMMIT: u8 = 2;
const KIND_CHECKPOINT: u8 = 3;

/// What a segment says about itself in its first frame.
pub const SEGMENT_MAGIC: &[u8; 8] = b"reevewal";
pub const SEGMENT_FORMAT_V1: u8 = 1;

/// The last commit the store durably held when the frame was written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    pub seq: u64,
    pub hash: Hash,
}

/// The first frame of every segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegmentHeader {
    pub index: u64,
    /// The last commit before this segment: its first commit must be `head.seq + 1` and chain
    /// from `head.hash`.
    pub head: Checkpoint,
    /// The newest checkpoint when the segment was created, so that older segments can be
    /// recycled without losing it.
    pub checkpoint: Checkpoint,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame<'a> {
    Header(SegmentHeader),
    /// A commit record exactly as [`super::Commit::seal`] made it.
    Commit(&'a [u8]),
    Checkpoint(Checkpoint),
}

/// Appends one frame to `out`.
pub fn encode(frame: &Frame<'_>, out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(&[0u8; FRAME_HEADER]);
    match frame {
        Frame::Header(h) => {
            out.push(KIND_HEADER);
            out.extend_from_slice(SEGMENT_MAGIC);
            out.push(SEGMENT_FORMAT_V1);
            out.extend_from_slice(&h.index.to_le_bytes());
            put_checkpoint(out, &h.head);
            put_checkpoint(out, &h.checkpoint);
        }
        Frame::Commit(record) => {
            out.push(KIND_COMMIT);
            out.extend_from_slice(record);
        }
        Frame::Checkpoint(c) => {
            out.push(KIND_CHECKPOINT);
            put_checkpoint(out, c);
        }
    }
    let len = (out.len() - start - FRAME_HEADER) as u32;
    let mut crc = crc32c::crc32c(&len.to_le_bytes());
    crc = crc32c::crc32c_append(crc, &out[start + FRAME_HEADER..]);
    out[start..start + 4].copy_from_slice(&len.to_le_bytes());
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
    let padded = out.len().next_multiple_of(ALIGN);
    out.resize(padded, 0);
}

fn put_checkpoint(out: &mut Vec<u8>, c: &Checkpoint) {
    out.extend_from_slice(&c.seq.to_le_bytes());
    out.extend_from_slice(&c.hash);
}

fn get_checkpoint(b: &[u8]) -> Option<Checkpoint> {
    let seq = u64::from_le_bytes(b.get(..8)?.try_into().ok()?);
    let hash: Hash = b.get(8..40)?.try_into().ok()?;
    Some(Checkpoint { seq, hash })
}

/// How one position in a segment reads.
#[derive(Debug, PartialEq, Eq)]
pub enum Read<'a> {
    /// A frame and the offset of the next one.
    Frame(Frame<'a>, usize),
    /// Zeros: nothing was ever written here.
    End,
    /// Not a frame: why.
    Bad(String),
}

/// Reads the frame at `at` (an 8-aligned offset into `buf`).
pub fn read_at(buf: &[u8], at: usize) -> Read<'_> {
    let Some(head) = buf.get(at..at + FRAME_HEADER) else {
        return if buf[at.min(buf.len())..].iter().all(|&b| b == 0) {
            Read::End
        } else {
            Read::Bad("a frame header cut short by the end of the file".into())
        };
    };
    let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
    let crc = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
    if len == 0 {
        return if crc == 0 {
            Read::End
        } else {
            Read::Bad("a frame of length 0".into())
        };
    }
    if len > MAX_PAYLOAD {
        return Read::Bad(format!("a frame length of {len} bytes, over the limit"));
    }
    let start = at + FRAME_HEADER;
    let Some(payload) = buf.get(start..start + len) else {
        return Read::Bad(format!(
            "a frame of {len} bytes that runs past the end of the file"
        ));
    };
    let mut actual = crc32c::crc32c(&(len as u32).to_le_bytes());
    actual = crc32c::crc32c_append(actual, payload);
    if actual != crc {
        return Read::Bad("a frame whose checksum does not match its contents".into());
    }
    let next = (start + len).next_multiple_of(ALIGN);
    let data = &payload[1..];
    let frame = match payload[0] {
        KIND_HEADER => {
            if data.len() != 8 + 1 + 8 + 40 + 40 || &data[..8] != SEGMENT_MAGIC {
                return Read::Bad("a segment header of the wrong shape".into());
            }
            if data[8] != SEGMENT_FORMAT_V1 {
                return Read::Bad(format!("a segment header of unknown format {}", data[8]));
            }
            let index = u64::from_le_bytes(data[9..17].try_into().unwrap_or_default());
            match (get_checkpoint(&data[17..57]), get_checkpoint(&data[57..97])) {
                (Some(head), Some(checkpoint)) => Frame::Header(SegmentHeader {
                    index,
                    head,
                    checkpoint,
                }),
                _ => return Read::Bad("a segment header of the wrong shape".into()),
            }
        }
        KIND_COMMIT => Frame::Commit(data),
        KIND_CHECKPOINT => match (data.len(), get_checkpoint(data)) {
            (40, Some(c)) => Frame::Checkpoint(c),
            _ => return Read::Bad("a checkpoint frame of the wrong shape".into()),
        },
        k => return Read::Bad(format!("a frame of unknown kind {k}")),
    };
    Read::Frame(frame, next)
}

/// The first offset at or after `from` (8-aligned) where a valid frame starts, if any. Used
/// after a bad frame: a valid frame after it means the bad one is damage in the middle of the
/// log, not a torn tail.
pub fn next_valid(buf: &[u8], from: usize) -> Option<usize> {
    let mut at = from.next_multiple_of(ALIGN);
    while at + FRAME_HEADER <= buf.len() {
        // Zeros cannot start a frame; skip them a word at a time.
        if buf[at..at + FRAME_HEADER].iter().all(|&b| b == 0) {
            at += ALIGN;
            continue;
        }
        if let Read::Frame(..) = read_at(buf, at) {
            return Some(at);
        }
        at += ALIGN;
    }
    None
}

/// One past the last non-zero byte at or after `from`, or `from` if there is none.
pub fn garbage_end(buf: &[u8], from: usize) -> usize {
    buf.get(from..)
        .and_then(|rest| rest.iter().rposition(|&b| b != 0))
        .map_or(from, |i| from + i + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        let mut buf = Vec::new();
        encode(
            &Frame::Header(SegmentHeader {
                index: 3,
                head: Checkpoint {
                    seq: 9,
                    hash: [7; 32],
                },
                checkpoint: Checkpoint {
                    seq: 5,
                    hash: [5; 32],
                },
            }),
            &mut buf,
        );
        encode(&Frame::Commit(b"record ten"), &mut buf);
        encode(
            &Frame::Checkpoint(Checkpoint {
                seq: 10,
                hash: [1; 32],
            }),
            &mut buf,
        );
        buf.resize(buf.len() + 64, 0);
        buf
    }

    fn frames(buf: &[u8]) -> (Vec<Frame<'_>>, Read<'_>) {
        let mut out = Vec::new();
        let mut at = 0;
        loop {
            match read_at(buf, at) {
                Read::Frame(f, next) => {
                    out.push(f);
                    at = next;
                }
                other => return (out, other),
            }
        }
    }

    #[test]
    fn frames_round_trip_and_end_at_zeros() {
        let buf = sample();
        let (f, end) = frames(&buf);
        assert_eq!(end, Read::End);
        assert_eq!(f.len(), 3);
        assert_eq!(f[1], Frame::Commit(b"record ten"));
        assert!(matches!(f[0], Frame::Header(h) if h.index == 3 && h.head.seq == 9));
    }

    #[test]
    fn every_flipped_bit_of_a_frame_is_noticed() {
        let clean = sample();
        // Padding is not covered by the checksum: a flip there changes nothing that is read.
        let mut covered = Vec::new();
        let mut at = 0;
        while let Read::Frame(_, next) = read_at(&clean, at) {
            let len = u32::from_le_bytes(clean[at..at + 4].try_into().unwrap()) as usize;
            covered.extend(at..at + FRAME_HEADER + len);
            at = next;
        }
        for i in covered {
            for bit in 0..8 {
                let mut bad = clean.clone();
                bad[i] ^= 1 << bit;
                let (f, end) = frames(&bad);
                assert!(
                    f.len() < 3 && matches!(end, Read::Bad(_)),
                    "flip of bit {bit} at byte {i} went unnoticed: {} frames, {end:?}",
                    f.len()
                );
            }
        }
    }

    #[test]
    fn a_valid_frame_after_a_bad_one_is_found() {
        let mut buf = sample();
        buf[12] ^= 0xff; // inside the header frame's payload
        assert!(matches!(read_at(&buf, 0), Read::Bad(_)));
        let next = next_valid(&buf, 8).expect("the commit frame after it");
        assert!(matches!(
            read_at(&buf, next),
            Read::Frame(Frame::Commit(_), _)
        ));
    }
}
