//! nginx.conf of an ingress (rendered from `templates/nginx.conf.j2`). Every path nginx
//! writes (pid, logs, temp files) is inside the emulation's state directory.

use super::paths::runtime;
use super::templates;
use crate::model::{Ingress, Naming};
use serde::Serialize;

#[derive(Serialize)]
struct Ctx<'a> {
    name: &'a str,
    worker: &'a str,
    dir: String,
    port: u16,
    routes: Vec<Route>,
}

#[derive(Serialize)]
struct Route {
    path: String,
    upstream: String,
    service: String,
}

pub fn conf(n: &Naming, ing: &Ingress) -> String {
    templates::render(
        "nginx.conf.j2",
        Ctx {
            name: &ing.name,
            worker: &ing.worker,
            dir: runtime::ingress_dir(n, ing),
            port: ing.port,
            routes: ing
                .routes
                .iter()
                .map(|r| Route {
                    path: r.path.clone(),
                    upstream: format!("{}:{}", r.vip, r.port),
                    service: r.service.clone(),
                })
                .collect(),
        },
    )
}
