//! The pod's view of the filesystem for exec'd processes: a private mount namespace whose root
//! is the container's rootfs directory, with the host's system directories bound read-only
//! (`/usr`, `/etc`, `/sys`; so `sh`, `tar` and `python3` exist, as in an image), `/dev` and `/proc`,
//! a pod-private `/tmp`, and the container's volume mounts at their mount paths. So `find /data`,
//! `tar cf - /data/x` (`kubectl cp`) and a script on stdin that opens `/data/...` see the pod's
//! files and nothing of the host's other directories. Needs the right to create a mount
//! namespace (root, or unprivileged user namespaces); where the machine refuses it
//! ([`available`] is false) or `VAST_SIM_EXEC_ISOLATION=off`, exec falls back to rewriting
//! mount paths in the command line (`super::rewrite_paths`).

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// Top-level host directories every image has, bound read-only (`/dev`, `/proc` read-write).
const SYSTEM_DIRS: &[(&str, bool)] = &[
    ("/usr", true),
    ("/etc", true),
    ("/dev", false),
    ("/proc", false),
    ("/sys", true),
];
/// Top-level names that are symlinks on merged-/usr systems (`/bin -> usr/bin`), recreated as
/// the same symlinks, or bound read-only where they are directories.
const SYSTEM_LINKS: &[&str] = &["/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"];

/// One bind mount: host path → path inside the new root.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Bind {
    pub host: PathBuf,
    pub inside: String,
    pub read_only: bool,
}

/// The host's Python (`python3` on the sim's PATH): its executable and installation prefix.
fn interpreter() -> Option<&'static (PathBuf, PathBuf)> {
    static PY: OnceLock<Option<(PathBuf, PathBuf)>> = OnceLock::new();
    PY.get_or_init(|| {
        let out = std::process::Command::new("python3")
            .args([
                "-c",
                "import sys; print(sys.executable); print(sys.base_prefix)",
            ])
            .output()
            .ok()?;
        let text = String::from_utf8(out.stdout).ok()?;
        let mut lines = text.lines();
        let exe = std::fs::canonicalize(lines.next()?).ok()?;
        let prefix = PathBuf::from(lines.next()?);
        Some((exe, prefix))
    })
    .as_ref()
}

/// How an exec'd process is isolated.
#[derive(Debug, Clone)]
pub(crate) struct Isolation {
    /// The new root (the container's rootfs directory on the host).
    pub root: PathBuf,
    /// Applied in order (system directories first, then the pod's, parents before children).
    pub binds: Vec<Bind>,
    /// The working directory inside.
    pub cwd: String,
}

/// Whether exec'd processes can get their own mount namespace on this machine.
pub(crate) fn available() -> bool {
    static AVAILABLE: OnceLock<bool> = OnceLock::new();
    *AVAILABLE.get_or_init(|| {
        if std::env::var("VAST_SIM_EXEC_ISOLATION").is_ok_and(|v| v == "off" || v == "0") {
            return false;
        }
        let mut cmd = std::process::Command::new("true");
        // SAFETY: only async-signal-safe syscalls run between fork and exec.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut cmd, || {
                if libc::unshare(libc::CLONE_NEWNS) != 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let ok = cmd.status().is_ok_and(|s| s.success());
        if !ok {
            tracing::info!(
                "exec isolation unavailable (no mount namespace): mount paths are rewritten instead"
            );
        }
        ok
    })
}

/// The isolation of a container whose volume mounts are `mounts` (mount path, host dir,
/// read-only), rooted at `root` with `/tmp` at `tmp` and `/usr/local/bin` at `bin` (where
/// [`prepare`] links `python` and `python3`, as in the archiver's Python image). `None` when a
/// mount lies inside a system directory (its mount point cannot be created there): then
/// paths are rewritten.
pub(crate) fn plan(
    root: &Path,
    tmp: &Path,
    bin: &Path,
    mounts: &[(String, PathBuf, bool)],
) -> Option<Isolation> {
    let mut binds = Vec::new();
    for (dir, read_only) in SYSTEM_DIRS {
        if Path::new(dir).is_dir() {
            binds.push(Bind {
                host: PathBuf::from(dir),
                inside: dir.to_string(),
                read_only: *read_only,
            });
        }
    }
    for link in SYSTEM_LINKS {
        let p = Path::new(link);
        if p.is_dir() && !p.is_symlink() {
            binds.push(Bind {
                host: p.to_path_buf(),
                inside: link.to_string(),
                read_only: true,
            });
        }
    }
    // A Python outside /usr (pyenv, conda) is visible at its own path.
    if let Some((_, prefix)) = interpreter() {
        if !prefix.starts_with("/usr") && prefix.is_dir() {
            binds.push(Bind {
                host: prefix.clone(),
                inside: prefix.display().to_string(),
                read_only: true,
            });
        }
    }
    if Path::new("/usr/local/bin").is_dir() {
        binds.push(Bind {
            host: bin.to_path_buf(),
            inside: "/usr/local/bin".into(),
            read_only: true,
        });
    }
    binds.push(Bind {
        host: tmp.to_path_buf(),
        inside: "/tmp".into(),
        read_only: false,
    });
    let mut pod: Vec<&(String, PathBuf, bool)> = mounts.iter().collect();
    pod.sort_by_key(|(mp, _, _)| mp.len());
    for (mp, host, read_only) in pod {
        let under_system = SYSTEM_DIRS
            .iter()
            .any(|(d, _)| mp == d || mp.starts_with(&format!("{d}/")));
        if under_system || mp == "/" {
            return None;
        }
        binds.push(Bind {
            host: host.clone(),
            inside: mp.clone(),
            read_only: *read_only,
        });
    }
    Some(Isolation {
        root: root.to_path_buf(),
        binds,
        cwd: "/".into(),
    })
}

