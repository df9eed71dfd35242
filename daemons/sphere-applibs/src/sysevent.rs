//! System events and update deferral: Azure Sphere's `applibs/sysevent.h` for OpenSphere apps.
//!
//! | Azure Sphere | here |
//! |---|---|
//! | `SysEvent_RegisterForEventNotifications(loop, mask, cb, ctx)` | [`register_for_event_notifications`] (a socket to poll, not a callback) |
//! | `SysEvent_UnregisterForEventNotifications` | drop the [`EventRegistration`] |
//! | `SysEvent_EventsCallback` + `SysEvent_Info_GetUpdateData` | [`EventRegistration::recv`] → [`EventInfo`] |
//! | `SysEvent_DeferEvent(event, minutes)` | [`defer_event`] |
//! | `SysEvent_ResumeEvent(event)` | [`resume_event`] |
//! | `SysEvent_Events_UpdateReadyForInstall`, `_NoUpdateAvailable` | [`Event`] |
//! | `SysEvent_Status_Pending`, `_Final`, `_Deferred`, `_Complete` | [`Status`] |
//! | `SysEvent_UpdateType_App`, `_System` | [`UpdateType`] |
//!
//! Registering needs the manifest capability `SystemEventNotifications`; deferring and resuming
//! need `SoftwareUpdateDeferral` as well (otherwise `PermissionDenied`, and the app manager
//! records a `sysevent-refused` violation). A deferral is bounded by the system from the first
//! announcement of the update (24 h for an OS update, 167 h for an app update), whatever the
//! app asks: [`defer_event`] returns the time actually granted.

use std::io;
use std::os::unix::net::UnixDatagram;

use crate::wire;

/// A system event an app can register for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Event {
    /// An update is downloaded/verified and about to be installed: defer it now or never.
    UpdateReadyForInstall,
    /// The update daemon checked and found nothing newer.
    NoUpdateAvailable,
}

impl Event {
    pub const ALL: [Event; 2] = [Event::UpdateReadyForInstall, Event::NoUpdateAvailable];

    /// The event's bit in a registration mask.
    pub const fn bit(self) -> u32 {
        match self {
            Event::UpdateReadyForInstall => 1,
            Event::NoUpdateAvailable => 2,
        }
    }

    pub const fn as_str(self) -> &'static str {
        match self {
            Event::UpdateReadyForInstall => "update-ready-for-install",
            Event::NoUpdateAvailable => "no-update-available",
        }
    }

    pub fn parse(text: &str) -> Option<Event> {
        Event::ALL.into_iter().find(|e| e.as_str() == text)
    }

    /// The mask of a set of events.
    pub fn mask(events: &[Event]) -> u32 {
        events.iter().fold(0, |m, e| m | e.bit())
    }
}

/// Where the event stands (Azure Sphere's `SysEvent_Status`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// Announced; it may be deferred until [`EventInfo::deadline`].
    Pending,
    /// Deferred (by this or another app) until [`EventInfo::deferred_until`].
    Deferred,
    /// Happening now; no more deferral.
    Final,
    /// Done (for an OS update: installed, the device boots it next).
    Complete,
}

impl Status {
    pub const ALL: [Status; 4] = [Status::Pending, Status::Deferred, Status::Final, Status::Complete];

    pub const fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Deferred => "deferred",
            Status::Final => "final",
            Status::Complete => "complete",
        }
    }

    pub fn parse(text: &str) -> Option<Status> {
        Status::ALL.into_iter().find(|s| s.as_str() == text)
    }
}

/// What an update replaces (Azure Sphere's `SysEvent_UpdateType`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UpdateType {
    /// The OS image (`os` on the wire; Azure Sphere's `System`).
    System,
    /// Apps or real-time firmware only (`app`).
    App,
}

impl UpdateType {
    pub const fn as_str(self) -> &'static str {
        match self {
            UpdateType::System => "os",
            UpdateType::App => "app",
        }
    }

    pub fn parse(text: &str) -> Option<UpdateType> {
        match text {
            "os" => Some(UpdateType::System),
            "app" => Some(UpdateType::App),
            _ => None,
        }
    }
}

/// One event notification.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventInfo {
    pub event: Event,
    pub status: Status,
    /// For update events; `None` for [`Event::NoUpdateAvailable`].
    pub update_type: Option<UpdateType>,
    /// The release's name in the update repository (empty when none).
    pub release: String,
    /// Unix seconds the update waits until (0: not deferred).
    pub deferred_until: u64,
    /// Unix seconds after which no deferral is granted (0: not deferrable).
    pub deadline: u64,
}

