//! The embedded MQTT broker: sphere-cloud's zero-setup default (`serve` without `--mqtt-broker`).
//!
//! A small MQTT 3.1.1 broker on the packet codec of `rumqttc` (already sphere-cloud's client
//! library), tokio and rustls. It enforces exactly what the mosquitto configuration from
//! `sphere-cloud mosquitto-config` enforces, with the same certificates and topics:
//!
//! - TLS with a client certificate issued by sphere-cloud's CA, checked against `crl.pem`
//!   (re-read whenever sphere-cloud rewrites it, so a revocation takes effect without a reload:
//!   new connections are refused and connected sessions with a revoked certificate are closed
//!   within [`CRL_POLL`]) and against the certificate's validity period (a session is also
//!   closed when its certificate expires);
//! - the certificate's CN is the client's identity (mosquitto's `use_identity_as_username`);
//! - ACL ([`may_publish`], [`may_subscribe`]): a device may only publish and subscribe under
//!   `sphere/devices/<its id>/`; sphere-cloud (CN `sphere-cloud`) under `sphere/devices/`.
//!
//! What it does not do (see docs/cloud.md): persistent sessions and offline queues (devices keep
//! their own on-disk queue; update notifications are retained messages), QoS 2 delivery to
//! subscribers (granted as QoS 1), MQTT 5, clustering. sphere-cloud itself is wired in-process
//! ([`Broker::attach_local`], [`Broker::publish_local`]): no TLS hop to itself.
//!
//! Why not `rumqttd`: it takes its TLS setup from file paths (no CRL), derives a tenant from the
//! certificate's Organization, not its CN, and has no per-client topic ACL hook; the ACL is the
//! point of this module, so it is written here, on a well-kept codec.

use crate::tls;
use bytes::BytesMut;
use rumqttc::mqttbytes::v4::{
    ConnAck, ConnectReturnCode, Packet, PubAck, PubComp, PubRec, Publish, SubAck, SubscribeReasonCode, UnsubAck,
};
use rumqttc::mqttbytes::{QoS, matches, valid_filter, valid_topic};
use sphere_attestation::api::topics;
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

/// The CN of sphere-cloud's own MQTT client certificate (`mqtt-client.crt`).
pub const SERVICE_CN: &str = "sphere-cloud";
/// Largest packet accepted or sent (the same limit the bridge client uses).
pub const MAX_PACKET: usize = 256 * 1024;
/// Messages queued for one subscriber. When it is full the publisher waits (back-pressure over
/// TCP, as for a slow network) up to [`SLOW_SUBSCRIBER`]; after that the message is dropped for
/// that subscriber, so a stuck client cannot make the broker's memory grow or stall others.
const QUEUE: usize = 1024;
const SLOW_SUBSCRIBER: Duration = Duration::from_secs(5);
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How often `crl.pem` is checked for changes, to close sessions whose certificate was revoked.
pub const CRL_POLL: Duration = Duration::from_secs(2);

/// Who a client is, from its certificate.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Identity {
    /// sphere-cloud itself: every device's topics.
    Service,
    /// A device: its id (the certificate CN).
    Device(String),
}

impl std::fmt::Display for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Identity::Service => f.write_str(SERVICE_CN),
            Identity::Device(id) => write!(f, "device {}", &id[..id.len().min(12)]),
        }
    }
}

/// The identity a certificate CN stands for. A CN that could widen a topic (`/`, `+`, `#`) or
/// is empty is refused: the CA only issues device ids (hex), but the check must not rely on it.
pub fn identity_from_cn(cn: &str) -> Result<Identity, String> {
    if cn == SERVICE_CN {
        return Ok(Identity::Service);
    }
    if cn.is_empty() || cn.len() > 128 || !cn.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) {
        return Err(format!("certificate CN {cn:?} is not a device id"));
    }
    Ok(Identity::Device(cn.to_owned()))
}

/// The subtree an identity may use: `sphere/devices` for sphere-cloud, `sphere/devices/<id>`
/// for a device (the same as mosquitto's `topic readwrite sphere/devices/#` and
/// `pattern readwrite sphere/devices/%u/#`).
fn subtree(identity: &Identity) -> String {
    match identity {
        Identity::Service => topics::PREFIX.to_owned(),
        Identity::Device(id) => format!("{}/{id}", topics::PREFIX),
    }
}

fn within(name: &str, root: &str) -> bool {
    name == root || name.strip_prefix(root).is_some_and(|rest| rest.starts_with('/'))
}

