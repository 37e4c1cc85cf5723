//! The set file format (one address or CIDR per line, `#` comments) and the
//! normal form every list takes before it is compared, stored or published.
//! Pure and synchronous, so `config check` and the CLI can use it too.
use std::net::IpAddr;

use ipnet::IpNet;

/// The first line of a set file that is not an address, a CIDR, a comment or
/// blank.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: \"{text}\" is not an IP address or CIDR")]
pub struct SetFileError {
    /// 1-based, as an editor shows it.
    pub line: usize,
    /// The offending text, without its comment and surrounding blanks.
    pub text: String,
}

/// Parses a set file: one address or CIDR per line; a bare address is a /32 or
/// /128; `#` starts a comment (whole line or trailing); blank lines are
/// ignored. IPv4-mapped IPv6 prefixes are kept as written (the policy compiler
/// canonicalises them). The result is in normal form (see [`normalise`]).
pub fn parse_set_file(text: &str) -> Result<Vec<IpNet>, SetFileError> {
    let mut nets = Vec::new();
    for (index, raw) in text.lines().enumerate() {
        let entry = raw.split('#').next().unwrap_or_default().trim();
        if entry.is_empty() {
            continue;
        }
        let net = parse_entry(entry).ok_or_else(|| SetFileError {
            line: index + 1,
            text: entry.to_string(),
        })?;
        nets.push(net);
    }
    Ok(normalise(nets))
}

/// One address or CIDR; `None` if it is neither.
pub(crate) fn parse_entry(entry: &str) -> Option<IpNet> {
    entry
        .parse::<IpNet>()
        .ok()
        .or_else(|| entry.parse::<IpAddr>().ok().map(IpNet::from))
}

/// Host bits cleared, sorted, duplicates removed: the form in which lists are
/// compared (shrink check), persisted and published.
pub fn normalise(nets: impl IntoIterator<Item = IpNet>) -> Vec<IpNet> {
    let mut nets: Vec<IpNet> = nets.into_iter().map(|n| n.trunc()).collect();
    nets.sort_unstable();
    nets.dedup();
    nets
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter()
            .map(|s| s.parse().unwrap_or_else(|e| panic!("test prefix {s}: {e}")))
            .collect()
    }

    #[test]
    fn accepts_hosts_cidrs_comments_blanks_and_mapped_addresses() {
        let text = "\
# admins of the cluster
10.0.0.1
  192.0.2.0/24   # office

2001:db8::/32
2001:db8::1\t# a host in v6
::ffff:198.51.100.7
\t
";
        let parsed = parse_set_file(text).expect("valid file");
        assert_eq!(
            parsed,
            nets(&[
                "10.0.0.1/32",
                "192.0.2.0/24",
                "::ffff:198.51.100.7/128",
                "2001:db8::/32",
                "2001:db8::1/128",
            ])
        );
    }

    #[test]
    fn clears_host_bits_sorts_and_removes_duplicates() {
        let parsed =
            parse_set_file("10.1.2.3/8\n10.0.0.0/8\n9.9.9.9\n9.9.9.9/32\n").expect("valid file");
        assert_eq!(parsed, nets(&["9.9.9.9/32", "10.0.0.0/8"]));
    }

    #[test]
    fn names_the_first_bad_line_with_its_number() {
        let text = "10.0.0.1\n# comment\n\n192.0.2.0/24\n2001:db8::/32\n\n\
                    10.0.0.300/32 # typo\n999.1.1.1\n";
        let err = parse_set_file(text).expect_err("line 7 is bad");
        assert_eq!(err.line, 7);
        assert_eq!(
            err.to_string(),
            r#"line 7: "10.0.0.300/32" is not an IP address or CIDR"#
        );
    }

    #[test]
    fn refuses_prefix_lengths_out_of_range_and_two_entries_on_a_line() {
        let err = parse_set_file("10.0.0.0/33").expect_err("bad length");
        assert_eq!(err.line, 1);
        let err = parse_set_file("::1\n2001:db8::/129").expect_err("bad length");
        assert_eq!(err.line, 2);
        let err = parse_set_file("\n\n10.0.0.1 10.0.0.2\n").expect_err("two on a line");
        assert_eq!(
            err.to_string(),
            r#"line 3: "10.0.0.1 10.0.0.2" is not an IP address or CIDR"#
        );
    }

    #[test]
    fn a_file_of_comments_is_an_empty_list_not_an_error() {
        assert_eq!(parse_set_file("# nothing yet\n\n   \n"), Ok(vec![]));
        assert_eq!(parse_set_file(""), Ok(vec![]));
    }

    #[test]
    fn windows_line_endings_are_fine() {
        assert_eq!(
            parse_set_file("10.0.0.1\r\n10.0.0.2\r\n"),
            Ok(nets(&["10.0.0.1/32", "10.0.0.2/32"]))
        );
    }
}
