//! The store against both of its databases: an SQLite file and a private
//! PostgreSQL started for the test (initdb + pg_ctl on 127.0.0.x). Every case
//! runs on both; a case that passes on one and not the other is a bug.

#[path = "../../mta/engine/tests/support/postgres.rs"]
#[allow(dead_code)]
mod postgres;

use postgres::Postgres;
use volley_control::recipients::Rejected;
use volley_control::store::batches::{BatchCut, Counts, DoneBatch, FinalRecipient, Progress};
use volley_control::store::campaigns::{CampaignFilter, CampaignState, NewCampaign};
use volley_control::store::events::{BatchOutcomes, OutcomeEvent};
use volley_control::store::lists::NewList;
use volley_control::store::tokens::Role;
use volley_control::store::webhooks::{NewWebhook, Pos, Tried, FROM_API, FROM_CONFIG};
use volley_control::store::{schema, Store, StoreError};
use volley_control::suppress::Change;

/// Runs `case` on a fresh SQLite store and a fresh PostgreSQL database.
fn on_both<F, Fut>(name: &str, case: F)
where
    F: Fn(Store) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let sqlite = volley_control::store::sqlite_url(dir.path());
    runtime.block_on(async {
        let store = Store::open(&sqlite).await.unwrap();
        case(store).await;
    });
    let pg = Postgres::start(61);
    let url = pg.new_database(name);
    runtime.block_on(async {
        let store = Store::open(&url).await.unwrap();
        assert_eq!(store.backend(), volley_control::store::Backend::Postgres);
        case(store).await;
    });
}

#[test]
fn a_store_is_migrated_once_and_a_newer_one_is_refused() {
    on_both("migrations", |store| async move {
        assert_eq!(store.schema_version().await.unwrap(), schema::current());
        // Opening again applies nothing and keeps the data.
        let (token, _) = store.create_token("t", Role::Admin).await.unwrap();
        let again = Store::open(&store_url(&store)).await.unwrap();
        assert_eq!(again.list_tokens().await.unwrap(), vec![token]);
        // A version from a newer volley.
        sqlx_insert_version(&store, schema::current() + 1).await;
        match Store::open(&store_url(&store)).await {
            Err(StoreError::TooNew {
                found, supported, ..
            }) => {
                assert_eq!(
                    (found, supported),
                    (schema::current() + 1, schema::current())
                );
            }
            other => panic!("a newer store must be refused, got {other:?}"),
        }
    });
}

fn store_url(store: &Store) -> String {
    store.url().to_owned()
}

async fn sqlx_insert_version(store: &Store, version: i64) {
    store
        .debug_execute(&format!(
            "INSERT INTO volley_schema (version, applied_at) VALUES ({version}, 0)"
        ))
        .await
        .unwrap();
}

#[test]
fn tokens_are_shown_once_and_kept_as_hashes() {
    on_both("tokens", |store| async move {
        let (admin, secret) = store.create_token("ops", Role::Admin).await.unwrap();
        assert!(secret.starts_with("vly_") && secret.len() > 40, "{secret}");
        assert_eq!(
            store.authenticate(&secret).await.unwrap().map(|t| t.id),
            Some(admin.id)
        );
        assert_eq!(store.authenticate("vly_wrong").await.unwrap(), None);
        // The same name twice is a conflict.
        let again = store.create_token("ops", Role::Sender).await.unwrap_err();
        assert!(again.is_conflict(), "{again}");
        // Revoked: refused from then on.
        assert!(store.revoke_token("ops").await.unwrap());
        assert!(!store.revoke_token("ops").await.unwrap());
        assert_eq!(store.authenticate(&secret).await.unwrap(), None);
        let listed = store.list_tokens().await.unwrap();
        assert_eq!(listed.len(), 1);
        assert!(listed[0].revoked_at.is_some());
    });
}

fn new_campaign(owner: i64, tags: &[&str]) -> NewCampaign {
    NewCampaign {
        owner: Some(owner),
        content_hash: "ab".repeat(32),
        sender_domain: "acme.test".into(),
        list_path: "/tmp/list.csv".into(),
        batch_size: 2,
        tags: tags.iter().map(|t| t.to_string()).collect(),
        ..NewCampaign::default()
    }
}

