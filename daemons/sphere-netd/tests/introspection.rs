//! The D-Bus interface as served matches `docs/dbus/org.opensphere.Network1.xml`.
//!
//! After changing the interface on purpose, regenerate the document with
//! `SPHERE_UPDATE_DBUS_DOCS=1 cargo test -p sphere-netd --test introspection`.

use sphere_netd::firewall::{Config, Firewall};
use sphere_netd::nft::Nft;
use sphere_netd::service::NetworkService;
use sphere_netd::telemetry::Telemetry;
use std::path::Path;
use std::sync::{Arc, Mutex};

#[tokio::test]
async fn introspection_matches_the_checked_in_document() {
    // Opening a netfilter netlink socket needs no privilege; nothing is sent on it here.
    let nft = Nft::open().expect("netlink socket");
    let config =
        Config { runtime_dir: "/nonexistent".into(), upstreams: vec![], ttl_min: 30, ttl_max: 3600, log_group: None };
    let shared =
        Arc::new(Mutex::new(Firewall { config, apps: Default::default(), nft, telemetry: Telemetry::load(None) }));
    let (server_end, client_end) = tokio::net::UnixStream::pair().unwrap();
    let server = async {
        zbus::connection::Builder::unix_stream(server_end)
            .server(zbus::Guid::generate())
            .unwrap()
            .p2p()
            .serve_at(sphere_netd_api::OBJECT_PATH, NetworkService { shared })
            .unwrap()
            .build()
            .await
            .unwrap()
    };
    let client = async { zbus::connection::Builder::unix_stream(client_end).p2p().build().await.unwrap() };
    let (_server, client) = tokio::join!(server, client);
    let introspectable = zbus::fdo::IntrospectableProxy::builder(&client)
        .destination(sphere_netd_api::BUS_NAME)
        .unwrap()
        .path(sphere_netd_api::OBJECT_PATH)
        .unwrap()
        .build()
        .await
        .unwrap();
    let xml = introspectable.introspect().await.unwrap();
    let start = xml.find("<interface name=\"org.opensphere.Network1\">").expect("our interface is served");
    let end = start + xml[start..].find("</interface>").expect("interface end") + "</interface>".len();
    let served = format!(
        "<!DOCTYPE node PUBLIC \"-//freedesktop//DTD D-BUS Object Introspection 1.0//EN\"\n \
         \"http://www.freedesktop.org/standards/dbus/1.0/introspect.dtd\">\n<node name=\"{}\">\n  {}\n</node>\n",
        sphere_netd_api::OBJECT_PATH,
        &xml[start..end]
    );
    let doc = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/dbus/org.opensphere.Network1.xml");
    if std::env::var_os("SPHERE_UPDATE_DBUS_DOCS").is_some() {
        std::fs::write(&doc, &served).unwrap();
    }
    let checked_in = std::fs::read_to_string(&doc).unwrap_or_default();
    assert_eq!(checked_in, served, "{} is stale; regenerate it (see this test's doc comment)", doc.display());
}
