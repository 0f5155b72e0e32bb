//! The `Qlik-Signature` check.
//!
//! Qlik Cloud signs every webhook with the lowercase hex HMAC-SHA256 of the raw request body,
//! keyed with the webhook's secret (design.md §2). This module is the only place that knows that.
//!
//! Promises:
//! - the check runs on the exact bytes received, never on re-serialised JSON;
//! - the comparison is constant-time (`hmac`'s `verify_slice`);
//! - either hex case and surrounding whitespace are accepted;
//! - a second, previous secret can be accepted during a rotation;
//! - secrets never leave this module: [`Secret`] prints as `***`.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::fmt;

type HmacSha256 = Hmac<Sha256>;

/// Length of an HMAC-SHA256 tag in bytes.
const TAG_LEN: usize = 32;

/// A webhook secret. Its `Debug` and `Display` never show the value.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret's bytes, for keying an HMAC. Never log them.
    pub fn expose(&self) -> &[u8] {
        self.0.as_bytes()
    }

    /// Number of characters, for validating the 32–64 characters Qlik generates.
    pub fn len(&self) -> usize {
        self.0.chars().count()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// Why a signature was refused. The messages are safe to return to the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("Qlik-Signature header missing")]
    Missing,
    #[error("Qlik-Signature is not hexadecimal")]
    NotHex,
    #[error("Qlik-Signature has {0} hex digits, expected 64")]
    WrongLength(usize),
    #[error("Qlik-Signature does not match the body")]
    Mismatch,
}

/// Which configured secret a valid signature was made with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Matched {
    Current,
    /// The previous secret: a rotation is under way (or Qlik still has the old one).
    Previous,
}

/// Verifies signatures against the current secret and, optionally, the previous one.
///
/// The keyed HMAC states are computed once and cloned per request, so a check costs one pass
/// over the body plus two compressions.
#[derive(Clone)]
pub struct Verifier {
    current: Option<HmacSha256>,
    previous: Option<HmacSha256>,
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Verifier")
            .field("previous", &self.previous.is_some())
            .finish_non_exhaustive()
    }
}

impl Verifier {
    pub fn new(current: &Secret, previous: Option<&Secret>) -> Self {
        Verifier {
            current: keyed(current.expose()),
            previous: previous.and_then(|s| keyed(s.expose())),
        }
    }

    /// Checks `header` (the raw `Qlik-Signature` value, if any) against `body`.
    pub fn verify(&self, header: Option<&[u8]>, body: &[u8]) -> Result<Matched, SignatureError> {
        let header = header.ok_or(SignatureError::Missing)?;
        let tag = decode_tag(header)?;
        if matches!(&self.current, Some(current) if check(current, body, &tag)) {
            return Ok(Matched::Current);
        }
        match &self.previous {
            Some(previous) if check(previous, body, &tag) => Ok(Matched::Previous),
            _ => Err(SignatureError::Mismatch),
        }
    }
}

/// The `Qlik-Signature` value Qlik would send for `body`: lowercase hex.
pub fn sign(secret: &Secret, body: &[u8]) -> String {
    match keyed(secret.expose()) {
        Some(mut mac) => {
            mac.update(body);
            to_hex(&mac.finalize().into_bytes())
        }
        None => String::new(),
    }
}

/// HMAC accepts keys of any length (longer ones are hashed first), so this is always `Some`;
/// were it ever `None`, the verifier would match nothing rather than fall back to a weak key.
fn keyed(key: &[u8]) -> Option<HmacSha256> {
    HmacSha256::new_from_slice(key).ok()
}

fn check(keyed: &HmacSha256, body: &[u8], tag: &[u8; TAG_LEN]) -> bool {
    let mut mac = keyed.clone();
    mac.update(body);
    mac.verify_slice(tag).is_ok()
}

/// Decodes 64 hex digits (either case, surrounding ASCII whitespace ignored).
fn decode_tag(header: &[u8]) -> Result<[u8; TAG_LEN], SignatureError> {
    let hex = header.trim_ascii();
    if hex.is_empty() {
        return Err(SignatureError::Missing);
    }
    if !hex.iter().all(u8::is_ascii_hexdigit) {
        return Err(SignatureError::NotHex);
    }
    if hex.len() != TAG_LEN * 2 {
        return Err(SignatureError::WrongLength(hex.len()));
    }
    let mut tag = [0u8; TAG_LEN];
    for (byte, pair) in tag.iter_mut().zip(hex.chunks_exact(2)) {
        *byte = (nibble(pair[0]) << 4) | nibble(pair[1]);
    }
    Ok(tag)
}

fn nibble(digit: u8) -> u8 {
    match digit {
        b'0'..=b'9' => digit - b'0',
        b'a'..=b'f' => digit - b'a' + 10,
        _ => digit - b'A' + 10,
    }
}

fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 0x0f)] as char);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?".
    const RFC4231_KEY: &str = "Jefe";
    const RFC4231_DATA: &[u8] = b"what do ya want for nothing?";
    const RFC4231_TAG: &str = "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843";

    const SECRET: &str = "s3cr3t-0123456789abcdef0123456789ab";
    const BODY: &[u8] = br#"{"id":"1","type":"t","tenantid":"x"}"#;

    fn verifier() -> Verifier {
        Verifier::new(&Secret::new(SECRET), None)
    }

    #[test]
    fn known_answer_rfc4231() {
        assert_eq!(sign(&Secret::new(RFC4231_KEY), RFC4231_DATA), RFC4231_TAG);
        let v = Verifier::new(&Secret::new(RFC4231_KEY), None);
        assert_eq!(
            v.verify(Some(RFC4231_TAG.as_bytes()), RFC4231_DATA),
            Ok(Matched::Current)
        );
    }

    #[test]
    fn known_answer_long_key_is_hashed_first() {
        // Expected value from `openssl dgst -sha256 -hmac "$(printf 'k%.0s' $(seq 200))"`.
        let long = Secret::new("k".repeat(200));
        let expected = "45d0ac4f271206840e13ec22a345b62d91211d49375909a4f666fa552ba8972d";
        assert_eq!(sign(&long, BODY), expected);
        assert_eq!(
            Verifier::new(&long, None).verify(Some(expected.as_bytes()), BODY),
            Ok(Matched::Current)
        );
    }

    #[test]
    fn accepts_own_signature() {
        let sig = sign(&Secret::new(SECRET), BODY);
        assert_eq!(sig.len(), 64);
        assert!(sig
            .bytes()
            .all(|b| b.is_ascii_digit() || b.is_ascii_lowercase()));
        assert_eq!(
            verifier().verify(Some(sig.as_bytes()), BODY),
            Ok(Matched::Current)
        );
    }

    #[test]
    fn accepts_uppercase_and_surrounding_whitespace() {
        let sig = sign(&Secret::new(SECRET), BODY);
        let upper = sig.to_ascii_uppercase();
        assert_eq!(
            verifier().verify(Some(upper.as_bytes()), BODY),
            Ok(Matched::Current)
        );
        let padded = format!(" \t{sig}\r\n");
        assert_eq!(
            verifier().verify(Some(padded.as_bytes()), BODY),
            Ok(Matched::Current)
        );
    }

    #[test]
    fn rejects_tampered_body() {
        let sig = sign(&Secret::new(SECRET), BODY);
        let mut tampered = BODY.to_vec();
        tampered[8] ^= 1;
        assert_eq!(
            verifier().verify(Some(sig.as_bytes()), &tampered),
            Err(SignatureError::Mismatch)
        );
        // One extra byte (e.g. a trailing newline added by a proxy) is a different body too.
        let mut longer = BODY.to_vec();
        longer.push(b'\n');
        assert_eq!(
            verifier().verify(Some(sig.as_bytes()), &longer),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn rejects_wrong_secret() {
        let sig = sign(&Secret::new("another-secret-0123456789abcdef0123"), BODY);
        assert_eq!(
            verifier().verify(Some(sig.as_bytes()), BODY),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn previous_secret_is_accepted_during_rotation() {
        let old = Secret::new("old-secret-0123456789abcdef012345678");
        let v = Verifier::new(&Secret::new(SECRET), Some(&old));
        let by_old = sign(&old, BODY);
        assert_eq!(
            v.verify(Some(by_old.as_bytes()), BODY),
            Ok(Matched::Previous)
        );
        let by_new = sign(&Secret::new(SECRET), BODY);
        assert_eq!(
            v.verify(Some(by_new.as_bytes()), BODY),
            Ok(Matched::Current)
        );
        // Without the previous secret configured, the old signature fails.
        assert_eq!(
            verifier().verify(Some(by_old.as_bytes()), BODY),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn malformed_headers() {
        let v = verifier();
        assert_eq!(v.verify(None, BODY), Err(SignatureError::Missing));
        assert_eq!(v.verify(Some(b""), BODY), Err(SignatureError::Missing));
        assert_eq!(v.verify(Some(b"   "), BODY), Err(SignatureError::Missing));
        assert_eq!(v.verify(Some(b"xyz"), BODY), Err(SignatureError::NotHex));
        assert_eq!(
            v.verify(Some(b"sha256=abcd"), BODY),
            Err(SignatureError::NotHex)
        );
        assert_eq!(
            v.verify(Some(&[0xff, 0xfe]), BODY),
            Err(SignatureError::NotHex)
        );
        assert_eq!(
            v.verify(Some(b"abcd"), BODY),
            Err(SignatureError::WrongLength(4))
        );
        let sig = sign(&Secret::new(SECRET), BODY);
        let truncated = &sig[..63];
        assert_eq!(
            v.verify(Some(truncated.as_bytes()), BODY),
            Err(SignatureError::WrongLength(63))
        );
        let doubled = format!("{sig}{sig}");
        assert_eq!(
            v.verify(Some(doubled.as_bytes()), BODY),
            Err(SignatureError::WrongLength(128))
        );
        let two_values = format!("{sig}, {sig}");
        assert_eq!(
            v.verify(Some(two_values.as_bytes()), BODY),
            Err(SignatureError::NotHex)
        );
    }

    #[test]
    fn empty_body_can_be_signed_but_not_forged() {
        let sig = sign(&Secret::new(SECRET), b"");
        assert_eq!(
            verifier().verify(Some(sig.as_bytes()), b""),
            Ok(Matched::Current)
        );
        let zeros = "0".repeat(64);
        assert_eq!(
            verifier().verify(Some(zeros.as_bytes()), b""),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn secret_is_never_printed() {
        let s = Secret::new(SECRET);
        assert!(!format!("{s:?} {s}").contains(SECRET));
        let v = Verifier::new(&s, Some(&s));
        assert!(!format!("{v:?}").contains(SECRET));
        assert_eq!(s.len(), SECRET.len());
    }
}
