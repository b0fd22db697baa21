//! Session IDs and the hashes stores key records by.
//!
//! An [`Id`] is 256 bits from the operating system's CSPRNG, written as 43 characters of
//! URL-safe base64 without padding. It is the bearer credential the client holds, so it
//! never leaves this crate except as a cookie or header value: its `Debug` and `Display`
//! show only a short prefix, and stores never see it. Stores receive an [`IdHash`]
//! (SHA-256 of the ID's bytes) instead, so a dump of a store yields nothing a client could
//! present.
//!
//! ```
//! use sessionware::{Id, IdHash};
//!
//! let id = Id::random().expect("the OS CSPRNG is available");
//! let text = id.expose_secret();
//! assert_eq!(text.len(), 43);
//!
//! // Parsing accepts exactly what `random` produces, nothing else.
//! let parsed = Id::parse(text.as_bytes()).expect("a well-formed ID parses");
//! assert_eq!(parsed.hash(), id.hash());
//! assert!(Id::parse(b"not-an-id").is_none());
//!
//! // Debug output never reveals the credential.
//! assert!(!format!("{id:?}").contains(&text));
//! ```

use std::fmt;
use std::str::FromStr;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use sha2::{Digest, Sha256};

use crate::error::Error;

/// How many random bytes an ID carries (256 bits).
const ID_BYTES: usize = 32;
/// The length of an ID's text form: base64 without padding of [`ID_BYTES`].
pub(crate) const ID_TEXT_LEN: usize = 43;

/// A session ID: 256 random bits, the credential a client presents.
///
/// Create one with [`Id::random`]; parse one a client sent with [`Id::parse`]. The text
/// form is only reachable through [`Id::expose_secret`], named so that every place that
/// writes it out is easy to find in review.
#[derive(Clone, PartialEq, Eq)]
pub struct Id {
    bytes: [u8; ID_BYTES],
    /// Worked out once: a request needs the hash for its load, its save and its events.
    hash: IdHash,
}

impl Id {
    /// A fresh ID from the operating system's CSPRNG.
    ///
    /// Fails only when the OS cannot supply randomness, which the caller must treat as a
    /// server error rather than fall back to a weaker source.
    pub fn random() -> Result<Self, Error> {
        let mut bytes = [0u8; ID_BYTES];
        getrandom::fill(&mut bytes).map_err(|err| Error::randomness(err.to_string()))?;
        Ok(Self::from_bytes(bytes))
    }

    /// Parses an ID as a client sent it: exactly 43 characters of URL-safe base64 in
    /// canonical form. Anything else (wrong length, wrong alphabet, non-UTF-8, padding,
    /// non-canonical trailing bits) is `None`; no allocation happens on the way.
    pub fn parse(text: &[u8]) -> Option<Self> {
        // The decoder rejects every byte outside the URL-safe alphabet, padding included,
        // and non-canonical trailing bits; only the length needs checking first.
        if text.len() != ID_TEXT_LEN {
            return None;
        }
        let mut bytes = [0u8; ID_BYTES];
        match URL_SAFE_NO_PAD.decode_slice(text, &mut bytes) {
            Ok(ID_BYTES) => Some(Self::from_bytes(bytes)),
            _ => None,
        }
    }

    fn from_bytes(bytes: [u8; ID_BYTES]) -> Self {
        let hash = IdHash(Sha256::digest(bytes).into());
        Self { bytes, hash }
    }

    /// The ID's text form, for the cookie or header that carries it to the client.
    ///
    /// Never log this value: it is the session's credential.
    pub fn expose_secret(&self) -> String {
        URL_SAFE_NO_PAD.encode(self.bytes)
    }

    /// Appends the ID's text form to `out`, as [`expose_secret`](Self::expose_secret)
    /// writes it, without a string of its own: for the `Set-Cookie` value.
    pub(crate) fn push_secret(&self, out: &mut String) {
        URL_SAFE_NO_PAD.encode_string(self.bytes, out);
    }

    /// The hash stores key this session's record by.
    pub fn hash(&self) -> IdHash {
        self.hash
    }
}

// `Debug` and `Display` share one redacted form: a short prefix of the hash, enough to tell
// two sessions apart in a log and nothing a client could present.
impl fmt::Debug for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Id(#{})", self.hash().short())
    }
}

impl fmt::Display for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.hash().short())
    }
}

/// SHA-256 of a session ID: the key a store files a record under.
///
/// It identifies a session to operators (list a user's devices, revoke one) without being a
/// credential: nobody can turn it back into the ID. Its text form is 64 lowercase hex digits.
///
/// ```
/// use sessionware::{Id, IdHash};
///
/// let hash = Id::random().unwrap().hash();
/// let text = hash.to_string();
/// assert_eq!(text.len(), 64);
/// assert_eq!(text.parse::<IdHash>().unwrap(), hash);
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IdHash([u8; 32]);

impl IdHash {
    /// Wraps 32 bytes a store read back (for stores that keep the hash in binary form).
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The hash's 32 bytes.
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The first eight hex digits, for log lines.
    pub(crate) fn short(&self) -> String {
        let mut text = self.to_string();
        text.truncate(8);
        text
    }
}

