//! System events for apps (Azure Sphere's `sysevent.h`): the app manager's relay between the
//! update daemon and the apps.
//!
//! The update daemon calls `AnnounceUpdate` on the app manager's D-Bus API, repeatedly while it
//! waits; [`SystemEvents::announce`] forwards each new state to the apps registered for that
//! event and answers with the apps' deferral requests. Apps register, defer and resume through
//! their private API socket (`sphere_applibs::sysevent`); the capability checks (manifest:
//! `SystemEventNotifications` to register, and `SoftwareUpdateDeferral` too to defer or resume)
//! are the manager's, done before these functions are called.
//!
//! The app manager only relays and remembers requests; the update daemon owns the bound and
//! the durable record (it clamps again), so a restarted app manager loses nothing that matters:
//! the next announcement re-establishes the state and apps defer again if they still need to.

use sphere_applibs::sysevent::{Event, EventInfo, Status};
use std::collections::{BTreeMap, HashMap};
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Mutex;
use uuid::Uuid;

/// Registrations kept per app: an app that registers again and again (a bug, or an attempt to
/// exhaust the app manager's file descriptors) loses its oldest registration instead.
pub const MAX_REGISTRATIONS_PER_APP: usize = 4;

/// One registration: the app, the events it wants, our end of its event socket.
struct Subscriber {
    app: Uuid,
    mask: u32,
    socket: OwnedFd,
}

#[derive(Default)]
struct Inner {
    /// The last announcement of each event.
    current: HashMap<Event, EventInfo>,
    subscribers: Vec<Subscriber>,
    /// Apps' deferral requests for the current `update-ready-for-install` release.
    deferrals: BTreeMap<Uuid, u64>,
}

/// The relay; one per app manager.
#[derive(Default)]
pub struct SystemEvents {
    inner: Mutex<Inner>,
}

