//! The web console: a small client of the REST API, served at `/` from files embedded in the
//! binary. It is plain JavaScript modules and CSS with no build step, so building reeve needs
//! nothing but cargo; every action it offers is a REST request (with `Reeve-Plane: web`)
//! that goes through the same `Control::submit` as every other door, and it follows
//! `GET /api/v1/events` to update itself.
//!
//! Every answer from here carries a strict Content-Security-Policy (scripts and styles from
//! this origin only, no inline code, no framing), so an API text that slipped into the page
//! as markup still could not run; the scripts also only ever set text, never HTML.

use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

/// The console's routes; the server merges them with the doors'.
pub fn router() -> Router {
    Router::new()
        .route("/", get(index))
        .route("/console/{*file}", get(asset))
}

/// Same-origin scripts, styles, images and requests only; nothing inline, no plugins, no
/// framing, no base or form redirection.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; font-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

struct Asset {
    path: &'static str,
    content_type: &'static str,
    body: &'static str,
}

macro_rules! asset {
    ($path:literal, $type:expr) => {
        Asset {
            path: $path,
            content_type: $type,
            body: include_str!(concat!("assets/", $path)),
        }
    };
}

const JS: &str = "text/javascript; charset=utf-8";

/// Every file the console is made of. `index.html` is served at `/`, the rest under
/// `/console/`.
const ASSETS: &[Asset] = &[
    asset!("index.html", "text/html; charset=utf-8"),
    asset!("style.css", "text/css; charset=utf-8"),
    asset!("icon.svg", "image/svg+xml"),
    asset!("app.js", JS),
    asset!("api.js", JS),
    asset!("dom.js", JS),
    asset!("live.js", JS),
    asset!("graph.js", JS),
    asset!("views/signin.js", JS),
    asset!("views/watches.js", JS),
    asset!("views/builds.js", JS),
    asset!("views/build.js", JS),
    asset!("views/audit.js", JS),
    asset!("views/tokens.js", JS),
];

/// The names of the embedded files, for a test that every file under `assets/` is served.
pub fn asset_paths() -> impl Iterator<Item = &'static str> {
    ASSETS.iter().map(|a| a.path)
}

fn serve(asset: &Asset) -> Response {
    let mut resp = (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static(asset.content_type),
        )],
        asset.body,
    )
        .into_response();
    let headers = resp.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(
        HeaderName::from_static("cross-origin-opener-policy"),
        HeaderValue::from_static("same-origin"),
    );
    // The files change only with the binary; revalidating is cheap and never serves a
    // console that does not match the server.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    resp
}

async fn index() -> Response {
    match ASSETS.iter().find(|a| a.path == "index.html") {
        Some(a) => serve(a),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

async fn asset(Path(file): Path<String>) -> Response {
    match ASSETS
        .iter()
        .find(|a| a.path == file && a.path != "index.html")
    {
        Some(a) => serve(a),
        None => (
            StatusCode::NOT_FOUND,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            "no such file in the console",
        )
            .into_response(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_file_under_assets_is_embedded() {
        fn walk(dir: &std::path::Path, base: &std::path::Path, out: &mut Vec<String>) {
            for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                let path = entry.path();
                if path.is_dir() {
                    walk(&path, base, out);
                } else if let Ok(rel) = path.strip_prefix(base) {
                    out.push(rel.to_string_lossy().into_owned());
                }
            }
        }
        let base = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/console/assets");
        let mut on_disk = Vec::new();
        walk(&base, &base, &mut on_disk);
        on_disk.sort();
        let mut embedded: Vec<String> = super::asset_paths().map(str::to_string).collect();
        embedded.sort();
        assert_eq!(on_disk, embedded);
    }
}