/// Creates the mount points, the system symlinks and the `python` links inside the root;
/// idempotent.
pub(crate) fn prepare(iso: &Isolation) -> io::Result<()> {
    if let Some(bin) = iso.binds.iter().find(|b| b.inside == "/usr/local/bin") {
        std::fs::create_dir_all(&bin.host)?;
        if let Some((exe, _)) = interpreter() {
            for name in ["python", "python3"] {
                let link = bin.host.join(name);
                if link.symlink_metadata().is_err() {
                    std::os::unix::fs::symlink(exe, &link)?;
                }
            }
        }
    }
    for link in SYSTEM_LINKS {
        let p = Path::new(link);
        if p.is_symlink() {
            let inside = iso.root.join(link.trim_start_matches('/'));
            if inside.symlink_metadata().is_err() {
                std::os::unix::fs::symlink(std::fs::read_link(p)?, &inside)?;
            }
        }
    }
    std::fs::create_dir_all(iso.root.join("root"))?;
    for b in &iso.binds {
        // Inside a read-only system bind the mount point is the host's own directory.
        if SYSTEM_DIRS
            .iter()
            .any(|(d, _)| b.inside.starts_with(&format!("{d}/")))
        {
            continue;
        }
        let inside = iso.root.join(b.inside.trim_start_matches('/'));
        if b.host.is_dir() {
            std::fs::create_dir_all(&inside)?;
        } else if inside.symlink_metadata().is_err() {
            if let Some(parent) = inside.parent() {
                std::fs::create_dir_all(parent)?;
            }
            std::fs::write(&inside, b"")?;
        }
    }
    Ok(())
}

/// Makes `cmd`'s child enter the isolation between fork and exec: a private mount namespace,
/// the binds, `chroot` into the root, `chdir` to the working directory.
pub(crate) fn apply(cmd: &mut tokio::process::Command, iso: &Isolation) -> io::Result<()> {
    let c = |p: &Path| {
        CString::new(p.as_os_str().as_bytes())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in a path"))
    };
    let root = c(&iso.root)?;
    let cwd = c(Path::new(&iso.cwd))?;
    let binds: Vec<(CString, CString, bool)> = iso
        .binds
        .iter()
        .map(|b| {
            Ok((
                c(&b.host)?,
                c(&iso.root.join(b.inside.trim_start_matches('/')))?,
                b.read_only,
            ))
        })
        .collect::<io::Result<_>>()?;
    let slash = c(Path::new("/"))?;
    // SAFETY: the closure allocates nothing and makes only async-signal-safe syscalls.
    unsafe {
        cmd.pre_exec(move || {
            let none = std::ptr::null();
            let fail = || Err(io::Error::last_os_error());
            if libc::unshare(libc::CLONE_NEWNS) != 0 {
                return fail();
            }
            if libc::mount(
                none,
                slash.as_ptr(),
                none,
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null(),
            ) != 0
            {
                return fail();
            }
            for (src, dst, ro) in &binds {
                if libc::mount(
                    src.as_ptr(),
                    dst.as_ptr(),
                    none,
                    libc::MS_BIND | libc::MS_REC,
                    std::ptr::null(),
                ) != 0
                {
                    return fail();
                }
                if *ro
                    && libc::mount(
                        none,
                        dst.as_ptr(),
                        none,
                        libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY,
                        std::ptr::null(),
                    ) != 0
                {
                    return fail();
                }
            }
            if libc::chroot(root.as_ptr()) != 0 || libc::chdir(cwd.as_ptr()) != 0 {
                return fail();
            }
            Ok(())
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_mounts_come_after_the_system_and_parents_before_children() {
        let iso = plan(
            Path::new("/r"),
            Path::new("/t"),
            Path::new("/b"),
            &[
                ("/data/sub".into(), "/h/sub".into(), false),
                ("/data".into(), "/h/data".into(), false),
                ("/config".into(), "/h/cfg".into(), true),
            ],
        )
        .expect("isolation");
        let inside: Vec<&str> = iso
            .binds
            .iter()
            .map(|b| b.inside.as_str())
            .skip_while(|i| *i != "/tmp")
            .collect();
        assert_eq!(inside, vec!["/tmp", "/data", "/config", "/data/sub"]);
        assert!(iso.binds.iter().any(|b| b.inside == "/usr" && b.read_only));
    }

    #[test]
    fn a_mount_inside_a_system_directory_falls_back_to_rewriting() {
        let mounts = [(
            "/usr/share/nginx/html".to_string(),
            PathBuf::from("/h/data"),
            true,
        )];
        assert!(plan(Path::new("/r"), Path::new("/t"), Path::new("/b"), &mounts).is_none());
    }
}
