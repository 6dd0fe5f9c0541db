//! The conformance suite every WorkloadAttestor runs: a live caller is
//! attested with selectors of the attestor's own type only, and a caller
//! that has exited is refused rather than described from a reused PID.

use std::process::Command;

use super::{PeerInfo, WorkloadAttestor};

/// Runs every case against `attestor`.
pub async fn run_all(attestor: &dyn WorkloadAttestor) {
    a_live_caller_gets_selectors_of_the_attestors_type(attestor).await;
    a_caller_that_exited_is_refused(attestor).await;
}

async fn a_live_caller_gets_selectors_of_the_attestors_type(attestor: &dyn WorkloadAttestor) {
    let me = PeerInfo::for_process(
        i32::try_from(std::process::id()).unwrap_or(i32::MAX),
        rustix::process::getuid().as_raw(),
        rustix::process::getgid().as_raw(),
    );
    let selectors = attestor
        .attest(&me)
        .await
        .unwrap_or_else(|e| panic!("{} refused a live caller: {e}", attestor.name()));
    for s in &selectors {
        assert_eq!(
            s.kind(),
            attestor.name(),
            "selector {s} is not of the attestor's type"
        );
    }
}

async fn a_caller_that_exited_is_refused(attestor: &dyn WorkloadAttestor) {
    let mut child = Command::new("true")
        .spawn()
        .unwrap_or_else(|e| panic!("spawn true: {e}"));
    let pid = i32::try_from(child.id()).unwrap_or(i32::MAX);
    // The pidfd is taken while the child lives (or is a zombie), as at
    // accept time; then it is reaped.
    let peer = PeerInfo::for_process(pid, 0, 0);
    let _ = child.wait();
    let r = attestor.attest(&peer).await;
    assert!(
        r.is_err(),
        "{} described a caller that had exited: {r:?}",
        attestor.name()
    );
}
