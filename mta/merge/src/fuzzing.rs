//! Entry point of the `template` fuzz target (`fuzz/fuzz_targets/`), kept here so
//! that `cargo test` runs the same code under proptest on stable Rust.

use std::path::Path;
use std::time::{Duration, SystemTime};

use bytes::BytesMut;

use crate::{RenderContext, Template, TemplateSpec};

/// Arbitrary bytes as a template (TOML, raw message, or stored JSON by the first
/// byte's low bits), compiled and, if valid, rendered with values from the rest.
/// Must never panic; a rendered message has no bare CR or LF.
pub fn template(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let (text, values) = match rest.iter().position(|&b| b == 0) {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (rest, &[][..]),
    };
    let file = Path::new("fuzz.toml");
    let spec = match mode % 3 {
        0 => TemplateSpec::from_toml(&String::from_utf8_lossy(text), file),
        1 => TemplateSpec::from_message(&String::from_utf8_lossy(text), file),
        _ => TemplateSpec::from_stored(text),
    };
    let Ok(spec) = spec else { return };
    let Ok(template) = Template::compile(&spec) else {
        return;
    };
    let mut names: Vec<String> = template.fields_needed().into_iter().collect();
    names.push("text_only".into());
    let fields: Vec<&str> = names.iter().map(String::as_str).collect();
    let vals: Vec<&[u8]> = fields.iter().map(|_| values).collect();
    let ctx = RenderContext::new(
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
        1,
    );
    let mut out = BytesMut::new();
    if template
        .render(&fields, &vals, "rcpt@x.test", &ctx, &mut out)
        .is_ok()
    {
        let bytes = &out[..];
        for (i, &b) in bytes.iter().enumerate() {
            let bare_cr = b == b'\r' && bytes.get(i + 1) != Some(&b'\n');
            let bare_lf = b == b'\n' && (i == 0 || bytes[i - 1] != b'\r');
            assert!(!bare_cr && !bare_lf, "bare line end at {i}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1000))]

        #[test]
        fn templates_never_panic(mode in 0u8..3, text in "[ -~\n]{0,200}", values in proptest::collection::vec(any::<u8>(), 0..60)) {
            let mut data = vec![mode];
            data.extend_from_slice(text.as_bytes());
            data.push(0);
            data.extend_from_slice(&values);
            template(&data);
        }
    }

    #[test]
    fn a_valid_template_renders_in_the_harness() {
        let toml = b"from = \"a@b.test\"\nsubject = \"Hi {{ name }}\"\ntext = \"x {{ name }}\"\n\0v\r\n.\r\nBcc: y";
        let mut data = vec![0u8];
        data.extend_from_slice(toml);
        template(&data);
    }
}