impl EventInfo {
    /// The message the app manager sends on an event socket:
    /// `<event> <status> <os|app|-> <deferred_until> <deadline> <release>`.
    pub fn to_wire(&self) -> String {
        format!(
            "{} {} {} {} {} {}",
            self.event.as_str(),
            self.status.as_str(),
            self.update_type.map_or("-", UpdateType::as_str),
            self.deferred_until,
            self.deadline,
            self.release
        )
    }

    pub fn parse(text: &str) -> Option<EventInfo> {
        let mut parts = text.splitn(6, ' ');
        let event = Event::parse(parts.next()?)?;
        let status = Status::parse(parts.next()?)?;
        let update_type = match parts.next()? {
            "-" => None,
            other => Some(UpdateType::parse(other)?),
        };
        let deferred_until = parts.next()?.parse().ok()?;
        let deadline = parts.next()?.parse().ok()?;
        let release = parts.next().unwrap_or("").to_string();
        Some(EventInfo { event, status, update_type, release, deferred_until, deadline })
    }
}

/// A registration: the app manager sends each event as one message on this socket until it is
/// dropped. Poll [`EventRegistration::socket`] in the app's own event loop (epoll, mio, tokio's
/// `AsyncFd`), or block in [`EventRegistration::recv`].
pub struct EventRegistration {
    socket: UnixDatagram,
}

impl EventRegistration {
    /// The next event (blocks unless the socket is set non-blocking). `UnexpectedEof` when the
    /// app manager closed the registration.
    pub fn recv(&self) -> io::Result<EventInfo> {
        let mut buf = [0u8; wire::MAX_LEN];
        let len = self.socket.recv(&mut buf)?;
        if len == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the app manager closed the event registration"));
        }
        let text = String::from_utf8_lossy(&buf[..len]);
        EventInfo::parse(&text)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, format!("unreadable event: {text:?}")))
    }

    pub fn socket(&self) -> &UnixDatagram {
        &self.socket
    }
}

/// Azure Sphere's `SysEvent_RegisterForEventNotifications`. The current state of a pending
/// update, if any, arrives at once. Needs `SystemEventNotifications`.
pub fn register_for_event_notifications(events: &[Event]) -> io::Result<EventRegistration> {
    let (text, fd) = super::call(&format!("{}{}", wire::SYSEVENT_REGISTER, Event::mask(events)))?;
    super::ok_reply(&text)?;
    let fd = fd.ok_or_else(|| io::Error::other("the app manager sent no event socket"))?;
    Ok(EventRegistration { socket: UnixDatagram::from(fd) })
}

/// Azure Sphere's `SysEvent_DeferEvent`: ask to defer a pending update by `minutes` (a new
/// request replaces this app's earlier one). Returns the Unix time the update now waits until,
/// which may be sooner than asked (the bound) or later (another app's deferral). Needs
/// `SystemEventNotifications` and `SoftwareUpdateDeferral`; fails when no update is pending.
pub fn defer_event(event: Event, minutes: u32) -> io::Result<u64> {
    defer_event_seconds(event, u64::from(minutes) * 60)
}

/// [`defer_event`] with a duration in seconds.
pub fn defer_event_seconds(event: Event, seconds: u64) -> io::Result<u64> {
    let (text, _) = super::call(&format!("{}{} {seconds}", wire::SYSEVENT_DEFER, event.as_str()))?;
    let rest = super::ok_reply(&text)?;
    rest.trim().parse().map_err(|_| io::Error::other(format!("unexpected reply from the app manager: {text:?}")))
}

/// Azure Sphere's `SysEvent_ResumeEvent`: withdraw this app's deferral; the update proceeds
/// once no other app defers it. Same capabilities as [`defer_event`].
pub fn resume_event(event: Event) -> io::Result<()> {
    let (text, _) = super::call(&format!("{}{}", wire::SYSEVENT_RESUME, event.as_str()))?;
    super::ok_reply(&text).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_survives_its_wire_form() {
        let info = EventInfo {
            event: Event::UpdateReadyForInstall,
            status: Status::Deferred,
            update_type: Some(UpdateType::System),
            release: "r2 with spaces".into(),
            deferred_until: 1_700_000_600,
            deadline: 1_700_086_400,
        };
        assert_eq!(EventInfo::parse(&info.to_wire()), Some(info));
        let none = EventInfo {
            event: Event::NoUpdateAvailable,
            status: Status::Complete,
            update_type: None,
            release: String::new(),
            deferred_until: 0,
            deadline: 0,
        };
        assert_eq!(EventInfo::parse(&none.to_wire()), Some(none));
        assert_eq!(EventInfo::parse("update-ready-for-install soon os 1 2 r"), None);
    }

    #[test]
    fn masks_combine_bits() {
        assert_eq!(Event::mask(&Event::ALL), 3);
        assert_eq!(Event::mask(&[Event::NoUpdateAvailable]), 2);
    }
}
