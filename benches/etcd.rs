//! Lookup latency through `discovery::Etcd` against a direct etcd-client range request of the
//! same prefix, in one run, against a 1-member etcd on 127.0.0.1 (Debian's `etcd`, started by
//! the bench, data in a temporary directory) holding three published replicas.
//!
//! - `direct` (the baseline): the same request made directly, `KvClient::get(prefix,
//!   with_prefix().with_serializable())` on etcd-client's client, the values left unparsed.
//! - `direct_linearizable` (for scale, not a baseline): the same without `with_serializable`,
//!   the default of etcd-client: a read that goes through the leader.
//! - `discovery`: `Etcd::call(())` (a clone of the lookup per call, as a persistent connection
//!   makes one call per attempt): the same serializable request, under a timeout, the values
//!   parsed as `SocketAddr`, the next one picked in turn.
//!
//! The table at the end gives each mean per lookup and its ratio to `direct`. Without etcd the
//! bench says how to install it and measures nothing.
//!
//! ```text
//! cargo bench -p tower-persistent-benches --bench etcd
//! ```

#[path = "../tests/support/etcd.rs"]
mod etcd;
#[path = "../tests/support/ports.rs"]
mod ports;
#[allow(dead_code)]
#[path = "support/ratios.rs"]
mod ratios;
#[path = "support/table.rs"]
mod table;
#[path = "../tests/support/temp.rs"]
mod temp;

use std::net::SocketAddr;
use std::time::Duration;

use criterion::Criterion;
use etcd::{Cluster, INSTALL, etcd_binary};
use table::{Ratio, Row};
use tower::ServiceExt;
use tower_persistent::discovery::Etcd;

const GROUP: &str = "etcd_lookup";
const PREFIX: &str = "/services/orders/";

fn main() {
    // Estimates that criterion wrote before this run are not this run's.
    ratios::start();
    let Some(binary) = etcd_binary() else {
        eprintln!("{INSTALL}; nothing measured");
        return;
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (cluster, discovery, publications) = runtime.block_on(async {
        let cluster = Cluster::start(&binary, 1).await.expect("start etcd");
        let discovery = Etcd::connect(&cluster.endpoints(), PREFIX)
            .await
            .unwrap()
            .addresses::<SocketAddr>();
        let mut publications = Vec::new();
        for i in 0..3u16 {
            let address = SocketAddr::from(([127, 0, 0, 1], 7000 + i));
            publications.push(
                discovery
                    .publish(&format!("replica-{i}"), address, Duration::from_secs(60))
                    .await
                    .unwrap(),
            );
        }
        (cluster, discovery, publications)
    });

    let mut criterion = Criterion::default().configure_from_args();
    let mut group = criterion.benchmark_group(GROUP);
    let mut kv = discovery.client().kv_client();
    for (name, serializable) in [("direct", true), ("direct_linearizable", false)] {
        group.bench_function(name, |b| {
            b.to_async(&runtime).iter(|| {
                let mut kv = kv.clone();
                async move {
                    let mut options = etcd_client::GetOptions::new().with_prefix();
                    if serializable {
                        options = options.with_serializable();
                    }
                    let answer = kv.get(PREFIX, Some(options)).await.unwrap();
                    assert_eq!(answer.kvs().len(), 3);
                }
            })
        });
    }
    group.bench_function("discovery", |b| {
        b.to_async(&runtime).iter(|| {
            let lookup = discovery.clone();
            async move {
                let address = lookup.oneshot(()).await.unwrap();
                assert_eq!(address.ip(), std::net::Ipv4Addr::LOCALHOST);
            }
        })
    });
    group.finish();
    let _ = &mut kv;
    criterion.final_summary();

    table::print(
        "etcd lookup: mean per lookup and ratio to a direct etcd-client get",
        GROUP,
        &[
            Row {
                run: "discovery",
                baseline: "direct",
                note: String::new(),
            },
            Row {
                run: "direct_linearizable",
                baseline: "direct",
                note: String::new(),
            },
        ],
        "µs",
        1e3,
        Ratio::Time,
    );
    runtime.block_on(async move {
        for publication in publications {
            publication.withdraw().await.unwrap();
        }
        drop(cluster);
    });
}
