//! `xdpgate detach`: takes the filter off every interface and removes its
//! pins, warning when a running daemon would attach it again.
use anyhow::Result;

use super::{daemon_status, Exit, Locations};
use crate::filter;

pub(super) fn detach(locations: &Locations) -> Result<Exit> {
    if let Some((status, true)) = daemon_status(&locations.state_dir) {
        eprintln!(
            "xdpgate: warning: the daemon (pid {}) is still running; stop it too, or its next \
             restart will attach the filter again",
            status.pid
        );
    }
    let detached = filter::detach_pinned(&locations.pin_dir)?;
    if !detached.removed_dir {
        println!("xdpgate: nothing pinned at {}", locations.pin_dir.display());
        return Ok(Exit::NotPinned);
    }
    if detached.interfaces.is_empty() {
        println!(
            "xdpgate: removed the pins under {}",
            locations.pin_dir.display()
        );
    } else {
        println!(
            "xdpgate: detached from {} and removed the pins under {}",
            detached.interfaces.join(", "),
            locations.pin_dir.display()
        );
    }
    Ok(Exit::Ok)
}
