//! Micro benchmarks of the per-message hot paths (divan): SMTP reply parsing,
//! dot-stuffing, template rendering, DKIM signing, state-slot updates.
//! Run with `benches/micro.sh` (writes benches/results/micro-<date>.txt).
#![allow(missing_docs)]

use std::hint::black_box;
use std::time::{Duration, SystemTime};

use bytes::BytesMut;
use divan::Bencher;
use volley_merge::{RenderContext, Template, TemplateSpec};
use volley_queue::{BatchBuilder, BatchMeta, MappedBatch, Slot, Spool, State};
use volley_smtp::client::{Event, Session, SessionConfig, TlsMode, Transaction};
use volley_smtp::data::dot_stuff_into;
use volley_smtp::reply::parse_reply;

fn main() {
    divan::main();
}

const EHLO: &[u8] = b"250-mx.google.com at your service, [192.0.2.1]\r\n250-SIZE 157286400\r\n250-8BITMIME\r\n250-STARTTLS\r\n250-ENHANCEDSTATUSCODES\r\n250-PIPELINING\r\n250-CHUNKING\r\n250 SMTPUTF8\r\n";
const OK: &[u8] = b"250 2.0.0 OK  1700000000 d9443c01a7336-1e4c5f2a1b2si123456plj.123 - gsmtp\r\n";

#[divan::bench]
fn reply_parse_single_line() -> bool {
    parse_reply(black_box(OK)).is_ok()
}

#[divan::bench]
fn reply_parse_ehlo_8_lines() -> bool {
    parse_reply(black_box(EHLO)).is_ok()
}

/// A ~5 KB message with bare LFs and leading dots.
fn message_5k() -> Vec<u8> {
    let mut m = b"From: a@b.test\nSubject: hi\n\n".to_vec();
    while m.len() < 5000 {
        m.extend_from_slice(b"Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod.\n.dot line\n");
    }
    m
}

#[divan::bench]
fn dot_stuff_5kb(bencher: Bencher) {
    let message = message_5k();
    let mut out = BytesMut::with_capacity(8192);
    bencher.bench_local(|| {
        out.clear();
        dot_stuff_into(black_box(&message), &mut out);
        out.len()
    });
}

fn template() -> Template {
    let toml = r#"
from = "Acme News <news@acme.test>"
subject = 'Hello {{ first_name | default("friend") }}, news from {{ city }}'
text = """
Hi {{ first_name }} {{ last_name }},

Your plan {{ plan }} renews soon. Your account {{ customer_id }} in {{ city }} ...
"""
html = "<p>Hi <b>{{ first_name }} {{ last_name }}</b>,</p><p>Your plan {{ plan }} renews soon.</p>"
"#;
    let mut spec =
        TemplateSpec::from_toml(toml, std::path::Path::new("bench.toml")).expect("template");
    if let Some(text) = spec.text.as_mut() {
        text.push_str(&"Lorem ipsum dolor sit amet, consectetur adipiscing elit. ".repeat(30));
    }
    Template::compile(&spec).expect("compile")
}

const FIELDS: [&str; 5] = ["first_name", "last_name", "city", "plan", "customer_id"];
const VALUES: [&[u8]; 5] = [
    b"Zo\xc3\xab",
    b"M\xc3\xbcller",
    b"Z\xc3\xbcrich",
    b"pro",
    b"C12345678",
];

#[divan::bench]
fn render_text_html_5_fields(bencher: Bencher) {
    let t = template();
    let ctx = RenderContext::new(
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
        1,
    );
    let mut out = BytesMut::with_capacity(16 * 1024);
    bencher.bench_local(|| {
        out.clear();
        t.render(&FIELDS, &VALUES, "zoe.muller@example.com", &ctx, &mut out)
            .map(|()| out.len())
    });
}

/// The template of `benches/e2e.sh` (text + HTML, 5 fields, the company name in
/// each of 14 paragraphs): ~5.2 KB rendered.
fn e2e_template() -> Template {
    const PARAGRAPH: &str = "We have been working on the things you asked for, and this month \
        brings faster delivery, clearer reports and a calmer inbox for everyone at \
        {{ company }}. ";
    let text = format!(
        "Hello {{{{ first_name }}}} {{{{ last_name }}}},\n\n{}\n\nYour customer number is \
         {{{{ customer_id }}}}; we will be in {{{{ city }}}} next month.\n\nThe volley team\n",
        vec![PARAGRAPH; 14].join("\n\n")
    );
    let html =
        format!(
        "<html><body><h1>Hello {{{{ first_name }}}} {{{{ last_name }}}}</h1>{}<p>Your customer \
         number is <b>{{{{ customer_id }}}}</b>; we will be in {{{{ city }}}} next month.</p>\
         <p>The volley team</p></body></html>",
        (0..14).map(|_| format!("<p>{PARAGRAPH}</p>")).collect::<String>()
    );
    let toml = format!(
        "from = \"Volley Bench <news@volley.bench.test>\"\n\
         subject = \"{{{{ first_name }}}}, news for {{{{ company }}}} in {{{{ city }}}}\"\n\
         text = {text:?}\nhtml = {html:?}\n"
    );
    let spec = TemplateSpec::from_toml(&toml, std::path::Path::new("e2e.toml")).expect("template");
    Template::compile(&spec).expect("compile")
}

const E2E_FIELDS: [&str; 5] = ["first_name", "last_name", "city", "company", "customer_id"];
const E2E_VALUES: [&[u8]; 5] = [
    b"Am\xc3\xa9lie",
    b"O'Brien",
    b"S\xc3\xa3o Paulo",
    b"Globex",
    b"C00001234",
];

