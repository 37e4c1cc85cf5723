//! Putting the program on an interface: which XDP mode it runs in
//! ([`XdpModeChoice`], `filter.xdp_mode`), and the pinned link that keeps it
//! there after the daemon exits ([`Filter::attach_pinned`]).
//!
//! A pinned link is only ever swapped into (one atomic replacement), never
//! taken off and put back: the kernel refuses native and generic XDP on one
//! interface at once, so changing an attached interface's mode would leave
//! it unfiltered for a moment. That is left to the operator (`xdpgate detach`,
//! then a start), and [`AttachOutcome::mode_differs`] says when it is due.
use aya::programs::{
    links::{FdLink, PinnedLink},
    xdp::XdpLink,
    XdpMode,
};

use super::{bpfsys, Filter, FilterError};

/// How the program ended up attached to an interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttachMode {
    /// In the driver (native XDP).
    Driver,
    /// Generic XDP, in the kernel's receive path after the driver has built
    /// the socket buffer.
    Generic,
}

impl AttachMode {
    pub const fn label(self) -> &'static str {
        match self {
            AttachMode::Driver => "driver",
            AttachMode::Generic => "generic",
        }
    }

    pub fn parse(label: &str) -> Option<AttachMode> {
        [AttachMode::Driver, AttachMode::Generic]
            .into_iter()
            .find(|mode| mode.label() == label)
    }
}

/// The mode the config asks for (`filter.xdp_mode`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum XdpModeChoice {
    /// Native where the driver supports it, generic where it refuses.
    #[default]
    Auto,
    /// Native only: an interface whose driver refuses is not filtered, and
    /// says why.
    Native,
    /// Generic only, also where the driver could run native XDP: for drivers
    /// whose native XDP misbehaves, and for veth pairs, where native XDP
    /// moves the receive path onto the veth's own queue.
    Generic,
}

impl XdpModeChoice {
    pub const fn label(self) -> &'static str {
        match self {
            XdpModeChoice::Auto => "auto",
            XdpModeChoice::Native => "native",
            XdpModeChoice::Generic => "generic",
        }
    }

    pub fn parse(text: &str) -> Option<XdpModeChoice> {
        [
            XdpModeChoice::Auto,
            XdpModeChoice::Native,
            XdpModeChoice::Generic,
        ]
        .into_iter()
        .find(|choice| choice.label() == text)
    }

    /// Whether a program attached in `mode` is what this choice asks for.
    pub fn accepts(self, mode: AttachMode) -> bool {
        match self {
            XdpModeChoice::Auto => true,
            XdpModeChoice::Native => mode == AttachMode::Driver,
            XdpModeChoice::Generic => mode == AttachMode::Generic,
        }
    }
}

/// Whether [`Filter::attach_pinned`] found the interface already filtered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttachHow {
    /// A new attachment.
    Attached,
    /// An earlier instance's pinned link, now running this program.
    Adopted,
}

impl AttachHow {
    pub const fn label(self) -> &'static str {
        match self {
            AttachHow::Attached => "attached",
            AttachHow::Adopted => "adopted",
        }
    }
}

/// What [`Filter::attach_pinned`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AttachOutcome {
    pub mode: AttachMode,
    pub how: AttachHow,
    /// An adopted link runs in a mode the config does not ask for; it is
    /// kept rather than left unfiltered while it is moved.
    pub mode_differs: bool,
}

