//! The program's shortcut past the trie: for each slot and family, one bit
//! per /16 (an address's first 16 bits) that no prefix of the policy lies
//! within or over. A source there is in no set, so the program answers
//! without the LPM lookup, which costs more than the rest of a drop together
//! (`cargo xtask bench xdp`). A clear bit only means "look it up": a map that
//! was never written, or was written by another build, is slow, never wrong.
use ipnet::{Ipv4Net, Ipv6Net};
use xdpgate_common::{empty_16_bit, EMPTY_16_WORDS};

use crate::policy::CompiledPolicy;

/// A slot's bitmaps as the map lays them out: the IPv4 words, then the IPv6
/// ones ([`xdpgate_common::empty_16_index`]).
pub(crate) fn bitmaps(policy: &CompiledPolicy) -> Vec<u64> {
    let words = EMPTY_16_WORDS as usize;
    let mut covered = vec![0u64; 2 * words];
    let v4 = policy.v4.keys().map(|net: &Ipv4Net| {
        let top = (u32::from(net.network()) >> 16) as u16;
        (top, net.prefix_len())
    });
    let v6 = policy.v6.keys().map(|net: &Ipv6Net| {
        let top = (u128::from(net.network()) >> 112) as u16;
        (top, net.prefix_len())
    });
    for (family, prefixes) in [(0, v4.collect::<Vec<_>>()), (1, v6.collect())] {
        let bits = &mut covered[family * words..(family + 1) * words];
        for (top, len) in prefixes {
            // A prefix of 16 bits or more lies within one /16; a shorter one
            // spans 2^(16 - len) of them, starting at its own.
            let span = 1u32 << 16u8.saturating_sub(len);
            for t in u32::from(top)..u32::from(top) + span {
                let t = t as u16;
                bits[usize::from(t >> 6)] |= empty_16_bit(t);
            }
        }
    }
    covered.iter_mut().for_each(|word| *word = !*word);
    covered
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is_empty(bitmaps: &[u64], v6: bool, top: u16) -> bool {
        let word = bitmaps[usize::from(v6) * EMPTY_16_WORDS as usize + usize::from(top >> 6)];
        word & empty_16_bit(top) != 0
    }

    fn policy(v4: &[&str], v6: &[&str]) -> CompiledPolicy {
        CompiledPolicy {
            v4: v4.iter().map(|n| (n.parse().unwrap(), 1)).collect(),
            v6: v6.iter().map(|n| (n.parse().unwrap(), 1)).collect(),
            ..CompiledPolicy::default()
        }
    }

    #[test]
    fn a_16_is_empty_only_when_no_prefix_lies_within_or_over_it() {
        let bitmaps = bitmaps(&policy(
            &["173.245.48.0/20", "104.16.0.0/13", "10.0.0.5/32"],
            &["2606:4700::/32", "2a06:98c0::/29"],
        ));
        // A /20 and a /32 mark their own /16, not their neighbours.
        assert!(!is_empty(&bitmaps, false, 0xadf5)); // 173.245
        assert!(is_empty(&bitmaps, false, 0xadf4));
        assert!(is_empty(&bitmaps, false, 0xadf6));
        assert!(!is_empty(&bitmaps, false, 0x0a00)); // 10.0
                                                     // A /13 marks all eight of its /16s, and only those.
        for second in 16..24 {
            assert!(!is_empty(&bitmaps, false, 0x6800 | second), "104.{second}");
        }
        assert!(is_empty(&bitmaps, false, 0x680f));
        assert!(is_empty(&bitmaps, false, 0x6818));
        // The families do not share bits.
        assert!(is_empty(&bitmaps, true, 0xadf5));
        assert!(!is_empty(&bitmaps, true, 0x2606));
        assert!(!is_empty(&bitmaps, true, 0x2a06));
        assert!(is_empty(&bitmaps, true, 0x2a07));
        assert!(is_empty(&bitmaps, false, 0x2606));
    }

    #[test]
    fn short_prefixes_and_an_empty_policy() {
        let all = bitmaps(&policy(&["0.0.0.0/0"], &["::/0"]));
        assert!(all.iter().all(|word| *word == 0), "/0 leaves no /16 empty");
        let none = bitmaps(&CompiledPolicy::default());
        assert!(none.iter().all(|word| *word == u64::MAX));
        let seven = bitmaps(&policy(&["10.0.0.0/7"], &["::/15"]));
        assert!(!is_empty(&seven, false, 0x0a00));
        assert!(!is_empty(&seven, false, 0x0bff));
        assert!(is_empty(&seven, false, 0x0c00));
        assert!(is_empty(&seven, false, 0x09ff));
        assert!(!is_empty(&seven, true, 0x0000));
        assert!(!is_empty(&seven, true, 0x0001));
        assert!(is_empty(&seven, true, 0x0002));
    }
}
