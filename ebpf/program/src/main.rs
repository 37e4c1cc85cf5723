//! The xdpgate XDP program: drops connection attempts to protected ports from
//! sources outside the allowed address sets, before the kernel allocates
//! anything for them.
//!
//! It reads like the policy in docs/filter.md (docs/architecture.md walks a
//! packet through it), in three steps, one module each. [`parse`]: one
//! forward pass over an advancing cursor, one function per header in the
//! shape of xdp-tools' `parsing_helpers.h`, ending in a shape. [`judge`]:
//! read the control word and the active slot's options, then decide, with at
//! most one LPM lookup of the source, whose value is the bitmask of every set
//! holding it (none when the slot's bits say the source's /16 holds no
//! prefix); each port maps to the bitmask of the sets bound to it. A shape
//! that hides its port is dropped from everyone; a shape that shows the port
//! but hides the rest is judged as a connection attempt to that port.
//! [`count`]: every verdict per reason and family, and every drop under its
//! source's /24 or /48 in a per-CPU table (`xdpgate top`). The maps are declared
//! in [`maps`]. Userspace owns the policy; this program only reads it.
#![no_std]
#![no_main]

mod count;
mod judge;
mod maps;
mod parse;

use aya_ebpf::{bindings::xdp_action, macros::xdp, programs::XdpContext};

#[xdp]
pub fn xdpgate(ctx: XdpContext) -> u32 {
    let (reason, family, source) = judge::judge(parse::parse(&ctx));
    let bytes = (ctx.data_end() - ctx.data()) as u64;
    count::count(reason, family, bytes);
    if reason.is_drop() {
        count::xdpgate_count_source(source, reason as u64, bytes);
        xdp_action::XDP_DROP
    } else {
        xdp_action::XDP_PASS
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
