//! A panic in any handler answers 500 (or drops that fill), is logged, and
//! never takes the worker down. Needs the `fault-injection` feature (test
//! builds: `make test` enables it).
#![cfg(feature = "fault-injection")]

mod common;
use common::*;

#[test]
fn panics_answer_500_and_the_worker_survives() {
    let origin = start_origin(&[], "");
    let cdn = start_cdn(1, origin.port, "", "");
    assert_eq!(get(cdn.port, "/small.txt").cache(), "MISS");
    for point in ["lookup", "serve", "purge"] {
        let path = if point == "purge" {
            "/purge?all=1"
        } else {
            "/small.txt"
        };
        let r = request(cdn.port, "GET", path, &[("X-Rcdn-Fault", point)]);
        assert_eq!(
            r.status,
            500,
            "{point}: {} {:?}",
            r.cache(),
            String::from_utf8_lossy(&r.body)
        );
        // The same (only) worker still serves.
        let ok = get(cdn.port, "/small.txt");
        assert_eq!((ok.status, ok.cache()), (200, "HIT"), "after {point}");
    }
    // A panic in the fill's filter drops that fill; the client still gets
    // the origin's answer.
    let r = request(cdn.port, "GET", "/big.bin", &[("X-Rcdn-Fault", "filter")]);
    assert_eq!(r.status, 200);
    assert_eq!(r.body.len(), 3 << 20);
    let log = cdn.error_log();
    for point in ["lookup", "serve", "purge", "fill header"] {
        assert!(
            log.contains(&format!("rcdn: panic in {point}")),
            "{point} not logged:\n{log}"
        );
    }
    assert!(!log.contains("exited on signal"), "{log}");
    assert!(!log.contains("[alert]") && !log.contains("[crit]"), "{log}");
}
