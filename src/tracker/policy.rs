//! Memory policies: which stored frames a tracked frame reads (docs/sam2-inference.md §7.14).
//!
//! `sam2` is the official SAM 2.1 rule ([`super::bank::select`]). `sam3` is SAM 3's tracker
//! "temporal disambiguation" frame filter on SAM 2.1: each tracked frame gets a memory score from
//! its object-score logit and predicted IoU, and only frames scoring above `mf_threshold` (plus
//! the adjacent frame) are read, by rank. The per-object state a policy needs lives in the
//! object's bank entries (the score of each stored tracked frame), so a saved bank is the whole
//! policy state. New policies (SAMURAI's Kalman filter, ...) are new variants here, with their
//! per-object state next to the bank's.

use std::fmt;
use std::str::FromStr;

/// `--memory-policy NAME[:key=value,...]`, every key resolved.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum MemoryPolicy {
    /// The official SAM 2.1 selection.
    #[default]
    Sam2,
    /// SAM 3's frame filter: a tracked frame is a memory candidate iff its score is above
    /// `mf_threshold` (compared in f32, as the reference does). With `use_memory_selection`
    /// false (SAM 3's own switch) the scores are computed but the reads are SAM 2.1's: `sam2`.
    Sam3 {
        mf_threshold: f32,
        use_memory_selection: bool,
    },
}

/// SAM 3's default `mf_threshold`.
pub const SAM3_MF_THRESHOLD: f32 = 0.01;

impl MemoryPolicy {
    pub fn is_sam2(&self) -> bool {
        matches!(self, MemoryPolicy::Sam2)
    }

    /// SAM 3's selection with its threshold, when it is on (the read-sets, the retention and the
    /// head are then the ranked ones); `None`: SAM 2.1's reads.
    pub fn ranked(&self) -> Option<f32> {
        match *self {
            MemoryPolicy::Sam3 {
                mf_threshold,
                use_memory_selection: true,
            } => Some(mf_threshold),
            _ => None,
        }
    }

    /// SAM 3's default: `sam3:mf_threshold=0.01,use_memory_selection=true`.
    pub fn sam3() -> Self {
        MemoryPolicy::Sam3 {
            mf_threshold: SAM3_MF_THRESHOLD,
            use_memory_selection: true,
        }
    }

    /// The memory score a policy stores for a tracked frame (`None`: the policy needs none).
    /// SAM 3: `(osl > 0 ? 2σ(osl) − 1 : 0) · iou`, in f32, with `iou` the predicted IoU of the
    /// kept mask (the maximum of the multimask estimates).
    pub fn score(&self, object_score_logit: f32, iou: f32) -> Option<f32> {
        match self {
            MemoryPolicy::Sam2 => None,
            MemoryPolicy::Sam3 { .. } => Some(sam3_score(object_score_logit, iou)),
        }
    }
}

/// SAM 3's `cal_mem_score` for one object, in f32.
pub fn sam3_score(osl: f32, iou: f32) -> f32 {
    let norm = if osl > 0.0 {
        (1.0f32 / (1.0f32 + (-osl).exp())) * 2.0 - 1.0
    } else {
        0.0
    };
    norm * iou
}

impl fmt::Display for MemoryPolicy {
    /// The canonical form, every key given: `sam2`,
    /// `sam3:mf_threshold=0.01,use_memory_selection=true`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MemoryPolicy::Sam2 => write!(f, "sam2"),
            MemoryPolicy::Sam3 {
                mf_threshold,
                use_memory_selection,
            } => write!(
                f,
                "sam3:mf_threshold={mf_threshold},use_memory_selection={use_memory_selection}"
            ),
        }
    }
}

impl serde::Serialize for MemoryPolicy {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> serde::Deserialize<'de> for MemoryPolicy {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl FromStr for MemoryPolicy {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (name, rest) = match s.split_once(':') {
            Some((n, r)) => (n, Some(r)),
            None => (s, None),
        };
        let mut pairs: Vec<(&str, &str)> = Vec::new();
        if let Some(rest) = rest {
            for kv in rest.split(',') {
                let (k, v) = kv
                    .split_once('=')
                    .ok_or_else(|| format!("`{kv}`: expected key=value"))?;
                if pairs.iter().any(|(p, _)| *p == k) {
                    return Err(format!("key `{k}` given twice"));
                }
                pairs.push((k.trim(), v.trim()));
            }
        }
        match name {
            "sam2" => match pairs.first() {
                Some((k, _)) => Err(format!("policy `sam2` takes no keys (got `{k}`)")),
                None => Ok(MemoryPolicy::Sam2),
            },
            "sam3" => {
                let mut mf_threshold = SAM3_MF_THRESHOLD;
                let mut use_memory_selection = true;
                for (k, v) in pairs {
                    match k {
                        "mf_threshold" => {
                            let x: f32 = v
                                .parse()
                                .map_err(|_| format!("mf_threshold: `{v}` is not a number"))?;
                            if x.is_nan() {
                                return Err("mf_threshold: must be a number".into());
                            }
                            mf_threshold = x;
                        }
                        "use_memory_selection" => {
                            use_memory_selection = match v {
                                "true" | "on" | "1" => true,
                                "false" | "off" | "0" => false,
                                _ => {
                                    return Err(format!(
                                        "use_memory_selection: `{v}` is not true or false"
                                    ));
                                }
                            };
                        }
                        _ => {
                            return Err(format!(
                                "policy `sam3`: unknown key `{k}` (known: mf_threshold, \
                                 use_memory_selection)"
                            ));
                        }
                    }
                }
                Ok(MemoryPolicy::Sam3 {
                    mf_threshold,
                    use_memory_selection,
                })
            }
            _ => Err(format!(
                "unknown memory policy `{name}` (known: sam2, sam3)"
            )),
        }
    }
}

