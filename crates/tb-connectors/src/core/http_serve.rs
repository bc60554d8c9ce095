//! Serving an axum router on a listener, for the HTTP ingest ports and the API: HTTP/1 and
//! HTTP/2 (with upgrades, for WebSocket), each connection's remote address as
//! `ConnectInfo`, and the timeout `axum::serve` does not set.
//!
//! `header_timeout` is hyper's header read timeout: it runs from the moment a connection
//! waits for a request (when it opens, and again after each response) until that request's
//! headers are complete. So it closes a connection that sends nothing, one that trickles its
//! headers, and a keep-alive connection left idle between requests. Bodies have their own
//! timeout where they are read.

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower::Service;

/// How long to wait after a failed accept (out of file descriptors) before the next one.
const ACCEPT_PAUSE: Duration = Duration::from_millis(50);

/// Serves `router` on `listener` until `stop` is cancelled; then stops accepting, lets every
/// request in flight finish, and returns once every connection has closed.
pub async fn serve_http(
    listener: TcpListener,
    router: Router,
    header_timeout: Duration,
    stop: CancellationToken,
) {
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .enable_connect_protocol();
    let graceful = GracefulShutdown::new();
    let mut make_service = router.into_make_service_with_connect_info::<SocketAddr>();
    loop {
        let (socket, remote) = tokio::select! {
            biased;
            () = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(%error, "Accept failed.");
                    tokio::time::sleep(ACCEPT_PAUSE).await;
                    continue;
                }
            },
        };
        let _ = socket.set_nodelay(true);
        let Ok(service) = make_service.call(remote).await;
        let (builder, watcher, stop) = (builder.clone(), graceful.watcher(), stop.clone());
        tokio::spawn(async move {
            // hyper reads the protocol version before its header timer starts: a
            // connection that sends nothing at all is closed here.
            let mut first = [0u8; 1];
            tokio::select! {
                biased;
                () = stop.cancelled() => return,
                peeked = tokio::time::timeout(header_timeout, socket.peek(&mut first)) => {
                    if !matches!(peeked, Ok(Ok(read)) if read > 0) {
                        return;
                    }
                }
            }
            let service = TowerToHyperService::new(service);
            let connection = builder.serve_connection_with_upgrades(TokioIo::new(socket), service);
            if let Err(error) = watcher.watch(connection.into_owned()).await {
                tracing::trace!(%remote, %error, "Connection ended with an error.");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
}
