//! Whole-message tests: exact bytes for a fixed context, field checks, text_only,
//! attachments, raw messages, and properties over arbitrary merge values.

use std::collections::BTreeSet;
use std::time::{Duration, UNIX_EPOCH};

use bytes::BytesMut;
use proptest::prelude::*;

use super::mime::base64_decode;
use super::mime::tests::decode_header_value;
use super::render::boundary;
use super::*;

fn ctx() -> RenderContext<'static> {
    RenderContext::new(UNIX_EPOCH + Duration::from_secs(1_700_000_000), 0x42)
}

fn campaign() -> TemplateSpec {
    TemplateSpec {
        from: "Acme News <news@acme.test>".into(),
        subject: "Hello {{ first_name | default(\"friend\") }}".into(),
        reply_to: Some("support@acme.test".into()),
        text: Some("Hi {{ first_name }},\nyour code is {{ code }}.\n".into()),
        html: Some("<p>Hi {{ first_name }}, your code is <b>{{ code }}</b>.</p>\n".into()),
        headers: [(
            "List-Unsubscribe".to_owned(),
            "<mailto:unsub@acme.test?subject={{ email }}>".to_owned(),
        )]
        .into(),
        ..TemplateSpec::default()
    }
}

fn compile(spec: &TemplateSpec) -> Template {
    Template::compile_with_secret(spec, [7; 16]).unwrap()
}

fn render(template: &Template, fields: &[&str], values: &[&[u8]]) -> String {
    let mut out = BytesMut::new();
    template
        .render(fields, values, "zoe@example.test", &ctx(), &mut out)
        .unwrap();
    String::from_utf8(out.to_vec()).unwrap()
}

#[test]
fn renders_text_and_html_exactly() {
    let template = compile(&campaign());
    let got = render(
        &template,
        &["first_name", "code"],
        &["Zoë <b>".as_bytes(), b"A=1"],
    );
    let want = "Date: Tue, 14 Nov 2023 22:13:20 +0000\r\n\
Message-ID: <6553f100.0000000000000042@acme.test>\r\n\
From: Acme News <news@acme.test>\r\n\
To: zoe@example.test\r\n\
Subject: Hello =?UTF-8?Q?Zo=C3=AB?= <b>\r\n\
Reply-To: <support@acme.test>\r\n\
MIME-Version: 1.0\r\n\
List-Unsubscribe: <mailto:unsub@acme.test?subject=zoe@example.test>\r\n\
Content-Type: multipart/alternative;\r\n boundary=\"BOUNDARY\"\r\n\
\r\n\
--BOUNDARY\r\n\
Content-Type: text/plain; charset=utf-8\r\n\
Content-Transfer-Encoding: quoted-printable\r\n\
\r\n\
Hi Zo=C3=AB <b>,\r\n\
your code is A=3D1.\r\n\
--BOUNDARY\r\n\
Content-Type: text/html; charset=utf-8\r\n\
Content-Transfer-Encoding: quoted-printable\r\n\
\r\n\
<p>Hi Zo=C3=AB &lt;b&gt;, your code is <b>A=3D1</b>.</p>\r\n\
--BOUNDARY--\r\n";
    let alt = boundary(template.secret, 0x42, b'a', 0);
    let want = want.replace("BOUNDARY", std::str::from_utf8(&alt).unwrap());
    assert_eq!(got, want);
    // The boundary is pinned too: a change to its derivation changes stored
    // expectations elsewhere (previews), so it should be deliberate.
    assert_eq!(&alt[..], b"=_a51ceb2f275249e23f7613182566179df" as &[u8]);
}

#[test]
fn seven_bit_single_part_and_defaults() {
    let spec = TemplateSpec {
        from: "news@acme.test".into(),
        return_path: Some("bounce+x@acme.test".into()),
        subject: "Hello {{ first_name | default(\"friend\") }}".into(),
        text: Some("Hi {{ first_name | default('there') }}\n".into()),
        ..TemplateSpec::default()
    };
    let template = compile(&spec);
    assert_eq!(template.envelope_from(), "bounce+x@acme.test");
    assert!(template.fields_needed().is_empty());
    let got = render(&template, &["first_name"], &[b""]);
    assert!(
        got.ends_with(
            "Subject: Hello friend\r\nMIME-Version: 1.0\r\n\
         Content-Type: text/plain; charset=utf-8\r\n\
         Content-Transfer-Encoding: 7bit\r\n\r\nHi there\r\n"
        ),
        "{got}"
    );
    assert!(got.contains("From: <news@acme.test>\r\nTo: zoe@example.test\r\n"));
    // No column at all: the defaults too.
    assert_eq!(render(&template, &[], &[]), got);
}