impl Filter {
    /// Attaches in the mode `choice` asks for (native first, then generic,
    /// under [`XdpModeChoice::Auto`]). The attachment lasts as long as this
    /// `Filter` (or its pin).
    pub fn attach(
        &mut self,
        interface: &str,
        choice: XdpModeChoice,
    ) -> Result<AttachMode, FilterError> {
        if bpfsys::ifindex(interface).is_none() {
            return Err(FilterError::NoSuchInterface(interface.to_string()));
        }
        let program = self.program();
        let only = |mode: AttachMode| {
            move |source| FilterError::AttachInMode {
                interface: interface.to_string(),
                mode: mode.label(),
                source,
            }
        };
        let (id, mode) = match choice {
            XdpModeChoice::Native => program
                .attach(interface, XdpMode::Driver)
                .map(|id| (id, AttachMode::Driver))
                .map_err(only(AttachMode::Driver))?,
            XdpModeChoice::Generic => program
                .attach(interface, XdpMode::Skb)
                .map(|id| (id, AttachMode::Generic))
                .map_err(only(AttachMode::Generic))?,
            XdpModeChoice::Auto => match program.attach(interface, XdpMode::Driver) {
                Ok(id) => (id, AttachMode::Driver),
                Err(native) => {
                    let id = program.attach(interface, XdpMode::Skb).map_err(|source| {
                        FilterError::Attach {
                            interface: interface.to_string(),
                            source,
                        }
                    })?;
                    log::warn!(
                        "{interface}: native XDP refused ({native}); attached in generic mode, \
                         which filters later in the receive path"
                    );
                    (id, AttachMode::Generic)
                }
            },
        };
        self.attachments.push((interface.to_string(), id));
        Ok(mode)
    }

    /// Puts this program on `interface` through a pinned link, so that it
    /// stays there after this process exits. If an earlier instance left a
    /// link pinned for the interface, the program is swapped into that link
    /// (`bpf_link_update`): one atomic replacement, no moment without a filter,
    /// no second attachment, whatever mode that link runs in. Otherwise it
    /// attaches as `choice` asks and pins the new link. Apply a policy first:
    /// the program filters from its first packet.
    pub fn attach_pinned(
        &mut self,
        interface: &str,
        choice: XdpModeChoice,
    ) -> Result<AttachOutcome, FilterError> {
        let pins = self
            .pins
            .clone()
            .ok_or_else(|| FilterError::Pin("this filter was loaded without pins".into()))?;
        let ifindex = bpfsys::ifindex(interface)
            .ok_or_else(|| FilterError::NoSuchInterface(interface.to_string()))?;
        if let Some((mode, path)) = pins.live_link(interface, ifindex)? {
            let pinned = PinnedLink::from_pin(&path).map_err(|e| {
                FilterError::Pin(format!("opening the pinned link {}: {e}", path.display()))
            })?;
            let link = XdpLink::try_from(FdLink::from(pinned)).map_err(|e| {
                FilterError::Pin(format!("{} is not an XDP link: {e}", path.display()))
            })?;
            let id = self
                .program()
                .attach_to_link(link)
                .map_err(|source| FilterError::Attach {
                    interface: interface.to_string(),
                    source,
                })?;
            // The pin keeps the link; this process only lends it the program.
            let _ = self.program().take_link(id);
            return Ok(AttachOutcome {
                mode,
                how: AttachHow::Adopted,
                mode_differs: !choice.accepts(mode),
            });
        }
        let mode = self.attach(interface, choice)?;
        let (_, id) = self
            .attachments
            .pop()
            .expect("attach recorded the attachment");
        let link = self
            .program()
            .take_link(id)
            .map_err(|e| FilterError::Pin(format!("{interface}: {e}")))?;
        let link: FdLink = link.try_into().map_err(|e| {
            FilterError::Pin(format!(
                "{interface}: attached without a bpf_link ({e}); the kernel is too old to pin it"
            ))
        })?;
        let path = pins.link_path(interface, mode);
        link.pin(&path).map_err(|e| {
            FilterError::Pin(format!(
                "pinning the link on {interface} at {}: {e}",
                path.display()
            ))
        })?;
        Ok(AttachOutcome {
            mode,
            how: AttachHow::Attached,
            mode_differs: false,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_choice_accepts_its_modes_and_parses_from_its_label() {
        use AttachMode::{Driver, Generic};
        assert!(XdpModeChoice::Auto.accepts(Driver) && XdpModeChoice::Auto.accepts(Generic));
        assert!(XdpModeChoice::Native.accepts(Driver) && !XdpModeChoice::Native.accepts(Generic));
        assert!(XdpModeChoice::Generic.accepts(Generic) && !XdpModeChoice::Generic.accepts(Driver));
        for choice in [
            XdpModeChoice::Auto,
            XdpModeChoice::Native,
            XdpModeChoice::Generic,
        ] {
            assert_eq!(XdpModeChoice::parse(choice.label()), Some(choice));
        }
        assert_eq!(XdpModeChoice::parse("skb"), None);
    }
}