impl fmt::Debug for IdHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "IdHash({self})")
    }
}

impl fmt::Display for IdHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Stores build a key from this on every call: a table lookup per nibble instead of
        // 32 formatted writes.
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut hex = [0u8; 64];
        for (pair, byte) in hex.chunks_exact_mut(2).zip(self.0) {
            pair[0] = DIGITS[usize::from(byte >> 4)];
            pair[1] = DIGITS[usize::from(byte & 0x0f)];
        }
        f.write_str(std::str::from_utf8(&hex).map_err(|_| fmt::Error)?)
    }
}

/// The error of parsing an [`IdHash`] from text that is not 64 hex digits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseIdHashError;

impl fmt::Display for ParseIdHashError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a session hash is 64 hexadecimal digits")
    }
}

impl std::error::Error for ParseIdHashError {}

impl FromStr for IdHash {
    type Err = ParseIdHashError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.as_bytes();
        if text.len() != 64 {
            return Err(ParseIdHashError);
        }
        let mut bytes = [0u8; 32];
        for (byte, pair) in bytes.iter_mut().zip(text.chunks_exact(2)) {
            *byte = (hex_value(pair[0]).ok_or(ParseIdHashError)? << 4)
                | hex_value(pair[1]).ok_or(ParseIdHashError)?;
        }
        Ok(Self(bytes))
    }
}

