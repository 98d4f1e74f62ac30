//! LEB128 unsigned varints for lengths and indexes inside batch files.
//!
//! Hand-written: two ten-line functions on the per-recipient path, bounded to `u32`
//! so a hostile file cannot make the reader loop or overflow.

/// Appends `value` as a LEB128 varint (1 to 5 bytes).
pub(crate) fn put(out: &mut Vec<u8>, mut value: u32) {
    while value >= 0x80 {
        out.push((value as u8 & 0x7f) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// Reads a varint at `*pos`, advancing it. `None` if the bytes end first, the varint
/// is longer than 5 bytes, or its value does not fit in `u32`.
pub(crate) fn get(buf: &[u8], pos: &mut usize) -> Option<u32> {
    let mut value: u32 = 0;
    for i in 0..5 {
        let byte = *buf.get(*pos)?;
        *pos += 1;
        let part = u32::from(byte & 0x7f);
        if i == 4 && part > 0x0f {
            return None;
        }
        value |= part << (7 * i);
        if byte & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

/// Reads a varint length followed by that many bytes.
pub(crate) fn get_bytes<'a>(buf: &'a [u8], pos: &mut usize) -> Option<&'a [u8]> {
    let len = usize::try_from(get(buf, pos)?).ok()?;
    let end = pos.checked_add(len)?;
    let bytes = buf.get(*pos..end)?;
    *pos = end;
    Some(bytes)
}

/// Appends a varint length followed by the bytes.
pub(crate) fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    // Lengths above u32::MAX are refused by the builder before they get here.
    put(out, bytes.len() as u32);
    out.extend_from_slice(bytes);
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn round_trips(v in any::<u32>()) {
            let mut buf = Vec::new();
            put(&mut buf, v);
            let mut pos = 0;
            prop_assert_eq!(get(&buf, &mut pos), Some(v));
            prop_assert_eq!(pos, buf.len());
        }

        #[test]
        fn never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..8)) {
            let mut pos = 0;
            let _ = get(&bytes, &mut pos);
            prop_assert!(pos <= bytes.len());
        }
    }

    #[test]
    fn refuses_overlong_and_overflowing() {
        let mut pos = 0;
        assert_eq!(get(&[0x80, 0x80, 0x80, 0x80, 0x80, 0x00], &mut pos), None);
        let mut pos = 0;
        assert_eq!(get(&[0xff, 0xff, 0xff, 0xff, 0x1f], &mut pos), None);
        let mut pos = 0;
        assert_eq!(
            get(&[0xff, 0xff, 0xff, 0xff, 0x0f], &mut pos),
            Some(u32::MAX)
        );
    }
}