/// May `identity` publish to `topic`?
pub fn may_publish(identity: &Identity, topic: &str) -> bool {
    !topic.is_empty() && valid_topic(topic) && within(topic, &subtree(identity))
}

/// May `identity` subscribe to `filter`? Wildcards are allowed only below the identity's own
/// subtree, so `sphere/devices/+/commands` or `#` are refused to a device: the filter's literal
/// prefix must already be inside the subtree.
pub fn may_subscribe(identity: &Identity, filter: &str) -> bool {
    if !valid_filter(filter) {
        return false;
    }
    let root = subtree(identity);
    let Some(rest) = filter.strip_prefix(&root) else {
        return false;
    };
    rest.is_empty() || rest.starts_with('/')
}

/// The device whose subtree `topic` is in, if any: who besides sphere-cloud can subscribe to it.
fn device_of(topic: &str) -> Option<&str> {
    let rest = topic.strip_prefix(topics::PREFIX)?.strip_prefix('/')?;
    Some(rest.split('/').next().unwrap_or(rest)).filter(|d| !d.is_empty())
}

enum Outgoing {
    Publish(Publish),
    /// Another connection took over this client id, or the certificate was revoked.
    Close(&'static str),
}

struct Session {
    identity: Identity,
    client_id: String,
    /// The client certificate's serial (DER integer bytes), to close the session on revocation.
    serial: Vec<u8>,
    tx: mpsc::Sender<Outgoing>,
    filters: Vec<(String, QoS)>,
}

#[derive(Default)]
struct State {
    sessions: HashMap<u64, Session>,
    /// Sessions by device id and sphere-cloud's: a publish to `sphere/devices/<id>/...` can only
    /// match these (the ACL keeps every other device out of that subtree), so routing does not
    /// scan the whole fleet.
    by_device: HashMap<String, HashSet<u64>>,
    services: HashSet<u64>,
    by_client: HashMap<(Identity, String), u64>,
    retained: HashMap<String, Publish>,
    next: u64,
}

/// The broker's routing core, shared by every connection and by sphere-cloud in-process.
#[derive(Default)]
pub struct Broker {
    state: Mutex<State>,
}

fn min_qos(a: QoS, b: QoS) -> QoS {
    let rank = |q: QoS| q as u8;
    let q = if rank(a) <= rank(b) { a } else { b };
    // QoS 2 towards subscribers is granted as QoS 1 (documented): no outgoing PUBREC/PUBREL flow.
    if q == QoS::ExactlyOnce { QoS::AtLeastOnce } else { q }
}

impl Broker {
    pub fn new() -> Arc<Broker> {
        Arc::new(Broker::default())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while routing cannot leave the maps half-updated in a way that matters more
        // than stopping MQTT altogether would.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn register(&self, identity: Identity, client_id: String, serial: Vec<u8>, tx: mpsc::Sender<Outgoing>) -> u64 {
        let mut state = self.lock();
        state.next += 1;
        let id = state.next;
        let key = (identity.clone(), client_id.clone());
        // (Nested, not a let chain: the workspace builds with rustc 1.85.)
        if let Some(session) = state.by_client.insert(key, id).and_then(|old| state.sessions.get(&old)) {
            let _ = session.tx.try_send(Outgoing::Close("another connection took over the client id"));
        }
        match &identity {
            Identity::Service => {
                state.services.insert(id);
            }
            Identity::Device(device) => {
                state.by_device.entry(device.clone()).or_default().insert(id);
            }
        }
        state.sessions.insert(id, Session { identity, client_id, serial, tx, filters: Vec::new() });
        id
    }

    /// Close every session whose certificate serial is in `revoked`; returns how many.
    fn close_revoked(&self, revoked: &HashSet<Vec<u8>>) -> usize {
        let state = self.lock();
        let mut closed = 0;
        for session in state.sessions.values().filter(|s| revoked.contains(&s.serial)) {
            // try_send: a full queue means the session is stuck; it ends at its keep-alive.
            if session.tx.try_send(Outgoing::Close("certificate revoked: session closed")).is_ok() {
                closed += 1;
            }
        }
        closed
    }

