//! skupper-router (skrouterd) configuration in its JSON form: a list of
//! `[entity, attributes]`, as in the seed's `solo0.json`/`solo1.json`.

use super::paths::runtime;
use crate::model::{Naming, Router};
use crate::topology::RouterBaseListener;
use serde::Serialize;
use serde_json::Value;

pub const TLS_PROFILE: &str = "inter-router-tls";

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct RouterEntity {
    id: String,
    mode: &'static str,
    hello_max_age_seconds: &'static str,
    metadata: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct SslProfile {
    name: &'static str,
    ca_cert_file: String,
    cert_file: String,
    private_key_file: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Connector {
    name: String,
    role: &'static str,
    host: String,
    port: String,
    cost: u32,
    max_frame_size: u32,
    max_session_frames: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    ssl_profile: Option<&'static str>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct TcpListener {
    name: String,
    host: &'static str,
    port: String,
    address: String,
    site_id: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct TcpConnector {
    name: String,
    host: String,
    port: String,
    address: String,
    site_id: String,
}

fn entity<T: Serialize>(name: &str, attrs: T) -> Value {
    serde_json::to_value((name, attrs)).expect("router entity serializes")
}

pub fn config(n: &Naming, r: &Router) -> Vec<Value> {
    let mut out = vec![entity(
        "router",
        RouterEntity {
            id: r.id.clone(),
            mode: "interior",
            hello_max_age_seconds: "3",
            metadata: serde_json::json!({ "id": r.id, "version": "1.0.2" }).to_string(),
        },
    )];
    let tls_needed = r.listener_tls || r.connectors.iter().any(|c| c.tls);
    if tls_needed {
        let dir = runtime::router_certs(n, r);
        out.push(entity(
            "sslProfile",
            SslProfile {
                name: TLS_PROFILE,
                ca_cert_file: format!("{dir}/ca.crt"),
                cert_file: format!("{dir}/tls.crt"),
                private_key_file: format!("{dir}/tls.key"),
            },
        ));
    }
    for base in RouterBaseListener::all() {
        let mut attrs = base.attributes.clone();
        let inter_router = attrs.get("role").and_then(Value::as_str) == Some("inter-router");
        if inter_router && r.listener_tls {
            attrs.insert("sslProfile".into(), Value::from(TLS_PROFILE));
            attrs.insert("authenticatePeer".into(), Value::from(true));
        }
        out.push(entity(&base.entity, attrs));
    }
    for c in &r.connectors {
        out.push(entity(
            "connector",
            Connector {
                name: c.name.clone(),
                role: "inter-router",
                host: c.host.to_string(),
                port: c.port.to_string(),
                cost: c.cost,
                max_frame_size: 16384,
                max_session_frames: 640,
                ssl_profile: c.tls.then_some(TLS_PROFILE),
            },
        ));
    }
    for l in &r.tcp_listeners {
        out.push(entity(
            "tcpListener",
            TcpListener {
                name: l.name.clone(),
                host: "0.0.0.0",
                port: l.port.to_string(),
                address: l.address.clone(),
                site_id: r.id.clone(),
            },
        ));
    }
    for c in &r.tcp_connectors {
        out.push(entity(
            "tcpConnector",
            TcpConnector {
                name: c.name.clone(),
                host: c.host.to_string(),
                port: c.port.to_string(),
                address: c.address.clone(),
                site_id: r.id.clone(),
            },
        ));
    }
    out
}

pub fn config_json(n: &Naming, r: &Router) -> String {
    super::to_json(&config(n, r))
}
