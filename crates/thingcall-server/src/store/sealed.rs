//! Secrets at rest: AccessKey secrets, product secrets and device secrets
//! are sealed before a store writes them and opened when it reads them, so
//! neither the database (SQLite file or PostgreSQL tables) nor a copy of
//! it holds one in plaintext.
//!
//! HMAC signatures need the secret itself, so a hash cannot stand in for
//! it: each value is encrypted instead, with XChaCha20-Poly1305 (RustCrypto
//! `chacha20poly1305`), a random 192-bit nonce per value (random nonces
//! of that size do not collide in any number of values a store will hold),
//! and the value's table, column and row as associated data: a sealed
//! value copied into another row, or another column, does not open. The
//! stored text is `tc1.KEYID.DATA`: the format's version, the id of the
//! key that sealed it (so a key can be rotated later, with values of the
//! old and the new key side by side), and the nonce followed by the
//! ciphertext and its tag, in unpadded URL-safe base64.
//!
//! The key (32 random bytes, written as base64) never enters the store. It
//! comes from a key file, from `THINGCALL_SECRETS_KEY`, or, for SQLite,
//! from `DATA_DIR/secrets.key`, made on first start. The store keeps only
//! the key's id (`secret_keys`): an HMAC of a fixed text under the key,
//! which says whether a key is the right one and nothing about it. A
//! store that holds a key id refuses a server with another key, or with
//! none, before it reads anything.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::Engine as _;
use chacha20poly1305::aead::{Aead, Payload};
use chacha20poly1305::{KeyInit, XChaCha20Poly1305, XNonce};
use hmac::Mac;
use thingcall_core::Secret;

use crate::store::{AccessKey, Change, Device, Product, Snapshot, StoreError, StoreErrorKind};

/// The key file's name in the data directory.
pub(crate) const KEY_FILE: &str = "secrets.key";

/// The first part of every sealed value: format 1 is XChaCha20-Poly1305
/// with the associated data of [`associated_data`].
const FORMAT: &str = "tc1";

/// Key length in bytes.
const KEY_LEN: usize = 32;

/// Nonce length in bytes (XChaCha20).
const NONCE_LEN: usize = 24;

/// What the key's id is an HMAC of.
const KEY_ID_LABEL: &[u8] = b"thingcall secrets key id v1";

/// Where a server finds the key that seals the store's secrets.
#[derive(Clone, Debug, Default)]
pub enum SecretsKeySource {
    /// `DATA_DIR/secrets.key`. The SQLite store makes it (mode 0600) on
    /// first start; a PostgreSQL store refuses to start without it, since
    /// its data outlives any one node's disk and every node needs the same
    /// key.
    #[default]
    DataDir,
    /// A key file (`--secrets-key-file`): one line, 32 bytes in base64.
    File(PathBuf),
    /// The key's text itself (`THINGCALL_SECRETS_KEY`).
    Value(Secret),
}

/// The column a sealed value belongs to; with the row's key it is the
/// value's associated data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Column {
    /// `access_keys.secret`, by AccessKey id.
    AccessKey,
    /// `products.product_secret`, by product key.
    Product,
    /// `devices.device_secret`, by iot id, product key and device name.
    Device,
}

impl Column {
    fn name(self) -> &'static str {
        match self {
            Column::AccessKey => "access_keys.secret",
            Column::Product => "products.product_secret",
            Column::Device => "devices.device_secret",
        }
    }
}

/// The key that seals and opens the store's secrets. `Debug` shows its id
/// only.
#[derive(Clone)]
pub(crate) struct SecretsKey {
    id: String,
    cipher: Arc<XChaCha20Poly1305>,
    /// Where it came from, for messages ("the key file /etc/...").
    origin: String,
}

impl std::fmt::Debug for SecretsKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SecretsKey({})", self.id)
    }
}

/// A key's text: 32 random bytes in base64, for a key file or
/// `THINGCALL_SECRETS_KEY`.
pub fn new_secrets_key() -> Secret {
    let bytes = crate::ids::random_bytes::<KEY_LEN>();
    Secret::new(base64::engine::general_purpose::STANDARD.encode(bytes))
}

fn key_error(message: impl Into<String>) -> StoreError {
    StoreError::new(StoreErrorKind::Internal, message)
}

