use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::decide::permit::Stop;
use crate::k8s::ApiContact;
use crate::peers::serve_test_peer;

const KEY: &str = "0123456789abcdef0123";
const T: Duration = Duration::from_secs(5);
const BOOT: &str = "boot-1";

fn key() -> PeerKey {
    PeerKey::from_bytes(KEY.as_bytes()).unwrap()
}

/// A fresh state directory of this test's own.
fn state_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("kf-grants-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn renewal(node: &str) -> Renewal {
    Renewal {
        node: node.into(),
        boot: "b".into(),
        round: 1,
        set_version: 3,
        credit: Duration::from_secs(10),
        watchdog_timeout: Duration::from_secs(5),
    }
}

fn revoke(node: &str) -> Stop {
    Stop::Revoke {
        node: node.into(),
        fencing: 1,
    }
}

async fn serve(grants: Arc<Grants>) -> String {
    serve_test_peer(
        KEY,
        "http://127.0.0.1:9",
        ApiContact::default(),
        unix_now,
        Some(grants),
    )
    .await
}

/// A grantor with its memory in `dir`, started with no quarantine.
fn grants_in(dir: &std::path::Path) -> Arc<Grants> {
    Grants::start(Some(memory::path(dir, "me")), Some(BOOT), Duration::ZERO).unwrap()
}

#[tokio::test]
async fn a_renewal_is_granted_until_the_node_is_revoked() {
    let dir = state_dir("revoke");
    let addr = serve(grants_in(&dir)).await;
    let a = send_renewal(&addr, &key(), &renewal("x"), T).await.unwrap();
    assert_eq!(a, Answer::Granted);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let ack = send_stop(&addr, &key(), &revoke("x"), T).await.unwrap();
    // The age of the last grant, and the timings that grant carried.
    assert!(ack.since_last_grant >= Duration::from_millis(50), "{ack:?}");
    assert!(ack.since_last_grant < T, "{ack:?}");
    assert_eq!(ack.credit, Some(Duration::from_secs(10)));
    assert_eq!(ack.watchdog_timeout, Some(Duration::from_secs(5)));
    let a = send_renewal(&addr, &key(), &renewal("x"), T).await.unwrap();
    assert_eq!(a, Answer::Revoked);
    // Other nodes are still granted.
    let a = send_renewal(&addr, &key(), &renewal("y"), T).await.unwrap();
    assert_eq!(a, Answer::Granted);
    // A lift grants again.
    let lift = Stop::Lift {
        node: "x".into(),
        fencing: 1,
    };
    send_stop(&addr, &key(), &lift, T).await.unwrap();
    let a = send_renewal(&addr, &key(), &renewal("x"), T).await.unwrap();
    assert_eq!(a, Answer::Granted);
    // A late copy of the lifted fencing's revocation is refused (409), not
    // acknowledged, and changes nothing.
    let e = send_stop(&addr, &key(), &revoke("x"), T).await.unwrap_err();
    assert!(matches!(e, AskError::Status(409)), "{e}");
    let a = send_renewal(&addr, &key(), &renewal("x"), T).await.unwrap();
    assert_eq!(a, Answer::Granted);
}

#[tokio::test]
async fn an_acknowledged_stop_survives_the_grantors_restart() {
    let dir = state_dir("restart");
    let addr = serve(grants_in(&dir)).await;
    send_stop(&addr, &key(), &revoke("x"), T).await.unwrap();
    let retire = Stop::Retire {
        node: "y".into(),
        below_version: 4,
    };
    send_stop(&addr, &key(), &retire, T).await.unwrap();
    // A new process of the same boot, with the same state directory.
    let addr = serve(grants_in(&dir)).await;
    let a = send_renewal(&addr, &key(), &renewal("x"), T).await.unwrap();
    assert_eq!(a, Answer::Revoked);
    let a = send_renewal(&addr, &key(), &renewal("y"), T).await.unwrap();
    assert_eq!(a, Answer::Retired, "set 3 is below the retired 4");
}