#[test]
fn missing_fields_are_listed() {
    let mut spec = campaign();
    spec.headers.insert(
        "X-Campaign".into(),
        "{{ campaign }} {{ tier | default(\"-\") }}".into(),
    );
    let template = compile(&spec);
    assert_eq!(
        template.fields_needed(),
        BTreeSet::from(["campaign".into(), "code".into(), "first_name".into()])
    );
    match template.check_fields(&["first_name", "email"]) {
        Err(TemplateError::MissingFields(missing)) => {
            assert_eq!(missing, ["campaign", "code"]);
        }
        other => panic!("{other:?}"),
    }
    assert!(template
        .check_fields(&["code", "first_name", "campaign"])
        .is_ok());
    // Rendering without a required field is refused and writes nothing.
    let mut out = BytesMut::from(&b"keep"[..]);
    let err = template
        .render(&["first_name"], &[b"x"], "a@b.test", &ctx(), &mut out)
        .unwrap_err();
    assert_eq!(err.reason, "no value for merge fields `campaign`, `code`");
    assert_eq!(&out[..], b"keep");
}

#[test]
fn text_only_recipients_get_the_text_part() {
    let template = compile(&campaign());
    for (flag, multipart) in [
        ("1", false),
        ("TRUE", false),
        ("yes", false),
        ("no", true),
        ("", true),
    ] {
        let got = render(
            &template,
            &["first_name", "code", "text_only"],
            &[b"Ann", b"7", flag.as_bytes()],
        );
        assert_eq!(
            got.contains("multipart/alternative"),
            multipart,
            "{flag}: {got}"
        );
        assert!(got.contains("text/plain"));
        assert_eq!(got.contains("text/html"), multipart);
    }
    // An HTML-only template ignores the flag.
    let mut spec = campaign();
    spec.text = None;
    let got = render(
        &compile(&spec),
        &["first_name", "code", "text_only"],
        &[b"A", b"1", b"1"],
    );
    assert!(got.contains("Content-Type: text/html; charset=utf-8\r\n"));
}

#[test]
fn attachments_make_multipart_mixed() {
    let mut spec = campaign();
    let data: Vec<u8> = (0..=255u8).cycle().take(500).collect();
    spec.attachments = vec![
        Attachment {
            filename: "terms.pdf".into(),
            content_type: "application/pdf".into(),
            data: data.clone(),
        },
        Attachment {
            filename: "Grüße.txt".into(),
            content_type: "text/plain".into(),
            data: b"hi".to_vec(),
        },
    ];
    let template = compile(&spec);
    let got = render(&template, &["first_name", "code"], &[b"Ann", b"7"]);
    let mix = String::from_utf8(boundary(template.secret, 0x42, b'm', 0).to_vec()).unwrap();
    let alt = String::from_utf8(boundary(template.secret, 0x42, b'a', 0).to_vec()).unwrap();
    assert!(got.contains(&format!(
        "MIME-Version: 1.0\r\nList-Unsubscribe: <mailto:unsub@acme.test?subject=zoe@example.test>\r\n\
         Content-Type: multipart/mixed;\r\n boundary=\"{mix}\"\r\n\r\n--{mix}\r\n\
         Content-Type: multipart/alternative;\r\n boundary=\"{alt}\"\r\n"
    )), "{got}");
    assert!(
        got.contains(&format!(
            "--{alt}--\r\n--{mix}\r\nContent-Type: application/pdf; name=\"terms.pdf\"\r\n\
         Content-Disposition: attachment; filename=\"terms.pdf\"\r\n\
         Content-Transfer-Encoding: base64\r\n\r\n"
        )),
        "{got}"
    );
    assert!(
        got.contains(
            "Content-Type: text/plain; name=\"=?UTF-8?B?R3LDvMOfZS50eHQ=?=\"\r\n\
         Content-Disposition: attachment; filename*=utf-8''Gr%C3%BC%C3%9Fe.txt\r\n"
        ),
        "{got}"
    );
    assert!(got.ends_with(&format!("aGk=\r\n--{mix}--\r\n")), "{got}");
    // The first attachment decodes back.
    let start = got.find("base64\r\n\r\n").unwrap() + 10;
    let end = start + got[start..].find("\r\n--").unwrap();
    let lines: Vec<&str> = got[start..end].split("\r\n").collect();
    assert!(lines.iter().all(|l| l.len() <= 76) && lines[0].len() == 76);
    assert_eq!(base64_decode(lines.concat().as_bytes()).unwrap(), data);
    // text_only keeps the attachments, drops the HTML alternative.
    let got = render(
        &template,
        &["first_name", "code", "text_only"],
        &[b"Ann", b"7", b"1"],
    );
    assert!(got.contains("multipart/mixed") && !got.contains("multipart/alternative"));
    assert!(got.contains("terms.pdf") && !got.contains("text/html"));
}

