//! Standard Webhooks signatures (<https://www.standardwebhooks.com>): `webhook-id`,
//! `webhook-timestamp` and `webhook-signature`, the last a space-separated list of
//! `v1,<base64 HMAC-SHA256 of "id.timestamp.body">`, one per secret, so a receiver can
//! rotate its secret without losing a message.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{KeyInit, Mac};

/// The secrets a destination signs with, decoded.
#[derive(Clone)]
pub struct Signer {
    keys: Vec<Vec<u8>>,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(formatter, "Signer({} secrets)", self.keys.len())
    }
}

impl Signer {
    /// Decodes `whsec_<base64>` secrets (a secret without the prefix is taken as base64 too).
    ///
    /// # Errors
    ///
    /// Which secret (by position, never its value) is not base64, or that there is none.
    pub fn new(secrets: &[String]) -> Result<Self, String> {
        if secrets.is_empty() {
            return Err("signing needs a `secret` (or `secrets`), such as \"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"".to_owned());
        }
        let keys = secrets
            .iter()
            .enumerate()
            .map(|(index, secret)| {
                let encoded = secret.strip_prefix("whsec_").unwrap_or(secret);
                STANDARD.decode(encoded).map_err(|_| {
                    format!(
                        "signing secret {} is not `whsec_` followed by base64",
                        index + 1
                    )
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(Self { keys })
    }

    /// The `webhook-signature` value for a message.
    pub fn signature(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        self.keys
            .iter()
            .map(|key| {
                // An HMAC takes a key of any length.
                let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(key)
                    .unwrap_or_else(|_| unreachable!("HMAC accepts every key length"));
                mac.update(id.as_bytes());
                mac.update(b".");
                mac.update(timestamp.to_string().as_bytes());
                mac.update(b".");
                mac.update(body);
                format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
            })
            .collect::<Vec<_>>()
            .join(" ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example of the Standard Webhooks reference libraries' tests.
    #[test]
    fn a_signature_matches_the_specifications_example() {
        let signer =
            Signer::new(&["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".to_owned()]).expect("secret");
        let signature = signer.signature(
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1_614_265_330,
            br#"{"test": 2432232314}"#,
        );
        assert_eq!(signature, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn several_secrets_give_several_signatures_and_a_bad_one_is_named_by_position() {
        let signer =
            Signer::new(&["whsec_AAAA".to_owned(), "whsec_BBBB".to_owned()]).expect("secrets");
        assert_eq!(signer.signature("id", 1, b"{}").split(' ').count(), 2);
        let error =
            Signer::new(&["whsec_AAAA".to_owned(), "whsec_!!".to_owned()]).expect_err("bad");
        assert!(
            error.contains("secret 2") && !error.contains("!!"),
            "{error}"
        );
    }
}