    fn unregister(&self, id: u64) {
        let mut state = self.lock();
        let Some(session) = state.sessions.remove(&id) else { return };
        let key = (session.identity.clone(), session.client_id);
        if state.by_client.get(&key) == Some(&id) {
            state.by_client.remove(&key);
        }
        match &session.identity {
            Identity::Service => {
                state.services.remove(&id);
            }
            Identity::Device(device) => {
                if let Some(set) = state.by_device.get_mut(device) {
                    set.remove(&id);
                    if set.is_empty() {
                        state.by_device.remove(device);
                    }
                }
            }
        }
    }

    /// Deliver `publish` (already allowed by the ACL) from session `from` to every matching
    /// subscription, waiting for a full subscriber queue up to [`SLOW_SUBSCRIBER`] (never for
    /// `from`'s own queue: that session is the one that would drain it).
    async fn route(&self, publish: &Publish, from: Option<u64>) {
        for (id, tx, out) in self.targets(publish) {
            let result = if Some(id) == from {
                tx.try_send(Outgoing::Publish(out)).map_err(|_| ())
            } else {
                match tokio::time::timeout(SLOW_SUBSCRIBER, tx.send(Outgoing::Publish(out))).await {
                    Ok(_) => Ok(()), // sent, or the session just ended
                    Err(_) => Err(()),
                }
            };
            if result.is_err() {
                eprintln!(
                    "sphere-cloud: mqtt broker: session {id} is not reading; a message on {} dropped for it",
                    publish.topic
                );
            }
        }
    }

    /// [`Self::route`] without waiting (sphere-cloud's own, rare, publications from sync code).
    fn route_now(&self, publish: &Publish) {
        for (id, tx, out) in self.targets(publish) {
            if tx.try_send(Outgoing::Publish(out)).is_err() {
                eprintln!(
                    "sphere-cloud: mqtt broker: session {id} is not reading; a message on {} dropped for it",
                    publish.topic
                );
            }
        }
    }

    /// Keep `publish` if retained (an empty retained payload deletes the retained message, as
    /// MQTT says) and return who gets which copy of it.
    fn targets(&self, publish: &Publish) -> Vec<(u64, mpsc::Sender<Outgoing>, Publish)> {
        let mut state = self.lock();
        if publish.retain {
            if publish.payload.is_empty() {
                state.retained.remove(&publish.topic);
            } else {
                state.retained.insert(publish.topic.clone(), publish.clone());
            }
        }
        let device = device_of(&publish.topic).and_then(|d| state.by_device.get(d));
        let candidates = state.services.iter().chain(device.into_iter().flatten());
        let mut targets = Vec::new();
        for id in candidates {
            let Some(session) = state.sessions.get(id) else { continue };
            let granted = session
                .filters
                .iter()
                .filter(|(f, _)| matches(&publish.topic, f))
                .map(|(_, q)| *q)
                .max_by_key(|q| *q as u8);
            let Some(granted) = granted else { continue };
            let mut out =
                Publish::from_bytes(publish.topic.clone(), min_qos(publish.qos, granted), publish.payload.clone());
            out.retain = false;
            targets.push((*id, session.tx.clone(), out));
        }
        targets
    }

    /// Add `filters` to session `id`; returns the retained messages they match.
    fn subscribe(&self, id: u64, filters: &[(String, QoS)]) -> Vec<Publish> {
        let mut state = self.lock();
        let Some(session) = state.sessions.get_mut(&id) else { return Vec::new() };
        for (filter, qos) in filters {
            session.filters.retain(|(f, _)| f != filter);
            session.filters.push((filter.clone(), *qos));
        }
        state
            .retained
            .values()
            .filter_map(|p| {
                let qos =
                    filters.iter().filter(|(f, _)| matches(&p.topic, f)).map(|(_, q)| *q).max_by_key(|q| *q as u8)?;
                let mut out = Publish::from_bytes(p.topic.clone(), min_qos(p.qos, qos), p.payload.clone());
                out.retain = true;
                Some(out)
            })
            .collect()
    }

    fn unsubscribe(&self, id: u64, filters: &[String]) {
        if let Some(session) = self.lock().sessions.get_mut(&id) {
            session.filters.retain(|(f, _)| !filters.contains(f));
        }
    }

