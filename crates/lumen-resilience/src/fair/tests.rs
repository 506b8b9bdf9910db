use super::*;

#[tokio::test(start_paused = true)]
async fn uncontended_slots_and_release() {
    let a = FairAdmission::new(Some(2), 4, Duration::from_secs(5));
    let p1 = a.acquire(Ticket::new("k")).await.unwrap();
    let p2 = a.acquire(Ticket::new("other")).await.unwrap();
    assert_eq!((a.available(), a.in_flight(), a.queued()), (0, 2, 0));
    drop(p1);
    assert_eq!(a.available(), 1);
    drop(p2);
    assert_eq!((a.available(), a.in_flight()), (2, 0));
}