/// Rendering one message of the e2e benchmark (the largest user-space cost per
/// message there).
#[divan::bench]
fn render_e2e_message(bencher: Bencher) {
    let t = e2e_template();
    let ctx = RenderContext::new(
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
        1,
    );
    let mut out = BytesMut::with_capacity(16 * 1024);
    bencher.bench_local(|| {
        out.clear();
        t.render(
            &E2E_FIELDS,
            &E2E_VALUES,
            "u1234@d17.bench.test",
            &ctx,
            &mut out,
        )
        .map(|()| out.len())
    });
}

/// A session past EHLO with a server that offers PIPELINING (as smtp-sink does).
fn ready_session() -> Session {
    let mut config = SessionConfig::new("volley.bench.test");
    config.tls = TlsMode::Disabled;
    let mut session = Session::new(config);
    session.feed(b"220 sink ESMTP\r\n");
    session.output().clear();
    session.feed(b"250-sink\r\n250-PIPELINING\r\n250-8BITMIME\r\n250 SIZE 10240000\r\n");
    session.output().clear();
    while let Some(event) = session.poll_event() {
        assert!(matches!(event, Event::Ready(_)), "{event:?}");
    }
    session
}

/// The user-space work of one e2e message without the socket: render, enqueue the
/// transaction, take the pipelined commands and the dot-stuffed body, feed
/// smtp-sink's four replies, take the result.
#[divan::bench]
fn message_sans_io_e2e(bencher: Bencher) {
    let t = e2e_template();
    let ctx = RenderContext::new(
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
        1,
    );
    let mut session = ready_session();
    let mut body = BytesMut::with_capacity(16 * 1024);
    let mut id = 0u64;
    bencher.bench_local(|| {
        id += 1;
        body.clear();
        t.render(
            &E2E_FIELDS,
            &E2E_VALUES,
            "u1234@d17.bench.test",
            &ctx,
            &mut body,
        )
        .expect("render");
        let tx = Transaction {
            id,
            mail_from: "news@volley.bench.test".to_owned(),
            rcpt_to: vec!["u1234@d17.bench.test".to_owned()],
            body: body.split().freeze(),
            crlf_only: true,
        };
        session.enqueue(tx).expect("enqueue");
        let mut written = session.output().len();
        session.output().clear();
        session.feed(b"250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 End data with <CR><LF>.<CR><LF>\r\n");
        written += session.output().len();
        session.output().clear();
        session.feed(b"250 2.0.0 Ok: queued as 12345\r\n");
        let mut done = 0;
        while let Some(event) = session.poll_event() {
            if let Event::TransactionDone(result) = event {
                done += result.rcpts.len();
            }
        }
        assert_eq!(done, 1);
        written
    });
}

#[divan::bench]
fn slot_encode_decode() -> bool {
    let s = Slot {
        state: State::Deferred,
        attempts: 3,
        code: 451,
        next_attempt: 1_700_000_600,
    };
    Slot::decode(black_box(s.encode())).is_ok()
}

#[divan::bench]
fn slot_update_in_mapped_batch(bencher: Bencher) {
    let dir = tempfile::tempdir().expect("tempdir");
    let spool = Spool::open(dir.path()).expect("spool");
    let meta = BatchMeta {
        batch_id: 1,
        campaign_id: 1,
        content_hash: [0; 32],
        created_at: 0,
    };
    let mut b = BatchBuilder::new(meta, &["f"]).expect("builder");
    for i in 0..100 {
        b.push(&format!("u{i}@x.test"), &["v"]).expect("push");
    }
    let path = spool
        .write_batch(&b.finish().expect("finish"))
        .expect("write");
    let batch = MappedBatch::open(&path).expect("map");
    let mut i = 0usize;
    bencher.bench_local(|| {
        i = (i + 1) % 100;
        let slot = Slot {
            state: State::Delivered,
            attempts: 1,
            code: 250,
            next_attempt: 0,
        };
        batch.set_slot(i, slot)
    });
}

/// The Ed25519 signature alone (ring, what `mail-auth` signs with): the floor of
/// what DKIM with Ed25519 adds per message, whatever is done around it.
#[divan::bench]
fn ed25519_signature_alone(bencher: Bencher) {
    let rng = ring::rand::SystemRandom::new();
    let pkcs8 = ring::signature::Ed25519KeyPair::generate_pkcs8(&rng).expect("key");
    let key = ring::signature::Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).expect("key");
    let digest = [7u8; 32];
    bencher.bench_local(|| key.sign(black_box(&digest)));
}

#[divan::bench]
fn dkim_ed25519_sign_5kb(bencher: Bencher) {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = dir.path().join("k.pem");
    let ok = std::process::Command::new("openssl")
        .args(["genpkey", "-algorithm", "ed25519", "-out"])
        .arg(&key)
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !ok {
        eprintln!("dkim bench skipped: openssl not available");
        return;
    }
    let toml = format!("[[dkim]]\ndomain = \"b.test\"\nselector = \"s\"\nkey_file = \"{}\"\nalgorithm = \"ed25519\"\n", key.display());
    let config =
        volley_conf::Config::parse(&toml, std::path::Path::new("bench.toml")).expect("config");
    let signer = volley_engine::dkim::DkimSigner::from_config(&config.dkim).expect("signer");
    let message: Vec<u8> = String::from_utf8_lossy(&message_5k())
        .replace('\n', "\r\n")
        .into_bytes();
    bencher.bench_local(|| signer.sign(black_box(&message)));
}