    /// sphere-cloud's own subscription, in-process: what arrives on `filters` (with
    /// sphere-cloud's rights) comes out of the returned receiver.
    pub fn attach_local(&self, filters: &[String]) -> mpsc::Receiver<Publish> {
        let (tx, mut rx) = mpsc::channel(QUEUE * 16);
        let (out_tx, out_rx) = mpsc::channel(QUEUE * 16);
        let id = self.register(Identity::Service, "sphere-cloud (in-process)".into(), Vec::new(), tx);
        let granted: Vec<_> = filters
            .iter()
            .filter(|f| may_subscribe(&Identity::Service, f))
            .map(|f| (f.clone(), QoS::AtLeastOnce))
            .collect();
        let _ = self.subscribe(id, &granted);
        tokio::spawn(async move {
            while let Some(message) = rx.recv().await {
                if let Outgoing::Publish(p) = message {
                    if out_tx.send(p).await.is_err() {
                        break;
                    }
                }
            }
        });
        out_rx
    }

    /// Publish as sphere-cloud (update notifications, commands).
    pub fn publish_local(&self, topic: String, payload: Vec<u8>, retain: bool) -> Result<(), String> {
        if !may_publish(&Identity::Service, &topic) {
            return Err(format!("{topic}: outside {}", topics::PREFIX));
        }
        let mut publish = Publish::new(topic, QoS::AtLeastOnce, payload);
        publish.retain = retain;
        self.route_now(&publish);
        Ok(())
    }

    /// Accept connections on `listener` forever.
    pub async fn serve(self: Arc<Self>, listener: tokio::net::TcpListener, tls: Arc<TlsSource>) {
        loop {
            let (stream, peer) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(e) => {
                    eprintln!("sphere-cloud: mqtt broker: accept: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let broker = self.clone();
            let tls = tls.clone();
            tokio::spawn(async move {
                if let Err(e) = broker.connection(stream, &tls).await {
                    eprintln!("sphere-cloud: mqtt broker: {peer}: {e}");
                }
            });
        }
    }

    async fn connection(&self, stream: tokio::net::TcpStream, tls: &TlsSource) -> Result<(), String> {
        let _ = stream.set_nodelay(true);
        let acceptor = tokio_rustls::TlsAcceptor::from(tls.current()?);
        let stream = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream))
            .await
            .map_err(|_| "TLS handshake timed out".to_owned())?
            .map_err(|e| format!("TLS handshake refused: {e}"))?;
        let (identity, not_after, serial) = {
            let (_, connection) = stream.get_ref();
            let cert = connection.peer_certificates().and_then(|c| c.first()).ok_or("no client certificate")?;
            peer_identity(cert.as_ref())?
        };
        let (mut reader, mut writer) = tokio::io::split(stream);
        let mut buf = BytesMut::with_capacity(4096);

        // CONNECT first, within the handshake timeout.
        let connect = tokio::time::timeout(HANDSHAKE_TIMEOUT, async {
            loop {
                match Packet::read(&mut buf, MAX_PACKET) {
                    Ok(packet) => return Ok(packet),
                    Err(rumqttc::mqttbytes::Error::InsufficientBytes(_)) => {}
                    Err(e) => return Err(format!("{identity}: bad packet: {e:?}")),
                }
                if reader.read_buf(&mut buf).await.map_err(|e| e.to_string())? == 0 {
                    return Err(format!("{identity}: closed before CONNECT"));
                }
            }
        })
        .await
        .map_err(|_| format!("{identity}: no CONNECT within {HANDSHAKE_TIMEOUT:?}"))??;
        let Packet::Connect(connect) = connect else {
            return Err(format!("{identity}: first packet was not CONNECT"));
        };
        let client_id = if connect.client_id.is_empty() {
            format!("auto-{}", hex::encode(rand_core::RngCore::next_u64(&mut rand_core::OsRng).to_be_bytes()))
        } else {
            connect.client_id.clone()
        };
        let (tx, mut rx) = mpsc::channel(QUEUE);
        let session = self.register(identity.clone(), client_id, serial, tx);
        let result =
            self.session(session, &identity, &connect, not_after, &mut reader, &mut writer, &mut buf, &mut rx).await;
        self.unregister(session);
        let _ = writer.shutdown().await;
        match result {
            Ok(clean) => {
                let will = connect.last_will.as_ref().filter(|will| !clean && may_publish(&identity, &will.topic));
                if let Some(will) = will {
                    let mut publish = Publish::from_bytes(will.topic.clone(), will.qos, will.message.clone());
                    publish.retain = will.retain;
                    self.route(&publish, Some(session)).await;
                }
                Ok(())
            }
            Err(e) => Err(format!("{identity}: {e}")),
        }
    }

