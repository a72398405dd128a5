//! Command-line flags of the agents the tests start: one reading of
//! `--flag=value` / `--flag value` for every place that merges arguments.

/// The flag of one argument: `--flag` of `--flag=value`, the argument itself
/// otherwise.
pub fn flag_name(arg: &str) -> &str {
    arg.split_once('=').map_or(arg, |(f, _)| f)
}

/// Whether `args` set `flag` (as `--flag` or `--flag=value`).
pub fn has_flag<S: AsRef<str>>(args: &[S], flag: &str) -> bool {
    args.iter().any(|a| flag_name(a.as_ref()) == flag)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_both_forms() {
        assert_eq!(flag_name("--a=b=c"), "--a");
        assert_eq!(flag_name("--a"), "--a");
        assert!(has_flag(
            &["--x", "1", "--peer-listen=1.2.3.4:1"],
            "--peer-listen"
        ));
        assert!(!has_flag(&["--peer-listen-x=1"], "--peer-listen"));
    }
}
