//! Server-side verification of signed requests.
//!
//! The checks run in the order the spec digest recommends (§2.7), so that an
//! unauthenticated request can never burn a nonce:
//!
//! 1. the signature parameters are present (`Missing{Name}`);
//! 2. the AccessKey exists and is enabled (`InvalidAccessKeyId.NotFound` /
//!    `.Inactive`);
//! 3. the timestamp is well formed and inside the window
//!    (`InvalidTimeStamp.Format` / `.Expired`);
//! 4. the method and version are supported (`IncompleteSignature`);
//! 5. the signature matches (`SignatureDoesNotMatch`, quoting the server's
//!    string-to-sign);
//! 6. the nonce is fresh for this AccessKey (`SignatureNonceUsed`), and is
//!    then remembered.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use thingcall_core::{ApiError, ErrorCode, Secret, UnixMillis};

use crate::{v1, v3};

/// What the key store knows about an AccessKey.
#[derive(Clone, Debug)]
pub struct KeyState {
    /// The AccessKey secret.
    pub secret: Secret,
    /// False when the key is disabled.
    pub active: bool,
}

/// Where AccessKeys are looked up.
pub trait KeyStore {
    /// The key with this id, if any.
    fn lookup(&self, access_key_id: &str) -> Option<KeyState>;
}

impl<F: Fn(&str) -> Option<KeyState>> KeyStore for F {
    fn lookup(&self, access_key_id: &str) -> Option<KeyState> {
        self(access_key_id)
    }
}

/// Remembers nonces so a request cannot be replayed.
pub trait NonceStore {
    /// Records `nonce` for `access_key_id` until `expires`. Returns false
    /// when the same pair was recorded before and has not expired.
    fn check_and_record(
        &self,
        access_key_id: &str,
        nonce: &str,
        now: UnixMillis,
        expires: UnixMillis,
    ) -> bool;
}

/// An in-memory nonce store that evicts expired entries as time passes.
///
/// It remembers every nonce for as long as its timestamp could still be
/// accepted (15 minutes by default), which at thousands of requests per
/// second is millions of nonces, so each costs little: a 128-bit digest of
/// (AccessKey id, nonce) and its expiry, about 32 bytes, in hash tables
/// grouped by expiry into two-minute generations that are dropped whole
/// once they have expired.
#[derive(Debug, Default)]
pub struct InMemoryNonceStore {
    inner: Mutex<NonceTable>,
}

/// The span of expiry times one generation covers.
const GENERATION_MILLIS: i64 = 2 * 60 * 1000;

#[derive(Debug, Default)]
struct NonceTable {
    /// Generation number (expiry / span) → digest → expiry.
    generations: BTreeMap<i64, HashMap<u128, i64>>,
}

/// A collision-resistant digest of (AccessKey id, nonce): SHA-256 over the
/// length of the id, the id and the nonce, cut to 128 bits. (A keyless
/// digest: a store needs no random key, and finding two pairs with one
/// digest is out of reach.) Nonce stores that nodes share keep this.
pub fn nonce_digest(access_key_id: &str, nonce: &str) -> u128 {
    use sha2::{Digest, Sha256};
    let len = u32::try_from(access_key_id.len()).unwrap_or(u32::MAX);
    let hash = Sha256::new()
        .chain_update(len.to_be_bytes())
        .chain_update(access_key_id.as_bytes())
        .chain_update(nonce.as_bytes())
        .finalize();
    let mut first = [0u8; 16];
    first.copy_from_slice(&hash[..16]);
    u128::from_le_bytes(first)
}

impl InMemoryNonceStore {
    /// An empty store.
    pub fn new() -> InMemoryNonceStore {
        InMemoryNonceStore::default()
    }

    /// How many nonces are held now (expired ones included until their
    /// generation is dropped).
    pub fn len(&self) -> usize {
        self.inner
            .lock()
            .map(|t| t.generations.values().map(HashMap::len).sum())
            .unwrap_or(0)
    }

    /// True when no nonce is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl NonceStore for InMemoryNonceStore {
    fn check_and_record(
        &self,
        access_key_id: &str,
        nonce: &str,
        now: UnixMillis,
        expires: UnixMillis,
    ) -> bool {
        let digest = nonce_digest(access_key_id, nonce);
        // A poisoned lock only means another thread panicked mid-insert; the
        // table is still consistent enough to keep refusing replays.
        let mut table = match self.inner.lock() {
            Ok(t) => t,
            Err(poisoned) => poisoned.into_inner(),
        };
        // Generations whose every expiry has passed go whole.
        while let Some(entry) = table.generations.first_entry() {
            if (entry.key() + 1).saturating_mul(GENERATION_MILLIS) > now.get() {
                break;
            }
            entry.remove();
        }
        let seen = table
            .generations
            .values()
            .any(|g| g.get(&digest).is_some_and(|until| *until > now.get()));
        if seen {
            return false;
        }
        let generation = expires.get().div_euclid(GENERATION_MILLIS);
        table
            .generations
            .entry(generation)
            .or_default()
            .insert(digest, expires.get());
        true
    }
}

