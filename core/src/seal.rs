//! Sealing secret values at rest (issue 18): XChaCha20-Poly1305 with a key of the
//! installation, so that the metadata database holds no secret in clear.
//!
//! A key is 32 random bytes, written as base64 (`updraft secrets new-key`). An installation
//! reads its keys from `UPDRAFT_SECRET_KEY` or from the key file `standalone` creates: one key,
//! or several separated by commas while keys are rotated (Airflow's `fernet_key` list): the
//! first seals, every one opens. A sealed value is `v1:<key id>:<base64 of nonce and
//! ciphertext>`; its key id (the first 8 hex digits of the key's FNV-1a hash) names the key it
//! needs, so a value sealed with another key says which. The purpose of a value (which
//! variable, which field of which connection) is its associated data: a sealed value copied to
//! another row does not open there.

use std::fmt;

use base64::Engine as _;
use chacha20poly1305::aead::{Aead, Generate, KeyInit, Payload};
use chacha20poly1305::{Key, XChaCha20Poly1305, XNonce};

/// Why a value cannot be sealed or opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    #[error(
        "no secret key: set UPDRAFT_SECRET_KEY (the same on every host of the installation; \
         `updraft secrets new-key` makes one) or start `updraft standalone` once, which creates \
         the key file of its home"
    )]
    NoKey,
    #[error("the secret key is not valid: {0}")]
    BadKey(String),
    #[error(
        "it was sealed with key {sealed_with}, and this installation has {have}: set \
         UPDRAFT_SECRET_KEY to the key it was sealed with (a comma-separated list while keys \
         are rotated)"
    )]
    UnknownKey { sealed_with: String, have: String },
    #[error("it does not open with key {0}: it was changed, or sealed for another value")]
    Tampered(String),
    #[error("it is not a sealed value")]
    Malformed,
}

/// The installation's keys: the first seals, every one opens.
#[derive(Clone)]
pub struct Keyring {
    keys: Vec<(String, XChaCha20Poly1305)>,
}

impl fmt::Debug for Keyring {
    /// Key ids only.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.keys.iter().map(|(id, _)| id))
            .finish()
    }
}

const VERSION: &str = "v1";
const NONCE_LENGTH: usize = 24;

fn base64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::STANDARD
}

impl Keyring {
    /// Reads keys written as base64, separated by commas.
    pub fn parse(text: &str) -> Result<Keyring, SealError> {
        let mut keys = Vec::new();
        for (index, word) in text.split(',').map(str::trim).enumerate() {
            let bytes = base64().decode(word).map_err(|error| {
                SealError::BadKey(format!("key {} is not base64: {error}", index + 1))
            })?;
            let key: [u8; 32] = bytes.try_into().map_err(|bytes: Vec<u8>| {
                SealError::BadKey(format!(
                    "key {} has {} bytes, not 32 (`updraft secrets new-key` makes one)",
                    index + 1,
                    bytes.len()
                ))
            })?;
            let id = format!("{:08x}", crate::hash::fnv1a(&key) >> 32);
            keys.push((id, XChaCha20Poly1305::new(&Key::from(key))));
        }
        Ok(Keyring { keys })
    }

    /// A new random key, as base64.
    pub fn new_key() -> String {
        base64().encode(Key::generate())
    }

    /// The ids of the keys, the sealing one first.
    pub fn ids(&self) -> Vec<&str> {
        self.keys.iter().map(|(id, _)| id.as_str()).collect()
    }

    /// Seals `plain` for `purpose` with the first key.
    pub fn seal(&self, purpose: &str, plain: &str) -> String {
        let (id, cipher) = &self.keys[0];
        let nonce = XNonce::generate();
        let sealed = cipher
            .encrypt(
                &nonce,
                Payload {
                    msg: plain.as_bytes(),
                    aad: purpose.as_bytes(),
                },
            )
            .expect("XChaCha20-Poly1305 seals any length a database holds");
        let mut bytes = nonce.to_vec();
        bytes.extend(sealed);
        format!("{VERSION}:{id}:{}", base64().encode(bytes))
    }