#[test]
fn campaigns_list_newest_first_by_state_tag_and_cursor() {
    on_both("campaigns", |store| async move {
        let mut ids = Vec::new();
        for i in 0..5 {
            let tags: &[&str] = if i % 2 == 0 { &["even"] } else { &["odd"] };
            let c = store
                .insert_campaign(&new_campaign(1, tags), 0)
                .await
                .unwrap();
            assert_eq!(c.state, CampaignState::Queued);
            ids.push(c.id);
        }
        let other = store
            .insert_campaign(&new_campaign(2, &[]), 0)
            .await
            .unwrap();
        assert!(ids.windows(2).all(|w| w[0] < w[1]) && other.id > ids[4]);
        let list = |filter: CampaignFilter| {
            let store = store.clone();
            async move {
                store
                    .list_campaigns(&filter)
                    .await
                    .unwrap()
                    .iter()
                    .map(|c| c.id)
                    .collect::<Vec<_>>()
            }
        };
        let mine = CampaignFilter {
            owner: Some(1),
            limit: 2,
            ..CampaignFilter::default()
        };
        assert_eq!(list(mine.clone()).await, [ids[4], ids[3]]);
        let page2 = CampaignFilter {
            before: Some(ids[3]),
            ..mine.clone()
        };
        assert_eq!(list(page2).await, [ids[2], ids[1]]);
        let even = CampaignFilter {
            tag: Some("even".into()),
            limit: 10,
            ..CampaignFilter::default()
        };
        assert_eq!(list(even).await, [ids[4], ids[2], ids[0]]);
        assert!(store
            .transition(ids[0], &[CampaignState::Queued], CampaignState::Suspended)
            .await
            .unwrap());
        assert!(!store
            .transition(ids[0], &[CampaignState::Queued], CampaignState::Sending)
            .await
            .unwrap());
        let suspended = CampaignFilter {
            state: Some(CampaignState::Suspended),
            limit: 10,
            ..CampaignFilter::default()
        };
        assert_eq!(list(suspended).await, [ids[0]]);
        // Scheduled when start_at is ahead.
        let later = NewCampaign {
            start_at: Some(volley_control::store::now() + 3600),
            ..new_campaign(1, &[])
        };
        assert_eq!(
            store.insert_campaign(&later, 0).await.unwrap().state,
            CampaignState::Scheduled
        );
    });
}

#[test]
fn an_idempotency_key_gives_back_the_same_campaign() {
    on_both("idempotency", |store| async move {
        let keyed = NewCampaign {
            idempotency: Some(("k1".into(), "hash-a".into())),
            ..new_campaign(1, &[])
        };
        let first = store.insert_campaign(&keyed, 0).await.unwrap();
        let found = store.idempotent(Some(1), "k1").await.unwrap().unwrap();
        assert_eq!(found.id, first.id);
        assert_eq!(found.request_hash.as_deref(), Some("hash-a"));
        // Inserting again with the key (a race lost): the first is answered.
        let again = store.insert_campaign(&keyed, 0).await.unwrap();
        assert_eq!(again.id, first.id);
        // Another owner's key is another campaign.
        assert_eq!(store.idempotent(Some(2), "k1").await.unwrap(), None);
    });
}

fn counts(recipients: i64, f: impl FnOnce(&mut Counts)) -> Counts {
    let mut c = Counts {
        recipients,
        ..Counts::default()
    };
    f(&mut c);
    c
}