/// Verification settings.
#[derive(Clone, Copy, Debug)]
pub struct VerifyPolicy {
    /// Allowed distance between the request's timestamp and now, either way
    /// (15 minutes by default).
    pub window_millis: i64,
}

impl Default for VerifyPolicy {
    fn default() -> VerifyPolicy {
        VerifyPolicy {
            window_millis: 15 * 60 * 1000,
        }
    }
}

impl VerifyPolicy {
    fn check_time(&self, raw: &str, now: UnixMillis) -> Result<UnixMillis, ApiError> {
        let at = UnixMillis::parse_iso8601_seconds(raw)
            .ok_or_else(|| ApiError::new(ErrorCode::InvalidTimeStampFormat))?;
        if (at.get() - now.get()).abs() > self.window_millis {
            return Err(ApiError::new(ErrorCode::InvalidTimeStampExpired));
        }
        Ok(at)
    }

    /// How long a nonce must be remembered: past the latest moment its
    /// timestamp is still accepted.
    fn nonce_expiry(&self, at: UnixMillis) -> UnixMillis {
        at.add_millis(self.window_millis + 1)
    }
}

/// A request whose signature checked out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verified {
    /// The AccessKey that signed it.
    pub access_key_id: String,
    /// The request's nonce.
    pub nonce: String,
    /// The request's timestamp.
    pub timestamp: UnixMillis,
}

fn key<K: KeyStore + ?Sized>(keys: &K, id: &str) -> Result<Secret, ApiError> {
    match keys.lookup(id) {
        None => Err(ApiError::new(ErrorCode::InvalidAccessKeyIdNotFound)),
        Some(state) if !state.active => Err(ApiError::new(ErrorCode::InvalidAccessKeyIdInactive)),
        Some(state) => Ok(state.secret),
    }
}

/// Verifies a v1 request from its decoded parameters (query and body
/// merged) and its HTTP method.
pub fn verify_v1<K: KeyStore + ?Sized, N: NonceStore + ?Sized>(
    method: &str,
    params: &[(String, String)],
    keys: &K,
    nonces: &N,
    now: UnixMillis,
    policy: &VerifyPolicy,
) -> Result<Verified, ApiError> {
    let get = |name: &str| -> Result<&str, ApiError> {
        let mut values = params
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_str());
        match (values.next(), values.next()) {
            (Some(_), Some(_)) => Err(ApiError::invalid_parameter(
                name,
                "is given more than once.",
            )),
            (Some(v), None) if !v.is_empty() => Ok(v),
            _ => Err(ApiError::missing(name)),
        }
    };
    let access_key_id = get("AccessKeyId")?;
    let signature = get("Signature")?;
    let method_param = get("SignatureMethod")?;
    let version = get("SignatureVersion")?;
    let nonce = get("SignatureNonce")?;
    let timestamp = get("Timestamp")?;

    let secret = key(keys, access_key_id)?;
    let at = policy.check_time(timestamp, now)?;
    if method_param != v1::SIGNATURE_METHOD || version != v1::SIGNATURE_VERSION {
        return Err(ApiError::new(ErrorCode::IncompleteSignature));
    }
    let check = v1::check(method, params, secret.expose(), signature);
    if !check.matched {
        return Err(ApiError::signature_mismatch(&check.string_to_sign));
    }
    if !nonces.check_and_record(access_key_id, nonce, now, policy.nonce_expiry(at)) {
        return Err(ApiError::new(ErrorCode::SignatureNonceUsed));
    }
    Ok(Verified {
        access_key_id: access_key_id.to_owned(),
        nonce: nonce.to_owned(),
        timestamp: at,
    })
}

/// A v3 request as the server received it.
#[derive(Clone, Debug)]
pub struct V3Request<'a> {
    /// HTTP method.
    pub method: &'a str,
    /// Request path (already percent-encoded as sent).
    pub path: &'a str,
    /// The raw query string (without `?`).
    pub raw_query: &'a str,
    /// Every request header, any case (the `host` header included).
    pub headers: &'a [(String, String)],
    /// The request body.
    pub body: &'a [u8],
}

impl V3Request<'_> {
    fn header(&self, name: &str) -> Result<Option<String>, ApiError> {
        let mut values = self
            .headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str());
        let first = values.next();
        match first {
            None => Ok(None),
            Some(v) => {
                let rest: Vec<&str> = values.collect();
                if rest.is_empty() {
                    Ok(Some(v.to_owned()))
                } else {
                    // Repeated headers are joined, as HTTP allows.
                    Ok(Some(
                        std::iter::once(v).chain(rest).collect::<Vec<_>>().join(","),
                    ))
                }
            }
        }
    }
}

