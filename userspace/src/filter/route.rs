//! Which interface the filter goes on when the config names none: the one
//! that carries the default route, read from `/proc/net/route` (IPv4) or
//! else `/proc/net/ipv6_route`. Both `xdpgate run` and the CLI ask it here.
use anyhow::{bail, Result};

/// The interface that carries the IPv4 (or else IPv6) default route.
pub fn default_route_interface() -> Result<String> {
    let v4 = std::fs::read_to_string("/proc/net/route").unwrap_or_default();
    if let Some(name) = default_route_in_ipv4_table(&v4) {
        return Ok(name);
    }
    let v6 = std::fs::read_to_string("/proc/net/ipv6_route").unwrap_or_default();
    if let Some(name) = default_route_in_ipv6_table(&v6) {
        return Ok(name);
    }
    bail!("no default route found in /proc/net/route or /proc/net/ipv6_route; name one with --interface")
}

fn default_route_in_ipv4_table(table: &str) -> Option<String> {
    table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        // Iface Destination Gateway Flags ... Mask
        (fields.len() > 7 && fields[1] == "00000000" && fields[7] == "00000000")
            .then(|| fields[0].to_string())
    })
}

fn default_route_in_ipv6_table(table: &str) -> Option<String> {
    table.lines().find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        (fields.len() == 10
            && fields[0] == "00000000000000000000000000000000"
            && fields[1] == "00"
            && fields[9] != "lo")
            .then(|| fields[9].to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_ipv4_default_route_interface() {
        let table =
            "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
                     eth1\t0000A8C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n\
                     eth0\t00000000\t0100A8C0\t0003\t0\t0\t100\t00000000\t0\t0\t0\n";
        assert_eq!(default_route_in_ipv4_table(table).as_deref(), Some("eth0"));
        assert_eq!(default_route_in_ipv4_table("Iface\tDestination\n"), None);
    }

    #[test]
    fn finds_the_ipv6_default_route_interface_but_not_loopback() {
        let table = "00000000000000000000000000000000 00 00000000000000000000000000000000 00 00000000000000000000000000000000 ffffffff 00000001 00000000 00200200       lo\n\
                     00000000000000000000000000000000 00 00000000000000000000000000000000 00 fe800000000000000000000000000001 00000400 00000001 00000000 00000003     ens3\n";
        assert_eq!(default_route_in_ipv6_table(table).as_deref(), Some("ens3"));
    }
}