#[test]
fn a_value_holding_the_boundary_gets_another() {
    // A 7bit text part could hold a boundary (QP and base64 cannot), though not at
    // the start of a line: give the value this message's first boundary and check
    // the renderer draws another.
    let spec = TemplateSpec {
        from: "news@acme.test".into(),
        subject: "s".into(),
        text: Some("{{ x }}".into()),
        html: Some("<p>hi</p>".into()),
        ..TemplateSpec::default()
    };
    let template = compile(&spec);
    let first = boundary(template.secret, 0x42, b'a', 0);
    let mut value = b"x --".to_vec();
    value.extend_from_slice(&first);
    let got = render(&template, &["x"], &[&value]);
    let second = String::from_utf8(boundary(template.secret, 0x42, b'a', 1).to_vec()).unwrap();
    assert!(got.contains(&format!("boundary=\"{second}\"")), "{got}");
    assert!(got.contains("Content-Transfer-Encoding: 7bit\r\n\r\nx --=_a"));
    assert_eq!(got.matches(&second).count(), 4);
    // The same for a header (harmless there, but the check is simple and strict).
    let spec = TemplateSpec {
        subject: "{{ x }}".into(),
        text: Some("t".into()),
        ..spec
    };
    let template = compile(&spec);
    let first = boundary(template.secret, 0x42, b'a', 0);
    let got = render(&template, &["x"], &[&first]);
    let second = String::from_utf8(boundary(template.secret, 0x42, b'a', 1).to_vec()).unwrap();
    assert!(got.contains(&format!("boundary=\"{second}\"")), "{got}");
}

#[test]
fn compile_errors_name_the_part() {
    let cases: Vec<(TemplateSpec, &str)> = vec![
        (
            TemplateSpec {
                subject: "Hi {{ name ".into(),
                ..campaign()
            },
            "subject:1:4: unclosed placeholder: no `}}` after `{{`",
        ),
        (
            TemplateSpec {
                html: Some("<p>\n  {{ name | upper }}</p>".into()),
                ..campaign()
            },
            "html:2:13: unknown filter `upper`: only `default(\"...\")` is supported",
        ),
        (
            TemplateSpec {
                headers: [("X-A".to_owned(), "{{}}".to_owned())].into(),
                ..campaign()
            },
            "header X-A:1:3: empty placeholder: expected a field name",
        ),
        (
            TemplateSpec {
                headers: [("Bcc".to_owned(), "x@y.test".to_owned())].into(),
                ..campaign()
            },
            "headers.Bcc: volley writes this header itself; it cannot be set in [headers]",
        ),
        (
            TemplateSpec {
                headers: [("Content-Type".to_owned(), "text/plain".to_owned())].into(),
                ..campaign()
            },
            "headers.Content-Type: volley writes this header itself; it cannot be set in [headers]",
        ),
        (
            TemplateSpec {
                headers: [("Bad Name".to_owned(), "x".to_owned())].into(),
                ..campaign()
            },
            "headers.Bad Name: not a header name (1 to 76 printable ASCII characters, no `:` or space)",
        ),
        (
            TemplateSpec {
                from: "{{ sender }}".into(),
                ..campaign()
            },
            "from: placeholders are not allowed here",
        ),
        (
            TemplateSpec {
                from: "Acme".into(),
                ..campaign()
            },
            "from: `Acme` is not an address (no `@`)",
        ),
        (
            TemplateSpec {
                text: None,
                html: None,
                ..campaign()
            },
            "text: no body: set text, html or both",
        ),
        (
            TemplateSpec {
                raw: Some("Subject: x\r\n\r\nbody".into()),
                ..campaign()
            },
            "subject: a raw message template takes no other parts: put it in the message",
        ),
        (
            TemplateSpec {
                attachments: vec![Attachment {
                    filename: "../etc/passwd".into(),
                    content_type: "text/plain".into(),
                    data: vec![],
                }],
                ..campaign()
            },
            "attachments[0]: filename holds a control character or a path separator",
        ),
    ];
    for (spec, want) in cases {
        match Template::compile(&spec) {
            Ok(_) => panic!("compiled: {want}"),
            Err(err) => assert_eq!(err.to_string(), want),
        }
    }
}

