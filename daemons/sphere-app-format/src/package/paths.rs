//! The paths a package may contain.
//!
//! A deliberately small alphabet: no spaces, no control or non-ASCII characters, no `.`/`..`
//! components, nothing absolute. That rules out traversal and terminal-escape tricks outright and
//! keeps the listing format free of quoting.

/// Longest path, in bytes; fits a ustar header (155-byte prefix + 100-byte name).
pub const MAX_PATH_BYTES: usize = 240;
/// Longest single component, in bytes (the ustar name field).
pub const MAX_COMPONENT_BYTES: usize = 100;
/// Deepest directory nesting.
pub const MAX_DEPTH: usize = 16;

/// Check a path relative to the package root; the error says what is wrong.
pub fn check_package_path(path: &str) -> Result<(), String> {
    if path.is_empty() {
        return Err("empty path".to_owned());
    }
    if path.starts_with('/') {
        return Err("absolute paths are not allowed".to_owned());
    }
    if path.len() > MAX_PATH_BYTES {
        return Err(format!("longer than {MAX_PATH_BYTES} bytes"));
    }
    let components: Vec<&str> = path.split('/').collect();
    if components.len() > MAX_DEPTH {
        return Err(format!("nested deeper than {MAX_DEPTH} levels"));
    }
    if components.first() == Some(&".sphpkg") {
        return Err("\".sphpkg\" is reserved for the package's own listing and signature".to_owned());
    }
    components.iter().try_for_each(|component| check_component(component))
}

fn check_component(component: &str) -> Result<(), String> {
    match component {
        "" => Err("empty path component (\"//\" or a trailing \"/\")".to_owned()),
        "." | ".." => Err(format!("\"{component}\" components are not allowed")),
        _ if component.len() > MAX_COMPONENT_BYTES => Err(format!("component longer than {MAX_COMPONENT_BYTES} bytes")),
        _ => match component.chars().find(|c| !is_path_char(*c)) {
            Some(c) => Err(format!("character {c:?} is not allowed (use letters, digits and . _ - + @)")),
            None => Ok(()),
        },
    }
}

fn is_path_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '+' | '@')
}

/// Where a symlink at `link` pointing at `target` lands, as components below the root; `None` if
/// it climbs above the root. Purely lexical: the listing check also forbids passing through
/// other symlinks, which is what makes lexical resolution sound.
pub(crate) fn resolve_link_target(link: &str, target: &str) -> Option<Vec<String>> {
    let mut resolved: Vec<String> = link.split('/').map(str::to_owned).collect();
    resolved.pop();
    for component in target.split('/') {
        match component {
            ".." => {
                resolved.pop()?;
            }
            "." | "" => {}
            name => resolved.push(name.to_owned()),
        }
    }
    Some(resolved)
}

/// Check a symlink target's characters (it may use `..`, which plain paths may not).
pub(crate) fn check_link_target(target: &str) -> Result<(), String> {
    if target.is_empty() || target.starts_with('/') {
        return Err("symlink targets must be relative and non-empty".to_owned());
    }
    if target.len() > MAX_PATH_BYTES {
        return Err(format!("symlink target longer than {MAX_PATH_BYTES} bytes"));
    }
    match target.split('/').find(|part| *part != ".." && check_component(part).is_err()) {
        Some(part) => Err(format!("symlink target component \"{part}\" is not allowed")),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_paths_pass() {
        assert_eq!(check_package_path("bin/app"), Ok(()));
        assert_eq!(check_package_path("lib/libfoo.so.1"), Ok(()));
    }

    #[test]
    fn traversal_and_odd_paths_fail_with_a_reason() {
        for (path, reason) in [
            ("../etc/passwd", "\"..\""),
            ("/etc/passwd", "absolute"),
            ("bin//app", "empty path component"),
            ("bin/./app", "\".\""),
            ("bin/a b", "' '"),
            ("bin/\u{1b}[31m", "'\\u{1b}'"),
            (".sphpkg/listing", "reserved"),
            ("", "empty path"),
        ] {
            let error = check_package_path(path).unwrap_err();
            assert!(error.contains(reason), "{path:?}: {error}");
        }
    }

    #[test]
    fn link_resolution_stays_below_the_root() {
        assert_eq!(resolve_link_target("lib/a", "b"), Some(vec!["lib".to_owned(), "b".to_owned()]));
        assert_eq!(resolve_link_target("lib/a", "../bin/app"), Some(vec!["bin".to_owned(), "app".to_owned()]));
        assert_eq!(resolve_link_target("lib/a", "../../etc"), None);
        assert_eq!(resolve_link_target("a", ".."), None);
    }
}
