//! The COCO RLE JSON form `{"size": [h, w], "counts": "<compressed string>" | [runs]}`, one
//! serde type for the mask prompts of a prompts file and the segmentations of result lines.
//! Writing gives the compressed string (pycocotools' bytes); reading accepts both forms, with
//! serde errors that say what is wrong where (a run that is not a `u32`, a size that is not two
//! `u32`s). Turning it into an [`Rle`] checks the declared size against a limit before
//! anything is allocated from it, and the counts against the size.

use serde::de::{self, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};

use super::rle::{Rle, RleError};

/// RLE counts as COCO writes them: a compressed string, or (for crowd annotations and some
/// tools) the plain list of run lengths.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Counts {
    Compressed(String),
    Uncompressed(Vec<u32>),
}

impl<'de> Deserialize<'de> for Counts {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Counts;

            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a compressed COCO RLE string or a list of run lengths")
            }

            fn visit_str<E: de::Error>(self, s: &str) -> Result<Counts, E> {
                Ok(Counts::Compressed(s.to_string()))
            }

            fn visit_string<E: de::Error>(self, s: String) -> Result<Counts, E> {
                Ok(Counts::Compressed(s))
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Counts, A::Error> {
                // No capacity from the size hint: the input decides how much is allocated.
                let mut runs = Vec::new();
                while let Some(r) = seq.next_element::<u32>()? {
                    runs.push(r);
                }
                Ok(Counts::Uncompressed(runs))
            }
        }
        d.deserialize_any(V)
    }
}

/// A COCO RLE mask `{"size": [h, w], "counts": ...}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CocoRle {
    /// `[height, width]`.
    pub size: [u32; 2],
    pub counts: Counts,
}

impl CocoRle {
    /// The compressed form of `rle`.
    pub fn from_rle(rle: &Rle) -> Self {
        Self {
            size: [rle.height, rle.width],
            counts: Counts::Compressed(rle.to_counts_string()),
        }
    }

    /// The plain run-length form of `rle` (no string round trip).
    pub fn uncompressed(rle: Rle) -> Self {
        Self {
            size: [rle.height, rle.width],
            counts: Counts::Uncompressed(rle.counts),
        }
    }

    /// Declared height.
    pub fn height(&self) -> u32 {
        self.size[0]
    }

    /// Declared width.
    pub fn width(&self) -> u32 {
        self.size[1]
    }

    /// Parses the counts (either form) and checks they cover `size`. Allocates only in
    /// proportion to the counts as written, never to the declared size.
    pub fn to_rle(&self) -> Result<Rle, RleError> {
        let [h, w] = self.size;
        match &self.counts {
            Counts::Compressed(s) => Rle::from_counts_string(s, h, w),
            Counts::Uncompressed(c) => Rle::from_counts(h, w, c.clone()),
        }
    }

    /// [`to_rle`](Self::to_rle) for a mask that may be at most `max_height` x `max_width`:
    /// a larger declared size is refused first, so decoding the result allocates at most that.
    pub fn to_rle_within(&self, max_height: u32, max_width: u32) -> Result<Rle, RleError> {
        let [height, width] = self.size;
        if height > max_height || width > max_width {
            return Err(RleError::TooLarge {
                height,
                width,
                max_height,
                max_width,
            });
        }
        self.to_rle()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_forms_round_trip_and_errors_say_what() {
        let rle = Rle::encode_row_major(&[0, 1, 1, 0, 1, 0], 2, 3).unwrap();
        let c = CocoRle::from_rle(&rle);
        let text = serde_json::to_string(&c).unwrap();
        assert_eq!(
            text,
            format!(
                "{{\"size\":[2,3],\"counts\":\"{}\"}}",
                rle.to_counts_string()
            )
        );
        let back: CocoRle = serde_json::from_str(&text).unwrap();
        assert_eq!(back.to_rle().unwrap(), rle);
        let runs: CocoRle =
            serde_json::from_str(r#"{"size": [2, 3], "counts": [2, 3, 1]}"#).unwrap();
        assert_eq!(runs, CocoRle::uncompressed(rle.clone()));
        assert_eq!(runs.to_rle().unwrap(), rle);
        let e = serde_json::from_str::<CocoRle>(r#"{"size": [2, 3], "counts": [2, 5000000000]}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("5000000000") && e.contains("u32"), "{e}");
        let e = serde_json::from_str::<CocoRle>(r#"{"size": [2, 3], "counts": 7}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("run lengths"), "{e}");
    }

    #[test]
    fn a_declared_size_is_checked_before_anything_else() {
        let huge: CocoRle =
            serde_json::from_str(r#"{"size": [200000, 200000], "counts": [0, 4000000000]}"#)
                .unwrap();
        assert_eq!(
            huge.to_rle_within(80, 100),
            Err(RleError::TooLarge {
                height: 200000,
                width: 200000,
                max_height: 80,
                max_width: 100
            })
        );
        assert!(matches!(huge.to_rle(), Err(RleError::CountsSum { .. })));
        let small: CocoRle = serde_json::from_str(r#"{"size": [2, 2], "counts": [1, 3]}"#).unwrap();
        assert_eq!(small.to_rle_within(2, 2).unwrap().area(), 3);
    }
}