#[test]
fn batches_progress_and_final_rows_add_up() {
    on_both("batches", |store| async move {
        let c = store
            .insert_campaign(&new_campaign(1, &[]), 0)
            .await
            .unwrap();
        let cuts = vec![
            BatchCut {
                batch: 0,
                domains: vec![("a.test".into(), 2)],
            },
            BatchCut {
                batch: 1,
                domains: vec![("a.test".into(), 1), ("b.test".into(), 1)],
            },
        ];
        let rejected = vec![Rejected {
            line: 3,
            email: "bad".into(),
            reason: "no @".into(),
        }];
        let dropped = vec![Rejected {
            line: 5,
            email: "s@a.test".into(),
            reason: "suppressed: manual".into(),
        }];
        store
            .set_partitioned(c.id, &cuts, &rejected, &dropped)
            .await
            .unwrap();
        // A resumed partitioning records the same rows again: nothing doubles.
        store
            .set_partitioned(c.id, &cuts, &rejected, &dropped)
            .await
            .unwrap();
        let row = store.campaign(c.id).await.unwrap().unwrap();
        assert_eq!(
            (
                row.partitioned,
                row.recipients,
                row.batches,
                row.rejected_rows,
                row.suppressed
            ),
            (true, 4, 2, 1, 1)
        );
        let total = store.campaign_counts(c.id).await.unwrap();
        assert_eq!(total, counts(4, |c| c.pending = 4));
        assert_eq!(
            store.rejects(c.id, 0, 10).await.unwrap(),
            [rejected.clone(), dropped].concat()
        );

        store
            .record_progress(&[Progress {
                campaign: c.id,
                batch: 0,
                domain: "a.test".into(),
                counts: counts(2, |c| {
                    c.delivered = 1;
                    c.deferred = 1
                }),
            }])
            .await
            .unwrap();
        assert_eq!(
            store.campaign_counts(c.id).await.unwrap(),
            counts(4, |c| {
                c.pending = 2;
                c.delivered = 1;
                c.deferred = 1
            })
        );
        let rcpt = |idx, email: &str, status: &str| FinalRecipient {
            idx,
            email: email.into(),
            status: status.into(),
            attempts: 1,
            code: 250,
            enhanced: "2.0.0".into(),
            reply: "ok".into(),
            at: 5,
        };
        let done = DoneBatch {
            campaign: c.id,
            batch: 1,
            domains: vec![
                ("a.test".into(), counts(1, |c| c.delivered = 1)),
                ("b.test".into(), counts(1, |c| c.bounced = 1)),
            ],
            recipients: vec![
                rcpt(0, "x@a.test", "delivered"),
                rcpt(1, "y@b.test", "bounced"),
            ],
        };
        store
            .complete_batches(std::slice::from_ref(&done), &[])
            .await
            .unwrap();
        // Repeated after a crash: nothing changes.
        store.complete_batches(&[done], &[]).await.unwrap();
        assert_eq!(store.live_batches(c.id).await.unwrap(), 1);
        // A late progress update of a done batch is ignored.
        store
            .record_progress(&[Progress {
                campaign: c.id,
                batch: 1,
                domain: "b.test".into(),
                counts: counts(1, |c| c.pending = 1),
            }])
            .await
            .unwrap();
        let domains = store.domain_counts(c.id, 10).await.unwrap();
        assert_eq!(domains[0].0, "a.test");
        assert_eq!(
            domains[0].1,
            counts(3, |c| {
                c.pending = 0;
                c.delivered = 2;
                c.deferred = 1
            })
        );
        assert_eq!(domains[1], ("b.test".into(), counts(1, |c| c.bounced = 1)));
        let bounced = store
            .final_recipients(c.id, 1, 0, Some("bounced"), 10)
            .await
            .unwrap();
        assert_eq!(bounced.len(), 1);
        assert_eq!(bounced[0].email, "y@b.test");
        assert_eq!(bounced[0].reply, "ok");
        // The failure reasons are counted once, however often the completion
        // is repeated.
        let reasons = store.failure_reasons(c.id, 10).await.unwrap();
        assert_eq!(reasons, vec![(250, "2.0.0".to_owned(), 1, "ok".to_owned())]);
        assert_eq!(
            store.final_recipients(c.id, 0, 0, None, 10).await.unwrap(),
            vec![],
            "a live batch has no outcomes row"
        );
        assert_eq!(
            store
                .final_recipients(c.id, 1, 1, None, 10)
                .await
                .unwrap()
                .len(),
            1
        );
        let rows = store.batch_rows(c.id, 0, 10).await.unwrap();
        assert_eq!(
            rows.iter().map(|r| r.state.as_str()).collect::<Vec<_>>(),
            ["queued", "done"]
        );
        assert_eq!(rows[1].site, "a.test");

        assert!(store.finish_campaign(c.id, 9).await.unwrap());
        assert!(!store.finish_campaign(c.id, 10).await.unwrap());
        let done = store.campaign(c.id).await.unwrap().unwrap();
        assert_eq!(
            (done.state, done.completed_at),
            (CampaignState::Completed, Some(9))
        );
        let id = store
            .add_event(
                "campaign.completed",
                Some(c.id),
                &serde_json::json!({"id": c.id}),
            )
            .await
            .unwrap();
        let events = store.events(0, 10).await.unwrap();
        assert_eq!(
            (events.len(), events[0].id, events[0].kind.as_str()),
            (1, id, "campaign.completed")
        );
    });
}

fn outcome(index: u32, kind: &'static str) -> OutcomeEvent {
    OutcomeEvent {
        index,
        kind,
        is_final: kind != "message.deferred",
        at: 1,
        data: volley_control::store::outcome_lines::event_line(
            &volley_control::store::outcome_lines::Fields {
                index,
                attempt: 1,
                code: 250,
                next_attempt: 0,
                enhanced: "2.0.0",
                recipient: "r@a.test",
                reply: "ok",
            },
        ),
    }
}

/// The recipient index of each event of outbox row `r`.
fn indexes(r: &volley_control::store::events::Event) -> Vec<i64> {
    volley_control::store::events::members(r.at, r.n, &r.payload)
        .iter()
        .filter_map(|m| m.data.value()["index"].as_i64())
        .collect()
}

