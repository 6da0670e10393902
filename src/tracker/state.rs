//! The saved run state: the bytes `Tracker::save_state` returns and a resumed run reads back.
//! Versioned and checksummed, so that a damaged, truncated or foreign state is an error that
//! says which, never a silently different run.
//!
//! Layout (little endian): the magic `DSTRKST` and a format byte (`4`), seven `u64` words (stage
//! tag, stage index, spool length, spool CRC-32, bank bytes, head bank bytes, head end), the
//! banks, the head's banks (inside the reverse pass; else none), and the CRC-32 of everything
//! before it.
//! The spool's length and checksum (inside the first stretch) tie the state to the spool as it
//! was when the state was saved.

use super::spool::SpoolMark;
use super::{ProcIdx, Stage, TrackError};

const MAGIC: &[u8; 7] = b"DSTRKST";
/// The format written: 4, with the head end (a ranked memory policy extends the head while it
/// runs). Format 3 (six words, the head end the schedule's least) and format 2 (the same, banks
/// without policy state, as a `sam2` state) are still read; format 1, of earlier versions, had
/// no checksum.
const FORMAT: u8 = b'4';
/// The earlier formats still read (six header words).
const FORMAT_3: u8 = b'3';
const FORMAT_2: u8 = b'2';
const WORDS: usize = 7;
const WORDS_3: usize = 6;
const TRAILER: usize = 4;

/// The header's length with `words` words.
const fn header(words: usize) -> usize {
    8 + words * 8
}

/// A saved state, parsed.
#[derive(Debug, PartialEq, Eq)]
pub struct Saved<'b> {
    pub stage: Stage,
    /// The spool as the state saw it (inside the first stretch).
    pub spool: Option<SpoolMark>,
    /// [`super::bank::save_banks`] bytes of the banks.
    pub banks: &'b [u8],
    /// The same of the head's banks (inside the reverse pass).
    pub head_banks: Option<&'b [u8]>,
    /// The head end of the run (`None` in formats 2 and 3: the schedule's least).
    pub head_end: Option<ProcIdx>,
}

fn bad(m: impl std::fmt::Display) -> TrackError {
    TrackError::State(m.to_string())
}

/// The bytes of a state (not at [`Stage::Start`]).
pub fn encode(saved: &Saved<'_>) -> Result<Vec<u8>, TrackError> {
    let (tag, index) = match saved.stage {
        Stage::Start => return Err(bad("nothing to save before the first processed frame")),
        Stage::Head(k) => (1u64, k),
        Stage::Reverse(k) => (2, k),
        Stage::Rest(k) => (3, k),
    };
    let spool = saved.spool.unwrap_or_default();
    let head = saved.head_banks.unwrap_or_default();
    let head_end = saved
        .head_end
        .ok_or_else(|| bad("a state to save needs its head end"))?;
    let mut out = Vec::with_capacity(header(WORDS) + saved.banks.len() + head.len() + TRAILER);
    out.extend_from_slice(MAGIC);
    out.push(FORMAT);
    for w in [
        tag,
        index.0 as u64,
        spool.len,
        spool.crc as u64,
        saved.banks.len() as u64,
        head.len() as u64,
        head_end.0 as u64,
    ] {
        out.extend_from_slice(&w.to_le_bytes());
    }
    out.extend_from_slice(saved.banks);
    out.extend_from_slice(head);
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    Ok(out)
}