    /// One MQTT session; Ok(true) after DISCONNECT, Ok(false) when the connection ended otherwise.
    #[allow(clippy::too_many_arguments)]
    async fn session<R, W>(
        &self,
        session: u64,
        identity: &Identity,
        connect: &rumqttc::mqttbytes::v4::Connect,
        not_after: i64,
        reader: &mut R,
        writer: &mut W,
        buf: &mut BytesMut,
        rx: &mut mpsc::Receiver<Outgoing>,
    ) -> Result<bool, String>
    where
        R: tokio::io::AsyncRead + Unpin,
        W: tokio::io::AsyncWrite + Unpin,
    {
        let mut out = BytesMut::with_capacity(4096);
        let send = |packet: Packet, out: &mut BytesMut| {
            packet.write(out, MAX_PACKET).map(|_| ()).map_err(|e| format!("{e:?}"))
        };
        send(Packet::ConnAck(ConnAck::new(ConnectReturnCode::Success, false)), &mut out)?;
        writer.write_all(&out).await.map_err(|e| e.to_string())?;
        out.clear();

        // MQTT: a client silent for 1.5 × its keep-alive is gone.
        let keep_alive = (connect.keep_alive > 0).then(|| Duration::from_millis(u64::from(connect.keep_alive) * 1500));
        let expires_in = Duration::from_secs(u64::try_from(not_after - crate::service::now()).unwrap_or(0));
        let expiry = tokio::time::sleep(expires_in);
        tokio::pin!(expiry);
        let mut last_heard = tokio::time::Instant::now();
        let mut next_pkid: u16 = 0;
        let mut qos2_pending: HashSet<u16> = HashSet::new();
        loop {
            let silence = async {
                match keep_alive {
                    Some(limit) => tokio::time::sleep_until(last_heard + limit).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                read = reader.read_buf(buf) => {
                    if read.map_err(|e| e.to_string())? == 0 {
                        return Ok(false);
                    }
                    last_heard = tokio::time::Instant::now();
                    loop {
                        let packet = match Packet::read(buf, MAX_PACKET) {
                            Ok(packet) => packet,
                            Err(rumqttc::mqttbytes::Error::InsufficientBytes(_)) => break,
                            Err(e) => return Err(format!("bad packet: {e:?}")),
                        };
                        match packet {
                            Packet::Publish(publish) => {
                                let duplicate = publish.qos == QoS::ExactlyOnce && !qos2_pending.insert(publish.pkid);
                                if !may_publish(identity, &publish.topic) {
                                    // As mosquitto: acknowledged (MQTT 3.1.1 has no refusal for a
                                    // PUBLISH) and dropped, never delivered or stored.
                                    eprintln!("sphere-cloud: mqtt broker: {identity} may not publish to {:?}: dropped", publish.topic);
                                } else if !duplicate {
                                    self.route(&publish, Some(session)).await;
                                }
                                match publish.qos {
                                    QoS::AtMostOnce => {}
                                    QoS::AtLeastOnce => send(Packet::PubAck(PubAck::new(publish.pkid)), &mut out)?,
                                    QoS::ExactlyOnce => send(Packet::PubRec(PubRec::new(publish.pkid)), &mut out)?,
                                }
                            }
                            Packet::PubRel(rel) => {
                                qos2_pending.remove(&rel.pkid);
                                send(Packet::PubComp(PubComp::new(rel.pkid)), &mut out)?;
                            }
                            Packet::Subscribe(subscribe) => {
                                let mut granted = Vec::new();
                                let codes = subscribe
                                    .filters
                                    .iter()
                                    .map(|f| {
                                        if may_subscribe(identity, &f.path) {
                                            let qos = min_qos(f.qos, QoS::AtLeastOnce);
                                            granted.push((f.path.clone(), qos));
                                            SubscribeReasonCode::Success(qos)
                                        } else {
                                            eprintln!("sphere-cloud: mqtt broker: {identity} may not subscribe to {:?}: refused", f.path);
                                            SubscribeReasonCode::Failure
                                        }
                                    })
                                    .collect();
                                let retained = self.subscribe(session, &granted);
                                send(Packet::SubAck(SubAck::new(subscribe.pkid, codes)), &mut out)?;
                                for mut publish in retained {
                                    if publish.qos != QoS::AtMostOnce {
                                        next_pkid = next_pkid.checked_add(1).unwrap_or(1);
                                        publish.pkid = next_pkid;
                                    }
                                    send(Packet::Publish(publish), &mut out)?;
                                }
                            }
                            Packet::Unsubscribe(unsubscribe) => {
                                self.unsubscribe(session, &unsubscribe.topics);
                                send(Packet::UnsubAck(UnsubAck::new(unsubscribe.pkid)), &mut out)?;
                            }
                            Packet::PingReq => send(Packet::PingResp, &mut out)?,
                            Packet::Disconnect => {
                                writer.write_all(&out).await.map_err(|e| e.to_string())?;
                                return Ok(true);
                            }
                            // Acknowledgements of what we sent: delivery is at-least-once over
                            // one connection, nothing is kept for retransmission.
                            Packet::PubAck(_) | Packet::PubRec(_) | Packet::PubComp(_) => {}
                            other => return Err(format!("unexpected {other:?}")),
                        }
                    }
                }
                message = rx.recv() => match message {
                    Some(Outgoing::Publish(mut publish)) => {
                        if publish.qos != QoS::AtMostOnce {
                            next_pkid = next_pkid.checked_add(1).unwrap_or(1);
                            publish.pkid = next_pkid;
                        }
                        send(Packet::Publish(publish), &mut out)?;
                    }
                    Some(Outgoing::Close(why)) => return Err(why.to_owned()),
                    None => return Err("broker gone".into()),
                },
                () = silence => return Err("keep-alive expired".into()),
                () = &mut expiry => return Err("certificate expired: session closed".into()),
            }
            if !out.is_empty() {
                writer.write_all(&out).await.map_err(|e| e.to_string())?;
                out.clear();
            }
        }
    }
}

/// The identity, expiry (unix seconds) and serial of a verified client certificate (DER).
fn peer_identity(der: &[u8]) -> Result<(Identity, i64, Vec<u8>), String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).map_err(|e| format!("client certificate: {e}"))?;
    let cn = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .ok_or("client certificate has no CN")?;
    Ok((identity_from_cn(cn)?, cert.validity().not_after.timestamp(), cert.raw_serial().to_vec()))
}