fn hook(owner: Option<i64>, url: &str, events: &[&str], batch: i64) -> NewWebhook {
    NewWebhook {
        owner,
        source: FROM_API,
        url: url.to_owned(),
        events: events.iter().map(|e| (*e).to_owned()).collect(),
        secret: "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".to_owned(),
        batch,
        retry_for: 259_200,
        timeout_ms: 10_000,
    }
}

#[test]
fn webhooks_keep_their_place_in_an_outbox_written_once_per_final_outcome() {
    on_both("webhooks", |store| async move {
        let (shop, _) = store.create_token("shop", Role::Sender).await.unwrap();
        let (blog, _) = store.create_token("blog", Role::Sender).await.unwrap();
        let ours = store
            .insert_campaign(&new_campaign(shop.id, &[]), 0)
            .await
            .unwrap();
        let theirs = store
            .insert_campaign(&new_campaign(blog.id, &[]), 0)
            .await
            .unwrap();
        // Made before any event: it gets them all.
        let all = store
            .add_webhook(&hook(None, "http://a.test/", &[], 2))
            .await
            .unwrap();
        let mine = store
            .add_webhook(&hook(
                Some(shop.id),
                "http://b.test/",
                &["message.delivered"],
                0,
            ))
            .await
            .unwrap();
        assert_eq!(
            (all.next, all.state.as_str()),
            (Pos { row: 1, part: 0 }, "active")
        );

        // A batch's events of one commit: a row per type, deferrals first; a
        // final outcome is written once, however often it is added.
        let batch = |campaign: i64, events: Vec<OutcomeEvent>| BatchOutcomes {
            campaign,
            batch: 1,
            gateway: "gw".to_owned(),
            events,
        };
        store
            .add_outcomes(&[
                batch(
                    ours.id,
                    vec![
                        outcome(0, "message.delivered"),
                        outcome(1, "message.deferred"),
                        outcome(2, "message.delivered"),
                    ],
                ),
                batch(theirs.id, vec![outcome(0, "message.delivered")]),
            ])
            .await
            .unwrap();
        store
            .add_outcomes(&[batch(
                ours.id,
                vec![
                    outcome(0, "message.delivered"),
                    outcome(1, "message.delivered"),
                ],
            )])
            .await
            .unwrap();
        let rows = store.events(0, 10).await.unwrap();
        let shape: Vec<(&str, i64)> = rows.iter().map(|r| (r.kind.as_str(), r.n)).collect();
        assert_eq!(
            shape,
            [
                ("message.deferred", 1),
                ("message.delivered", 2),
                ("message.delivered", 1),
                ("message.delivered", 1)
            ]
        );
        assert_eq!(indexes(&rows[3]), [1]);
        // Its completion writes the final outcomes still missing, and forgets
        // which were written.
        let done = DoneBatch {
            campaign: ours.id,
            batch: 1,
            domains: Vec::new(),
            recipients: Vec::new(),
        };
        store
            .set_partitioned(
                ours.id,
                &[BatchCut {
                    batch: 1,
                    domains: vec![("a.test".into(), 4)],
                }],
                &[],
                &[],
            )
            .await
            .unwrap();
        store
            .complete_batches(
                std::slice::from_ref(&done),
                &[batch(
                    ours.id,
                    vec![
                        outcome(2, "message.delivered"),
                        outcome(3, "message.bounced"),
                    ],
                )],
            )
            .await
            .unwrap();
        let rows = store.events(0, 10).await.unwrap();
        assert_eq!(
            (rows.len(), rows[4].kind.as_str(), indexes(&rows[4])),
            (5, "message.bounced", vec![3])
        );
        let last = store.last_event_id().await.unwrap();

        // The admin's webhook sees every row; the shop's only its own
        // campaign's deliveries.
        assert_eq!(
            store
                .webhook_rows(&all, Pos { row: 1, part: 0 }, last, 10)
                .await
                .unwrap()
                .0
                .len(),
            5
        );
        assert_eq!(store.webhook_pending(&all).await.unwrap(), 6);
        let (mine_rows, _) = store
            .webhook_rows(&mine, Pos { row: 1, part: 0 }, last, 10)
            .await
            .unwrap();
        assert_eq!(mine_rows.iter().map(|r| r.n).sum::<i64>(), 3);
        assert_eq!(store.webhook_pending(&mine).await.unwrap(), 3);

        // One process holds a webhook at a time.
        assert!(store.claim_webhook(all.id, "p1", i64::MAX).await.unwrap());
        assert!(!store.claim_webhook(all.id, "p2", i64::MAX).await.unwrap());
        // Its request is fixed, retried, then delivered.
        let end = Pos {
            row: rows[1].id,
            part: 1,
        };
        assert!(store.webhook_pend(all.id, "p1", end).await.unwrap());
        store
            .webhook_tried(
                all.id,
                "p1",
                end,
                &Tried::Retry { next_at: 50 },
                Some(500),
                Some("answered 500"),
                40,
            )
            .await
            .unwrap();
        let w = store.webhook(all.id).await.unwrap().unwrap();
        assert_eq!(
            (
                w.pend,
                w.attempts,
                w.next_attempt_at,
                w.failing_since,
                w.last_status
            ),
            (Some(end), 1, 50, Some(40), Some(500))
        );
        assert_eq!(w.last_error.as_deref(), Some("answered 500"));
        store
            .webhook_tried(
                all.id,
                "p1",
                end,
                &Tried::Delivered { events: 2 },
                Some(204),
                None,
                51,
            )
            .await
            .unwrap();
        let w = store.webhook(all.id).await.unwrap().unwrap();
        assert_eq!(
            (w.next, w.pend, w.attempts, w.delivered, w.failing_since),
            (end, None, 0, 2, None)
        );
        assert_eq!(store.webhook_pending(&w).await.unwrap(), 4);
        // Given up, and disabled.
        let past = Pos {
            row: last + 1,
            part: 0,
        };
        store
            .webhook_tried(
                all.id,
                "p1",
                past,
                &Tried::GaveUp { events: 4 },
                None,
                Some("cannot connect"),
                60,
            )
            .await
            .unwrap();
        store
            .webhook_tried(
                all.id,
                "p1",
                past,
                &Tried::Disabled,
                Some(410),
                Some("answered 410 Gone"),
                61,
            )
            .await
            .unwrap();
        let w = store.webhook(all.id).await.unwrap().unwrap();
        assert_eq!((w.failed, w.next, w.state.as_str()), (4, past, "disabled"));
        assert!(!store.claim_webhook(all.id, "p1", i64::MAX).await.unwrap());

        // Delivery events passed by every active webhook are pruned; the
        // shop's webhook has not passed its events yet.
        assert_eq!(
            store
                .prune_events(&["message.delivered", "message.deferred"], 100)
                .await
                .unwrap(),
            0
        );
        store.webhook_skip(mine.id, "nobody", past).await.unwrap();
        assert!(store.claim_webhook(mine.id, "p1", i64::MAX).await.unwrap());
        store.webhook_skip(mine.id, "p1", past).await.unwrap();
        assert_eq!(
            store
                .prune_events(&["message.delivered"], 100)
                .await
                .unwrap(),
            3
        );

        // The configuration's webhooks: kept by URL, the others deleted.
        let conf = |url: &str| NewWebhook {
            source: FROM_CONFIG,
            ..hook(None, url, &[], 0)
        };
        store
            .sync_config_webhooks(&[conf("http://c.test/"), conf("http://d.test/")])
            .await
            .unwrap();
        let c_id = store
            .webhooks(None)
            .await
            .unwrap()
            .iter()
            .find(|w| w.url == "http://c.test/")
            .unwrap()
            .id;
        store
            .sync_config_webhooks(&[conf("http://c.test/")])
            .await
            .unwrap();
        let urls: Vec<(i64, String)> = store
            .webhooks(None)
            .await
            .unwrap()
            .into_iter()
            .filter(|w| w.source == FROM_CONFIG)
            .map(|w| (w.id, w.url))
            .collect();
        assert_eq!(urls, [(c_id, "http://c.test/".to_owned())]);
        assert!(store.delete_webhook(mine.id).await.unwrap());
        assert_eq!(store.webhooks(Some(shop.id)).await.unwrap(), []);
    });
}