/// Parses and checks the bytes of a state.
pub fn decode(bytes: &[u8]) -> Result<Saved<'_>, TrackError> {
    if bytes.len() < 8 || &bytes[..7] != MAGIC {
        return Err(bad("not a tracker state"));
    }
    let words = match bytes[7] {
        FORMAT => WORDS,
        FORMAT_3 | FORMAT_2 => WORDS_3,
        _ => 0,
    };
    if words == 0 {
        return Err(bad(format!(
            "format {} of another densam version (this one reads format {})",
            bytes[7].escape_ascii(),
            FORMAT as char
        )));
    }
    if bytes.len() < header(words) + TRAILER {
        return Err(bad(format!("truncated ({} bytes)", bytes.len())));
    }
    let word = |i: usize| {
        let mut w = [0u8; 8];
        w.copy_from_slice(&bytes[8 + 8 * i..16 + 8 * i]);
        u64::from_le_bytes(w)
    };
    let (n_banks, n_head) = (word(4), word(5));
    let want = (header(words) + TRAILER) as u128 + n_banks as u128 + n_head as u128;
    if want != bytes.len() as u128 {
        return Err(bad(format!(
            "truncated or damaged: {} bytes where its header says {want}",
            bytes.len()
        )));
    }
    let (body, trailer) = bytes.split_at(bytes.len() - TRAILER);
    let mut c = [0u8; 4];
    c.copy_from_slice(trailer);
    if crc32fast::hash(body) != u32::from_le_bytes(c) {
        return Err(bad("damaged: its checksum does not match its bytes"));
    }
    let index = usize::try_from(word(1)).map_err(|_| bad("stage index out of range"))?;
    let stage = match word(0) {
        1 => Stage::Head(ProcIdx(index)),
        2 => Stage::Reverse(ProcIdx(index)),
        3 => Stage::Rest(ProcIdx(index)),
        t => return Err(bad(format!("unknown stage tag {t}"))),
    };
    let crc = u32::try_from(word(3)).map_err(|_| bad("spool checksum out of range"))?;
    let spool = stage
        .in_first_stretch()
        .then_some(SpoolMark { len: word(2), crc });
    let head_end = if words == WORDS {
        Some(ProcIdx(
            usize::try_from(word(6)).map_err(|_| bad("head end out of range"))?,
        ))
    } else {
        None
    };
    let (banks, head) = body[header(words)..].split_at(n_banks as usize);
    Ok(Saved {
        stage,
        spool,
        banks,
        head_banks: (!head.is_empty()).then_some(head),
        head_end,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_every_damage_is_refused() {
        let saved = Saved {
            stage: Stage::Reverse(ProcIdx(7)),
            spool: Some(SpoolMark {
                len: 1234,
                crc: 0xdead_beef,
            }),
            banks: b"the banks",
            head_banks: Some(b"head"),
            head_end: Some(ProcIdx(90)),
        };
        let bytes = encode(&saved).unwrap();
        assert_eq!(decode(&bytes).unwrap(), saved);
        let rest = Saved {
            stage: Stage::Rest(ProcIdx(40)),
            spool: None,
            banks: b"b",
            head_banks: None,
            head_end: Some(ProcIdx(22)),
        };
        assert_eq!(decode(&encode(&rest).unwrap()).unwrap(), rest);
        assert!(
            encode(&Saved {
                stage: Stage::Start,
                ..rest
            })
            .is_err()
        );
        // Any flipped byte, any cut: an error naming the problem.
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0x10;
            let e = decode(&b).unwrap_err().to_string();
            assert!(
                ["damaged", "not a tracker state", "format", "truncated"]
                    .iter()
                    .any(|w| e.contains(w)),
                "byte {i}: {e}"
            );
        }
        for n in 0..bytes.len() {
            assert!(decode(&bytes[..n]).is_err(), "cut at {n}");
        }
        // Formats 2 and 3: six header words, no head end.
        for f in [b'2', b'3'] {
            let mut old = bytes.clone();
            old.drain(header(WORDS_3)..header(WORDS));
            old[7] = f;
            let n = old.len() - TRAILER;
            let crc = crc32fast::hash(&old[..n]);
            old[n..].copy_from_slice(&crc.to_le_bytes());
            let want = Saved {
                head_end: None,
                ..decode(&bytes).unwrap()
            };
            assert_eq!(decode(&old).unwrap(), want);
        }
        let mut old = bytes.clone();
        old[7] = b'1';
        assert!(decode(&old).unwrap_err().to_string().contains("format 1"));
    }
}
