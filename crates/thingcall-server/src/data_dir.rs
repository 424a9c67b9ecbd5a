//! The data directory's permissions: it holds the SQLite store, its
//! journal, the secrets key and the demo TLS key, so it is made readable by
//! its owner only (0700), and so is each file thingcall keeps there (0600).
//! A directory that is more open is tightened, with a warning, unless it is
//! a shared one (sticky bit, like `/tmp`): that one is left and warned
//! about.

use std::path::Path;

use crate::store::StoreError;

/// The files of a data directory that hold the store or a key (by name, or
/// by the start of the name).
const PRIVATE: [&str; 5] = ["thingcall.", "journal-", "secrets.key", "node-id", "tls"];

/// Creates `dir` (mode 0700) or tightens it, and tightens the files
/// thingcall keeps in it.
pub(crate) fn prepare(dir: &Path) -> Result<(), StoreError> {
    let fail = |e: std::io::Error| {
        StoreError::unavailable(format!("cannot create {}: {e}", dir.display()))
    };
    if !dir.exists() {
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::DirBuilderExt as _;
            builder.mode(0o700);
        }
        builder.create(dir).map_err(fail)?;
    }
    #[cfg(unix)]
    tighten(dir).map_err(fail)?;
    Ok(())
}

#[cfg(unix)]
fn tighten(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(dir)?.permissions().mode();
    if mode & 0o077 != 0 {
        if mode & 0o1000 != 0 {
            tracing::warn!(
                dir = %dir.display(),
                "the data directory is shared (sticky bit): other users can list it; give thingcall a directory of its own"
            );
        } else {
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
            tracing::warn!(
                dir = %dir.display(),
                mode = format!("{:o}", mode & 0o777),
                "the data directory was open to other users; it is now 0700"
            );
        }
    }
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if !PRIVATE.iter().any(|p| name.starts_with(p)) {
            continue;
        }
        let meta = entry.metadata()?;
        if meta.is_dir() {
            // The demo certificate's folder: its key is 0600 already; the
            // folder is kept to its owner as well.
            if meta.permissions().mode() & 0o077 != 0 {
                std::fs::set_permissions(entry.path(), std::fs::Permissions::from_mode(0o700))?;
            }
            continue;
        }
        private_file(&entry.path())?;
    }
    Ok(())
}

/// Makes an existing file readable and writable by its owner only.
pub(crate) fn private_file(path: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        match std::fs::metadata(path) {
            Ok(meta) if meta.permissions().mode() & 0o077 != 0 => {
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
            }
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

/// Opens (creating if needed) a file readable and writable by its owner
/// only.
pub(crate) fn open_private(path: &Path) -> std::io::Result<std::fs::File> {
    let mut options = std::fs::OpenOptions::new();
    options.create(true).truncate(false).write(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let file = options.open(path)?;
    private_file(path)?;
    Ok(file)
}

#[cfg(all(test, unix))]
#[allow(clippy::unwrap_used)] // test code
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn a_new_directory_is_private_and_an_open_one_is_tightened() {
        let base = std::env::temp_dir().join(format!("thingcall-datadir-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        let dir = base.join("a/b");
        prepare(&dir).unwrap();
        assert_eq!(mode(&dir), 0o700);

        let open = base.join("open");
        std::fs::create_dir_all(&open).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::write(open.join("thingcall.db"), b"").unwrap();
        std::fs::set_permissions(
            open.join("thingcall.db"),
            std::fs::Permissions::from_mode(0o644),
        )
        .unwrap();
        std::fs::write(open.join("ready.json"), b"{}").unwrap();
        std::fs::set_permissions(
            open.join("ready.json"),
            std::fs::Permissions::from_mode(0o644),
        )
        .unwrap();
        prepare(&open).unwrap();
        assert_eq!(mode(&open), 0o700);
        assert_eq!(mode(&open.join("thingcall.db")), 0o600);
        assert_eq!(
            mode(&open.join("ready.json")),
            0o644,
            "files that are not thingcall's are left alone"
        );

        // A shared directory is only warned about.
        let shared = base.join("shared");
        std::fs::create_dir_all(&shared).unwrap();
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o1777)).unwrap();
        prepare(&shared).unwrap();
        assert_eq!(mode(&shared), 0o1777);

        let f = open_private(&base.join("lock")).unwrap();
        drop(f);
        assert_eq!(mode(&base.join("lock")), 0o600);
        let _ = std::fs::remove_dir_all(&base);
    }
}