#[test]
fn list_members_keep_those_who_left_and_subscribe_requests_move_on() {
    on_both("lists", |store| async move {
        let list = store
            .add_list(&NewList {
                owner: Some(1),
                name: "News".into(),
                from: Some("news@acme.test".into()),
                form_fields: vec!["first_name".into()],
            })
            .await
            .unwrap();
        let fields = |name: &str| {
            let mut m = serde_json::Map::new();
            m.insert("name".into(), name.into());
            m
        };
        let added = store
            .add_members(
                list.id,
                &[
                    ("a@x.test".into(), fields("A")),
                    ("b@x.test".into(), fields("B")),
                ],
                false,
            )
            .await
            .unwrap();
        assert_eq!((added.added, added.updated), (2, 0));
        assert_eq!(store.list(list.id).await.unwrap().unwrap().fields, ["name"]);
        assert!(store.unsubscribe_member(list.id, "a@x.test").await.unwrap());
        assert!(!store.unsubscribe_member(list.id, "a@x.test").await.unwrap());
        // An import leaves the one who left; a confirmed request brings them back.
        let again = store
            .add_members(
                list.id,
                &[
                    ("a@x.test".into(), fields("A2")),
                    ("b@x.test".into(), fields("B2")),
                ],
                false,
            )
            .await
            .unwrap();
        assert_eq!((again.updated, again.kept_unsubscribed), (1, 1));
        assert_eq!(store.list_counts(list.id).await.unwrap(), (1, 1));
        let subscribed = store.members(list.id, "", 10, true).await.unwrap();
        assert_eq!(
            subscribed
                .iter()
                .map(|m| m.email.as_str())
                .collect::<Vec<_>>(),
            ["b@x.test"]
        );
        assert_eq!(subscribed[0].fields["name"], "B2");
        store
            .add_members(list.id, &[("a@x.test".into(), fields("A3"))], true)
            .await
            .unwrap();
        assert_eq!(
            store
                .member(list.id, "a@x.test")
                .await
                .unwrap()
                .unwrap()
                .status,
            "subscribed"
        );

        // Subscribe requests: new, claimed once, sent, confirmed, applied.
        let id = store
            .add_subscribe_request(list.id, "c@x.test", &fields("C"), "127.0.0.9", false)
            .await
            .unwrap();
        store
            .add_subscribe_request(list.id, "c@x.test", &fields("C"), "127.0.0.9", true)
            .await
            .unwrap();
        assert_eq!(
            store
                .recent_subscribe_requests(0, "127.0.0.9", list.id, "c@x.test")
                .await
                .unwrap(),
            (2, 1)
        );
        let claimed = store.claim_subscribe_requests("w1", 0, 10).await.unwrap();
        assert_eq!(claimed.iter().map(|r| r.id).collect::<Vec<_>>(), [id]);
        assert!(store
            .claim_subscribe_requests("w2", 0, 10)
            .await
            .unwrap()
            .is_empty());
        store.subscribe_requests_sent(&[id], 77).await.unwrap();
        assert!(store.confirm_subscribe_request(id).await.unwrap());
        assert!(!store.confirm_subscribe_request(id).await.unwrap());
        let confirmed = store.confirmed_subscribe_requests(10).await.unwrap();
        assert_eq!(
            (confirmed.len(), confirmed[0].email.as_str()),
            (1, "c@x.test")
        );
        store.subscribe_requests_applied(&[id]).await.unwrap();
        assert!(store
            .confirmed_subscribe_requests(10)
            .await
            .unwrap()
            .is_empty());
        assert_eq!(
            store.subscribe_request(id).await.unwrap().unwrap().state,
            "applied"
        );
    });
}

