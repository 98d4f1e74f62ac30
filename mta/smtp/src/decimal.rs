//! Writing numbers in decimal without going through `fmt`: the per-message paths
//! (SIZE= and BDAT sizes, the Date header, enhanced codes in the log) write a few
//! each, and `fmt` machinery costs more than the digits.

use bytes::BufMut;

/// Writes `n` in decimal into `out`, zero-padded to at least `width` digits.
pub fn put_decimal(out: &mut impl BufMut, n: u64, width: usize) {
    let mut buf = [b'0'; 20];
    let mut i = buf.len();
    let mut n = n;
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    let start = i.min(buf.len() - width.min(buf.len()));
    out.put_slice(&buf[start..]);
}