impl SecretsKey {
    /// Reads a key's text (base64 of 32 bytes, surrounding blanks ignored).
    /// `origin` names where it came from; errors name it, never the text.
    pub(crate) fn from_text(
        text: &str,
        origin: impl Into<String>,
    ) -> Result<SecretsKey, StoreError> {
        let origin = origin.into();
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(text.trim())
            .ok()
            .filter(|b| b.len() == KEY_LEN)
            .ok_or_else(|| {
                key_error(format!(
                    "{origin} is not a secrets key: it must be {KEY_LEN} bytes in base64 \
                     (make one with `thingcall store new-key FILE`)"
                ))
            })?;
        let mut mac = <hmac::Hmac<sha2::Sha256> as Mac>::new_from_slice(&bytes)
            .map_err(|_| key_error("a secrets key of the wrong length"))?;
        mac.update(KEY_ID_LABEL);
        let tag = mac.finalize().into_bytes();
        let id: String = tag.iter().take(8).map(|b| format!("{b:02x}")).collect();
        let mut key = [0u8; KEY_LEN];
        key.copy_from_slice(&bytes);
        let cipher = XChaCha20Poly1305::new(&key.into());
        Ok(SecretsKey {
            id,
            cipher: Arc::new(cipher),
            origin,
        })
    }

    /// The key's id: 16 hex digits of an HMAC under the key. It tells keys
    /// apart and reveals nothing of the key.
    pub(crate) fn id(&self) -> &str {
        &self.id
    }

    /// Where the key came from ("the key file PATH", "THINGCALL_SECRETS_KEY").
    pub(crate) fn origin(&self) -> &str {
        &self.origin
    }

    /// Seals `plaintext` for `column` of the row `row` (its key parts).
    pub(crate) fn seal(&self, column: Column, row: &[&str], plaintext: &str) -> String {
        let nonce_bytes = crate::ids::random_bytes::<NONCE_LEN>();
        let nonce = XNonce::from(nonce_bytes);
        let aad = associated_data(column, row);
        let Ok(sealed) = self.cipher.encrypt(
            &nonce,
            Payload {
                msg: plaintext.as_bytes(),
                aad: &aad,
            },
        ) else {
            // Encryption fails only for messages of gigabytes; a secret is
            // a few dozen bytes.
            tracing::error!("a secret could not be sealed");
            std::process::abort();
        };
        let mut data = Vec::with_capacity(NONCE_LEN + sealed.len());
        data.extend_from_slice(&nonce_bytes);
        data.extend_from_slice(&sealed);
        format!(
            "{FORMAT}.{}.{}",
            self.id,
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(data)
        )
    }

    /// Opens a sealed value of `column` in the row `row`. `what` names the
    /// row in errors ("device a1.../dev1"); no error carries a secret.
    pub(crate) fn open(
        &self,
        column: Column,
        row: &[&str],
        sealed: &str,
        what: &dyn std::fmt::Display,
    ) -> Result<Secret, StoreError> {
        let corrupt =
            |why: String| StoreError::corrupt(format!("the {} of {what} {why}", column.name()));
        let mut parts = sealed.splitn(3, '.');
        let (Some(FORMAT), Some(key_id), Some(data)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(corrupt(
                "is not sealed (plaintext where this store keeps sealed values)".into(),
            ));
        };
        if key_id != self.id {
            return Err(corrupt(format!(
                "is sealed with key {key_id}, and this server's key ({}) is {}",
                self.origin, self.id
            )));
        }
        let data = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(data)
            .ok()
            .filter(|d| d.len() > NONCE_LEN)
            .ok_or_else(|| corrupt("is damaged (not base64)".into()))?;
        let (nonce, ciphertext) = data.split_at(NONCE_LEN);
        let nonce = XNonce::try_from(nonce).map_err(|_| corrupt("is damaged".into()))?;
        let aad = associated_data(column, row);
        let plain = self
            .cipher
            .decrypt(
                &nonce,
                Payload {
                    msg: ciphertext,
                    aad: &aad,
                },
            )
            .map_err(|_| {
                corrupt("does not open: it was changed, or moved from another row or column".into())
            })?;
        String::from_utf8(plain)
            .map(Secret::new)
            .map_err(|_| corrupt("is not text".into()))
    }

