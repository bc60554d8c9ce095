//! One ZeroMQ socket of any type behind one type, so the run loop is written once. `rep`
//! is a ROUTER speaking the REQ envelope, so requests from many peers are served at once
//! and each reply still finds its peer.

use zeromq::prelude::*;
use zeromq::{SocketEvent, ZmqMessage, ZmqResult};

use super::config::SocketKind;

/// A socket of the configured type.
pub(super) enum Sock {
    Pull(zeromq::PullSocket),
    Push(zeromq::PushSocket),
    Pub(zeromq::PubSocket),
    Sub(zeromq::SubSocket),
    Req(zeromq::ReqSocket),
    Router(zeromq::RouterSocket),
    Dealer(zeromq::DealerSocket),
}

/// Runs `$body` with `$socket` bound to whichever socket `$sock` holds.
macro_rules! each_socket {
    ($sock:expr, $socket:ident => $body:expr) => {
        match $sock {
            Sock::Pull($socket) => $body,
            Sock::Push($socket) => $body,
            Sock::Pub($socket) => $body,
            Sock::Sub($socket) => $body,
            Sock::Req($socket) => $body,
            Sock::Router($socket) => $body,
            Sock::Dealer($socket) => $body,
        }
    };
}

impl Sock {
    pub(super) fn new(kind: SocketKind) -> Self {
        match kind {
            SocketKind::Pull => Self::Pull(zeromq::PullSocket::new()),
            SocketKind::Push => Self::Push(zeromq::PushSocket::new()),
            SocketKind::Pub => Self::Pub(zeromq::PubSocket::new()),
            SocketKind::Sub => Self::Sub(zeromq::SubSocket::new()),
            SocketKind::Req => Self::Req(zeromq::ReqSocket::new()),
            SocketKind::Rep | SocketKind::Router => Self::Router(zeromq::RouterSocket::new()),
            SocketKind::Dealer => Self::Dealer(zeromq::DealerSocket::new()),
        }
    }

    pub(super) async fn bind(&mut self, endpoint: &str) -> ZmqResult<()> {
        each_socket!(self, socket => socket.bind(endpoint).await.map(drop))
    }

    pub(super) async fn connect(&mut self, endpoint: &str) -> ZmqResult<()> {
        each_socket!(self, socket => socket.connect(endpoint).await)
    }

    /// Connection events: a connected socket is made again when its peer goes.
    pub(super) fn monitor(&mut self) -> futures::channel::mpsc::Receiver<SocketEvent> {
        each_socket!(self, socket => socket.monitor())
    }

    /// `sub`: receive messages under `prefix`.
    pub(super) async fn subscribe(&mut self, prefix: &str) -> ZmqResult<()> {
        match self {
            Self::Sub(socket) => socket.subscribe(prefix).await,
            _ => Ok(()),
        }
    }

    /// The next message; never resolves for a socket that only sends.
    pub(super) async fn recv(&mut self) -> ZmqResult<ZmqMessage> {
        match self {
            Self::Pull(socket) => socket.recv().await,
            Self::Sub(socket) => socket.recv().await,
            Self::Req(socket) => socket.recv().await,
            Self::Router(socket) => socket.recv().await,
            Self::Dealer(socket) => socket.recv().await,
            Self::Push(_) | Self::Pub(_) => std::future::pending().await,
        }
    }

    pub(super) async fn send(&mut self, message: ZmqMessage) -> ZmqResult<()> {
        match self {
            Self::Push(socket) => socket.send(message).await,
            Self::Pub(socket) => socket.send(message).await,
            Self::Req(socket) => socket.send(message).await,
            Self::Router(socket) => socket.send(message).await,
            Self::Dealer(socket) => socket.send(message).await,
            Self::Pull(_) | Self::Sub(_) => {
                Err(zeromq::ZmqError::Other("this socket only receives"))
            }
        }
    }
}
