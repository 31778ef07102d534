//! A persistent connection riding out server deaths and moves, with every event printed.
//!
//! Three line-protocol servers take turns on 127.0.0.1, each on its own port, published through
//! a tiny "discovery" (a shared address the client reads before every connection attempt). The
//! client sends a request every 100 ms through the persistent connection and prints each event
//! and each answer. It ends by itself after about four seconds with a summary.
//!
//! ```text
//! cargo run --example reconnect
//! ```

#[path = "../tests/support/line.rs"]
mod line;

use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use line::{LineConn, LineServer, closed_port};
use tokio::time::{Instant, sleep_until, timeout};
use tower::{ServiceBuilder, ServiceExt, service_fn};
use tower_persistent::{Event, PersistentLayer};

fn stamp(start: Instant) -> String {
    format!("[{:6.3}s]", start.elapsed().as_secs_f64())
}

#[tokio::main]
async fn main() -> io::Result<()> {
    let start = Instant::now();
    let alpha = LineServer::start("alpha").await?;
    let published = Arc::new(Mutex::new(alpha.address));
    println!("{} alpha listens on {}", stamp(start), alpha.address);

    // Discovery: the address is read again before every connection attempt.
    let discovery = published.clone();
    let get_address = service_fn(move |()| {
        let address = *discovery.lock().unwrap();
        async move { Ok::<SocketAddr, io::Error>(address) }
    });
    let layer = PersistentLayer::new("echo", get_address)
        .retry_delay(|| Duration::from_millis(300))
        .on_event(move |event: Event<SocketAddr, LineConn>| async move {
            // Events display as the logs say them; the connection's peer is added.
            let what = match &event {
                Event::Connected(conn) => format!("connected to {}", conn.peer),
                other => other.to_string(),
            };
            println!("{} EVENT {what}", stamp(start));
        });
    let client = ServiceBuilder::new()
        .layer(layer)
        .service(service_fn(LineConn::connect));

    // The script of the servers' lives, run beside the requests.
    let script = {
        let published = published.clone();
        tokio::spawn(async move {
            sleep_until(start + Duration::from_millis(1000)).await;
            alpha.stop().await;
            let beta = LineServer::start("beta").await?;
            *published.lock().unwrap() = beta.address;
            println!(
                "{} alpha stopped; beta listens on {}",
                stamp(start),
                beta.address
            );

            sleep_until(start + Duration::from_millis(2000)).await;
            let nowhere = closed_port().await;
            *published.lock().unwrap() = nowhere;
            beta.stop().await;
            println!(
                "{} beta stopped; discovery points at {nowhere}, where nothing listens",
                stamp(start)
            );

            sleep_until(start + Duration::from_millis(2800)).await;
            let gamma = LineServer::start("gamma").await?;
            *published.lock().unwrap() = gamma.address;
            println!("{} gamma listens on {}", stamp(start), gamma.address);
            sleep_until(start + Duration::from_millis(4000)).await;
            gamma.stop().await;
            io::Result::Ok(())
        })
    };

    let (mut sent, mut answered, mut failed) = (0, 0, 0);
    let mut last_answer = start;
    let mut longest_gap = Duration::ZERO;
    while start.elapsed() < Duration::from_millis(3800) {
        let tick = Instant::now();
        sent += 1;
        let request = client.clone().oneshot(format!("request {sent}"));
        match timeout(Duration::from_millis(250), request).await {
            Ok(Ok(answer)) => {
                answered += 1;
                let now = Instant::now();
                longest_gap = longest_gap.max(now - last_answer);
                last_answer = now;
                println!("{}       {answer}", stamp(start));
            }
            Ok(Err(error)) => {
                failed += 1;
                println!("{}       request {sent} failed: {error}", stamp(start));
            }
            Err(_) => {
                failed += 1;
                println!(
                    "{}       request {sent}: no connection within 250 ms",
                    stamp(start)
                );
            }
        }
        sleep_until(tick + Duration::from_millis(100)).await;
    }

    client.close().await;
    script.await.expect("the server script panicked")?;
    println!();
    println!("requests sent:     {sent}");
    println!("answered:          {answered}");
    println!("failed:            {failed}");
    println!(
        "longest gap without an answer: {} ms",
        longest_gap.as_millis()
    );
    Ok(())
}
