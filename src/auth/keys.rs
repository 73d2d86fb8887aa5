//! Cedar's token signing key: ES256 (P-256), generated on first start and kept as a PKCS#8
//! PEM file readable only by its owner. Its public half is served as a JWKS.

use std::io::Write;
use std::path::Path;

use anyhow::Context;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::{Jwk, JwkSet, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey};
use p256::pkcs8::{DecodePrivateKey, EncodePrivateKey, EncodePublicKey, LineEnding};
use sha2::{Digest, Sha256};

pub struct SigningKey {
    pub kid: String,
    pub encoding: EncodingKey,
    pub decoding: DecodingKey,
    pub jwks: JwkSet,
}

impl SigningKey {
    pub fn load_or_create(path: &Path) -> anyhow::Result<Self> {
        let pem = match std::fs::read_to_string(path) {
            Ok(pem) => {
                warn_if_readable_by_others(path);
                pem
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => create(path)?,
            Err(e) => {
                return Err(e).with_context(|| format!("reading the signing key {}", path.display()));
            }
        };
        Self::from_pem(&pem).with_context(|| format!("loading the signing key {} (CEDAR_JWT_KEY_FILE)", path.display()))
    }

    pub fn from_pem(pem: &str) -> anyhow::Result<Self> {
        let secret = p256::SecretKey::from_pkcs8_pem(pem).context("not a PKCS#8 P-256 private key")?;
        let public = secret.public_key();
        let public_pem = public.to_public_key_pem(LineEnding::LF).context("encoding public key")?;
        let kid = URL_SAFE_NO_PAD.encode(&Sha256::digest(public.to_sec1_bytes())[..12]);
        let encoding = EncodingKey::from_ec_pem(pem.as_bytes()).context("loading private key")?;
        let decoding = DecodingKey::from_ec_pem(public_pem.as_bytes()).context("loading public key")?;
        let mut jwk = Jwk::from_encoding_key(&encoding, Algorithm::ES256).context("building JWK")?;
        jwk.common.key_id = Some(kid.clone());
        jwk.common.public_key_use = Some(PublicKeyUse::Signature);
        Ok(Self { kid, encoding, decoding, jwks: JwkSet { keys: vec![jwk] } })
    }
}

fn create(path: &Path) -> anyhow::Result<String> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let secret = loop {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
        if let Ok(secret) = p256::SecretKey::from_slice(&bytes) {
            break secret;
        }
    };
    let pem = secret.to_pkcs8_pem(LineEnding::LF).context("encoding key")?;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    match options.open(path) {
        Ok(mut file) => {
            file.write_all(pem.as_bytes())?;
            file.sync_all()?;
            tracing::info!(path = %path.display(), "generated a new token signing key");
            Ok(pem.to_string())
        }
        // Another process created it first: use theirs.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(std::fs::read_to_string(path)?),
        Err(e) => Err(e).with_context(|| format!("writing the signing key {}", path.display())),
    }
}

fn warn_if_readable_by_others(path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = std::fs::metadata(path)
            && meta.permissions().mode() & 0o077 != 0
        {
            tracing::warn!(path = %path.display(), "the signing key file is readable by others; chmod 600 it");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_once_with_owner_only_permissions() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys/jwt.pem");
        let first = SigningKey::load_or_create(&path).unwrap();
        let second = SigningKey::load_or_create(&path).unwrap();
        assert_eq!(first.kid, second.kid);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        }
        let jwk = serde_json::to_value(&first.jwks).unwrap();
        assert_eq!(jwk["keys"][0]["kty"], "EC");
        assert_eq!(jwk["keys"][0]["crv"], "P-256");
        assert_eq!(jwk["keys"][0]["kid"], first.kid);
        assert!(jwk["keys"][0].get("d").is_none(), "private part must not be published");
    }
}
