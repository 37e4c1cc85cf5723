//! The three `bpf(2)` commands aya 0.14 does not expose for links: open a pin
//! by path, read an XDP link's interface, and force a link to detach.
//! Each returns `io::Error` with the errno; callers add the context.
use std::{
    ffi::CString,
    io,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    path::Path,
};

const BPF_OBJ_GET: libc::c_long = 7;
const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
const BPF_LINK_DETACH: libc::c_long = 34;
const BPF_LINK_TYPE_XDP: u32 = 6;

fn bpf(cmd: libc::c_long, attr: &mut [u64; 16]) -> io::Result<libc::c_long> {
    // SAFETY: attr is a zero-initialised, 128-byte, 8-aligned union as the
    // kernel expects for every command; size is passed explicitly.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr.as_mut_ptr(),
            std::mem::size_of_val(attr) as libc::c_uint,
        )
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// Opens the bpf object pinned at `path`.
pub fn obj_get(path: &Path) -> io::Result<OwnedFd> {
    let c_path = CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains NUL"))?;
    let mut attr = [0u64; 16];
    attr[0] = c_path.as_ptr() as u64; // pathname
    let fd = bpf(BPF_OBJ_GET, &mut attr)?;
    // SAFETY: the kernel returned a new file descriptor that we now own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// What the kernel says about a link.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinkInfo {
    pub id: u32,
    pub program_id: u32,
    /// For an XDP link, the interface it is attached to; 0 once the
    /// interface is gone (the link is then defunct).
    pub xdp_ifindex: Option<u32>,
}

/// `BPF_OBJ_GET_INFO_BY_FD` on a link.
pub fn link_info(link: &OwnedFd) -> io::Result<LinkInfo> {
    // struct bpf_link_info: type, id, prog_id, then a union at offset 16
    // whose xdp member starts with the ifindex.
    let mut info = [0u64; 8];
    let mut attr = [0u64; 16];
    attr[0] = link.as_raw_fd() as u32 as u64 | ((std::mem::size_of_val(&info) as u64) << 32);
    attr[1] = info.as_mut_ptr() as u64;
    bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr)?;
    let link_type = info[0] as u32;
    let id = (info[0] >> 32) as u32;
    let program_id = info[1] as u32;
    let xdp_ifindex = (link_type == BPF_LINK_TYPE_XDP).then_some(info[2] as u32);
    Ok(LinkInfo {
        id,
        program_id,
        xdp_ifindex,
    })
}

/// `BPF_LINK_DETACH`: takes the program off its hook now, even while other
/// processes or pins still hold the link.
pub fn link_detach(link: &OwnedFd) -> io::Result<()> {
    let mut attr = [0u64; 16];
    attr[0] = link.as_raw_fd() as u32 as u64;
    bpf(BPF_LINK_DETACH, &mut attr).map(|_| ())
}

/// The index of a network interface in this network namespace, if it exists.
pub fn ifindex(interface: &str) -> Option<u32> {
    let name = CString::new(interface).ok()?;
    // SAFETY: name is NUL-terminated.
    let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
    (index != 0).then_some(index)
}