#[test]
fn the_suppression_log_keeps_each_change_once_in_order() {
    on_both("suppression_log", |store| async move {
        let change = |op: &str, address: &str, at: u64| Change {
            op: op.into(),
            at,
            domain: "*".into(),
            address: address.into(),
            reason: if op == "add" {
                "manual".into()
            } else {
                String::new()
            },
            detail: String::new(),
        };
        store
            .add_suppression_changes(
                &[change("add", "a@x.test", 5), change("add", "b@x.test", 5)],
                "gw1",
            )
            .await
            .unwrap();
        // The same change from another process: one row.
        store
            .add_suppression_changes(
                &[
                    change("add", "a@x.test", 5),
                    change("remove", "a@x.test", 6),
                ],
                "gw2",
            )
            .await
            .unwrap();
        let all = store.suppression_changes_after(0, 10).await.unwrap();
        let seen: Vec<(&str, &str)> = all
            .iter()
            .map(|(_, c)| (c.op.as_str(), c.address.as_str()))
            .collect();
        assert_eq!(
            seen,
            [
                ("add", "a@x.test"),
                ("add", "b@x.test"),
                ("remove", "a@x.test")
            ]
        );
        let after_first = store.suppression_changes_after(all[0].0, 10).await.unwrap();
        assert_eq!(after_first.len(), 2);
        assert_eq!(after_first[0].1, change("add", "b@x.test", 5));
    });
}

#[test]
fn holds_are_added_once_and_removed() {
    use volley_queue::holds::Rule;
    on_both("holds", |store| async move {
        let rule = Rule::Domain("a.test".into());
        assert!(store.set_hold(&rule, true).await.unwrap());
        assert!(!store.set_hold(&rule, true).await.unwrap());
        assert!(store.set_hold(&Rule::Campaign(7), true).await.unwrap());
        assert_eq!(
            store.holds().await.unwrap(),
            vec![Rule::Campaign(7), Rule::Domain("a.test".into())]
        );
        assert!(store.set_hold(&rule, false).await.unwrap());
        assert!(!store.set_hold(&rule, false).await.unwrap());
        assert_eq!(store.holds().await.unwrap(), vec![Rule::Campaign(7)]);
        // A purge covers the campaigns there are; with no batch left to do,
        // it is not sent to anyone.
        let order = store.add_purge(&rule).await.unwrap();
        assert_eq!((order.rule, order.upto), (rule.clone(), 0));
        assert!(store.live_purges().await.unwrap().is_empty());
    });
}

