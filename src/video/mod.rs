//! Video input (filled by the video work).