fn raw_spec() -> TemplateSpec {
    TemplateSpec::from_message(
        "From: Acme <news@acme.test>\n\
         To: someone@else.test\n\
         Date: Mon, 1 Jan 2024 00:00:00 +0000\n\
         Bcc: hidden@acme.test\n\
         Subject: Hi {{ name }}\n\
         MIME-Version: 1.0\n\
         Content-Type: multipart/alternative; boundary=\"b1\"\n\
         \n\
         --b1\n\
         Content-Type: text/plain; charset=utf-8\n\
         \n\
         Hello {{ name }}, code {{ code | default(\"none\") }}\n\
         --b1--\n",
        std::path::Path::new("m.eml"),
    )
    .unwrap()
}

#[test]
fn renders_raw_messages() {
    let template = compile(&raw_spec());
    assert_eq!(template.envelope_from(), "news@acme.test");
    let got = render(&template, &["name"], &["Jörg".as_bytes()]);
    assert_eq!(
        got,
        "Date: Tue, 14 Nov 2023 22:13:20 +0000\r\n\
         Message-ID: <6553f100.0000000000000042@acme.test>\r\n\
         From: Acme <news@acme.test>\r\n\
         To: zoe@example.test\r\n\
         Subject: Hi =?UTF-8?Q?J=C3=B6rg?=\r\n\
         MIME-Version: 1.0\r\n\
         Content-Type: multipart/alternative; boundary=\"b1\"\r\n\
         \r\n\
         --b1\r\n\
         Content-Type: text/plain; charset=utf-8\r\n\
         \r\n\
         Hello Jörg, code none\r\n\
         --b1--\r\n"
    );
    // A value that would forge a boundary line is refused.
    let mut out = BytesMut::new();
    let err = template
        .render(
            &["name"],
            &[b"x\r\n--b1--\r\n"],
            "a@b.test",
            &ctx(),
            &mut out,
        )
        .unwrap_err();
    assert_eq!(
        err.reason,
        "a merge value holds one of the message's MIME boundaries"
    );
    assert!(out.is_empty());
    // A templated To is kept.
    let spec = TemplateSpec::from_message(
        "From: a@acme.test\nTo: {{ name }} <{{ email }}>\n\nx",
        std::path::Path::new("m.eml"),
    )
    .unwrap();
    let got = render(&compile(&spec), &["name"], &[b"Zoe"]);
    assert!(
        got.contains("\r\nTo: Zoe <zoe@example.test>\r\n\r\nx\r\n"),
        "{got}"
    );
}

