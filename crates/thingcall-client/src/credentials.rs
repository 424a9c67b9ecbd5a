//! Where the client's AccessKey comes from.
//!
//! In order: explicit values; the environment (`ALIBABA_CLOUD_ACCESS_KEY_ID`,
//! `ALIBABA_CLOUD_ACCESS_KEY_SECRET`, optional `ALIBABA_CLOUD_SECURITY_TOKEN`);
//! an aliyun-cli profile in `~/.aliyun/config.json` (mode `AK`).

use std::path::{Path, PathBuf};

use thingcall_core::Secret;

use crate::error::Error;

/// An AccessKey pair, with an optional STS token. `Debug` never shows the
/// secret or the token.
#[derive(Clone, Debug)]
pub struct Credentials {
    /// The AccessKey id.
    pub access_key_id: String,
    /// The AccessKey secret.
    pub access_key_secret: Secret,
    /// An STS security token, sent as `SecurityToken` / `x-acs-security-token`.
    pub security_token: Option<Secret>,
}

impl Credentials {
    /// Explicit credentials.
    pub fn new(
        access_key_id: impl Into<String>,
        access_key_secret: impl Into<Secret>,
    ) -> Credentials {
        Credentials {
            access_key_id: access_key_id.into(),
            access_key_secret: access_key_secret.into(),
            security_token: None,
        }
    }

    /// From `ALIBABA_CLOUD_ACCESS_KEY_ID` / `ALIBABA_CLOUD_ACCESS_KEY_SECRET`
    /// (and `ALIBABA_CLOUD_SECURITY_TOKEN` when set).
    pub fn from_env() -> Option<Credentials> {
        Credentials::from_vars(|name| std::env::var(name).ok())
    }

    fn from_vars(get: impl Fn(&str) -> Option<String>) -> Option<Credentials> {
        let id = get("ALIBABA_CLOUD_ACCESS_KEY_ID").filter(|v| !v.is_empty())?;
        let secret = get("ALIBABA_CLOUD_ACCESS_KEY_SECRET").filter(|v| !v.is_empty())?;
        let token = get("ALIBABA_CLOUD_SECURITY_TOKEN")
            .filter(|v| !v.is_empty())
            .map(Secret::new);
        Some(Credentials {
            access_key_id: id,
            access_key_secret: Secret::new(secret),
            security_token: token,
        })
    }

    /// The default aliyun-cli configuration file, `~/.aliyun/config.json`.
    pub fn default_profile_path() -> Option<PathBuf> {
        std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".aliyun").join("config.json"))
    }

    /// From an aliyun-cli configuration file: the named profile, or the
    /// file's `current` profile. Only `AK` mode profiles carry a key.
    pub fn from_profile_file(
        path: &Path,
        profile: Option<&str>,
    ) -> Result<Option<Credentials>, Error> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(Error::config(format!(
                    "cannot read {}: {e}",
                    path.display()
                )));
            }
        };
        let doc: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| Error::config(format!("{} is not JSON: {e}", path.display())))?;
        let wanted = profile
            .map(str::to_owned)
            .or_else(|| doc["current"].as_str().map(str::to_owned));
        let Some(profiles) = doc["profiles"].as_array() else {
            return Ok(None);
        };
        let found = profiles.iter().find(|p| {
            wanted
                .as_deref()
                .is_none_or(|w| p["name"].as_str() == Some(w))
        });
        let Some(p) = found else { return Ok(None) };
        if p["mode"].as_str().is_some_and(|m| m != "AK") {
            return Err(Error::config(format!(
                "profile {} in {} uses mode {}; only AK profiles are supported",
                p["name"].as_str().unwrap_or("?"),
                path.display(),
                p["mode"]
            )));
        }
        match (p["access_key_id"].as_str(), p["access_key_secret"].as_str()) {
            (Some(id), Some(secret)) if !id.is_empty() && !secret.is_empty() => {
                Ok(Some(Credentials::new(id, secret)))
            }
            _ => Ok(None),
        }
    }

    /// Resolves credentials in the documented order.
    pub fn resolve(explicit: Option<Credentials>) -> Result<Credentials, Error> {
        if let Some(c) = explicit {
            return Ok(c);
        }
        if let Some(c) = Credentials::from_env() {
            return Ok(c);
        }
        if let Some(path) = Credentials::default_profile_path()
            && let Some(c) = Credentials::from_profile_file(&path, None)?
        {
            return Ok(c);
        }
        Err(Error::config(
            "no credentials: pass them explicitly, set ALIBABA_CLOUD_ACCESS_KEY_ID and ALIBABA_CLOUD_ACCESS_KEY_SECRET, \
             or configure an AK profile in ~/.aliyun/config.json",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_secrets() {
        let mut c = Credentials::new("id", "s3cret");
        c.security_token = Some(Secret::new("tok3n"));
        let text = format!("{c:?}");
        assert!(
            !text.contains("s3cret") && !text.contains("tok3n"),
            "{text}"
        );
        assert!(text.contains("** redacted **"));
    }

    #[test]
    fn environment_variables() {
        let vars = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                pairs
                    .iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| v.to_string())
            }
        };
        let c = Credentials::from_vars(vars(&[
            ("ALIBABA_CLOUD_ACCESS_KEY_ID", "a"),
            ("ALIBABA_CLOUD_ACCESS_KEY_SECRET", "b"),
            ("ALIBABA_CLOUD_SECURITY_TOKEN", "t"),
        ]))
        .unwrap();
        assert_eq!(
            (c.access_key_id.as_str(), c.access_key_secret.expose()),
            ("a", "b")
        );
        assert_eq!(c.security_token.unwrap().expose(), "t");
        assert!(Credentials::from_vars(vars(&[("ALIBABA_CLOUD_ACCESS_KEY_ID", "a")])).is_none());
    }

    #[test]
    fn aliyun_cli_profiles() {
        let dir =
            std::env::temp_dir().join(format!("thingcall-client-profile-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("config.json");
        std::fs::write(
            &path,
            r#"{"current":"dev","profiles":[
            {"name":"default","mode":"AK","access_key_id":"d-id","access_key_secret":"d-secret"},
            {"name":"dev","mode":"AK","access_key_id":"dev-id","access_key_secret":"dev-secret"},
            {"name":"sts","mode":"StsToken","access_key_id":"x","access_key_secret":"y"}]}"#,
        )
        .unwrap();
        assert_eq!(
            Credentials::from_profile_file(&path, None)
                .unwrap()
                .unwrap()
                .access_key_id,
            "dev-id"
        );
        assert_eq!(
            Credentials::from_profile_file(&path, Some("default"))
                .unwrap()
                .unwrap()
                .access_key_id,
            "d-id"
        );
        assert!(Credentials::from_profile_file(&path, Some("sts")).is_err());
        assert!(
            Credentials::from_profile_file(&path, Some("nope"))
                .unwrap()
                .is_none()
        );
        assert!(
            Credentials::from_profile_file(&dir.join("missing.json"), None)
                .unwrap()
                .is_none()
        );
        std::fs::write(&path, "{").unwrap();
        assert!(Credentials::from_profile_file(&path, None).is_err());
    }
}