/// The broker's TLS configuration: server certificate `mqtt-server.crt`, client certificates
/// from `ca.crt` only, `crl.pem` re-read when it changes (sphere-cloud rewrites it on every
/// revocation), so no reload step exists to forget.
pub struct TlsSource {
    data: PathBuf,
    certs: Vec<rustls::pki_types::CertificateDer<'static>>,
    key: rustls::pki_types::PrivateKeyDer<'static>,
    roots: Arc<rustls::RootCertStore>,
    cached: Mutex<Option<Crl>>,
}

/// Serials (DER integer bytes) listed in the CRL.
type Revoked = Arc<HashSet<Vec<u8>>>;

/// One version of `crl.pem`: its bytes, the TLS configuration checking it, the serials it
/// revokes, and a generation number that changes with it.
struct Crl {
    bytes: Vec<u8>,
    config: Arc<rustls::ServerConfig>,
    revoked: Revoked,
    generation: u64,
}

impl TlsSource {
    pub fn load(data: &Path) -> Result<TlsSource, String> {
        let read = |name: &str| {
            std::fs::read_to_string(data.join(name)).map_err(|e| format!("{}: {e}", data.join(name).display()))
        };
        Ok(TlsSource {
            data: data.to_owned(),
            certs: tls::certs(&read("mqtt-server.crt")?)?,
            key: tls::key(&read("mqtt-server.key")?)?,
            roots: Arc::new(tls::roots(&read("ca.crt")?)?),
            cached: Mutex::new(None),
        })
    }

    /// The configuration for the CRL on disk now. Fails closed: no readable CRL, no connections.
    pub fn current(&self) -> Result<Arc<rustls::ServerConfig>, String> {
        self.current_crl().map(|(config, _, _)| config)
    }

    /// The configuration, the revoked serials and the CRL's generation.
    fn current_crl(&self) -> Result<(Arc<rustls::ServerConfig>, Revoked, u64), String> {
        let path = self.data.join("crl.pem");
        let crl = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let mut cached = self.cached.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(current) = cached.as_ref().filter(|current| current.bytes == crl) {
            return Ok((current.config.clone(), current.revoked.clone(), current.generation));
        }
        let crls = rustls_pemfile::crls(&mut crl.as_slice())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("{}: {e}", path.display()))?;
        let mut revoked = HashSet::new();
        for der in &crls {
            let (_, parsed) =
                x509_parser::parse_x509_crl(der.as_ref()).map_err(|e| format!("{}: {e}", path.display()))?;
            revoked.extend(parsed.iter_revoked_certificates().map(|r| r.raw_serial().to_vec()));
        }
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(self.roots.clone(), tls::provider())
            .with_crls(crls)
            .only_check_end_entity_revocation()
            .build()
            .map_err(|e| format!("client verifier: {e}"))?;
        let config = rustls::ServerConfig::builder_with_provider(tls::provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_client_cert_verifier(verifier)
            .with_single_cert(self.certs.clone(), self.key.clone_key())
            .map_err(|e| format!("mqtt-server.crt: {e}"))?;
        let config = Arc::new(config);
        let revoked = Arc::new(revoked);
        let generation = cached.as_ref().map_or(1, |c| c.generation + 1);
        *cached = Some(Crl { bytes: crl, config: config.clone(), revoked: revoked.clone(), generation });
        Ok((config, revoked, generation))
    }
}