/// What a rendered message must satisfy whatever the merge values were.
fn check_message(message: &[u8], expected_headers: &[&str], boundaries: usize) {
    let text = String::from_utf8_lossy(message);
    // (3) no bare CR or LF: splitting on CRLF leaves none.
    let lines: Vec<&[u8]> = split_crlf(message);
    for line in &lines {
        assert!(
            !line.contains(&b'\r') && !line.contains(&b'\n'),
            "bare CR/LF in {text}"
        );
        // (2) no line over 998 octets.
        assert!(line.len() <= 998, "line of {} octets", line.len());
        // (4) no line that is a lone ".".
        assert_ne!(*line, b".", "lone dot in {text}");
    }
    assert!(message.ends_with(b"\r\n"));
    // (1) exactly the expected header names before the first empty line.
    let blank = lines
        .iter()
        .position(|l| l.is_empty())
        .expect("no header end");
    let names: BTreeSet<String> = lines[..blank]
        .iter()
        .filter(|l| !l.starts_with(b" ") && !l.starts_with(b"\t"))
        .map(|l| {
            let line = String::from_utf8_lossy(l);
            line.split_once(':')
                .map(|(n, _)| n.to_owned())
                .unwrap_or_else(|| panic!("not a header: {line}"))
        })
        .collect();
    let header_count = lines[..blank]
        .iter()
        .filter(|l| !l.starts_with(b" ") && !l.starts_with(b"\t"))
        .count();
    let want: BTreeSet<String> = expected_headers.iter().map(|s| s.to_string()).collect();
    assert_eq!(names, want, "{text}");
    assert_eq!(
        header_count,
        expected_headers.len(),
        "duplicate header in {text}"
    );
    // (5) every boundary line is one of the message's declared boundaries, each
    // seen exactly as often as the structure needs.
    let declared: Vec<String> = text
        .match_indices("boundary=\"")
        .map(|(at, m)| {
            let rest = &text[at + m.len()..];
            rest[..rest.find('"').unwrap()].to_owned()
        })
        .collect();
    assert_eq!(declared.len(), boundaries, "{text}");
    for line in &lines {
        for d in &declared {
            if line.starts_with(format!("--{d}").as_bytes()) {
                let line = String::from_utf8_lossy(line);
                assert!(
                    line == format!("--{d}") || line == format!("--{d}--"),
                    "stray boundary line {line}"
                );
            }
        }
        // Nothing that looks like one of ours at a line start in a body either.
        if line.starts_with(b"--=_") {
            let line = String::from_utf8_lossy(line);
            let name = line.trim_start_matches('-').trim_end_matches('-');
            assert!(
                declared.iter().any(|d| d == name),
                "stray boundary line {line}"
            );
        }
    }
    for d in &declared {
        let opens = lines
            .iter()
            .filter(|l| **l == format!("--{d}").as_bytes())
            .count();
        let closes = lines
            .iter()
            .filter(|l| **l == format!("--{d}--").as_bytes())
            .count();
        assert_eq!(closes, 1, "{d} in {text}");
        assert!((1..=3).contains(&opens), "{d} opens {opens} in {text}");
    }
}

fn split_crlf(message: &[u8]) -> Vec<&[u8]> {
    let body = message.strip_suffix(b"\r\n").unwrap_or(message);
    let mut lines = Vec::new();
    let mut rest = body;
    while let Some(at) = rest.windows(2).position(|w| w == b"\r\n") {
        lines.push(&rest[..at]);
        rest = &rest[at + 2..];
    }
    lines.push(rest);
    lines
}