#[tokio::test]
async fn a_stop_that_cannot_be_saved_is_not_acknowledged() {
    let dir = state_dir("unsaved");
    let grants = grants_in(&dir);
    let addr = serve(grants.clone()).await;
    // The state directory becomes unwritable (a file where it was).
    std::fs::remove_dir_all(&dir).unwrap();
    std::fs::write(&dir, b"").unwrap();
    let e = send_stop(&addr, &key(), &revoke("x"), T).await.unwrap_err();
    assert!(matches!(e, AskError::Status(503)), "{e}");
    // Applied all the same: stricter is safe.
    let a = send_renewal(&addr, &key(), &renewal("x"), T).await.unwrap();
    assert_eq!(a, Answer::Revoked);
    std::fs::remove_file(&dir).unwrap();
}

#[tokio::test]
async fn without_a_state_directory_nothing_is_granted_or_acknowledged() {
    // No memory can survive a restart: the grantor starts quarantined
    // (for the whole quarantine) and fails to start without a place for
    // its memory.
    let e = Grants::start(None, Some(BOOT), Duration::from_secs(60)).unwrap_err();
    assert!(e.to_string().contains("no state directory"), "{e}");
}

#[tokio::test]
async fn a_grantor_without_its_memory_is_quarantined() {
    let dir = state_dir("quarantine");
    let file = memory::path(&dir, "me");
    std::fs::write(&file, b"garbled").unwrap();
    // Unreadable memory: the whole quarantine, however long the boot.
    let grants = Grants::start(Some(file.clone()), Some(BOOT), Duration::from_secs(3600)).unwrap();
    assert!(grants.quarantined());
    let addr = serve(grants).await;
    let a = send_renewal(&addr, &key(), &renewal("x"), T).await.unwrap();
    assert_eq!(a, Answer::Quarantined);
    // And the quarantine survives a restart that finds the memory written
    // since.
    let again = Grants::start(Some(file.clone()), Some(BOOT), Duration::ZERO).unwrap();
    assert!(again.quarantined());
    // No file of this boot: the quarantine less the boot's uptime, which
    // is longer than a second here.
    std::fs::remove_file(&file).unwrap();
    let fresh = Grants::start(Some(file), Some(BOOT), Duration::from_secs(1)).unwrap();
    assert!(!fresh.quarantined());
}

#[tokio::test]
async fn a_wrong_key_is_refused() {
    let dir = state_dir("key");
    let addr = serve(grants_in(&dir)).await;
    let wrong = PeerKey::from_bytes(b"another-key-0123456").unwrap();
    let e = send_renewal(&addr, &wrong, &renewal("x"), T)
        .await
        .unwrap_err();
    assert!(matches!(e, AskError::Status(401)), "{e}");
    let e = send_stop(&addr, &wrong, &revoke("x"), T).await.unwrap_err();
    assert!(matches!(e, AskError::Status(401)), "{e}");
    // The stop was not applied.
    let a = send_renewal(&addr, &key(), &renewal("x"), T).await.unwrap();
    assert_eq!(a, Answer::Granted);
}

fn ten_minutes_ahead() -> u64 {
    unix_now() + 600
}

#[tokio::test]
async fn a_holder_whose_clock_is_off_is_still_granted() {
    let dir = state_dir("skew");
    let addr = serve(grants_in(&dir)).await;
    let a = send_renewal_with_clock(&addr, &key(), &renewal("x"), T, ten_minutes_ahead)
        .await
        .unwrap();
    assert_eq!(a, Answer::Granted);
}

#[tokio::test]
async fn a_peer_without_a_grantor_refuses_renewals() {
    let addr = serve_test_peer(
        KEY,
        "http://127.0.0.1:9",
        ApiContact::default(),
        unix_now,
        None,
    )
    .await;
    let e = send_renewal(&addr, &key(), &renewal("x"), T)
        .await
        .unwrap_err();
    assert!(matches!(e, AskError::Status(400)), "{e}");
}

#[test]
fn messages_serialize_stably() {
    let r = RenewReply {
        answer: Answer::Revoked,
        nonce: "n".into(),
    };
    assert_eq!(
        serde_json::to_string(&r).unwrap(),
        r#"{"answer":"revoked","nonce":"n"}"#
    );
    assert_eq!(
        serde_json::to_string(&renewal("x")).unwrap(),
        r#"{"node":"x","boot":"b","round":1,"setVersion":3,"credit":"10s","watchdogTimeout":"5s"}"#
    );
    assert_eq!(
        serde_json::to_string(&revoke("x")).unwrap(),
        r#"{"kind":"revoke","node":"x","fencing":1}"#
    );
}
