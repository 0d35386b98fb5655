//! A real DNS server on loopback (hickory-server) serving test zones over UDP and TCP, so
//! sender authentication is tested through the real resolver path. Also a "black hole" that
//! accepts queries and never answers, and a port where nothing listens.

use hickory_server::Server;
use hickory_server::net::runtime::{Time, TokioRuntimeProvider};
use hickory_server::proto::rr::rdata::{A, SOA, TXT};
use hickory_server::proto::rr::{LowerName, Name, RData, Record};
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::store::in_memory::InMemoryZoneHandler;
use hickory_server::zone_handler::{AxfrPolicy, Catalog, ZoneType};
use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// Counts queries, then lets the catalog answer.
struct Counting {
    catalog: Catalog,
    queries: Arc<AtomicUsize>,
}

// The trait is declared with `#[async_trait]`; this is that macro's expansion by hand.
impl RequestHandler for Counting {
    fn handle_request<'life0, 'life1, 'async_trait, R, T>(
        &'life0 self,
        request: &'life1 Request,
        response_handle: R,
    ) -> Pin<Box<dyn Future<Output = ResponseInfo> + Send + 'async_trait>>
    where
        R: ResponseHandler + 'async_trait,
        T: Time + 'async_trait,
        'life0: 'async_trait,
        'life1: 'async_trait,
        Self: 'async_trait,
    {
        self.queries.fetch_add(1, Ordering::SeqCst);
        self.catalog
            .handle_request::<R, T>(request, response_handle)
    }
}

/// One record of a test zone.
pub enum Rec<'a> {
    /// A TXT record; long values are split into 255-byte strings.
    Txt(&'a str, &'a str),
    /// An A record.
    A(&'a str, [u8; 4]),
}

/// An authoritative server for the whole test namespace (one zone at the root).
pub struct DnsServer {
    pub addr: SocketAddr,
    queries: Arc<AtomicUsize>,
    server: Option<Server<Counting>>,
}

impl DnsServer {
    /// Serve `records` (TTL 300) on 127.0.0.1, UDP and TCP on the same ephemeral port.
    pub async fn start(records: &[Rec<'_>]) -> DnsServer {
        let origin = Name::root();
        let mut zone = InMemoryZoneHandler::<TokioRuntimeProvider>::empty(
            origin.clone(),
            ZoneType::Primary,
            AxfrPolicy::Deny,
        );
        let soa = SOA::new(
            Name::from_str("ns.test.").unwrap(),
            Name::from_str("hostmaster.test.").unwrap(),
            1,
            3600,
            600,
            86400,
            60,
        );
        zone.upsert_mut(Record::from_rdata(origin.clone(), 300, RData::SOA(soa)), 1);
        for r in records {
            let record = match r {
                Rec::Txt(name, value) => {
                    let chunks = value
                        .as_bytes()
                        .chunks(255)
                        .map(|c| String::from_utf8_lossy(c).into_owned())
                        .collect();
                    Record::from_rdata(fqdn(name), 300, RData::TXT(TXT::new(chunks)))
                }
                Rec::A(name, ip) => {
                    Record::from_rdata(fqdn(name), 300, RData::A(A::from(Ipv4Addr::from(*ip))))
                }
            };
            assert!(zone.upsert_mut(record, 1), "record not inserted");
        }
        let mut catalog = Catalog::new();
        catalog.upsert(LowerName::new(&origin), vec![Arc::new(zone)]);
        let queries = Arc::new(AtomicUsize::new(0));
        let mut server = Server::new(Counting {
            catalog,
            queries: queries.clone(),
        });
        let (udp, tcp) = bind_pair().await;
        let addr = udp.local_addr().unwrap();
        server.register_socket(udp);
        server.register_listener(tcp, Duration::from_secs(5), 64 * 1024);
        DnsServer {
            addr,
            queries,
            server: Some(server),
        }
    }

    /// Queries answered so far.
    pub fn queries(&self) -> usize {
        self.queries.load(Ordering::SeqCst)
    }

    /// Stop serving (later queries get no answer: ICMP port unreachable).
    pub async fn stop(&mut self) {
        if let Some(mut s) = self.server.take() {
            let _ = s.shutdown_gracefully().await;
        }
    }
}

fn fqdn(name: &str) -> Name {
    let n = if name.ends_with('.') {
        name.to_string()
    } else {
        format!("{name}.")
    };
    Name::from_str(&n).expect("test record name")
}

/// A UDP socket and a TCP listener on the same free loopback port.
async fn bind_pair() -> (tokio::net::UdpSocket, tokio::net::TcpListener) {
    for _ in 0..50 {
        let udp = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let port = udp.local_addr().unwrap().port();
        if let Ok(tcp) = tokio::net::TcpListener::bind(("127.0.0.1", port)).await {
            return (udp, tcp);
        }
    }
    panic!("no free UDP+TCP port pair on loopback");
}

/// A nameserver that reads queries and never answers (UDP and TCP), on its own thread so
/// it outlives any test runtime.
pub struct BlackHole {
    pub addr: SocketAddr,
    _udp: std::net::UdpSocket,
    _tcp: std::net::TcpListener,
}

impl BlackHole {
    pub fn start() -> BlackHole {
        for _ in 0..50 {
            let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            let addr = udp.local_addr().unwrap();
            // A bound socket nobody reads: datagrams queue up and nothing is ever sent back.
            // The TCP listener is never accepted from: connections hang in the backlog.
            if let Ok(tcp) = std::net::TcpListener::bind(addr) {
                return BlackHole {
                    addr,
                    _udp: udp,
                    _tcp: tcp,
                };
            }
        }
        panic!("no free UDP+TCP port pair on loopback");
    }
}

/// A loopback address where no nameserver listens (queries fail at once).
pub fn nothing_listens() -> SocketAddr {
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.local_addr().unwrap()
}