/// Verifies a v3 (`ACS3-HMAC-SHA256`) request.
pub fn verify_v3<K: KeyStore + ?Sized, N: NonceStore + ?Sized>(
    request: &V3Request<'_>,
    keys: &K,
    nonces: &N,
    now: UnixMillis,
    policy: &VerifyPolicy,
) -> Result<Verified, ApiError> {
    let raw_auth = request
        .header("authorization")?
        .ok_or_else(|| ApiError::missing_parameter("Authorization"))?;
    let auth = v3::Authorization::parse(&raw_auth)
        .ok_or_else(|| ApiError::new(ErrorCode::IncompleteSignature))?;
    let date = request
        .header("x-acs-date")?
        .ok_or_else(|| ApiError::missing_parameter("x-acs-date"))?;
    let nonce = request
        .header("x-acs-signature-nonce")?
        .filter(|n| !n.is_empty())
        .ok_or_else(|| ApiError::missing_parameter("x-acs-signature-nonce"))?;

    let secret = key(keys, &auth.credential)?;
    let at = policy.check_time(&date, now)?;
    if auth.algorithm != v3::ALGORITHM {
        return Err(ApiError::new(ErrorCode::IncompleteSignature));
    }
    // `host` and every x-acs-* header sent must be signed.
    let signs = |name: &str| auth.signed_headers.iter().any(|h| h == name);
    let unsigned_acs = request.headers.iter().any(|(k, _)| {
        k.to_ascii_lowercase().starts_with("x-acs-") && !signs(&k.to_ascii_lowercase())
    });
    if !signs("host") || unsigned_acs {
        return Err(ApiError::new(ErrorCode::IncompleteSignature));
    }

    let body_hash = v3::content_sha256(request.body);
    let hashed_payload = match request.header("x-acs-content-sha256")? {
        Some(declared) => {
            if !declared.eq_ignore_ascii_case(&body_hash) {
                return Err(ApiError::invalid_parameter(
                    "x-acs-content-sha256",
                    "does not match the SHA-256 of the request body.",
                ));
            }
            declared
        }
        None => body_hash,
    };
    let mut signed = Vec::with_capacity(auth.signed_headers.len());
    for name in &auth.signed_headers {
        let value = request
            .header(name)?
            .ok_or_else(|| ApiError::new(ErrorCode::IncompleteSignature))?;
        signed.push((name.clone(), value));
    }
    let canonical_query = v3::canonical_query(request.raw_query)
        .map_err(|e| ApiError::invalid_parameter("the query string", e))?;
    let parts = v3::SignedParts {
        method: request.method,
        path: request.path,
        canonical_query: &canonical_query,
        headers: &signed,
        hashed_payload: &hashed_payload,
    };
    let sts = v3::string_to_sign(&v3::canonical_request(&parts));
    let expected = v3::signature_of(&sts, secret.expose());
    if !v3::signatures_match(&expected, &auth.signature) {
        return Err(ApiError::signature_mismatch(&sts));
    }
    if !nonces.check_and_record(&auth.credential, &nonce, now, policy.nonce_expiry(at)) {
        return Err(ApiError::new(ErrorCode::SignatureNonceUsed));
    }
    Ok(Verified {
        access_key_id: auth.credential,
        nonce,
        timestamp: at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nonce_store_evicts_expired_entries() {
        let store = InMemoryNonceStore::new();
        let t0 = UnixMillis::new(1_000);
        assert!(store.check_and_record("k", "n1", t0, t0.add_millis(100)));
        assert!(!store.check_and_record("k", "n1", t0, t0.add_millis(100)));
        assert!(
            store.check_and_record("other", "n1", t0, t0.add_millis(100)),
            "nonces are per key"
        );
        assert_eq!(store.len(), 2);
        // Past its expiry a nonce is free again (it replaces its old entry).
        let later = t0.add_millis(101);
        assert!(store.check_and_record("k", "n1", later, later.add_millis(100)));
        assert_eq!(store.len(), 2);
        // Once every expiry of a generation has passed, its memory goes.
        let much_later = UnixMillis::new(GENERATION_MILLIS + 1);
        assert!(store.check_and_record("k", "n2", much_later, much_later.add_millis(100)));
        assert_eq!(store.len(), 1, "the expired generation is gone");
        // A nonce whose timestamp lies ahead is remembered across several
        // generations' worth of time.
        let ahead = much_later.add_millis(10 * GENERATION_MILLIS);
        assert!(store.check_and_record("k", "n3", much_later, ahead));
        let soon = much_later.add_millis(5 * GENERATION_MILLIS);
        assert!(!store.check_and_record("k", "n3", soon, ahead));
    }
}
