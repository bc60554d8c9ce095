//! `kind = "zmq"` settings.

use std::time::Duration;

use serde::Deserialize;
use tb_codec::{CodecKind, InterceptorConfig};

/// `kind = "zmq"`: one ZeroMQ socket, bound or connected.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ZmqConfig {
    /// The socket type: `pull`, `sub`, `rep`, `router` receive; `push`, `pub` send; `req`
    /// sends each event as a request and receives its reply; `dealer` does both.
    pub socket: SocketKind,
    /// Where to listen: `tcp://127.0.0.1:5555`. Set `bind` or `connect`.
    #[serde(default)]
    pub bind: Option<String>,
    /// Where the peer listens: `tcp://127.0.0.1:5555`. Set `bind` or `connect`.
    #[serde(default)]
    pub connect: Option<String>,
    /// `sub`: topic prefixes to receive; every message when left out.
    #[serde(default)]
    pub subscribe: Vec<String>,
    /// `pub`: the topic each message is sent under (a first frame), a template over the
    /// event such as `"sensors.{{ .room }}"`; one frame, the body, when left out.
    #[serde(default)]
    pub topic: Option<String>,
    /// `req`: how long a reply may take; the event is errored past it and the socket made
    /// again (a REQ socket cannot send before it has its reply).
    #[serde(default = "default_request_timeout", with = "humantime_serde")]
    pub request_timeout: Duration,
    /// Events received and not yet acknowledged, at most: receiving pauses at that, and
    /// ZeroMQ's own queues push back on the peers.
    #[serde(default = "default_max_pending")]
    pub max_pending: usize,
    /// How a message's body (its last frame) becomes values and back: json | msgpack | csv
    /// | string | bytes.
    #[serde(default = "crate::core::defaults::codec")]
    pub codec: CodecKind,
    /// Byte transforms of each body; none by default (a message is one frame).
    #[serde(default)]
    pub interceptors: Vec<InterceptorConfig>,
    /// First wait before connecting (or binding) again; doubles up to `reconnect_max`.
    #[serde(
        default = "crate::core::defaults::reconnect_min",
        with = "humantime_serde"
    )]
    pub reconnect_min: Duration,
    /// Longest wait between attempts.
    #[serde(
        default = "crate::core::defaults::reconnect_max",
        with = "humantime_serde"
    )]
    pub reconnect_max: Duration,
}

/// The ZeroMQ socket types.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SocketKind {
    /// Receives what PUSH peers send, fairly queued.
    Pull,
    /// Sends to PULL peers, round robin.
    Push,
    /// Sends to every SUB peer whose prefix matches.
    Pub,
    /// Receives what PUB peers send under the subscribed prefixes.
    Sub,
    /// Sends each event as a request to a REP (or ROUTER) peer; the reply becomes an event.
    Req,
    /// Receives requests from REQ peers; each reply goes back to the peer that asked.
    Rep,
    /// Sends to and receives from ROUTER (or DEALER) peers.
    Dealer,
    /// Receives from DEALER and REQ peers; each reply goes back to the peer that sent.
    Router,
}

impl SocketKind {
    /// Whether it takes messages from peers.
    pub fn receives(self) -> bool {
        !matches!(self, Self::Push | Self::Pub)
    }

    /// Whether it sends what its `inputs` bring.
    pub fn sends(self) -> bool {
        !matches!(self, Self::Pull | Self::Sub)
    }

    /// Whether what it sends is only replies to what it received.
    pub fn replies(self) -> bool {
        matches!(self, Self::Rep | Self::Router)
    }
}

fn default_request_timeout() -> Duration {
    Duration::from_secs(30)
}

fn default_max_pending() -> usize {
    4_096
}
