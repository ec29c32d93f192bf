//! Element Web, which also serves `/.well-known/matrix/*` for the server name.
//!
//! The well-known documents need a JSON content type and a CORS header, which neither HAProxy's
//! generated config nor a Gateway route can produce; Element's image is nginx, so its server block
//! (mounted as the image's nginx template) serves them from a ConfigMap as well. One small web
//! server for two static jobs; the edge sends `<domain>/.well-known/matrix` here.
//!
//! config.json references no outside service unless the config lists it in
//! `synapse.element_external_services` (seed 004 issue 6.3).

use k8s_openapi::api::core::v1::{Container, PodSpec};
use mxstack_spec::{Component, ElementExternalService, Feature};
use mxstack_topology::registry as reg;
use serde_json::{json, Map, Value};

use crate::meta::*;
use crate::{Ctx, Out, Phase};

const FILE: &str = "element.yaml";
const CONFIG: &str = "element-config";
/// `nginx` in the nginx-unprivileged base of the Element image.
const NGINX_UID: i64 = 101;
const WELL_KNOWN_DIR: &str = "/srv/well-known";

pub fn selector() -> Labels {
    map(&[(LABEL_NAME, reg::element::COMPONENT.name())])
}

/// `/.well-known/matrix/client`.
pub fn well_known_client(ctx: &Ctx) -> Value {
    let hosts = ctx.cfg.hostnames();
    let mut v = json!({ "m.homeserver": { "base_url": format!("https://{}", hosts.matrix) } });
    if ctx.has(Feature::Calls) {
        // MatrixRTC focus for Element Call (MSC4143): our authorization service, which hands out
        // tokens for our LiveKit.
        v["org.matrix.msc4143.rtc_foci"] = json!([mxstack_topology::rtc_auth::focus(ctx.cfg)]);
    }
    v
}

/// `/.well-known/matrix/server`: only with federation (delegation to the matrix host on 443).
pub fn well_known_server(ctx: &Ctx) -> Option<Value> {
    ctx.has(Feature::Federation)
        .then(|| json!({ "m.server": format!("{}:443", ctx.cfg.hostnames().matrix) }))
}

pub fn config_json(ctx: &Ctx) -> Value {
    let c = ctx.cfg;
    let hosts = c.hostnames();
    let external = &c.synapse.element_external_services;
    let allowed = |s: ElementExternalService| external.contains(&s);
    let mut server = json!({
        "m.homeserver": { "base_url": format!("https://{}", hosts.matrix), "server_name": c.domain },
    });
    let mut cfg = Map::new();
    let mut put = |k: &str, v: Value| {
        cfg.insert(k.to_string(), v);
    };
    if allowed(ElementExternalService::IdentityServer) {
        server["m.identity_server"] = json!({ "base_url": "https://vector.im" });
    } else {
        put("disable_3pid_login", json!(true));
    }
    put("default_server_config", server);
    put("disable_custom_urls", json!(true));
    put("disable_guests", json!(true));
    put("show_labs_settings", json!(false));
    put("default_theme", json!("light"));
    // Links to rooms and users point at our Element, not matrix.to.
    put(
        "permalink_prefix",
        json!(format!("https://{}", hosts.element)),
    );
    if allowed(ElementExternalService::Integrations) {
        put("integrations_ui_url", json!("https://scalar.vector.im/"));
        put(
            "integrations_rest_url",
            json!("https://scalar.vector.im/api"),
        );
        put(
            "integrations_widgets_urls",
            json!(["https://scalar.vector.im/api"]),
        );
    } else {
        put("integrations_ui_url", json!(""));
        put("integrations_rest_url", json!(""));
        put("integrations_widgets_urls", json!([]));
    }
    if allowed(ElementExternalService::BugReports) {
        put(
            "bug_report_endpoint_url",
            json!("https://element.io/bugreports/submit"),
        );
    }
    let mut directory = vec![c.domain.clone()];
    if allowed(ElementExternalService::PublicRoomDirectory) {
        directory.push("matrix.org".into());
    }
    put("room_directory", json!({ "servers": directory }));
    // An empty object replaces Element's default Jitsi domain (meet.element.io).
    put("jitsi", json!({}));
    if ctx.has(Feature::Calls) {
        // Element Call for every call (no legacy 1:1 WebRTC, no Jitsi). Element Web serves the
        // Element Call it bundles from its own origin (`/widgets/element-call/`) and takes the
        // LiveKit focus from .well-known: no `url` here, so nothing points at call.element.io.
        put(
            "element_call",
            json!({ "use_exclusively": true, "participant_limit": 8, "brand": "Element Call" }),
        );
        put("features", json!({ "feature_group_calls": true }));
    } else {
        // Replaces Element's default call.element.io.
        put("element_call", json!({}));
        put("features", json!({ "feature_group_calls": false }));
    }
    put(
        "setting_defaults",
        json!({
            "UIFeature.shareSocial": false,
            "UIFeature.feedback": false,
            "UIFeature.identityServer": allowed(ElementExternalService::IdentityServer),
            "UIFeature.thirdPartyId": allowed(ElementExternalService::IdentityServer),
            "UIFeature.registration": c.synapse.enable_registration,
            "UIFeature.passwordReset": false,
            "UIFeature.locationSharing": false,
        }),
    );
    Value::Object(cfg)
}