/// SAM 3's `frame_filter` on frames given in scan order (t∓1 first, towards the start of the
/// pass; stride already applied) with their scores (`None`: no score, skipped): the valid frames
/// (score > threshold), at most `max_num − 1` of them, oldest first in scan terms (the last is
/// the nearest), then `must_include` (t∓1) if missing.
pub fn frame_filter(
    scan: impl Iterator<Item = (i64, Option<f32>)>,
    threshold: f32,
    max_num: i64,
    must_include: i64,
) -> Vec<i64> {
    let mut valid: Vec<i64> = Vec::new();
    for (i, s) in scan {
        let Some(s) = s else { continue };
        if s > threshold {
            valid.push(i);
        }
        if valid.len() as i64 >= max_num - 1 {
            break;
        }
    }
    valid.reverse();
    if !valid.contains(&must_include) {
        valid.push(must_include);
    }
    valid
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_display() {
        assert_eq!("sam2".parse::<MemoryPolicy>(), Ok(MemoryPolicy::Sam2));
        let p: MemoryPolicy = "sam3".parse().unwrap();
        assert_eq!(p, MemoryPolicy::sam3());
        assert_eq!(
            p.to_string(),
            "sam3:mf_threshold=0.01,use_memory_selection=true"
        );
        // The form of the first version (run.json of its runs) means the same.
        assert_eq!("sam3:mf_threshold=0.01".parse::<MemoryPolicy>(), Ok(p));
        let p: MemoryPolicy = "sam3:mf_threshold=0.25".parse().unwrap();
        assert_eq!(
            p,
            MemoryPolicy::Sam3 {
                mf_threshold: 0.25,
                use_memory_selection: true
            }
        );
        assert_eq!(p.ranked(), Some(0.25));
        let off: MemoryPolicy = "sam3:use_memory_selection=false".parse().unwrap();
        assert_eq!(off.ranked(), None);
        assert!(!off.is_sam2() && off.score(1.0, 0.5).is_some());
        assert_eq!(off.to_string().parse::<MemoryPolicy>(), Ok(off));
        assert_eq!(p.to_string().parse::<MemoryPolicy>(), Ok(p));
        let p: MemoryPolicy = "sam3:mf_threshold=-inf".parse().unwrap();
        assert_eq!(p.to_string().parse::<MemoryPolicy>(), Ok(p));
        for bad in [
            "sam4",
            "",
            "sam2:x=1",
            "sam3:mf_threshold",
            "sam3:mf_threshold=abc",
            "sam3:mf_threshold=nan",
            "sam3:other=1",
            "sam3:mf_threshold=1,mf_threshold=2",
            "sam3:use_memory_selection=maybe",
        ] {
            assert!(bad.parse::<MemoryPolicy>().is_err(), "{bad}");
        }
    }

    #[test]
    fn score_and_filter() {
        assert_eq!(sam3_score(-0.5, 0.9), 0.0);
        assert!((sam3_score(2.0, 0.5) - 0.5 * (2.0 / (1.0 + (-2.0f32).exp()) - 1.0)).abs() < 1e-7);
        // t = 10: scan 9..1; 9 invalid, 8 no score (cond), 7, 6 valid; max_num 3 -> 2 valid.
        let scan = vec![
            (9, Some(0.0)),
            (8, None),
            (7, Some(0.5)),
            (6, Some(0.2)),
            (5, Some(0.9)),
        ];
        assert_eq!(frame_filter(scan.into_iter(), 0.01, 3, 9), vec![6, 7, 9]);
        let scan = vec![(9, Some(0.5)), (8, Some(0.5))];
        assert_eq!(frame_filter(scan.into_iter(), 0.01, 16, 9), vec![8, 9]);
        assert_eq!(frame_filter(std::iter::empty(), 0.01, 16, 0), vec![0]);
    }
}
