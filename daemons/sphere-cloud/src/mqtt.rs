//! MQTT: sphere-cloud as a client of the fleet's broker.
//!
//! The broker does the authentication and the per-device ACL (a device's certificate CN is
//! its id and it may only use `sphere/devices/<id>/#`); sphere-cloud connects with its own
//! client certificate (CN `sphere-cloud`, allowed on `sphere/devices/#`), stores telemetry and
//! error reports, and publishes retained update notifications when a group's release changes.
//! `sphere-cloud mosquitto-config` writes a matching mosquitto configuration. Without an
//! external broker, `serve` runs the embedded one ([`crate::broker`]) with the same rules and
//! links to it in-process ([`run_embedded`]).

use crate::service::Cloud;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS, TlsConfiguration, Transport};
use sphere_attestation::api::{ErrorReport, topics};
use std::sync::Arc;
use std::time::Duration;

pub struct BrokerSettings {
    pub host: String,
    pub port: u16,
    pub tls: Arc<rustls::ClientConfig>,
    pub client_id: String,
}

/// Connect, subscribe and store what arrives, forever (reconnecting after errors).
pub async fn run(cloud: Arc<Cloud>, settings: BrokerSettings) {
    let mut options = MqttOptions::new(settings.client_id, settings.host, settings.port);
    options.set_keep_alive(Duration::from_secs(30));
    options.set_max_packet_size(256 * 1024, 256 * 1024);
    options.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(settings.tls)));
    let (client, mut events) = AsyncClient::new(options, 1024);

    let notifier = client.clone();
    cloud.set_release_listener(Arc::new(move |devices, release| {
        let payload = serde_json::json!({ "release": release }).to_string();
        for device in devices {
            // Retained: a device that is offline now learns its release when it connects.
            if let Err(error) = notifier.try_publish(topics::updates(&device), QoS::AtLeastOnce, true, payload.clone())
            {
                eprintln!("sphere-cloud: mqtt: update notification for {device}: {error}");
            }
        }
    }));

    loop {
        match events.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                eprintln!("sphere-cloud: mqtt: connected to the broker");
                for leaf in ["telemetry", "errors"] {
                    let filter = format!("{}/+/{leaf}", topics::PREFIX);
                    if let Err(error) = client.subscribe(filter, QoS::AtLeastOnce).await {
                        eprintln!("sphere-cloud: mqtt: subscribe: {error}");
                    }
                }
            }
            Ok(Event::Incoming(Packet::Publish(publish))) => store(&cloud, &publish.topic, &publish.payload).await,
            Ok(_) => {}
            Err(error) => {
                eprintln!("sphere-cloud: mqtt: {error}; reconnecting in 1 s");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// Store what a device published (telemetry, error reports); other leaves are not ours.
async fn store(cloud: &Cloud, topic: &str, payload: &[u8]) {
    let Some((device, leaf)) = topics::parse(topic) else {
        return;
    };
    let result = match leaf {
        "telemetry" => cloud.store_telemetry(device, payload).await,
        "errors" => match serde_json::from_slice::<ErrorReport>(payload) {
            Ok(report) => cloud.store_error_report(device, &report).await.map(|_| ()),
            Err(error) => Err(crate::service::ServiceError::new(400, "bad-error-report", error.to_string())),
        },
        _ => Ok(()),
    };
    if let Err(error) = result {
        eprintln!("sphere-cloud: mqtt: {topic}: {error}");
    }
}

/// The same link to the embedded broker ([`crate::broker`]), in-process: sphere-cloud's
/// subscription and update notifications go straight into the broker's routing.
pub async fn run_embedded(cloud: Arc<Cloud>, broker: Arc<crate::broker::Broker>) {
    let filters: Vec<String> =
        ["telemetry", "errors"].iter().map(|leaf| format!("{}/+/{leaf}", topics::PREFIX)).collect();
    let mut messages = broker.attach_local(&filters);
    let notifier = broker.clone();
    cloud.set_release_listener(Arc::new(move |devices, release| {
        let payload = serde_json::json!({ "release": release }).to_string();
        for device in devices {
            // Retained, as with an external broker.
            if let Err(error) = notifier.publish_local(topics::updates(&device), payload.clone().into_bytes(), true) {
                eprintln!("sphere-cloud: mqtt: update notification for {device}: {error}");
            }
        }
    }));
    while let Some(publish) = messages.recv().await {
        store(&cloud, &publish.topic, &publish.payload).await;
    }
}

/// A mosquitto configuration for a fleet: TLS on `port`, client certificates required and
/// checked against the device CA and its CRL, the certificate CN used as the user name, and an
/// ACL that confines each device to its own topics.
pub fn mosquitto_config(data_dir: &std::path::Path, port: u16) -> (String, String) {
    let d = data_dir.display();
    let conf = format!(
        "# Written by `sphere-cloud mosquitto-config`. Devices authenticate with the short-lived\n\
         # certificates sphere-cloud issues; the CN (device id) becomes the MQTT user name.\n\
         per_listener_settings false\n\
         allow_anonymous false\n\
         listener {port}\n\
         cafile {d}/ca.crt\n\
         certfile {d}/mqtt-server.crt\n\
         keyfile {d}/mqtt-server.key\n\
         crlfile {d}/crl.pem\n\
         require_certificate true\n\
         use_identity_as_username true\n\
         tls_version tlsv1.2\n\
         acl_file {d}/mosquitto.acl\n"
    );
    let acl = format!(
        "# sphere-cloud itself reads every device's telemetry and errors and publishes updates.\n\
         user sphere-cloud\n\
         topic readwrite {p}/#\n\
         \n\
         # Every other client: only its own subtree (%u = certificate CN = device id).\n\
         pattern readwrite {p}/%u/#\n",
        p = topics::PREFIX
    );
    (conf, acl)
}
