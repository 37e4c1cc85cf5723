//! Puts the Ingresses' TLS Secrets where the TLS loader reads certificates:
//! `<state_dir>/ingress-tls/<namespace>/<secret>/tls.crt` and `tls.key`.
//! Directories are 0700 and files 0600 (the key is a secret), each file is
//! written whole to a temporary name and renamed over the old one, so the
//! loader never reads half a key, and a file is only rewritten when its
//! content changed. Directories of Secrets no longer used are removed.
use std::{
    collections::BTreeSet,
    fs,
    io::Write as _,
    os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _},
    path::Path,
};

use super::{merge::secret_dir, translate::SecretCert};

/// Writes `certs` under `tls_dir` and removes what is no longer named.
/// Returns whether any file changed.
pub fn write_all(tls_dir: &Path, certs: &[SecretCert]) -> std::io::Result<bool> {
    let mut changed = false;
    make_private_dir(tls_dir)?;
    let mut keep: BTreeSet<(String, String)> = BTreeSet::new();
    for cert in certs {
        let dir = secret_dir(tls_dir, &cert.key);
        make_private_dir(dir.parent().unwrap_or(tls_dir))?;
        make_private_dir(&dir)?;
        changed |= write_if_changed(&dir.join("tls.crt"), &cert.cert_pem)?;
        changed |= write_if_changed(&dir.join("tls.key"), &cert.key_pem)?;
        keep.insert(cert.key.clone());
    }
    // Remove Secrets no longer referenced; their key material must not linger.
    for namespace in read_dirs(tls_dir)? {
        let ns_dir = tls_dir.join(&namespace);
        for name in read_dirs(&ns_dir)? {
            if !keep.contains(&(namespace.clone(), name.clone())) {
                fs::remove_dir_all(ns_dir.join(&name))?;
                changed = true;
            }
        }
        if read_dirs(&ns_dir)?.is_empty() {
            let _ = fs::remove_dir(&ns_dir);
        }
    }
    Ok(changed)
}

fn make_private_dir(dir: &Path) -> std::io::Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

fn read_dirs(dir: &Path) -> std::io::Result<Vec<String>> {
    let mut names = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            names.push(entry.file_name().to_string_lossy().into_owned());
        }
    }
    Ok(names)
}

fn write_if_changed(path: &Path, content: &[u8]) -> std::io::Result<bool> {
    if fs::read(path).is_ok_and(|old| old == content) {
        return Ok(false);
    }
    let temporary = path.with_extension("tmp");
    {
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&temporary)?;
        file.write_all(content)?;
        file.sync_all()?;
    }
    fs::rename(&temporary, path)?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    fn cert(ns: &str, name: &str, body: &str) -> SecretCert {
        SecretCert {
            key: (ns.to_string(), name.to_string()),
            cert_pem: format!("cert {body}").into_bytes(),
            key_pem: format!("key {body}").into_bytes(),
        }
    }

    #[test]
    fn secrets_are_written_private_rewritten_on_change_and_removed_when_unused() {
        let dir = tempfile::tempdir().unwrap();
        let tls = dir.path().join("ingress-tls");
        assert!(write_all(&tls, &[cert("honeydue", "api-tls", "1")]).unwrap());
        let key = tls.join("honeydue/api-tls/tls.key");
        assert_eq!(fs::read(&key).unwrap(), b"key 1");
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&key), 0o600);
        assert_eq!(mode(&tls.join("honeydue/api-tls")), 0o700);
        assert_eq!(mode(&tls.join("honeydue")), 0o700);
        // Same content: nothing written, nothing changed.
        assert!(!write_all(&tls, &[cert("honeydue", "api-tls", "1")]).unwrap());
        assert!(write_all(&tls, &[cert("honeydue", "api-tls", "2")]).unwrap());
        assert_eq!(fs::read(&key).unwrap(), b"key 2");
        assert!(write_all(&tls, &[]).unwrap());
        assert!(!tls.join("honeydue").exists());
    }
}
