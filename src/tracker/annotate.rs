//! annotate (todo)