/// Bind `listen` and run the broker on it; returns the broker (for sphere-cloud's in-process
/// link) and the address it listens on.
pub async fn start(data: &Path, listen: SocketAddr) -> Result<(Arc<Broker>, SocketAddr), String> {
    let tls = Arc::new(TlsSource::load(data)?);
    tls.current()?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| format!("embedded MQTT broker on {listen}: {e} (choose another --mqtt-listen, or --no-mqtt)"))?;
    let address = listener.local_addr().map_err(|e| e.to_string())?;
    let broker = Broker::new();
    tokio::spawn(broker.clone().serve(listener, tls.clone()));
    // Revocation for sessions already connected: whenever crl.pem changes, close the sessions
    // whose certificate it lists (mosquitto only checks the CRL at the handshake).
    let watcher = broker.clone();
    tokio::spawn(async move {
        let mut seen = 0;
        loop {
            match tls.current_crl() {
                Ok((_, revoked, generation)) if generation != seen => {
                    seen = generation;
                    let closed = watcher.close_revoked(&revoked);
                    if closed > 0 {
                        eprintln!("sphere-cloud: mqtt broker: closed {closed} session(s) with a revoked certificate");
                    }
                }
                Ok(_) => {}
                Err(e) => eprintln!("sphere-cloud: mqtt broker: {e}"),
            }
            tokio::time::sleep(CRL_POLL).await;
        }
    });
    Ok((broker, address))
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "aaaa1111";
    const B: &str = "bbbb2222";

    fn device(id: &str) -> Identity {
        Identity::Device(id.to_owned())
    }

    #[test]
    fn devices_publish_only_under_their_own_id() {
        let a = device(A);
        assert!(may_publish(&a, &topics::telemetry(A)));
        assert!(may_publish(&a, &topics::errors(A)));
        assert!(may_publish(&a, &format!("sphere/devices/{A}")));
        assert!(!may_publish(&a, &topics::errors(B)), "another device's topic");
        assert!(!may_publish(&a, &format!("sphere/devices/{A}x/errors")), "a longer id sharing the prefix");
        assert!(!may_publish(&a, "sphere/devices"), "the parent");
        assert!(!may_publish(&a, "elsewhere/topic"));
        assert!(!may_publish(&a, &format!("sphere/devices/{A}/+")), "wildcards are not topics");
        assert!(!may_publish(&a, ""));
    }

    #[test]
    fn devices_subscribe_only_inside_their_own_subtree() {
        let a = device(A);
        assert!(may_subscribe(&a, &topics::commands(A)));
        assert!(may_subscribe(&a, &format!("sphere/devices/{A}/#")));
        assert!(may_subscribe(&a, &format!("sphere/devices/{A}/+")));
        assert!(may_subscribe(&a, &format!("sphere/devices/{A}")));
        for filter in [
            topics::commands(B),
            "#".to_owned(),
            "+/devices/#".to_owned(),
            "sphere/#".to_owned(),
            "sphere/devices/#".to_owned(),
            "sphere/devices/+/commands".to_owned(),
            format!("sphere/devices/{A}x/#"),
            format!("sphere/devices/{A}#"),
            String::new(),
        ] {
            assert!(!may_subscribe(&a, &filter), "{filter:?} must be refused to a device");
        }
    }

    #[test]
    fn sphere_cloud_uses_every_device_topic_and_nothing_else() {
        let s = Identity::Service;
        assert!(may_subscribe(&s, "sphere/devices/+/telemetry"));
        assert!(may_subscribe(&s, "sphere/devices/#"));
        assert!(may_publish(&s, &topics::updates(A)));
        assert!(!may_subscribe(&s, "#"));
        assert!(!may_subscribe(&s, "sphere/devicesX/#"));
        assert!(!may_publish(&s, "other/topic"));
    }

    #[test]
    fn certificate_names_that_could_widen_a_topic_are_refused() {
        assert_eq!(identity_from_cn("sphere-cloud"), Ok(Identity::Service));
        assert_eq!(identity_from_cn(A), Ok(device(A)));
        for cn in ["", "a/b", "+", "#", "a b", "../x/y", "x\0"] {
            assert!(identity_from_cn(cn).is_err(), "{cn:?}");
        }
    }

    #[tokio::test]
    async fn routing_respects_subscriptions_and_retains() {
        let broker = Broker::new();
        let (tx_a, mut rx_a) = mpsc::channel(8);
        let (tx_b, mut rx_b) = mpsc::channel(8);
        let a = broker.register(device(A), "a".into(), vec![1], tx_a);
        let b = broker.register(device(B), "b".into(), vec![2], tx_b);
        broker.subscribe(a, &[(format!("sphere/devices/{A}/#"), QoS::AtLeastOnce)]);
        broker.subscribe(b, &[(format!("sphere/devices/{B}/#"), QoS::AtMostOnce)]);
        let mut cloud = broker.attach_local(&["sphere/devices/+/telemetry".to_owned()]);

        broker.publish_local(topics::commands(A), b"reboot".to_vec(), false).unwrap();
        let Some(Outgoing::Publish(p)) = rx_a.recv().await else { panic!("A got nothing") };
        assert_eq!((p.topic.as_str(), &p.payload[..]), (topics::commands(A).as_str(), &b"reboot"[..]));
        assert!(rx_b.try_recv().is_err(), "B received A's command");

        let mut telemetry = Publish::new(topics::telemetry(B), QoS::ExactlyOnce, b"t".to_vec());
        telemetry.pkid = 9;
        broker.route(&telemetry, None).await;
        let p = cloud.recv().await.unwrap();
        assert_eq!(p.topic, topics::telemetry(B));
        let Some(Outgoing::Publish(p)) = rx_b.recv().await else { panic!("B got nothing") };
        assert_eq!(p.qos, QoS::AtMostOnce, "delivered at the subscription's QoS");

        // Retained: stored, handed to a later subscriber, deleted by an empty payload.
        broker.publish_local(topics::updates(A), b"1.1.0".to_vec(), true).unwrap();
        let retained = broker.subscribe(a, &[(topics::updates(A), QoS::AtLeastOnce)]);
        assert_eq!(retained.len(), 1);
        assert!(retained[0].retain);
        broker.publish_local(topics::updates(A), Vec::new(), true).unwrap();
        assert!(broker.subscribe(a, &[(topics::updates(A), QoS::AtLeastOnce)]).is_empty());
        assert!(broker.publish_local("outside".into(), Vec::new(), false).is_err());

        // A second connection with the same identity and client id takes the session over.
        let (tx_a2, _rx_a2) = mpsc::channel(8);
        broker.register(device(A), "a".into(), vec![3], tx_a2);
        let mut closed = false;
        while let Ok(message) = rx_a.try_recv() {
            closed |= matches!(message, Outgoing::Close(_));
        }
        assert!(closed, "the old session was not told to close");
        // A full subscriber queue makes the publisher wait instead of losing messages.
        let (tx_c, mut rx_c) = mpsc::channel(1);
        let c = broker.register(device("cccc"), "c".into(), vec![4], tx_c);
        broker.subscribe(c, &[("sphere/devices/cccc/#".to_owned(), QoS::AtMostOnce)]);
        let drain = tokio::spawn(async move {
            let mut received = 0;
            while received < 3 {
                if let Some(Outgoing::Publish(_)) = rx_c.recv().await {
                    received += 1;
                }
            }
            received
        });
        let burst = Publish::new(topics::telemetry("cccc"), QoS::AtMostOnce, b"x".to_vec());
        for _ in 0..3 {
            broker.route(&burst, None).await;
        }
        assert_eq!(drain.await.unwrap(), 3, "messages lost to a full queue");

        // Revocation closes exactly the sessions with a listed serial.
        assert_eq!(broker.close_revoked(&HashSet::from([vec![2], vec![99]])), 1);
        assert!(matches!(rx_b.try_recv(), Ok(Outgoing::Close(_))), "B's session not closed on revocation");
        broker.unregister(b);
        assert!(!broker.lock().by_device.contains_key(B));
    }
}
