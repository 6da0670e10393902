//! The JSONL record of a tracked frame: the objects with a non-empty mask, in prompt-file
//! order.

use crate::mask::Rle;
use crate::output::jsonl::{FrameRecord, ObjectRecord};
use crate::tracker::{FrameResult, PromptSet, TrackError};

/// The output line of a frame: the objects with a non-empty mask, in prompt-file order.
pub fn frame_record(r: &FrameResult, prompts: &PromptSet) -> Result<FrameRecord, TrackError> {
    let mut objects = Vec::new();
    for o in &r.objects {
        if o.mask.area == 0 {
            continue;
        }
        let p = prompts
            .objects
            .get(o.object)
            .ok_or_else(|| TrackError::Invalid(format!("object index {}", o.object)))?;
        let rle = Rle::from_counts(o.mask.height, o.mask.width, o.mask.counts.clone())
            .map_err(|e| TrackError::Sink(e.to_string()))?;
        let label = p.label.clone().unwrap_or_default();
        if let Some(rec) = ObjectRecord::from_rle(&p.id, label, &rle, o.score as f32, o.iou as f32)
        {
            objects.push(rec);
        }
    }
    Ok(FrameRecord {
        frame_number: r.number.get(),
        time_s: r.seconds,
        objects,
    })
}
