//! The HTTP side of the status server (axum).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::{Html, IntoResponse};
use axum::routing::get;
use axum::{Json, Router};
use tokio::net::TcpListener;
use tracing::{info, warn};

use super::guard::GuardedListener;
use super::{metrics, StatusError, StatusSnapshot, StatusSource};

/// The status page: one self-contained HTML file (no external assets) that
/// polls `/status` itself.
pub const PAGE: &str = include_str!("page.html");

/// Binds `addr`, serves `/` (the status page), `/status` and `/metrics` until
/// `shutdown` resolves, and returns the bound address (so port 0 works).
/// Connections are bounded in number, request bytes and time (see
/// [`super::guard`]).
pub async fn serve(
    addr: SocketAddr,
    source: Arc<dyn Fn() -> StatusSnapshot + Send + Sync>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<SocketAddr, StatusError> {
    let bind = |source| StatusError::Bind { addr, source };
    let listener = TcpListener::bind(addr).await.map_err(bind)?;
    let local = listener.local_addr().map_err(bind)?;
    let app = Router::new()
        .route("/", get(page))
        .route("/status", get(status))
        .route("/metrics", get(metrics_text))
        .with_state(source);
    tokio::spawn(async move {
        if let Err(e) = axum::serve(GuardedListener::new(listener), app)
            .with_graceful_shutdown(shutdown)
            .await
        {
            warn!(error = %e, "status server stopped");
        }
    });
    info!(addr = %local, "status server listening");
    Ok(local)
}

async fn page() -> Html<&'static str> {
    Html(PAGE)
}

async fn status(State(source): State<StatusSource>) -> Json<StatusSnapshot> {
    Json(source())
}

async fn metrics_text(State(source): State<StatusSource>) -> impl IntoResponse {
    (
        [(CONTENT_TYPE, metrics::CONTENT_TYPE)],
        metrics::render(&source()),
    )
}