#[test]
fn sessions_last_until_they_expire_are_closed_or_their_token_is_revoked() {
    on_both("sessions", |store| async move {
        let (token, _) = store.create_token("ops", Role::Admin).await.unwrap();
        let now = volley_control::store::now();
        store
            .open_session("s1", token.id, "c1", now + 60)
            .await
            .unwrap();
        store
            .open_session("old", token.id, "c0", now - 1)
            .await
            .unwrap();
        let (found, csrf) = store.session("s1").await.unwrap().unwrap();
        assert_eq!((found.id, csrf.as_str()), (token.id, "c1"));
        assert!(store.session("old").await.unwrap().is_none(), "expired");
        assert!(store.session("nope").await.unwrap().is_none());
        store
            .open_session("s2", token.id, "c2", now + 60)
            .await
            .unwrap();
        store.close_session("s2").await.unwrap();
        assert!(store.session("s2").await.unwrap().is_none(), "closed");
        store.revoke_token("ops").await.unwrap();
        assert!(store.session("s1").await.unwrap().is_none(), "revoked");
    });
}

/// A lease request's look at `campaigns` at `now` (lease time 30 s).
fn look(campaigns: &[i64], now: i64) -> volley_control::store::leases::Look<'_> {
    volley_control::store::leases::Look {
        campaigns,
        now,
        ttl: 30,
        at_most: 8,
        run_out: true,
    }
}

/// A campaign of two batches of one recipient at `a.test`, their files
/// stored: both can be leased.
async fn two_leasable_batches(store: &Store) -> volley_control::store::campaigns::Campaign {
    let c = store
        .insert_campaign(&new_campaign(1, &[]), 0)
        .await
        .unwrap();
    let cuts: Vec<BatchCut> = (0..2)
        .map(|batch| BatchCut {
            batch,
            domains: vec![("a.test".into(), 1)],
        })
        .collect();
    store.set_partitioned(c.id, &cuts, &[], &[]).await.unwrap();
    store
        .put_batch_files(c.id, &[(0, vec![1]), (1, vec![2])])
        .await
        .unwrap();
    c
}

#[test]
fn a_renewal_extends_only_the_leases_still_held() {
    on_both("renewals", |store| async move {
        let c = two_leasable_batches(&store).await;
        // Both are offered; the choice takes both.
        let claimed = store
            .lease("g1", look(&[c.id], 100), |offered| {
                assert_eq!(offered.iter().map(|o| o.batch).collect::<Vec<_>>(), [0, 1]);
                vec![0, 1]
            })
            .await
            .unwrap();
        assert_eq!(claimed.len(), 2);
        let (e0, e1) = (claimed[0].epoch, claimed[1].epoch);
        // Under its epoch it is renewed; under an older one, or by another
        // gateway, not.
        let got = store
            .renew("g1", &[(c.id, 0, e0), (c.id, 1, e1 - 1)], 110, 30)
            .await
            .unwrap();
        assert_eq!(got, [true, false]);
        let other = store.renew("g2", &[(c.id, 0, e0)], 110, 30).await.unwrap();
        assert_eq!(other, [false]);
        assert!(store.renew("g1", &[], 110, 30).await.unwrap().is_empty());
        // Renewed to 140, batch 0 is still g1's at 135; batch 1 (to 130) is free.
        let taken = store
            .lease("g2", look(&[c.id], 135), |offered| {
                assert_eq!(offered.iter().map(|o| o.batch).collect::<Vec<_>>(), [1]);
                (0..offered.len()).collect()
            })
            .await
            .unwrap();
        assert_eq!(taken.iter().map(|t| t.batch).collect::<Vec<_>>(), [1]);
    });
}