fn lock(m: &Mutex<Inner>) -> std::sync::MutexGuard<'_, Inner> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Sends one event; false when the app's end is gone (or its queue is full: an app that does
/// not read its events must not stall the update daemon, so the message is dropped and the
/// next announcement carries the state again).
fn send(socket: &OwnedFd, info: &EventInfo) -> bool {
    let text = info.to_wire();
    // SAFETY: send on our own socket; the buffer outlives the call.
    let sent = unsafe {
        libc::send(socket.as_raw_fd(), text.as_ptr().cast(), text.len(), libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT)
    };
    sent >= 0 || std::io::Error::last_os_error().kind() == std::io::ErrorKind::WouldBlock
}

impl SystemEvents {
    /// The update daemon's announcement. Forwarded to registered apps when it differs from the
    /// last one of the same event. Returns the live deferral requests (`until` > `now`).
    pub fn announce(&self, info: EventInfo, now: u64) -> Vec<(Uuid, u64)> {
        let mut inner = lock(&self.inner);
        let previous = inner.current.get(&info.event).cloned();
        if info.event == Event::UpdateReadyForInstall {
            let new_release = previous.as_ref().is_none_or(|p| p.release != info.release);
            // A new release starts with no requests; once final, deferring is over.
            if new_release || matches!(info.status, Status::Final | Status::Complete) {
                inner.deferrals.clear();
            }
        }
        if previous.as_ref() != Some(&info) {
            eprintln!("sphere-appd: system event {}", info.to_wire());
            inner.subscribers.retain(|s| s.mask & info.event.bit() == 0 || send(&s.socket, &info));
            inner.current.insert(info.event, info.clone());
        }
        inner.deferrals.retain(|_, until| *until > now);
        inner.deferrals.iter().map(|(app, until)| (*app, *until)).collect()
    }

    /// Registers `app` for the events in `mask`; returns the app's end of a new event socket.
    /// The current state of each registered event that is still in progress arrives at once.
    pub fn register(&self, app: Uuid, mask: u32) -> std::io::Result<OwnedFd> {
        if mask == 0 || mask & !Event::mask(&Event::ALL) != 0 {
            return Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("bad event mask {mask}")));
        }
        let (ours, theirs) = sphere_applibs::seqpacket_pair()?;
        let mut inner = lock(&self.inner);
        for info in inner.current.values() {
            if mask & info.event.bit() != 0 && matches!(info.status, Status::Pending | Status::Deferred) {
                send(&ours, info);
            }
        }
        if inner.subscribers.iter().filter(|s| s.app == app).count() >= MAX_REGISTRATIONS_PER_APP {
            if let Some(oldest) = inner.subscribers.iter().position(|s| s.app == app) {
                inner.subscribers.remove(oldest);
            }
        }
        inner.subscribers.push(Subscriber { app, mask, socket: ours });
        Ok(theirs)
    }

    /// `app` asks to defer the pending update by `seconds`; clamped to the announced
    /// deadline. Returns the time the update waits until (every app counted).
    pub fn defer(&self, app: Uuid, event: Event, seconds: u64, now: u64) -> Result<u64, String> {
        let mut inner = lock(&self.inner);
        let deadline = match inner.current.get(&event) {
            Some(info)
                if event == Event::UpdateReadyForInstall
                    && matches!(info.status, Status::Pending | Status::Deferred) =>
            {
                info.deadline
            }
            _ => return Err(format!("no {} event is pending", event.as_str())),
        };
        let until = now.saturating_add(seconds).min(deadline);
        if until > now {
            inner.deferrals.insert(app, until);
        } else {
            inner.deferrals.remove(&app);
        }
        let latest = inner.deferrals.values().copied().filter(|u| *u > now).max().unwrap_or(0);
        Ok(latest)
    }

    /// `app` withdraws its deferral.
    pub fn resume(&self, app: Uuid, event: Event) -> Result<(), String> {
        let mut inner = lock(&self.inner);
        match inner.current.get(&event) {
            Some(info)
                if event == Event::UpdateReadyForInstall
                    && matches!(info.status, Status::Pending | Status::Deferred) =>
            {
                inner.deferrals.remove(&app);
                Ok(())
            }
            _ => Err(format!("no {} event is pending", event.as_str())),
        }
    }

    /// An app stopped: its registrations and requests end with it (a crashed app must not
    /// hold an update back).
    pub fn app_stopped(&self, app: Uuid) {
        let mut inner = lock(&self.inner);
        inner.subscribers.retain(|s| s.app != app);
        inner.deferrals.remove(&app);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sphere_applibs::sysevent::UpdateType;
    use std::os::unix::net::UnixDatagram;
    use std::time::Duration;

    const APP1: Uuid = Uuid::from_u128(0x7f0c2e5a_61d4_4b8e_9a3f_2c51d7e80b14);
    const APP2: Uuid = Uuid::from_u128(0x6a1f0e2c_3b4d_4e5f_8a9b_0c1d2e3f4a51);

    fn ready(status: Status, release: &str, deferred_until: u64) -> EventInfo {
        EventInfo {
            event: Event::UpdateReadyForInstall,
            status,
            update_type: Some(UpdateType::System),
            release: release.into(),
            deferred_until,
            deadline: 1000 + 86_400,
        }
    }

    fn next(socket: &UnixDatagram) -> EventInfo {
        socket.set_read_timeout(Some(Duration::from_secs(2))).expect("timeout");
        let mut buf = [0u8; 512];
        let n = socket.recv(&mut buf).expect("an event");
        EventInfo::parse(&String::from_utf8_lossy(&buf[..n])).expect("parsable")
    }

    #[test]
    fn registered_apps_get_each_new_state_once_and_deferrals_are_clamped_and_reported() {
        let hub = SystemEvents::default();
        let app1 = UnixDatagram::from(hub.register(APP1, Event::UpdateReadyForInstall.bit()).expect("register"));
        let other = UnixDatagram::from(hub.register(APP2, Event::NoUpdateAvailable.bit()).expect("register"));
        assert!(hub.defer(APP1, Event::UpdateReadyForInstall, 60, 1000).is_err(), "nothing pending yet");

        assert!(hub.announce(ready(Status::Pending, "r2", 0), 1000).is_empty());
        assert_eq!(next(&app1), ready(Status::Pending, "r2", 0));
        // The same announcement again is not sent twice.
        hub.announce(ready(Status::Pending, "r2", 0), 1001);
        app1.set_nonblocking(true).expect("nonblocking");
        assert!(app1.recv(&mut [0u8; 64]).is_err());
        app1.set_nonblocking(false).expect("blocking");
        // The app that registered only for no-update-available heard nothing.
        other.set_nonblocking(true).expect("nonblocking");
        assert!(other.recv(&mut [0u8; 64]).is_err());

        // Ten days are asked, the announced deadline is granted.
        assert_eq!(hub.defer(APP1, Event::UpdateReadyForInstall, 864_000, 1000), Ok(1000 + 86_400));
        assert_eq!(hub.defer(APP2, Event::UpdateReadyForInstall, 60, 1000), Ok(1000 + 86_400));
        assert_eq!(hub.announce(ready(Status::Deferred, "r2", 87_400), 1002), vec![(APP2, 1060), (APP1, 87_400)]);
        assert_eq!(next(&app1).status, Status::Deferred);
        hub.resume(APP1, Event::UpdateReadyForInstall).expect("resume");
        // APP2's request ran out by 1060.
        assert!(hub.announce(ready(Status::Deferred, "r2", 87_400), 1061).is_empty());

        // Final ends deferral: requests are dropped and new ones refused.
        hub.defer(APP1, Event::UpdateReadyForInstall, 60, 1062).expect("defer");
        assert!(hub.announce(ready(Status::Final, "r2", 0), 1063).is_empty());
        assert_eq!(next(&app1).status, Status::Final);
        assert!(hub.defer(APP1, Event::UpdateReadyForInstall, 60, 1064).is_err());
    }

    #[test]
    fn a_late_registration_gets_the_pending_state_and_a_stopped_app_holds_nothing_back() {
        let hub = SystemEvents::default();
        hub.announce(ready(Status::Pending, "r2", 0), 1000);
        let late = UnixDatagram::from(hub.register(APP1, Event::mask(&Event::ALL)).expect("register"));
        assert_eq!(next(&late).release, "r2");
        hub.defer(APP1, Event::UpdateReadyForInstall, 600, 1000).expect("defer");
        hub.app_stopped(APP1);
        assert!(hub.announce(ready(Status::Pending, "r2", 0), 1001).is_empty());
        assert!(hub.register(APP1, 0).is_err());
        assert!(hub.register(APP1, 8).is_err());
    }

    #[test]
    fn an_app_keeps_a_bounded_number_of_registrations() {
        let hub = SystemEvents::default();
        let first = UnixDatagram::from(hub.register(APP1, 1).expect("register"));
        let _rest: Vec<_> =
            (1..MAX_REGISTRATIONS_PER_APP + 2).map(|_| hub.register(APP1, 1).expect("register")).collect();
        assert_eq!(lock(&hub.inner).subscribers.len(), MAX_REGISTRATIONS_PER_APP);
        // The oldest registration was closed: its reader sees the end.
        assert_eq!(first.recv(&mut [0u8; 16]).expect("eof"), 0);
    }

    #[test]
    fn a_new_release_forgets_the_old_requests() {
        let hub = SystemEvents::default();
        hub.announce(ready(Status::Pending, "r2", 0), 1000);
        hub.defer(APP1, Event::UpdateReadyForInstall, 600, 1000).expect("defer");
        assert!(hub.announce(ready(Status::Pending, "r3", 0), 1001).is_empty());
    }
}