    /// The change as the store writes it (its secret sealed), and the
    /// change as it was, when the two differ: the store writes the first
    /// and hands the second to its `OnCommit` (the mirror keeps
    /// plaintext). Changes without a secret (presence, the hot path) are
    /// not copied.
    pub(crate) fn seal_change(&self, change: Change) -> (Change, Option<Change>) {
        let sealed = match &change {
            Change::PutAccessKey { key, at } => Change::PutAccessKey {
                key: AccessKey {
                    secret: Secret::new(self.seal(
                        Column::AccessKey,
                        &[&key.id],
                        key.secret.expose(),
                    )),
                    ..key.clone()
                },
                at: *at,
            },
            Change::InsertProduct(p) => Change::InsertProduct(Product {
                product_secret: Secret::new(self.seal(
                    Column::Product,
                    &[&p.product_key],
                    p.product_secret.expose(),
                )),
                ..p.clone()
            }),
            Change::InsertDevice(d) => Change::InsertDevice(Device {
                device_secret: Secret::new(self.seal(
                    Column::Device,
                    &device_row(d),
                    d.device_secret.expose(),
                )),
                ..d.clone()
            }),
            _ => return (change, None),
        };
        (sealed, Some(change))
    }

    /// Opens the secret of an AccessKey as read from the store.
    pub(crate) fn open_access_key(&self, key: &mut AccessKey) -> Result<(), StoreError> {
        let what = format!("AccessKey {}", key.id);
        key.secret = self.open(Column::AccessKey, &[&key.id], key.secret.expose(), &what)?;
        Ok(())
    }

    /// Opens the secret of a product as read from the store.
    pub(crate) fn open_product(&self, product: &mut Product) -> Result<(), StoreError> {
        let what = format!("product {}", product.product_key);
        product.product_secret = self.open(
            Column::Product,
            &[&product.product_key],
            product.product_secret.expose(),
            &what,
        )?;
        Ok(())
    }

    /// Opens the secret of a device as read from the store.
    pub(crate) fn open_device(&self, device: &mut Device) -> Result<(), StoreError> {
        let what = format!(
            "device {}/{} ({})",
            device.product_key, device.device_name, device.iot_id
        );
        device.device_secret = self.open(
            Column::Device,
            &device_row(device),
            device.device_secret.expose(),
            &what,
        )?;
        Ok(())
    }

    /// Opens every secret of a snapshot read from the store.
    pub(crate) fn open_snapshot(&self, snapshot: &mut Snapshot) -> Result<(), StoreError> {
        for k in &mut snapshot.access_keys {
            self.open_access_key(k)?;
        }
        for p in &mut snapshot.products {
            self.open_product(p)?;
        }
        for d in &mut snapshot.devices {
            self.open_device(d)?;
        }
        Ok(())
    }
}

/// The row parts a device secret is bound to: none of them changes while
/// the device exists.
pub(crate) fn device_row(d: &Device) -> [&str; 3] {
    [&d.iot_id, &d.product_key, &d.device_name]
}

/// The associated data of a value: the format, the column, and each part
/// of the row's key, every part length-prefixed so no two rows give the
/// same bytes.
fn associated_data(column: Column, row: &[&str]) -> Vec<u8> {
    let mut aad = Vec::with_capacity(64);
    for part in [FORMAT, column.name()].iter().chain(row) {
        let len = u32::try_from(part.len()).unwrap_or(u32::MAX);
        aad.extend_from_slice(&len.to_be_bytes());
        aad.extend_from_slice(part.as_bytes());
    }
    aad
}

/// Whether a stored value is in the sealed format (for the migration of
/// plaintext rows, which must never seal a value twice).
pub(crate) fn is_sealed(value: &str) -> bool {
    value.starts_with(FORMAT) && value[FORMAT.len()..].starts_with('.')
}

/// The key a source names. `DataDir` gives `None` when the data
/// directory holds no key file (the caller decides whether to make one).
pub(crate) fn load(
    source: &SecretsKeySource,
    data_dir: &Path,
) -> Result<Option<SecretsKey>, StoreError> {
    match source {
        SecretsKeySource::Value(text) => {
            SecretsKey::from_text(text.expose(), "THINGCALL_SECRETS_KEY").map(Some)
        }
        SecretsKeySource::File(path) => read_key_file(path).map(Some),
        SecretsKeySource::DataDir => {
            let path = data_dir.join(KEY_FILE);
            match std::fs::metadata(&path) {
                Ok(_) => read_key_file(&path).map(Some),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(key_error(format!("cannot read {}: {e}", path.display()))),
            }
        }
    }
}

