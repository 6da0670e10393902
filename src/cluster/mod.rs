//! Running densam over many videos on a cluster: `densam plan` turns a set of videos (a
//! directory, a list file, or the video ids of an HD-EPIC `assoc_info.json`) into the task list
//! that `scripts/slurm/annotate-array.sbatch` reads, one line per array task. The SLURM side
//! (signals, requeue, merge) lives in `scripts/slurm/`.

pub mod plan;
