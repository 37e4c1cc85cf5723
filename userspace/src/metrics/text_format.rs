//! The exposition in Prometheus's older text format (version 0.0.4), for
//! clients that ask for `text/plain` and not for OpenMetrics: `promtool check
//! metrics` and other linters read only this one. It is derived from the
//! OpenMetrics text [`super::encode`] writes, so the two never disagree on a
//! value: `# EOF` and `# UNIT` lines go, a counter family is named after its
//! `_total` samples, an info family becomes a gauge named `<name>_info`, and
//! `unknown` becomes `untyped`.

/// The content type of [`from_openmetrics`]'s output.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Whether a request's `Accept` header asks for the 0.0.4 text format: it
/// names `text/plain` and does not name OpenMetrics (which Prometheus itself
/// asks for, and which stays the default).
pub fn wants_text(accept: Option<&str>) -> bool {
    let Some(accept) = accept else {
        return false;
    };
    let accept = accept.to_ascii_lowercase();
    accept.contains("text/plain") && !accept.contains("application/openmetrics-text")
}

/// Rewrites OpenMetrics text as text format 0.0.4.
pub fn from_openmetrics(openmetrics: &str) -> String {
    // Family names whose metadata lines are renamed: name -> new name.
    let mut renamed: std::collections::HashMap<&str, String> = std::collections::HashMap::new();
    for line in openmetrics.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            match rest.split_once(' ') {
                Some((family, "counter")) => {
                    renamed.insert(family, format!("{family}_total"));
                }
                Some((family, "info")) => {
                    renamed.insert(family, format!("{family}_info"));
                }
                _ => {}
            }
        }
    }
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let meta = ["# HELP ", "# TYPE "]
            .into_iter()
            .find_map(|p| line.strip_prefix(p).map(|rest| (p, rest)));
        if let Some((prefix, rest)) = meta {
            let (family, tail) = rest.split_once(' ').unwrap_or((rest, ""));
            let name = renamed.get(family).map_or(family, String::as_str);
            let tail = match (prefix, tail) {
                ("# TYPE ", "info") => "gauge",
                ("# TYPE ", "unknown") => "untyped",
                _ => tail,
            };
            out.push_str(prefix);
            out.push_str(name);
            out.push(' ');
            out.push_str(tail);
        } else {
            out.push_str(line);
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_infos_and_units_are_spelled_the_old_way() {
        let om = "# HELP xdpgate_packets Packets.\n# TYPE xdpgate_packets counter\n\
                  xdpgate_packets_total{a=\"b\"} 1\n\
                  # HELP xdpgate_build Build.\n# TYPE xdpgate_build info\n\
                  xdpgate_build_info{version=\"1\"} 1\n\
                  # HELP xdpgate_age_seconds Age.\n# TYPE xdpgate_age_seconds gauge\n\
                  # UNIT xdpgate_age_seconds seconds\nxdpgate_age_seconds 3\n# EOF\n";
        assert_eq!(
            from_openmetrics(om),
            "# HELP xdpgate_packets_total Packets.\n# TYPE xdpgate_packets_total counter\n\
             xdpgate_packets_total{a=\"b\"} 1\n\
             # HELP xdpgate_build_info Build.\n# TYPE xdpgate_build_info gauge\n\
             xdpgate_build_info{version=\"1\"} 1\n\
             # HELP xdpgate_age_seconds Age.\n# TYPE xdpgate_age_seconds gauge\n\
             xdpgate_age_seconds 3\n"
        );
    }

    #[test]
    fn only_a_plain_text_accept_gets_the_old_format() {
        assert!(!wants_text(None));
        assert!(!wants_text(Some("*/*")));
        // What Prometheus sends.
        assert!(!wants_text(Some(
            "application/openmetrics-text;version=1.0.0,application/openmetrics-text;\
             version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
        )));
        assert!(wants_text(Some("text/plain;version=0.0.4")));
        assert!(wants_text(Some("Text/Plain")));
    }
}