fn read_key_file(path: &Path) -> Result<SecretsKey, StoreError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        key_error(format!(
            "cannot read the secrets key file {}: {e}",
            path.display()
        ))
    })?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        if let Ok(meta) = std::fs::metadata(path)
            && meta.permissions().mode() & 0o077 != 0
        {
            tracing::warn!(
                file = %path.display(),
                "the secrets key file can be read by other users: chmod 600 it"
            );
        }
    }
    SecretsKey::from_text(&text, format!("the key file {}", path.display()))
}

/// Makes a new key file at `path` (which must not exist), readable by its
/// owner only, and returns its key.
pub(crate) fn create_key_file(path: &Path) -> Result<SecretsKey, StoreError> {
    let text = new_secrets_key();
    write_key_file(path, &text).map_err(|e| {
        key_error(format!(
            "cannot make the secrets key {}: {e}",
            path.display()
        ))
    })?;
    SecretsKey::from_text(text.expose(), format!("the key file {}", path.display()))
}

/// Writes a key's text to a new file, mode 0600, synced.
pub fn write_key_file(path: &Path, text: &Secret) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(format!("{}\n", text.expose()).as_bytes())?;
    file.sync_all()
}

/// The refusal of a store whose secrets are sealed with another key.
pub(crate) fn wrong_key(stored: &[String], key: &SecretsKey) -> StoreError {
    key_error(format!(
        "the secrets in this store are sealed with key {}, and this server's key ({}) is {}: \
         give every server of this store the key it was sealed with",
        stored.join(", "),
        key.origin(),
        key.id()
    ))
}

/// The refusal of a store whose secrets are sealed when this server has no
/// key.
pub(crate) fn no_key(stored: &[String], data_dir: &Path) -> StoreError {
    key_error(format!(
        "the secrets in this store are sealed with key {}, and this server has no key: \
         give it with --secrets-key-file FILE or THINGCALL_SECRETS_KEY, or put it at {}",
        stored.join(", "),
        data_dir.join(KEY_FILE).display()
    ))
}