/// Values an attacker would try, mixed with arbitrary bytes.
fn hostile_value() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..300),
        Just(b"\r\n".to_vec()),
        Just(b"\r\n.\r\n".to_vec()),
        Just(b".".to_vec()),
        Just(b"\n.\n".to_vec()),
        Just(b"x\r\nBcc: victim@evil.test".to_vec()),
        Just(b"\r\n\r\n--=_a0000000000000000000000000000000\r\n".to_vec()),
        Just(b"--b1--".to_vec()),
        Just(b"=?UTF-8?B?QmNjOiB4?=".to_vec()),
        Just("😀".repeat(400).into_bytes()),
        Just(vec![b'a'; 2000]),
        Just(b"\0\x0b\x0c\x1b\x7f\xc2\x85".to_vec()),
        "[a-z .\r\n<>&=-]{0,200}".prop_map(String::into_bytes),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn parts_messages_stay_well_formed(
        first in hostile_value(),
        code in hostile_value(),
        recipient in "[a-z0-9.+-]{1,20}@[a-z0-9.-]{1,20}",
        text_only in prop_oneof![Just(&b"0"[..]), Just(&b"1"[..])],
        unique in any::<u64>(),
    ) {
        let mut spec = campaign();
        spec.headers.insert("X-Code".into(), "{{ code }} / {{ first_name }}".into());
        spec.attachments = vec![Attachment {
            filename: "a.bin".into(),
            content_type: "application/octet-stream".into(),
            data: vec![0; 100],
        }];
        let template = compile(&spec);
        let mut out = BytesMut::new();
        let ctx = RenderContext::new(UNIX_EPOCH + Duration::from_secs(1_700_000_000), unique);
        template
            .render(&["first_name", "code", "text_only"], &[&first, &code, text_only], &recipient, &ctx, &mut out)
            .unwrap();
        check_message(
            &out,
            &["Date", "Message-ID", "From", "To", "Subject", "Reply-To", "MIME-Version",
              "List-Unsubscribe", "X-Code", "Content-Type"],
            if text_only == b"1" { 1 } else { 2 },
        );
        // Header values decode back to the sanitized value.
        let text = String::from_utf8(out.to_vec()).unwrap();
        let subject = text.split("\r\nSubject:").nth(1).unwrap();
        let subject = &subject[..subject.find("\r\nReply-To:").unwrap()];
        let mut want = String::new();
        super::mime::push_header_text(if first.is_empty() { b"friend" } else { &first }, &mut want);
        let want = format!("Hello {want}");
        let want = want.trim_matches(' ');
        let decoded = decode_header_value(subject);
        prop_assert_eq!(decoded.trim_start(), want);
    }

    #[test]
    fn single_part_messages_stay_well_formed(first in hostile_value(), code in hostile_value()) {
        let mut spec = campaign();
        spec.html = None;
        let template = compile(&spec);
        let mut out = BytesMut::new();
        template.render(&["first_name", "code"], &[&first, &code], "a@b.test", &ctx(), &mut out).unwrap();
        check_message(
            &out,
            &["Date", "Message-ID", "From", "To", "Subject", "Reply-To", "MIME-Version",
              "List-Unsubscribe", "Content-Type", "Content-Transfer-Encoding"],
            0,
        );
    }

    #[test]
    fn raw_messages_stay_well_formed(name in hostile_value(), code in hostile_value()) {
        let template = compile(&raw_spec());
        let mut out = BytesMut::new();
        match template.render(&["name", "code"], &[&name, &code], "a@b.test", &ctx(), &mut out) {
            Ok(()) => check_message(
                &out,
                &["Date", "Message-ID", "From", "To", "Subject", "MIME-Version", "Content-Type"],
                1,
            ),
            Err(err) => {
                // Only a forged boundary is refused.
                prop_assert!(name.windows(2).any(|w| w == b"b1") || code.windows(2).any(|w| w == b"b1"), "{}", err);
                prop_assert!(out.is_empty());
            }
        }
    }

    #[test]
    fn template_text_never_panics(text in "\\PC{0,80}", bytes in proptest::collection::vec(any::<u8>(), 0..100)) {
        let spec = TemplateSpec {
            from: "a@b.test".into(),
            subject: text.clone(),
            text: Some(text.clone()),
            html: Some(String::from_utf8_lossy(&bytes).into_owned()),
            ..TemplateSpec::default()
        };
        if let Ok(template) = Template::compile(&spec) {
            let mut out = BytesMut::new();
            let _ = template.render(&[], &[], "a@b.test", &ctx(), &mut out);
        }
        let _ = TemplateSpec::from_stored(&bytes);
        let _ = TemplateSpec::from_message(&text, std::path::Path::new("x.eml"))
            .and_then(|spec| Template::compile(&spec));
    }
}

/// Rough render throughput: `cargo test -p volley-merge --release --lib
/// tests::throughput -- --ignored --nocapture`.
#[test]
#[ignore]
fn throughput() {
    let small = campaign();
    // A newsletter-sized HTML part with long lines and non-ASCII text: all QP.
    let paragraph = "<p style=\"margin:0 0 12px 0;font-family:Arial\">Grüße, {{ first_name }}! \
                     Unsere Angebote dieser Woche für Sie – jetzt entdecken.</p>";
    let large = TemplateSpec {
        html: Some(paragraph.repeat(150)),
        ..campaign()
    };
    for (name, spec) in [("small", small), ("large", large)] {
        let template = compile(&spec);
        let mut out = BytesMut::with_capacity(64 * 1024);
        let n = 50_000;
        let started = std::time::Instant::now();
        for i in 0..n {
            out.clear();
            let ctx = RenderContext::new(UNIX_EPOCH + Duration::from_secs(1_700_000_000), i);
            template
                .render(
                    &["first_name", "code"],
                    &[b"Ann", b"A-123"],
                    "ann@example.test",
                    &ctx,
                    &mut out,
                )
                .unwrap();
        }
        let elapsed = started.elapsed();
        println!(
            "{name}: {n} messages of {} bytes in {elapsed:?}: {:.0} ns/message, {:.0} MB/s",
            out.len(),
            elapsed.as_nanos() as f64 / n as f64,
            (out.len() * n as usize) as f64 / elapsed.as_secs_f64() / 1e6,
        );
    }
}

