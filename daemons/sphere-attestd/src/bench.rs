//! The MQTT publishing benchmark behind `sphere-attestd bench-publish` (scripts/bench-mqtt.sh):
//! the same rumqttc client and options the daemon uses, minus TLS, so the figure can be put
//! next to `mosquitto_pub` on the same broker.

use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, Incoming, MqttOptions, QoS};

/// Publish `count` QoS 0 messages of `size` bytes, then one QoS 1 marker whose PUBACK proves the
/// broker has taken everything before it (MQTT keeps order on one connection). Returns
/// (seconds, messages per second).
pub async fn publish(host: &str, port: u16, topic: &str, count: u64, size: usize) -> Result<(f64, f64), String> {
    let mut options = MqttOptions::new(format!("bench-{}", std::process::id()), host, port);
    options.set_keep_alive(Duration::from_secs(30));
    options.set_max_packet_size(256 * 1024, 256 * 1024);
    let (client, mut eventloop) = AsyncClient::new(options, 1024);
    let driver = tokio::spawn(async move {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Incoming::PubAck(_))) => return Ok(()),
                Ok(_) => {}
                Err(e) => return Err(e.to_string()),
            }
        }
    });
    let payload = vec![b'x'; size];
    let start = Instant::now();
    for _ in 0..count {
        client.publish(topic, QoS::AtMostOnce, false, payload.clone()).await.map_err(|e| e.to_string())?;
    }
    client.publish(topic, QoS::AtLeastOnce, false, b"end".to_vec()).await.map_err(|e| e.to_string())?;
    let result = tokio::time::timeout(Duration::from_secs(300), driver).await;
    let seconds = start.elapsed().as_secs_f64();
    match result {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) => return Err(format!("broker {host}:{port}: {e}")),
        Ok(Err(e)) => return Err(e.to_string()),
        Err(_) => return Err("no PUBACK for the end marker within 300 s".into()),
    }
    let _ = client.disconnect().await;
    Ok((seconds, count as f64 / seconds.max(1e-9)))
}