/// A fixed key for the crate's tests (their stores are opened again).
#[cfg(test)]
pub(crate) fn test_key() -> SecretsKey {
    // base64 of "thingcall-test-secrets-key-32by!"
    match SecretsKey::from_text(
        "dGhpbmdjYWxsLXRlc3Qtc2VjcmV0cy1rZXktMzJieSE=",
        "the test key",
    ) {
        Ok(k) => k,
        Err(e) => panic!("{e}"),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // test code
mod tests {
    use super::*;

    fn key() -> SecretsKey {
        SecretsKey::from_text(new_secrets_key().expose(), "a test key").unwrap()
    }

    fn device(iot: &str, dn: &str, secret: &str) -> Device {
        Device {
            iot_id: iot.into(),
            product_key: "a1ProductKe".into(),
            device_name: dn.into(),
            device_secret: secret.into(),
            nickname: None,
            enabled: true,
            created_ms: 1,
            activated_ms: None,
            online_ms: None,
            status_ms: 1,
            ip_address: None,
            online: false,
        }
    }

    #[test]
    fn a_sealed_value_opens_and_hides_its_plaintext() {
        let k = key();
        let sealed = k.seal(Column::AccessKey, &["LTAIkey"], "the-secret-value");
        assert!(!sealed.contains("the-secret-value"));
        assert!(sealed.starts_with(&format!("tc1.{}.", k.id())), "{sealed}");
        assert!(is_sealed(&sealed));
        let opened = k
            .open(
                Column::AccessKey,
                &["LTAIkey"],
                &sealed,
                &"AccessKey LTAIkey",
            )
            .unwrap();
        assert_eq!(opened.expose(), "the-secret-value");
        // A fresh nonce each time: the same secret never seals the same.
        let again = k.seal(Column::AccessKey, &["LTAIkey"], "the-secret-value");
        assert_ne!(sealed, again);
    }

    /// A value moved to another row or column, or changed, does not open;
    /// the error names the row, never the secret.
    #[test]
    fn a_moved_or_changed_value_does_not_open() {
        let k = key();
        let mut a = device("iotA", "devA", "secret-of-a");
        let b = device("iotB", "devB", "secret-of-b");
        let (Change::InsertDevice(sealed_a), Some(_)) =
            k.seal_change(Change::InsertDevice(a.clone()))
        else {
            panic!("a device change is sealed");
        };
        // Into another device's row.
        let mut moved = b.clone();
        moved.device_secret = sealed_a.device_secret.clone();
        let e = k.open_device(&mut moved).unwrap_err();
        assert_eq!(e.kind(), StoreErrorKind::Corrupt);
        assert!(e.message().contains("devB"), "{e}");
        assert!(!e.message().contains("secret-of"), "{e}");
        // Into another column with the same row key.
        let text = sealed_a.device_secret.expose();
        assert!(
            k.open(Column::Product, &device_row(&a), text, &"x")
                .is_err()
        );
        // One character changed.
        let mut changed = text.to_owned();
        let last = changed.pop().unwrap();
        changed.push(if last == 'A' { 'B' } else { 'A' });
        assert!(
            k.open(Column::Device, &device_row(&a), &changed, &"x")
                .is_err()
        );
        // Row parts do not run into each other.
        assert!(
            k.open(Column::Device, &["iotAa1ProductKe", "", "devA"], text, &"x")
                .is_err()
        );
        // The right row opens.
        a.device_secret = sealed_a.device_secret;
        k.open_device(&mut a).unwrap();
        assert_eq!(a.device_secret.expose(), "secret-of-a");
    }

    #[test]
    fn another_key_or_plaintext_is_refused_by_name() {
        let (k1, k2) = (key(), key());
        assert_ne!(k1.id(), k2.id());
        let sealed = k1.seal(Column::Product, &["a1pk"], "s");
        let e = k2
            .open(Column::Product, &["a1pk"], &sealed, &"product a1pk")
            .unwrap_err();
        assert!(
            e.message().contains(k1.id()) && e.message().contains(k2.id()),
            "{e}"
        );
        let e = k1
            .open(Column::Product, &["a1pk"], "plaintext", &"product a1pk")
            .unwrap_err();
        assert!(e.message().contains("not sealed"), "{e}");
        assert!(!is_sealed("plaintext") && !is_sealed("tc1") && !is_sealed("tc1x.y"));
    }

    #[test]
    fn key_text_is_checked_and_never_printed() {
        let text = new_secrets_key();
        let k = SecretsKey::from_text(&format!("  {}\n", text.expose()), "the key file k").unwrap();
        // The same key gives the same id; the id is not the key.
        assert_eq!(
            k.id(),
            SecretsKey::from_text(text.expose(), "x").unwrap().id()
        );
        assert_eq!(k.id().len(), 16);
        assert!(!text.expose().contains(k.id()));
        let debug = format!("{k:?}");
        assert!(!debug.contains(text.expose()), "{debug}");
        for bad in ["", "not base64!", "c2hvcnQ="] {
            let e = SecretsKey::from_text(bad, "the key file k").unwrap_err();
            assert!(e.message().contains("the key file k"), "{e}");
            assert!(e.message().contains("new-key"), "{e}");
        }
    }

    #[test]
    fn changes_without_secrets_are_not_copied() {
        let k = key();
        let (change, original) = k.seal_change(Change::SetEnabled {
            iot_id: "x".into(),
            enabled: false,
            at: 1,
        });
        assert!(original.is_none());
        assert!(matches!(change, Change::SetEnabled { .. }));
    }

    #[cfg(unix)]
    #[test]
    fn a_key_file_is_made_once_and_private() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = std::env::temp_dir().join(format!("thingcall-sealed-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(KEY_FILE);
        let made = create_key_file(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(
            create_key_file(&path).is_err(),
            "an existing key is never replaced"
        );
        let read = load(&SecretsKeySource::DataDir, &dir).unwrap().unwrap();
        assert_eq!(read.id(), made.id());
        let _ = std::fs::remove_dir_all(&dir);
        assert!(load(&SecretsKeySource::DataDir, &dir).unwrap().is_none());
    }
}