    /// Opens a value [`Keyring::seal`] sealed for `purpose`, with whichever key sealed it.
    pub fn open(&self, purpose: &str, sealed: &str) -> Result<String, SealError> {
        let mut parts = sealed.splitn(3, ':');
        let (Some(VERSION), Some(id), Some(data)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(SealError::Malformed);
        };
        let Some((_, cipher)) = self.keys.iter().find(|(known, _)| known == id) else {
            return Err(SealError::UnknownKey {
                sealed_with: id.to_owned(),
                have: self.ids().join(", "),
            });
        };
        let bytes = base64().decode(data).map_err(|_| SealError::Malformed)?;
        if bytes.len() < NONCE_LENGTH {
            return Err(SealError::Malformed);
        }
        let (nonce, ciphertext) = bytes.split_at(NONCE_LENGTH);
        let nonce = XNonce::try_from(nonce).map_err(|_| SealError::Malformed)?;
        let plain = cipher
            .decrypt(
                &nonce,
                Payload {
                    msg: ciphertext,
                    aad: purpose.as_bytes(),
                },
            )
            .map_err(|_| SealError::Tampered(id.to_owned()))?;
        String::from_utf8(plain).map_err(|_| SealError::Malformed)
    }

    /// Whether `sealed` is sealed with the sealing key (rotation leaves it as it is).
    pub fn is_current(&self, sealed: &str) -> bool {
        sealed
            .split(':')
            .nth(1)
            .is_some_and(|id| id == self.keys[0].0)
    }
}

/// The purpose a variable's value is sealed for.
pub fn variable_purpose(key: &str) -> String {
    format!("variable:{key}")
}

/// The purpose a connection's `field` (`password`, `extra`) is sealed for.
pub fn connection_purpose(conn_id: &str, field: &str) -> String {
    format!("connection:{conn_id}:{field}")
}

/// Whether a stored value is a sealed one.
pub fn is_sealed(value: &str) -> bool {
    value.starts_with("v1:")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_value_opens_with_its_key_and_purpose_only() {
        let key = Keyring::new_key();
        let ring = Keyring::parse(&key).unwrap();
        let sealed = ring.seal("variable:api_key", "s3cret value");
        assert!(is_sealed(&sealed));
        assert!(!sealed.contains("s3cret"));
        assert_ne!(
            sealed,
            ring.seal("variable:api_key", "s3cret value"),
            "a new nonce each time"
        );
        assert_eq!(
            ring.open("variable:api_key", &sealed).unwrap(),
            "s3cret value"
        );
        assert_eq!(
            ring.open("variable:other", &sealed).unwrap_err(),
            SealError::Tampered(ring.ids()[0].to_owned())
        );
        let (head, data) = sealed.rsplit_once(':').unwrap();
        let mut bytes = base64().decode(data).unwrap();
        *bytes.last_mut().unwrap() ^= 1;
        let changed = format!("{head}:{}", base64().encode(bytes));
        assert!(matches!(
            ring.open("variable:api_key", &changed),
            Err(SealError::Tampered(_))
        ));
        assert_eq!(ring.open("x", "plain").unwrap_err(), SealError::Malformed);
    }

    #[test]
    fn a_wrong_key_says_which_key_sealed_the_value_and_rotation_opens_both() {
        let (old, new) = (Keyring::new_key(), Keyring::new_key());
        let sealed = Keyring::parse(&old).unwrap().seal("p", "v");
        let wrong = Keyring::parse(&new).unwrap();
        let error = wrong.open("p", &sealed).unwrap_err();
        let old_id = Keyring::parse(&old).unwrap().ids()[0].to_owned();
        assert!(
            matches!(&error, SealError::UnknownKey { sealed_with, .. } if *sealed_with == old_id)
        );
        assert!(error.to_string().contains(&old_id), "{error}");
        let rotating = Keyring::parse(&format!("{new}, {old}")).unwrap();
        assert_eq!(rotating.open("p", &sealed).unwrap(), "v");
        assert!(!rotating.is_current(&sealed));
        assert!(rotating.is_current(&rotating.seal("p", "v")));
    }

    #[test]
    fn bad_keys_are_refused_with_a_reason() {
        assert!(
            Keyring::parse("not base64!")
                .unwrap_err()
                .to_string()
                .contains("not base64")
        );
        assert!(
            Keyring::parse("c2hvcnQ=")
                .unwrap_err()
                .to_string()
                .contains("has 5 bytes, not 32")
        );
    }
}