/// The per-thread cache of where each placeholder's value comes from is keyed
/// by template and field names: a change of either maps the values afresh, and
/// a missing field is reported every time, not only the first.
#[test]
fn field_mapping_follows_the_template_and_the_field_names() {
    let spec = TemplateSpec {
        from: "a@acme.test".into(),
        subject: "{{ first_name }}/{{ code }}".into(),
        text: Some("x\n".into()),
        ..TemplateSpec::default()
    };
    let one = compile(&spec);
    let subject = |text: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix("Subject: "))
            .unwrap_or_default()
            .to_owned()
    };
    let got = render(&one, &["first_name", "code"], &[b"Ann", b"7"]);
    assert_eq!(subject(&got), "Ann/7");
    let got = render(&one, &["code", "first_name"], &[b"8", b"Bob"]);
    assert_eq!(subject(&got), "Bob/8");
    let swapped = TemplateSpec {
        subject: "{{ code }}-{{ first_name }}".into(),
        ..spec.clone()
    };
    let two = compile(&swapped);
    let got = render(&two, &["code", "first_name"], &[b"9", b"Cy"]);
    assert_eq!(subject(&got), "9-Cy");
    let got = render(&one, &["code", "first_name"], &[b"1", b"Di"]);
    assert_eq!(subject(&got), "Di/1");
    for _ in 0..2 {
        let mut out = BytesMut::new();
        let err = one
            .render(&["first_name"], &[b"Ed"], "e@x.test", &ctx(), &mut out)
            .unwrap_err();
        assert!(err.to_string().contains("`code`"), "{err}");
    }
    let got = render(&one, &["first_name", "code"], &[b"Fay", b"2"]);
    assert_eq!(subject(&got), "Fay/2");
}

mod web_links {
    use super::*;
    use crate::mime::tests::qp_decode;
    use volley_queue::link::{LinkKind, LinkSigner, LinkTarget};

    const KEY: [u8; 32] = [9; 32];

    fn target() -> LinkTarget {
        LinkTarget {
            campaign: 77,
            batch: 3,
            index: 5,
            link: 0,
        }
    }

    fn tracked() -> TemplateSpec {
        TemplateSpec {
            html: Some(
                "<html><body><p>Hi {{ first_name }}: <a href=\"https://shop.acme.test/sale?a=1&amp;b=2\">sale</a> \
                 <a href='mailto:help@acme.test'>help</a> <a href=\"https://shop.acme.test/{{ code }}\">yours</a> \
                 <a href=\"https://shop.acme.test/faq\">faq</a></p></body></html>\n"
                    .into(),
            ),
            text: Some("Sale: https://shop.acme.test/sale\n".into()),
            track_clicks: true,
            track_opens: true,
            ..campaign()
        }
    }

    fn render_with(template: &Template, links: Option<&WebLinks>) -> String {
        let mut ctx = ctx();
        ctx.web = links.map(|links| WebContext {
            links,
            target: target(),
        });
        let mut out = BytesMut::new();
        template
            .render(
                &["first_name", "code", "name"],
                &[b"Zoe", b"Z9", b"Zoe"],
                "zoe@example.test",
                &ctx,
                &mut out,
            )
            .unwrap();
        String::from_utf8(out.to_vec()).unwrap()
    }

    /// The decoded text of the part with `Content-Type: text/<subtype>`.
    fn part(message: &str, subtype: &str) -> String {
        let start = message
            .find(&format!("Content-Type: text/{subtype}"))
            .unwrap();
        let rest = &message[start..];
        let body = &rest[rest.find("\r\n\r\n").unwrap() + 4..];
        let body = &body[..body.find("\r\n--").unwrap_or(body.len())];
        String::from_utf8(qp_decode(&format!("{body}\r\n"))).unwrap()
    }

    #[test]
    fn with_links_the_message_carries_signed_unsubscribe_click_and_open_urls() {
        let template = compile(&tracked());
        assert_eq!(
            template.tracked_links(),
            [
                "https://shop.acme.test/sale?a=1&b=2",
                "https://shop.acme.test/faq"
            ]
        );
        let links = WebLinks::new(&KEY, "https://links.acme.test/").unwrap();
        let got = render_with(&template, Some(&links));
        let signer = LinkSigner::new(&KEY).unwrap();
        let unsubscribe = format!(
            "https://links.acme.test/u/{}",
            signer.token(LinkKind::Unsubscribe, target())
        );
        // One-click first, then the template's own mailto form; each once.
        let want = format!(
            "List-Unsubscribe: <{unsubscribe}>,\r\n <mailto:unsub@acme.test?subject=zoe@example.test>\r\nList-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n"
        );
        assert!(got.contains(&want), "{got}");
        assert_eq!(got.matches("List-Unsubscribe:").count(), 1);
        let html = part(&got, "html");
        let click = |link| {
            format!(
                "https://links.acme.test/c/{}",
                signer.token(LinkKind::Click, LinkTarget { link, ..target() })
            )
        };
        let open = format!(
            "https://links.acme.test/o/{}",
            signer.token(LinkKind::Open, target())
        );
        assert_eq!(
            html,
            format!(
                "<html><body><p>Hi Zoe: <a href=\"{}\">sale</a> <a href='mailto:help@acme.test'>help</a> \
                 <a href=\"https://shop.acme.test/Z9\">yours</a> <a href=\"{}\">faq</a></p>\
                 <img src=\"{open}\" width=\"1\" height=\"1\" alt=\"\" style=\"border:0\"></body></html>\r\n",
                click(0),
                click(1)
            )
        );
        // The text part keeps the plain URL.
        assert_eq!(part(&got, "plain"), "Sale: https://shop.acme.test/sale\r\n");
    }

