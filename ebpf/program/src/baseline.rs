//! Baselines for `cargo xtask bench xdp`, measured in the same run as xdpgate:
//! `baseline_pass` returns XDP_PASS and does nothing else; `baseline_minimal` is
//! the smallest useful filter (parse Ethernet + IPv4, one LPM lookup of the
//! source, one per-CPU counter). They are never attached by xdpgate itself.
#![no_std]
#![no_main]

use aya_ebpf::{
    bindings::xdp_action,
    macros::{map, xdp},
    maps::{lpm_trie::Key, LpmTrie, PerCpuArray},
    programs::XdpContext,
};

#[map(name = "BASELINE_V4")]
static BASELINE_V4: LpmTrie<[u8; 4], u64> = LpmTrie::with_max_entries(1 << 20, 0);
#[map(name = "BASELINE_COUNTERS")]
static BASELINE_COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(2, 0);

#[xdp]
pub fn baseline_pass(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_PASS
}

#[xdp]
pub fn baseline_minimal(ctx: XdpContext) -> u32 {
    let start = ctx.data();
    let end = ctx.data_end();
    if start + 34 > end {
        return xdp_action::XDP_PASS;
    }
    // SAFETY: 34 bytes (Ethernet + a 20-byte IPv4 header) checked above.
    let frame = unsafe { *(start as *const [u8; 34]) };
    if frame[12] != 0x08 || frame[13] != 0x00 {
        return xdp_action::XDP_PASS;
    }
    let key = Key::new(32, [frame[26], frame[27], frame[28], frame[29]]);
    let member = BASELINE_V4.get(&key).is_some();
    let index = if member { 0 } else { 1 };
    if let Some(counter) = BASELINE_COUNTERS.get_ptr_mut(index) {
        // SAFETY: per-CPU value.
        unsafe { *counter += 1 };
    }
    if member {
        xdp_action::XDP_PASS
    } else {
        xdp_action::XDP_DROP
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
