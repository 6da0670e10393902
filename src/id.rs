//! The one rule for ids that name files or folders (video ids: `--video-id`, a video's file
//! stem, the keys of HD-EPIC `assoc_info.json` / `mask_info.json`, `densam plan`'s task ids;
//! HD-EPIC mask ids, which name `<mask_id>.png`): checked once where such an id enters, so that
//! none can name a path outside the folder it is meant for, a hidden or special entry, or an
//! option.

/// Why `id` cannot name a file, or `Ok`: it must be non-empty, not `.` or `..`, without a path
/// separator (`/`, `\`) or a control character, and not start with `-`.
pub fn check(id: &str) -> Result<(), &'static str> {
    if id.is_empty() {
        Err("it is empty")
    } else if id == "." || id == ".." {
        Err("`.` and `..` name folders")
    } else if id.contains(['/', '\\']) {
        Err("it holds a path separator")
    } else if id.chars().any(char::is_control) {
        Err("it holds a control character")
    } else if id.starts_with('-') {
        Err("it starts with `-`")
    } else {
        Ok(())
    }
}

/// [`check`] as a message: "`<what>` `<id>` cannot name a file: <why>".
pub fn check_named(what: &str, id: &str) -> Result<(), String> {
    check(id).map_err(|why| format!("{what} {id:?} cannot name a file: {why}"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_id_rule() {
        for ok in ["P01-20240202-171220", "frames", "a.b", "x y", "é", "1"] {
            assert_eq!(super::check(ok), Ok(()), "{ok}");
        }
        for bad in [
            "", ".", "..", "a/b", "../x", "a\\b", "a\nb", "a\0b", "\t", "-x", "--help",
        ] {
            assert!(super::check(bad).is_err(), "{bad:?}");
        }
    }
}