    #[test]
    fn a_form_that_would_need_encoding_is_left_out_of_the_one_click_header() {
        let spec = TemplateSpec {
            headers: [(
                "List-Unsubscribe".to_owned(),
                "<mailto:unsub@acme.test?subject={{ first_name }}>".to_owned(),
            )]
            .into(),
            ..campaign()
        };
        let links = WebLinks::new(&KEY, "https://links.acme.test").unwrap();
        let mut ctx = ctx();
        ctx.web = Some(WebContext {
            links: &links,
            target: target(),
        });
        let mut out = BytesMut::new();
        compile(&spec)
            .render(
                &["first_name", "code"],
                &["Zoë".as_bytes(), b"1"],
                "zoe@example.test",
                &ctx,
                &mut out,
            )
            .unwrap();
        let got = String::from_utf8(out.to_vec()).unwrap();
        let line = got
            .lines()
            .find(|l| l.starts_with("List-Unsubscribe:"))
            .unwrap();
        assert!(
            line.starts_with("List-Unsubscribe: <https://links.acme.test/u/"),
            "{line}"
        );
        assert!(line.ends_with('>') && !line.contains("mailto"), "{got}");
    }

    #[test]
    fn without_links_the_message_reads_as_written() {
        let template = compile(&tracked());
        let got = render_with(&template, None);
        assert!(
            got.contains("List-Unsubscribe: <mailto:unsub@acme.test?subject=zoe@example.test>\r\n")
        );
        assert!(!got.contains("List-Unsubscribe-Post"));
        let html = part(&got, "html");
        assert!(html.contains("<a href=\"https://shop.acme.test/sale?a=1&amp;b=2\">sale</a>"));
        assert!(!html.contains("<img"), "{html}");
    }

    #[test]
    fn transactional_templates_opt_out_and_raw_templates_get_the_headers() {
        let links = WebLinks::new(&KEY, "https://links.acme.test").unwrap();
        let quiet = compile(&TemplateSpec {
            unsubscribe: false,
            ..campaign()
        });
        let got = render_with(&quiet, Some(&links));
        assert!(!got.contains("links.acme.test"), "{got}");
        assert!(got.contains("List-Unsubscribe: <mailto:"));
        let raw = compile(&raw_spec());
        let got = render_with(&raw, Some(&links));
        assert!(
            got.contains("List-Unsubscribe: <https://links.acme.test/u/"),
            "{got}"
        );
        assert!(got.contains("List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n"));
        let err = Template::compile(&TemplateSpec {
            track_clicks: true,
            ..raw_spec()
        })
        .unwrap_err();
        assert!(err.to_string().contains("track_clicks"), "{err}");
        let err = Template::compile(&TemplateSpec {
            html: None,
            track_opens: true,
            ..campaign()
        })
        .unwrap_err();
        assert!(err.to_string().contains("add html"), "{err}");
    }

    #[test]
    fn stored_form_keeps_old_hashes_and_round_trips_the_flags() {
        let plain = campaign();
        assert!(!String::from_utf8(plain.to_stored())
            .unwrap()
            .contains("track"));
        let spec = TemplateSpec {
            unsubscribe: false,
            ..tracked()
        };
        let stored = String::from_utf8(spec.to_stored()).unwrap();
        assert!(
            stored.ends_with(",\"unsubscribe\":false,\"track_clicks\":true,\"track_opens\":true}"),
            "{stored}"
        );
        assert_eq!(TemplateSpec::from_stored(stored.as_bytes()).unwrap(), spec);
    }
}
