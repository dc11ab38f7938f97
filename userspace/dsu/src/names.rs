//! The kernel's naming rules (`uapi/dsu.h`), checked before any ioctl so that the error
//! says what is wrong.

use crate::Error;

/// Checks a segment name: 1 to 63 bytes of `[A-Za-z0-9._-]`.
///
/// ```
/// assert!(dsu::names::check_segment("app-1.state").is_ok());
/// assert!(dsu::names::check_segment("no/slash").is_err());
/// ```
pub fn check_segment(name: &str) -> Result<(), Error> {
    let bad = |why: &str| {
        Err(Error::InvalidName {
            what: "segment name",
            name: name.into(),
            why: why.into(),
        })
    };
    if name.is_empty() {
        return bad("it is empty");
    }
    if name.len() > 63 {
        return bad("it is longer than 63 bytes");
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return bad(&format!(
            "{c:?} is not allowed (use letters, digits, '.', '_' and '-')"
        ));
    }
    Ok(())
}

/// Checks a variable name: 1 to 127 printable ASCII bytes.
///
/// ```
/// assert!(dsu::names::check_variable("app::COUNTER").is_ok());
/// assert!(dsu::names::check_variable("").is_err());
/// ```
pub fn check_variable(name: &str) -> Result<(), Error> {
    check_printable("variable name", name, 127)
}

/// Checks a version label: 1 to 31 printable ASCII bytes.
///
/// ```
/// assert!(dsu::names::check_label("2.1.0").is_ok());
/// assert!(dsu::names::check_label("a label that is much too long for it").is_err());
/// ```
pub fn check_label(label: &str) -> Result<(), Error> {
    check_printable("version label", label, 31)
}

fn check_printable(what: &'static str, name: &str, max: usize) -> Result<(), Error> {
    let bad = |why: String| {
        Err(Error::InvalidName {
            what,
            name: name.into(),
            why,
        })
    };
    if name.is_empty() {
        return bad("it is empty".into());
    }
    if name.len() > max {
        return bad(format!("it is longer than {max} bytes"));
    }
    if let Some(c) = name.chars().find(|c| !(' '..='~').contains(c)) {
        return bad(format!("{c:?} is not printable ASCII"));
    }
    Ok(())
}

/// Copies `s` into a fixed-size C string field, NUL-terminated. The caller has checked
/// the length.
pub(crate) fn fill(dst: &mut [core::ffi::c_char], s: &str) {
    dst.fill(0);
    let n = dst.len() - 1;
    for (d, b) in dst.iter_mut().zip(s.bytes().take(n)) {
        *d = b as core::ffi::c_char;
    }
}

/// Reads a NUL-terminated fixed-size C string field.
pub(crate) fn read(src: &[core::ffi::c_char]) -> String {
    let bytes: Vec<u8> = src
        .iter()
        .take_while(|c| **c != 0)
        .map(|c| *c as u8)
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_names() {
        assert!(check_segment("a").is_ok());
        assert!(check_segment(&"x".repeat(63)).is_ok());
        assert!(check_segment(&"x".repeat(64)).is_err());
        assert!(check_segment("").is_err());
        for bad in ["a b", "a/b", "é", "a:b", "a\0"] {
            assert!(check_segment(bad).is_err(), "{bad:?}");
        }
        let msg = check_segment("a/b").unwrap_err().to_string();
        assert!(msg.contains("'/'") && msg.contains("segment name"), "{msg}");
    }

    #[test]
    fn variable_names_and_labels() {
        assert!(check_variable("counter::COUNTER").is_ok());
        assert!(check_variable("with space ok").is_ok());
        assert!(check_variable(&"v".repeat(127)).is_ok());
        assert!(check_variable(&"v".repeat(128)).is_err());
        assert!(check_variable("tab\there").is_err());
        assert!(check_label(&"1".repeat(31)).is_ok());
        assert!(check_label(&"1".repeat(32)).is_err());
        assert!(check_label("").is_err());
    }

    #[test]
    fn fill_and_read() {
        let mut buf = [1 as core::ffi::c_char; 8];
        fill(&mut buf, "abc");
        assert_eq!(read(&buf), "abc");
        assert_eq!(buf[3], 0);
        assert_eq!(buf[7], 0);
    }
}