fn hex_value(digit: u8) -> Option<u8> {
    match digit {
        b'0'..=b'9' => Some(digit - b'0'),
        b'a'..=b'f' => Some(digit - b'a' + 10),
        b'A'..=b'F' => Some(digit - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn random_ids_are_distinct_and_round_trip() {
        let ids: HashSet<String> = (0..1000)
            .map(|_| Id::random().unwrap().expose_secret())
            .collect();
        assert_eq!(ids.len(), 1000);
        for text in ids.iter().take(20) {
            assert_eq!(text.len(), ID_TEXT_LEN);
            assert_eq!(&Id::parse(text.as_bytes()).unwrap().expose_secret(), text);
        }
    }

    #[test]
    fn random_ids_use_the_whole_alphabet() {
        // 256 bits per ID: across 2000 IDs every one of the 64 symbols shows up.
        let mut seen = HashSet::new();
        for _ in 0..2000 {
            seen.extend(Id::random().unwrap().expose_secret().bytes());
        }
        assert_eq!(seen.len(), 64);
    }

    #[test]
    fn malformed_ids_are_rejected() {
        let good = Id::random().unwrap().expose_secret();
        let mut cases: Vec<Vec<u8>> = vec![
            Vec::new(),
            good.as_bytes()[..42].to_vec(),
            format!("{good}A").into_bytes(),
            "A".repeat(10_000).into_bytes(),
            [&good.as_bytes()[..42], &[0xff]].concat(),
            [&good.as_bytes()[..41], "é".as_bytes()].concat(),
        ];
        for bad in [b'+', b'/', b'=', b' ', b'.', b'\0'] {
            let mut bytes = good.clone().into_bytes();
            bytes[7] = bad;
            cases.push(bytes);
        }
        for case in cases {
            assert!(Id::parse(&case).is_none(), "accepted {case:?}");
        }
    }

    #[test]
    fn non_canonical_trailing_bits_are_rejected() {
        // 43 symbols carry 258 bits; the last symbol's two low bits must be zero.
        let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let mut bytes = Id::random().unwrap().expose_secret().into_bytes();
        let index = alphabet.iter().position(|b| *b == bytes[42]).unwrap();
        assert_eq!(
            index % 4,
            0,
            "canonical encodings end on a multiple of four"
        );
        bytes[42] = alphabet[index + 1];
        assert!(Id::parse(&bytes).is_none());
    }

    #[test]
    fn formatting_never_reveals_the_id() {
        let id = Id::random().unwrap();
        let secret = id.expose_secret();
        for shown in [format!("{id:?}"), format!("{id}")] {
            assert!(!shown.contains(&secret[..8]), "{shown}");
            assert!(shown.contains(&id.hash().short()), "{shown}");
        }
    }

    #[test]
    fn hash_is_sha256_of_the_bytes_in_lowercase_hex() {
        // SHA-256 of 32 zero bytes, a published test vector.
        let zero = Id::from_bytes([0; 32]);
        assert_eq!(
            zero.hash().to_string(),
            "66687aadf862bd776c8fc18b8e9f8e20089714856ee233b3902a591d0d5f2925"
        );
        let id = Id::random().unwrap();
        let reference: String = id
            .hash()
            .as_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(id.hash().to_string(), reference);
    }

    #[test]
    fn hash_text_round_trips_and_rejects_garbage() {
        let id = Id::random().unwrap();
        assert_eq!(id.hash(), id.clone().hash());
        assert_ne!(Id::random().unwrap().hash(), id.hash());
        let text = id.hash().to_string();
        assert_eq!(text.parse::<IdHash>().unwrap(), id.hash());
        assert_eq!(text.to_uppercase().parse::<IdHash>().unwrap(), id.hash());
        assert!("zz".repeat(32).parse::<IdHash>().is_err());
        assert!("ab".parse::<IdHash>().is_err());
    }
}

/// Property tests: whatever bytes a client sends as an ID or a hash, parsing answers
/// without panicking, and accepts exactly the text this crate writes.
#[cfg(test)]
mod properties {
    use super::*;
    use crate::test_support::proptest_config;
    use proptest::collection::vec;
    use proptest::prelude::*;
    use proptest::sample::select;

    /// URL-safe base64's symbols, in the order of the values they stand for.
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

    /// Whether `text` is what encoding some 32 bytes gives, worked out without a base64
    /// decoder: 43 symbols of the alphabet, the last of which leaves the two bits past the
    /// 256th zero (43 symbols carry 258 bits).
    fn is_canonical_id(text: &[u8]) -> bool {
        let value = |byte: &u8| ALPHABET.iter().position(|s| s == byte);
        text.len() == ID_TEXT_LEN
            && text.iter().all(|b| value(b).is_some())
            && value(&text[ID_TEXT_LEN - 1]).is_some_and(|v| v % 4 == 0)
    }

    fn symbol() -> impl Strategy<Value = u8> {
        select(ALPHABET.to_vec())
    }

    /// Bytes that go wrong in a session ID: padding, the standard alphabet's `+` and `/`,
    /// separators, quotes, NUL, and bytes that are not UTF-8 on their own.
    fn near_symbol() -> impl Strategy<Value = u8> {
        prop_oneof![
            select(b"+/=. ;,\"\\\0\x7f".to_vec()),
            any::<u8>(),
            0x80u8..=0xff,
        ]
    }

    /// Candidate IDs: arbitrary bytes, and text that is all or nearly all of the alphabet
    /// at or around the canonical length (of which about a quarter is canonical).
    fn id_candidates() -> impl Strategy<Value = Vec<u8>> {
        let one_off = (vec(symbol(), ID_TEXT_LEN), 0..ID_TEXT_LEN, near_symbol()).prop_map(
            |(mut text, at, byte)| {
                text[at] = byte;
                text
            },
        );
        prop_oneof![
            vec(any::<u8>(), 0..100),
            vec(symbol(), ID_TEXT_LEN),
            vec(symbol(), ID_TEXT_LEN - 3..=ID_TEXT_LEN + 3),
            one_off,
            vec(prop_oneof![4 => symbol(), 1 => near_symbol()], 40..=46),
        ]
    }

    /// Candidate hash texts: arbitrary strings, and hex digits of either case (with the odd
    /// other character) at or around 64 characters.
    fn hash_candidates() -> impl Strategy<Value = String> {
        let digit = select("0123456789abcdefABCDEF".chars().collect::<Vec<_>>());
        let near = prop_oneof![
            8 => digit.clone(),
            1 => select("gGzZ -+x\0é€".chars().collect::<Vec<_>>()),
            1 => any::<char>(),
        ];
        prop_oneof![
            any::<String>(),
            vec(digit, 64).prop_map(String::from_iter),
            vec(near, 60..=68).prop_map(String::from_iter),
        ]
    }

    proptest! {
        #![proptest_config(proptest_config(1024))]

        #[test]
        fn parse_accepts_exactly_the_canonical_form(text in id_candidates()) {
            let parsed = Id::parse(&text);
            prop_assert_eq!(parsed.is_some(), is_canonical_id(&text), "{:?}", text);
            if let Some(id) = parsed {
                // It is the ID that text names: it writes the same text back.
                prop_assert_eq!(id.expose_secret().into_bytes(), text);
            }
        }

        #[test]
        fn every_id_written_parses_back_to_the_same_hash(bytes in any::<[u8; ID_BYTES]>()) {
            for id in [Id::from_bytes(bytes), Id::random().unwrap()] {
                let text = id.expose_secret();
                prop_assert!(is_canonical_id(text.as_bytes()), "{}", text);
                let mut pushed = String::from("id=");
                id.push_secret(&mut pushed);
                prop_assert_eq!(&pushed[3..], text.as_str());
                let parsed = Id::parse(text.as_bytes()).expect("an ID this crate wrote");
                prop_assert_eq!(parsed.hash(), id.hash());
                prop_assert!(parsed == id);
            }
        }

        #[test]
        fn hash_text_parses_exactly_64_hex_digits(text in hash_candidates()) {
            let parsed = text.parse::<IdHash>();
            let is_hex = text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit());
            prop_assert_eq!(parsed.is_ok(), is_hex, "{:?}", text);
            if let Ok(hash) = parsed {
                // Either case is read; the text form is always lowercase.
                prop_assert_eq!(hash.to_string(), text.to_ascii_lowercase());
            }
        }

        #[test]
        fn hash_text_round_trips(bytes in any::<[u8; 32]>()) {
            let hash = IdHash::from_bytes(bytes);
            let text = hash.to_string();
            prop_assert_eq!(text.len(), 64);
            prop_assert!(text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')), "{}", text);
            prop_assert_eq!(text.parse::<IdHash>(), Ok(hash));
            prop_assert!(text.starts_with(&hash.short()));
        }
    }
}
