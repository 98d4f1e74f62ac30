//! Recipient address checks for campaign input: what is refused before queueing.

/// Why an address is refused, or `Ok` with the address trimmed.
pub fn check(address: &str) -> Result<&str, String> {
    let address = address.trim();
    if address.is_empty() {
        return Err("empty address".into());
    }
    if let Some(c) = address
        .chars()
        .find(|c| c.is_whitespace() || c.is_control())
    {
        return Err(format!("address contains {c:?}"));
    }
    if let Some(c) = address.chars().find(|c| {
        matches!(
            c,
            '<' | '>' | ',' | ';' | '"' | '(' | ')' | '[' | ']' | '\\'
        )
    }) {
        return Err(format!("address contains {c:?}"));
    }
    let Some((local, domain)) = address.rsplit_once('@') else {
        return Err("no @ in the address".into());
    };
    if local.is_empty() {
        return Err("empty local part".into());
    }
    if local.len() > 64 {
        return Err("local part longer than 64 octets".into());
    }
    if local.contains('@') {
        return Err("more than one @".into());
    }
    if local.starts_with('.') || local.ends_with('.') || local.contains("..") {
        return Err("misplaced dot in the local part".into());
    }
    check_domain(domain)?;
    Ok(address)
}

/// Why a domain is refused (no dot, bad label, …), or `Ok`.
pub fn check_domain(domain: &str) -> Result<(), String> {
    if domain.is_empty() {
        return Err("empty domain".into());
    }
    if domain.len() > 253 {
        return Err("domain longer than 253 octets".into());
    }
    if !domain.contains('.') {
        return Err(format!("domain {domain:?} has no dot"));
    }
    for label in domain.split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err(format!("bad label in domain {domain:?}"));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(format!("label {label:?} starts or ends with '-'"));
        }
        if let Some(c) = label.chars().find(|c| !(c.is_alphanumeric() || *c == '-')) {
            return Err(format!("domain contains {c:?}"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_real_addresses_and_refuses_the_rest() {
        let ok = [
            "a@b.test",
            " user.name+tag@sub.example.com ",
            "o'brien@x.io",
            "δοκιμή@παράδειγμα.δοκιμή",
            "a-b_c@x-y.test",
        ];
        for a in ok {
            assert!(check(a).is_ok(), "{a}: {:?}", check(a));
        }
        let bad = [
            ("", "empty address"),
            ("nobody", "no @ in the address"),
            ("@x.test", "empty local part"),
            ("a@", "empty domain"),
            ("a@localhost", "has no dot"),
            ("a b@x.test", "contains ' '"),
            ("a@b@x.test", "more than one @"),
            ("a@x..test", "bad label"),
            ("a@-x.test", "starts or ends"),
            ("a@x_y.test", "contains '_'"),
            (".a@x.test", "misplaced dot"),
            ("a<b@x.test", "contains '<'"),
            ("a@x.test\r\nBcc: y@z.test", "contains"),
        ];
        for (a, why) in bad {
            let err = check(a).unwrap_err();
            assert!(err.contains(why), "{a:?}: {err}");
        }
        assert!(check(&format!("{}@x.test", "a".repeat(65))).is_err());
    }
}
