//! What the node needs from a transport, as a trait, so the window loop can
//! run over the real Noise network (`crate::net`) or, in tests, over an
//! in-process hub.

use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;

use crate::net::{Sender, Source};

/// One application message from a peer.
#[derive(Clone, Debug)]
pub struct Incoming {
    pub peer: u16,
    /// The connection it came on (`None` in-process, where a peer index is
    /// never another node's): whom its offences are charged to.
    pub from: Option<Sender>,
    pub msg_type: u8,
    pub version: u8,
    pub request_id: u64,
    pub payload: Vec<u8>,
}

impl Incoming {
    /// Whose serving budgets its requests spend ([`Sender::source`]; in
    /// process, its peer index).
    pub fn source(&self) -> Source {
        self.from
            .as_ref()
            .map_or(Source::Local(self.peer), Sender::source)
    }

    /// Whether a genesis peer or a member of the active set sent it (in
    /// process, where every peer is a genesis node: yes).
    pub fn from_member(&self) -> bool {
        self.from.as_ref().is_none_or(|f| f.member)
    }

    /// Whom an answer to it goes to ([`Transport::reply`]).
    pub fn asker(&self) -> Asker {
        Asker {
            peer: self.peer,
            conn: self.from.as_ref().map(|f| f.conn),
        }
    }
}

/// Whom an answer goes to: the asker's slot and the connection it asked on
/// (`None` in process).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Asker {
    pub peer: u16,
    pub conn: Option<u64>,
}

/// Connection health for the status snapshot and the devnet table.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct PeerSummary {
    pub connected: usize,
    pub heartbeats_ok_5m: u64,
    pub heartbeat_errors_5m: u64,
}

/// Sending side of a transport.
pub trait Transport: Send + Sync {
    /// Queues a message for one peer; an error means it was dropped.
    fn send(
        &self,
        peer: u16,
        msg_type: u8,
        request_id: u64,
        payload: Vec<u8>,
    ) -> Result<(), String>;
    /// Queues an answer for `to`: only on the connection it asked on, so
    /// that another connection now in its slot never gets it (an error
    /// once that connection has closed).
    fn reply(
        &self,
        to: Asker,
        msg_type: u8,
        request_id: u64,
        payload: Vec<u8>,
    ) -> Result<(), String> {
        self.send(to.peer, msg_type, request_id, payload)
    }
    /// Queues a message for every connected peer.
    fn broadcast(&self, msg_type: u8, payload: Vec<u8>);
    fn summary(&self) -> PeerSummary {
        PeerSummary::default()
    }
    /// Every peer's connection and heartbeat counters (none in-process).
    fn peers(&self) -> Vec<crate::net::PeerStats> {
        Vec::new()
    }
    /// Transport counters since start.
    fn totals(&self) -> crate::net::NetTotals {
        crate::net::NetTotals::default()
    }
    /// Bytes queued for `peer` and not yet written.
    fn queued_bytes(&self, _peer: u16) -> usize {
        0
    }
    /// Who is connected as `peer` (node id, genesis peer or not, member or
    /// not); `None` when nobody is. Peers `0..genesis peer count` are the
    /// genesis peers; higher ids are connections of other nodes, reused
    /// after they close (watch [`Transport::link_events`]).
    fn link(&self, _peer: u16) -> Option<crate::net::PeerLink> {
        None
    }
    /// Every live connection.
    fn links(&self) -> Vec<crate::net::PeerLink> {
        Vec::new()
    }
    /// Replaces the set of node ids that get member connection slots (the
    /// active set; the genesis peers to start with).
    fn set_members(&self, _ids: &[crate::net::NodeId]) {}
    /// `from` (the sender of an [`Incoming`], whoever holds its slot now)
    /// committed `offence` (attributable: see
    /// [`crate::net::misbehaviour`]); enough of them ban it.
    fn offence(&self, _from: &Sender, _offence: crate::net::misbehaviour::Offence) {}
    /// Connections opening and closing, from now on (`None` in-process).
    fn link_events(&self) -> Option<tokio::sync::broadcast::Receiver<crate::net::LinkEvent>> {
        None
    }
}

/// An in-process transport: every node's inbound queue in one table.
#[derive(Clone, Default)]
pub struct LocalHub {
    queues: Arc<Mutex<Vec<Option<mpsc::UnboundedSender<Incoming>>>>>,
}

/// One node's handle on a [`LocalHub`].
pub struct LocalPort {
    hub: LocalHub,
    me: u16,
}

impl LocalHub {
    /// Attaches node `me` (replacing a previous attachment: a restart).
    pub fn attach(&self, me: u16) -> (LocalPort, mpsc::Receiver<Incoming>) {
        let (tx, mut urx) = mpsc::unbounded_channel();
        let (btx, brx) = mpsc::channel(1024);
        tokio::spawn(async move {
            while let Some(m) = urx.recv().await {
                if btx.send(m).await.is_err() {
                    break;
                }
            }
        });
        let mut q = self.queues.lock().unwrap();
        if q.len() <= me as usize {
            q.resize(me as usize + 1, None);
        }
        q[me as usize] = Some(tx);
        (
            LocalPort {
                hub: self.clone(),
                me,
            },
            brx,
        )
    }

    /// Detaches node `me` (it stops receiving: a crash or a shutdown).
    pub fn detach(&self, me: u16) {
        if let Some(q) = self.queues.lock().unwrap().get_mut(me as usize) {
            *q = None;
        }
    }
}

impl Transport for LocalPort {
    fn send(
        &self,
        peer: u16,
        msg_type: u8,
        request_id: u64,
        payload: Vec<u8>,
    ) -> Result<(), String> {
        let q = self.hub.queues.lock().unwrap();
        let tx = q
            .get(peer as usize)
            .and_then(|t| t.as_ref())
            .ok_or_else(|| format!("peer {peer} is not connected"))?;
        tx.send(Incoming {
            peer: self.me,
            from: None,
            msg_type,
            version: crate::messages::MSG_VERSION,
            request_id,
            payload,
        })
        .map_err(|_| format!("peer {peer} is gone"))
    }

    fn broadcast(&self, msg_type: u8, payload: Vec<u8>) {
        let n = self.hub.queues.lock().unwrap().len();
        for peer in 0..n as u16 {
            if peer != self.me {
                let _ = self.send(peer, msg_type, 0, payload.clone());
            }
        }
    }

    fn summary(&self) -> PeerSummary {
        let q = self.hub.queues.lock().unwrap();
        PeerSummary {
            connected: q
                .iter()
                .enumerate()
                .filter(|(i, t)| *i != self.me as usize && t.is_some())
                .count(),
            ..PeerSummary::default()
        }
    }
}