#[test]
fn a_lease_never_reported_on_is_offered_again_once_run_out_though_its_holder_is_heard_from() {
    on_both("unreported", |store| async move {
        let c = two_leasable_batches(&store).await;
        let claimed = store
            .lease("g1", look(&[c.id], 100), |offered| {
                (0..offered.len()).collect()
            })
            .await
            .unwrap();
        assert_eq!(claimed.len(), 2);
        // g1 reports on batch 0 only: the answer with batch 1 never reached
        // it (the control plane that gave it died while answering).
        let pending = volley_queue::Slot::PENDING.encode().to_le_bytes().to_vec();
        let held = store
            .report(
                "g1",
                &[(c.id, 0, claimed[0].epoch, pending)],
                &[],
                &[],
                105,
                30,
            )
            .await
            .unwrap();
        assert_eq!(held, [true]);
        store.touch_gateway("g1", 0, None, 140).await.unwrap();
        // At 140 both leases ran out and g1 was just heard from: batch 0 stays
        // its own (it reports late through an outage), batch 1 is offered
        // again, with nothing counted as resent (g1 never sent from it).
        let taken = store
            .lease("g2", look(&[c.id], 140), |offered| {
                assert_eq!(offered.iter().map(|o| o.batch).collect::<Vec<_>>(), [1]);
                (0..offered.len()).collect()
            })
            .await
            .unwrap();
        assert_eq!(taken.iter().map(|t| t.batch).collect::<Vec<_>>(), [1]);
        assert_eq!(taken[0].resent, 0);
        let pending = volley_queue::Slot::PENDING.encode().to_le_bytes().to_vec();
        let held = store
            .report(
                "g2",
                &[(c.id, 1, taken[0].epoch, pending)],
                &[],
                &[],
                141,
                30,
            )
            .await
            .unwrap();
        assert_eq!(held, [true]);
        // Once g1 has not been heard from for a lease time, batch 0 goes
        // too, its unfinished recipient counted as resent.
        let taken = store
            .lease("g2", look(&[c.id], 171), |offered| {
                assert_eq!(offered.iter().map(|o| o.batch).collect::<Vec<_>>(), [0]);
                (0..offered.len()).collect()
            })
            .await
            .unwrap();
        assert_eq!(
            taken
                .iter()
                .map(|t| (t.batch, t.resent))
                .collect::<Vec<_>>(),
            [(0, 1)]
        );
        assert_eq!(store.resent_after_failure(c.id).await.unwrap(), 1);
    });
}

/// PostgreSQL only (SQLite has one writer: concurrent requests take turns):
/// while one lease request holds its candidates, another is offered the
/// next ones, not the same; neither waits for the other, and together they
/// take every batch once.
#[test]
fn concurrent_lease_requests_are_offered_disjoint_batches() {
    use std::sync::mpsc::channel;
    use std::time::Duration;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let pg = Postgres::start(61);
    let url = pg.new_database("disjoint");
    runtime.block_on(async {
        let store = Store::open(&url).await.unwrap();
        let c = store
            .insert_campaign(&new_campaign(1, &[]), 0)
            .await
            .unwrap();
        let cuts: Vec<BatchCut> = (0..6)
            .map(|batch| BatchCut {
                batch,
                domains: vec![("a.test".into(), 1)],
            })
            .collect();
        store.set_partitioned(c.id, &cuts, &[], &[]).await.unwrap();
        let files: Vec<(i64, Vec<u8>)> = (0..6).map(|b| (b, vec![b as u8])).collect();
        store.put_batch_files(c.id, &files).await.unwrap();
        let ids = [c.id];
        let (seen_tx, seen_rx) = channel::<Vec<i64>>();
        let (go_tx, go_rx) = channel::<()>();
        // On a thread and runtime of its own: its choice blocks while the
        // other request runs.
        let first = std::thread::spawn({
            let store = store.clone();
            move || {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap()
                    .block_on(async move {
                        let look = volley_control::store::leases::Look {
                            at_most: 3,
                            ..look(&ids, 100)
                        };
                        store
                            .lease("g1", look, move |offered| {
                                let _ = seen_tx.send(offered.iter().map(|o| o.batch).collect());
                                // Holds them (locked) until the other request is done.
                                let _ = go_rx.recv_timeout(Duration::from_secs(10));
                                (0..offered.len()).collect()
                            })
                            .await
                            .unwrap()
                    })
            }
        });
        let offered_first = tokio::task::spawn_blocking(move || {
            seen_rx.recv_timeout(Duration::from_secs(10)).unwrap()
        })
        .await
        .unwrap();
        assert_eq!(offered_first, [0, 1, 2]);
        let look = volley_control::store::leases::Look {
            at_most: 3,
            ..look(&ids, 100)
        };
        let started = std::time::Instant::now();
        let second = store
            .lease("g2", look, |offered| (0..offered.len()).collect())
            .await
            .unwrap();
        // It did not wait for the first to commit (that waits for this).
        assert!(started.elapsed() < Duration::from_secs(5));
        go_tx.send(()).unwrap();
        let first = first.join().unwrap();
        let batches = |claimed: &[volley_control::store::leases::Claimed]| {
            claimed.iter().map(|c| c.batch).collect::<Vec<_>>()
        };
        assert_eq!(batches(&first), [0, 1, 2]);
        assert_eq!(batches(&second), [3, 4, 5]);
        assert!(second.iter().all(|c| c.file == [c.batch as u8]));
    });
}
