//! Local I/O errors classified: the one place that decides whether a failed file operation is
//! worth retrying. A read-only file system, a denied permission, a full disk, a path whose
//! parent is a file or that names a directory where a file is expected: retrying cannot help,
//! so these are permanent and fail a step at once, with a message naming the path. The rest
//! (EIO, EINTR, EAGAIN, a stale NFS handle, a stream cut short, ...) may pass and are transient.
//!
//! Every step that maps a `std::io::Error` goes through [`classify_io`]: directly with
//! [`PathError`] (`ops::base::io_err` makes it a step error), or through the `is_transient` of
//! an error type that holds one (`results::fetch::FetchError`, `cluster::s3::S3Error`).

use std::io;
use std::path::{Path, PathBuf};

use crate::engine::ErrorKind;

/// Whether retrying the operation that failed with `err` may help.
pub fn classify_io(err: &io::Error) -> ErrorKind {
    if let Some(errno) = err.raw_os_error() {
        return match errno {
            libc::EROFS
            | libc::EACCES
            | libc::EPERM
            | libc::ENOSPC
            | libc::EDQUOT
            | libc::ENOTDIR
            | libc::EISDIR
            | libc::EEXIST
            | libc::ENOENT
            | libc::ENOTEMPTY
            | libc::ENAMETOOLONG
            | libc::ELOOP
            | libc::EFBIG
            | libc::EXDEV
            | libc::EMLINK
            | libc::EINVAL
            | libc::EBADF
            | libc::ENODEV
            | libc::ENXIO
            | libc::EOPNOTSUPP => ErrorKind::Permanent,
            _ => ErrorKind::Transient,
        };
    }
    // An error made by code rather than by the OS (e.g. "unsafe path", "not empty").
    use io::ErrorKind as K;
    match err.kind() {
        K::ReadOnlyFilesystem
        | K::PermissionDenied
        | K::StorageFull
        | K::QuotaExceeded
        | K::NotADirectory
        | K::IsADirectory
        | K::AlreadyExists
        | K::NotFound
        | K::DirectoryNotEmpty
        | K::InvalidFilename
        | K::FileTooLarge
        | K::CrossesDevices
        | K::TooManyLinks
        | K::InvalidInput
        | K::InvalidData
        | K::Unsupported => ErrorKind::Permanent,
        _ => ErrorKind::Transient,
    }
}

/// Whether [`classify_io`] says transient.
pub fn is_transient_io(err: &io::Error) -> bool {
    classify_io(err) == ErrorKind::Transient
}

/// A failed operation on a local path: `cannot <action> <path>: <error>`.
#[derive(Debug, thiserror::Error)]
#[error("cannot {action} {}: {source}", path.display())]
pub struct PathError {
    pub action: &'static str,
    pub path: PathBuf,
    #[source]
    pub source: io::Error,
}

impl PathError {
    pub fn new(action: &'static str, path: &Path, source: io::Error) -> Self {
        PathError {
            action,
            path: path.to_path_buf(),
            source,
        }
    }

    /// [`classify_io`] of the error.
    pub fn kind(&self) -> ErrorKind {
        classify_io(&self.source)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_errno_is_classified() {
        let permanent = [
            libc::EROFS,
            libc::EACCES,
            libc::EPERM,
            libc::ENOSPC,
            libc::EDQUOT,
            libc::ENOTDIR,
            libc::EISDIR,
            libc::EEXIST,
            libc::ENOENT,
            libc::ENOTEMPTY,
            libc::ENAMETOOLONG,
            libc::ELOOP,
            libc::EFBIG,
            libc::EXDEV,
            libc::EMLINK,
            libc::EINVAL,
            libc::EBADF,
            libc::ENODEV,
            libc::ENXIO,
            libc::EOPNOTSUPP,
        ];
        for e in permanent {
            let err = io::Error::from_raw_os_error(e);
            assert_eq!(classify_io(&err), ErrorKind::Permanent, "{e}: {err}");
        }
        let transient = [
            libc::EIO,
            libc::EINTR,
            libc::EAGAIN,
            libc::EBUSY,
            libc::ETXTBSY,
            libc::ESTALE,
            libc::ETIMEDOUT,
            libc::ECONNRESET,
            libc::ECONNREFUSED,
            libc::EPIPE,
            libc::EMFILE,
            libc::ENFILE,
            libc::ENOMEM,
        ];
        for e in transient {
            let err = io::Error::from_raw_os_error(e);
            assert_eq!(classify_io(&err), ErrorKind::Transient, "{e}: {err}");
            assert!(is_transient_io(&err));
        }
    }

    #[test]
    fn errors_made_by_code_are_classified_by_their_kind() {
        let e = |k| io::Error::new(k, "x");
        assert_eq!(
            classify_io(&e(io::ErrorKind::ReadOnlyFilesystem)),
            ErrorKind::Permanent
        );
        assert_eq!(
            classify_io(&e(io::ErrorKind::DirectoryNotEmpty)),
            ErrorKind::Permanent
        );
        assert_eq!(
            classify_io(&e(io::ErrorKind::UnexpectedEof)),
            ErrorKind::Transient
        );
        assert_eq!(classify_io(&io::Error::other("x")), ErrorKind::Transient);
    }

    #[test]
    fn the_message_names_the_path() {
        let err = PathError::new(
            "create",
            Path::new("/results/run-1.tar.gz.part"),
            io::Error::from_raw_os_error(libc::EROFS),
        );
        let m = err.to_string();
        assert!(
            m.starts_with("cannot create /results/run-1.tar.gz.part: ") && m.contains("Read-only"),
            "{m}"
        );
        assert_eq!(err.kind(), ErrorKind::Permanent);
    }
}