/// The nginx server block: Element's files, config.json and the well-known documents.
fn nginx_template(with_server: bool) -> String {
    let mut s = format!(
        "# Generated by mxstack. Element Web and /.well-known/matrix for the server name.\n\
         server {{\n    listen {port};\n    listen [::]:{port};\n    server_name _;\n    root /app;\n\n    \
         add_header X-Frame-Options SAMEORIGIN always;\n    add_header X-Content-Type-Options nosniff always;\n    \
         add_header Content-Security-Policy \"frame-ancestors 'self'\" always;\n\n    \
         location = /healthz {{ access_log off; return 200 'ok'; }}\n\n    \
         location = /.well-known/matrix/client {{\n        default_type application/json;\n        \
         add_header Access-Control-Allow-Origin \"*\" always;\n        alias {WELL_KNOWN_DIR}/client.json;\n    }}\n",
        port = reg::element::HTTP.number,
    );
    if with_server {
        s.push_str(&format!(
            "    location = /.well-known/matrix/server {{\n        default_type application/json;\n        \
             add_header Access-Control-Allow-Origin \"*\" always;\n        alias {WELL_KNOWN_DIR}/server.json;\n    }}\n"
        ));
    }
    s.push_str(
        "    location /.well-known/ { return 404; }\n\n    \
         location = /config.json { add_header Cache-Control \"no-cache\" always; }\n    \
         location = /index.html { add_header Cache-Control \"no-cache\" always; }\n    \
         location / { try_files $uri $uri/ /index.html; }\n}\n",
    );
    s
}

pub fn render(ctx: &Ctx, out: &mut Out) {
    let pretty = |v: &Value| serde_json::to_string_pretty(v).expect("json") + "\n";
    let server = well_known_server(ctx);
    let mut data = map(&[
        ("config.json", &pretty(&config_json(ctx))),
        ("default.conf.template", &nginx_template(server.is_some())),
        ("client.json", &pretty(&well_known_client(ctx))),
    ]);
    if let Some(s) = &server {
        data.insert("server.json".into(), pretty(s));
    }
    let hash = config_hash(&data.values().map(String::as_str).collect::<Vec<_>>());
    let mut well_known_items = vec![("client.json", "client.json")];
    if server.is_some() {
        well_known_items.push(("server.json", "server.json"));
    }
    out.add(
        Phase::Main,
        FILE,
        config_map(ctx, CONFIG, reg::element::COMPONENT.name(), data),
    );
    let sel = selector();
    out.add(
        Phase::Main,
        FILE,
        service(
            ctx,
            reg::element::COMPONENT.name(),
            reg::element::COMPONENT.name(),
            &sel,
            vec![service_port_of(reg::element::HTTP)],
            false,
        ),
    );
    let mut well_known = volume_config_map("well-known", CONFIG);
    if let Some(cm) = well_known.config_map.as_mut() {
        cm.items = Some(
            well_known_items
                .iter()
                .map(|(k, p)| k8s_openapi::api::core::v1::KeyToPath {
                    key: k.to_string(),
                    path: p.to_string(),
                    ..Default::default()
                })
                .collect(),
        );
    }
    let c = Container {
        ports: Some(vec![container_port_of(reg::element::HTTP)]),
        resources: Some(resources(
            &ctx.t.sizing.resources_for(Component::Element, ctx.cfg),
        )),
        readiness_probe: Some(ready_probe(&reg::element::COMPONENT, 5, 3)),
        liveness_probe: Some(live_probe(&reg::element::COMPONENT, 10, 6)),
        volume_mounts: Some(vec![
            mount_file("config", "/app/config.json", "config.json"),
            // nginx's entrypoint renders templates from here into conf.d at start.
            mount_file(
                "config",
                "/etc/nginx/templates/default.conf.template",
                "default.conf.template",
            ),
            mount("well-known", WELL_KNOWN_DIR),
            mount_rw("conf-d", "/etc/nginx/conf.d"),
            mount_rw("tmp", "/tmp"),
        ]),
        ..container(reg::element::COMPONENT.name(), &ctx.cfg.images.element)
    };
    let pod = PodSpec {
        containers: vec![c],
        volumes: Some(vec![
            volume_config_map("config", CONFIG),
            well_known,
            volume_empty("conf-d"),
            volume_empty("tmp"),
        ]),
        security_context: Some(pod_security(NGINX_UID)),
        affinity: Some(spread(&sel)),
        automount_service_account_token: Some(false),
        ..Default::default()
    };
    let mut w = Workload::new(
        reg::element::COMPONENT.name(),
        reg::element::COMPONENT.name(),
        2,
        sel,
        pod,
    );
    w.config_hash = Some(hash);
    out.add(Phase::Main, FILE, w.deployment(ctx));
    out.add(Phase::Main, FILE, w.pdb(ctx));
}
