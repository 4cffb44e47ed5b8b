//! Safe extraction of a results archive (`<bucket>.tar.gz` whose members are
//! `<top>/<key>`): nothing is ever written outside the destination directory,
//! and a truncated or corrupt archive is reported as such.
//!
//! The rules, checked for every member (a violation is [`ExtractError::Unsafe`]):
//! - the path is relative, without `..`, root or prefix components, not empty,
//!   and is `<top>` or lies under `<top>/`; `.` components are dropped;
//! - the type is a regular file (including the old `'\0'` type and contiguous
//!   files), a directory, a symlink or a hard link; PAX/GNU extension headers
//!   are consumed by the `tar` crate and PAX global headers are skipped;
//! - a symlink target is relative and, resolved lexically from the link's own
//!   directory, stays inside `<top>`. A `..` is only accepted right after a
//!   component that is an extracted directory (as every directory of the link's
//!   own path is): after a symlink, lexical resolution would not be what the
//!   kernel does (`top/a/s -> ..` then `top/a/l -> s/../..` leaves `<top>`);
//! - a hard link names a regular file extracted earlier from this archive;
//! - nothing is written through a symlink: no member may have a symlink among its
//!   parents, and a member that replaces an earlier file or symlink removes it
//!   and creates a new inode (`O_EXCL`), so neither a link nor a hard-linked
//!   file is written through. A directory is never replaced by anything else.
//!
//! Regular files get the header's permission bits masked to `0o777` and the
//! header's mtime; directories are created `0o755` (their entries' modes and
//! mtimes are ignored). Whether something exists on disk is decided from the
//! set of paths this extraction created, which is exact because the destination
//! starts out empty; every creation also uses `create_dir`/`O_EXCL`, so an
//! unexpected object makes it fail instead of being followed.

use std::cell::RefCell;
use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::path::{Component, Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, SystemTime};

use flate2::bufread::GzDecoder;
use tar::EntryType;

/// What an archive holds (or what was extracted from it).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExtractSummary {
    /// Regular-file members.
    pub files: u64,
    /// Directory members (directories created implicitly are not counted).
    pub dirs: u64,
    /// Symlink and hard-link members.
    pub links: u64,
    /// Payload bytes of the regular files.
    pub bytes: u64,
}

impl ExtractSummary {
    /// Number of members counted.
    fn entries(&self) -> u64 {
        self.files + self.dirs + self.links
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ExtractError {
    #[error("unsafe archive entry '{entry}': {reason}")]
    Unsafe { entry: String, reason: String },
    #[error("corrupt archive {path}: {message}")]
    Corrupt { path: PathBuf, message: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Extracts `archive` (gzip'ed tar) into `dest`, which must not exist yet or be an empty
/// directory (it is a temporary directory the caller renames into place afterwards).
/// `progress(entries_done, payload_bytes_done)` is called after each entry.
///
/// On error `dest` may hold part of the archive (never anything outside it);
/// the caller discards it.
pub fn extract_safe(
    archive: &Path,
    dest: &Path,
    top: &str,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<ExtractSummary, ExtractError> {
    check_top(top, archive)?;
    prepare_dest(dest)?;
    walk(archive, Some(dest), top, progress)
}

/// Reads the whole archive without writing anything: member count and payload bytes, the same safety checks (for validation before removal of a remote copy, and tests).
pub fn inspect(archive: &Path, top: &str) -> Result<ExtractSummary, ExtractError> {
    check_top(top, archive)?;
    walk(archive, None, top, &mut |_, _| {})
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> ExtractError + '_ {
    move |source| ExtractError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn check_top(top: &str, archive: &Path) -> Result<(), ExtractError> {
    let mut comps = Path::new(top).components();
    match (comps.next(), comps.next()) {
        (Some(Component::Normal(c)), None) if c == OsStr::new(top) => Ok(()),
        _ => Err(ExtractError::Io {
            path: archive.to_path_buf(),
            source: io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("top directory '{top}' is not a single plain path component"),
            ),
        }),
    }
}

fn prepare_dest(dest: &Path) -> Result<(), ExtractError> {
    match fs::symlink_metadata(dest) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            fs::create_dir_all(dest).map_err(io_err(dest))
        }
        Err(e) => Err(io_err(dest)(e)),
        Ok(m) if !m.is_dir() => Err(io_err(dest)(io::Error::new(
            io::ErrorKind::AlreadyExists,
            "destination exists and is not a directory",
        ))),
        Ok(_) => {
            let mut listing = fs::read_dir(dest).map_err(io_err(dest))?;
            match listing.next() {
                None => Ok(()),
                Some(Err(e)) => Err(io_err(dest)(e)),
                Some(Ok(_)) => Err(io_err(dest)(io::Error::new(
                    io::ErrorKind::DirectoryNotEmpty,
                    "destination directory is not empty",
                ))),
            }
        }
    }
}

/// The archive file, remembering the I/O error it returned (if any), so that a
/// failure to read the file is reported as `Io` and not as a corrupt archive.
struct Source {
    file: File,
    failed: Rc<RefCell<Option<io::Error>>>,
}

impl Read for Source {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match self.file.read(buf) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    let kind = e.kind();
                    *self.failed.borrow_mut() = Some(e);
                    return Err(io::Error::new(kind, "reading the archive file failed"));
                }
                Ok(n) => return Ok(n),
            }
        }
    }
}

/// The decompressed stream; records whether the tar reader ever hit its end.
/// The tar crate reads exactly what it needs, so it only sees EOF when the
/// stream ends before (or instead of) the end-of-archive zero block.
struct Decompressed {
    gz: GzDecoder<BufReader<Source>>,
    saw_eof: bool,
}

impl Read for Decompressed {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.gz.read(buf)?;
        if n == 0 && !buf.is_empty() {
            self.saw_eof = true;
        }
        Ok(n)
    }
}

/// Maps errors from the read side: the file's own I/O errors to `Io`,
/// everything else (gzip, tar framing, checksums) to `Corrupt`.
struct ReadErrors<'a> {
    archive: &'a Path,
    failed: Rc<RefCell<Option<io::Error>>>,
}

impl ReadErrors<'_> {
    fn map(&self, e: io::Error) -> ExtractError {
        match self.failed.borrow_mut().take() {
            Some(source) => ExtractError::Io {
                path: self.archive.to_path_buf(),
                source,
            },
            None => self.corrupt(e.to_string()),
        }
    }

    fn corrupt(&self, message: impl Into<String>) -> ExtractError {
        ExtractError::Corrupt {
            path: self.archive.to_path_buf(),
            message: message.into(),
        }
    }
}

const BUF_SIZE: usize = 256 * 1024;

fn walk(
    archive: &Path,
    dest: Option<&Path>,
    top: &str,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<ExtractSummary, ExtractError> {
    let failed = Rc::new(RefCell::new(None));
    let errors = ReadErrors {
        archive,
        failed: Rc::clone(&failed),
    };
    let file = File::open(archive).map_err(io_err(archive))?;
    let source = BufReader::with_capacity(BUF_SIZE, Source { file, failed });
    let mut tar = tar::Archive::new(Decompressed {
        gz: GzDecoder::new(source),
        saw_eof: false,
    });

    let mut tree = Tree {
        dest,
        nodes: HashMap::new(),
    };
    let mut summary = ExtractSummary::default();
    let mut buf = vec![0u8; BUF_SIZE];
    for entry in tar.entries().map_err(|e| errors.map(e))? {
        let mut entry = entry.map_err(|e| errors.map(e))?;
        let kind = entry.header().entry_type();
        if kind.is_pax_global_extensions() {
            // Archive-wide metadata (e.g. `git archive`'s commit id); no member.
            continue;
        }
        let raw_path = entry.path().map_err(|e| errors.map(e))?.into_owned();
        let name = raw_path.to_string_lossy().into_owned();
        let unsafe_entry = |reason: String| ExtractError::Unsafe {
            entry: name.clone(),
            reason,
        };
        let rel = member_path(&raw_path, top).map_err(&unsafe_entry)?;
        // Old (pre-POSIX) archives mark directories by a trailing slash only.
        let old_style_dir =
            entry.header().as_ustar().is_none() && entry.path_bytes().ends_with(b"/");
        match kind {
            EntryType::Directory => {
                tree.dir(&rel).map_err(|e| e.named(&name))?;
                summary.dirs += 1;
            }
            EntryType::Regular | EntryType::Continuous if old_style_dir => {
                tree.dir(&rel).map_err(|e| e.named(&name))?;
                summary.dirs += 1;
            }
            EntryType::Regular | EntryType::Continuous => {
                let header = entry.header();
                let mode = header.mode().map_err(|e| errors.map(e))? & 0o777;
                let mtime = header.mtime().map_err(|e| errors.map(e))?;
                let size = entry.size();
                let mut out = tree.create_file(&rel, top).map_err(|e| e.named(&name))?;
                let mut done = 0u64;
                loop {
                    let n = entry.read(&mut buf).map_err(|e| errors.map(e))?;
                    if n == 0 {
                        break;
                    }
                    if let Some((file, path)) = &mut out {
                        file.write_all(&buf[..n]).map_err(io_err(path))?;
                    }
                    done += n as u64;
                }
                if done != size {
                    return Err(errors.corrupt(format!(
                        "member '{name}' is truncated: {done} of {size} bytes"
                    )));
                }
                if let Some((file, path)) = out {
                    finish_file(&file, &path, mode, mtime)?;
                }
                summary.files += 1;
                summary.bytes += size;
            }
            EntryType::Symlink => {
                let target = entry
                    .link_name()
                    .map_err(|e| errors.map(e))?
                    .ok_or_else(|| unsafe_entry("symlink without a target".into()))?
                    .into_owned();
                tree.symlink(&rel, &target, top)
                    .map_err(|e| e.named(&name))?;
                summary.links += 1;
            }
            EntryType::Link => {
                let target = entry
                    .link_name()
                    .map_err(|e| errors.map(e))?
                    .ok_or_else(|| unsafe_entry("hard link without a target".into()))?
                    .into_owned();
                let target_rel = member_path(&target, top).map_err(|reason| {
                    unsafe_entry(format!("hard link target '{}': {reason}", target.display()))
                })?;
                tree.hard_link(&rel, &target_rel, top)
                    .map_err(|e| e.named(&name))?;
                summary.links += 1;
            }
            other => {
                return Err(unsafe_entry(format!(
                    "entry type {} is not allowed",
                    describe(other)
                )))
            }
        }
        progress(summary.entries(), summary.bytes);
    }

    let mut rest = tar.into_inner();
    if rest.saw_eof {
        return Err(errors.corrupt("the tar stream ends without an end-of-archive marker"));
    }
    // The tar crate stops at the first zero block. Read the rest of the gzip
    // stream, which also makes the decoder check its CRC and length trailer.
    loop {
        let n = rest.gz.read(&mut buf).map_err(|e| errors.map(e))?;
        if n == 0 {
            break;
        }
        if buf[..n].iter().any(|&b| b != 0) {
            return Err(errors.corrupt("data after the end-of-archive marker"));
        }
    }
    let mut source = rest.gz.into_inner();
    let trailing = source.fill_buf().map_err(|e| errors.map(e))?;
    if !trailing.is_empty() {
        return Err(errors.corrupt("trailing data after the gzip stream"));
    }
    Ok(summary)
}

fn describe(kind: EntryType) -> String {
    let what = match kind {
        EntryType::Char => "character device",
        EntryType::Block => "block device",
        EntryType::Fifo => "FIFO",
        EntryType::GNUSparse => "GNU sparse file",
        EntryType::GNULongName | EntryType::GNULongLink | EntryType::XHeader => {
            "stray extension header"
        }
        _ => "unknown",
    };
    format!("'{}' ({what})", char::from(kind.as_byte()).escape_default())
}

/// Sets the permission bits and the mtime of a file just written.
fn finish_file(file: &File, path: &Path, mode: u32, mtime: u64) -> Result<(), ExtractError> {
    if let Some(t) = SystemTime::UNIX_EPOCH.checked_add(Duration::from_secs(mtime)) {
        file.set_modified(t).map_err(io_err(path))?;
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(fs::Permissions::from_mode(mode))
            .map_err(io_err(path))?;
    }
    #[cfg(not(unix))]
    let _ = mode;
    Ok(())
}

/// The member's path relative to the destination, normalized (no `.`), checked
/// to be `top` or under `top/`.
fn member_path(raw: &Path, top: &str) -> Result<PathBuf, String> {
    let mut rel = PathBuf::new();
    for c in raw.components() {
        match c {
            Component::Prefix(_) | Component::RootDir => return Err("absolute path".into()),
            Component::ParentDir => return Err("path contains '..'".into()),
            Component::CurDir => {}
            Component::Normal(n) => rel.push(n),
        }
    }
    if rel.as_os_str().is_empty() {
        return Err("empty path".into());
    }
    if !rel.starts_with(top) {
        return Err(format!("not under '{top}/'"));
    }
    Ok(rel)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Node {
    Dir,
    File,
    Symlink,
}

/// An error of a tree operation, before it knows the member's name.
enum TreeError {
    Unsafe(String),
    Io(PathBuf, io::Error),
}

impl TreeError {
    fn named(self, entry: &str) -> ExtractError {
        match self {
            TreeError::Unsafe(reason) => ExtractError::Unsafe {
                entry: entry.to_string(),
                reason,
            },
            TreeError::Io(path, source) => ExtractError::Io { path, source },
        }
    }
}

/// What this extraction has created under `dest` (everything, since `dest`
/// started out empty). With `dest: None` (inspection) nothing is written but the
/// same bookkeeping and checks run.
struct Tree<'a> {
    dest: Option<&'a Path>,
    nodes: HashMap<PathBuf, Node>,
}

impl Tree<'_> {
    fn io(&self, rel: &Path) -> impl FnOnce(io::Error) -> TreeError {
        let path = self.dest.map(|d| d.join(rel)).unwrap_or_default();
        move |e| TreeError::Io(path, e)
    }

    /// Makes `rel` and all its ancestors directories.
    fn dir(&mut self, rel: &Path) -> Result<(), TreeError> {
        let mut cur = PathBuf::new();
        for c in rel.components() {
            cur.push(c);
            match self.nodes.get(&cur) {
                Some(Node::Dir) => continue,
                Some(Node::Symlink) => {
                    return Err(TreeError::Unsafe(format!(
                        "'{}' is a symlink from an earlier member; refusing to write through it",
                        cur.display()
                    )))
                }
                Some(Node::File) => {
                    return Err(TreeError::Unsafe(format!(
                        "'{}' is a file from an earlier member, not a directory",
                        cur.display()
                    )))
                }
                None => {}
            }
            if let Some(dest) = self.dest {
                make_dir(&dest.join(&cur)).map_err(self.io(&cur))?;
            }
            self.nodes.insert(cur.clone(), Node::Dir);
        }
        Ok(())
    }

    /// Makes the parents of the non-directory `rel` directories.
    fn parents(&mut self, rel: &Path, top: &str) -> Result<(), TreeError> {
        match rel.parent() {
            Some(parent) if rel != Path::new(top) => self.dir(parent),
            _ => Err(TreeError::Unsafe(format!(
                "'{top}' itself must be a directory"
            ))),
        }
    }

    /// Removes an earlier file or symlink at `rel` (the link itself, never its
    /// target), so that the new member gets a new inode.
    fn clear(&mut self, rel: &Path) -> Result<(), TreeError> {
        match self.nodes.get(rel) {
            None => Ok(()),
            Some(Node::Dir) => Err(TreeError::Unsafe(
                "would replace a directory from an earlier member".into(),
            )),
            Some(Node::File | Node::Symlink) => {
                if let Some(dest) = self.dest {
                    fs::remove_file(dest.join(rel)).map_err(self.io(rel))?;
                }
                self.nodes.remove(rel);
                Ok(())
            }
        }
    }

    /// Creates the regular file `rel` (new inode, `O_EXCL`); `None` when inspecting.
    fn create_file(&mut self, rel: &Path, top: &str) -> Result<Option<(File, PathBuf)>, TreeError> {
        self.parents(rel, top)?;
        self.clear(rel)?;
        let out = match self.dest {
            None => None,
            Some(dest) => {
                let path = dest.join(rel);
                let mut options = OpenOptions::new();
                options.write(true).create_new(true);
                #[cfg(unix)]
                {
                    use std::os::unix::fs::OpenOptionsExt;
                    options.mode(0o600);
                }
                let file = options.open(&path).map_err(self.io(rel))?;
                Some((file, path))
            }
        };
        self.nodes.insert(rel.to_path_buf(), Node::File);
        Ok(out)
    }

    fn symlink(&mut self, rel: &Path, target: &Path, top: &str) -> Result<(), TreeError> {
        self.parents(rel, top)?;
        self.check_link_target(rel, target).map_err(|reason| {
            TreeError::Unsafe(format!("symlink target '{}': {reason}", target.display()))
        })?;
        self.clear(rel)?;
        if let Some(dest) = self.dest {
            make_symlink(target, &dest.join(rel)).map_err(self.io(rel))?;
        }
        self.nodes.insert(rel.to_path_buf(), Node::Symlink);
        Ok(())
    }

    /// Resolves `target` lexically from the directory of the link `rel`; it must
    /// stay inside `top` (`rel`'s first component). See the module doc for `..`.
    fn check_link_target(&self, rel: &Path, target: &Path) -> Result<(), String> {
        let mut cur = rel.parent().map(Path::to_path_buf).unwrap_or_default();
        let mut empty = true;
        for c in target.components() {
            empty = false;
            match c {
                Component::Prefix(_) | Component::RootDir => return Err("absolute target".into()),
                Component::CurDir => {}
                Component::ParentDir => {
                    if cur.components().count() <= 1 {
                        return Err("leaves the top directory".into());
                    }
                    if self.nodes.get(&cur) != Some(&Node::Dir) {
                        return Err(format!(
                            "'..' after '{}', which is not a directory extracted earlier",
                            cur.display()
                        ));
                    }
                    cur.pop();
                }
                Component::Normal(n) => cur.push(n),
            }
        }
        if empty {
            return Err("empty target".into());
        }
        Ok(())
    }

    fn hard_link(&mut self, rel: &Path, target: &Path, top: &str) -> Result<(), TreeError> {
        if self.nodes.get(target) != Some(&Node::File) {
            return Err(TreeError::Unsafe(format!(
                "hard link target '{}' is not a regular file extracted earlier",
                target.display()
            )));
        }
        if rel == target {
            return Err(TreeError::Unsafe("hard link to itself".into()));
        }
        self.parents(rel, top)?;
        self.clear(rel)?;
        if let Some(dest) = self.dest {
            fs::hard_link(dest.join(target), dest.join(rel)).map_err(self.io(rel))?;
        }
        self.nodes.insert(rel.to_path_buf(), Node::File);
        Ok(())
    }
}

/// Creates one directory (0o755 before umask). Something unexpected already
/// there is an error unless it is a real directory.
fn make_dir(path: &Path) -> io::Result<()> {
    let mut builder = fs::DirBuilder::new();
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o755);
    }
    match builder.create(path) {
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            if fs::symlink_metadata(path)?.is_dir() {
                Ok(())
            } else {
                Err(e)
            }
        }
        r => r,
    }
}

#[cfg(unix)]
fn make_symlink(target: &Path, link: &Path) -> io::Result<()> {
    std::os::unix::fs::symlink(target, link)
}

#[cfg(not(unix))]
fn make_symlink(_target: &Path, _link: &Path) -> io::Result<()> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "symlinks are only extracted on unix",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::write::GzEncoder;
    use flate2::Compression;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    use tar::{Builder, Header};

    const MTIME: u64 = 1_600_000_000;

    /// One member, written with raw header bytes so that names `tar::Builder`
    /// refuses (absolute, `..`) can be produced.
    struct M<'a> {
        name: &'a [u8],
        kind: EntryType,
        link: &'a [u8],
        data: &'a [u8],
        mode: u32,
    }

    fn file<'a>(name: &'a str, data: &'a [u8]) -> M<'a> {
        M {
            name: name.as_bytes(),
            kind: EntryType::Regular,
            link: b"",
            data,
            mode: 0o644,
        }
    }

    fn dir(name: &str) -> M<'_> {
        M {
            name: name.as_bytes(),
            kind: EntryType::Directory,
            link: b"",
            data: b"",
            mode: 0o755,
        }
    }

    fn symlink<'a>(name: &'a str, target: &'a str) -> M<'a> {
        M {
            name: name.as_bytes(),
            kind: EntryType::Symlink,
            link: target.as_bytes(),
            data: b"",
            mode: 0o777,
        }
    }

    fn hardlink<'a>(name: &'a str, target: &'a str) -> M<'a> {
        M {
            kind: EntryType::Link,
            ..symlink(name, target)
        }
    }

    fn special(name: &str, kind: EntryType) -> M<'_> {
        M {
            name: name.as_bytes(),
            kind,
            link: b"",
            data: b"",
            mode: 0o644,
        }
    }

    fn header(m: &M) -> Header {
        let mut h = Header::new_gnu();
        h.as_old_mut().name[..m.name.len()].copy_from_slice(m.name);
        h.as_old_mut().linkname[..m.link.len()].copy_from_slice(m.link);
        h.set_entry_type(m.kind);
        h.set_size(m.data.len() as u64);
        h.set_mode(m.mode);
        h.set_mtime(MTIME);
        h.set_cksum();
        h
    }

    fn tar_bytes(members: &[M]) -> Vec<u8> {
        let mut b = Builder::new(Vec::new());
        for m in members {
            b.append(&header(m), m.data).unwrap();
        }
        b.into_inner().unwrap()
    }

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut gz = GzEncoder::new(Vec::new(), Compression::default());
        gz.write_all(bytes).unwrap();
        gz.finish().unwrap()
    }

    /// A scratch area: `root/out` is the destination, the archive lives
    /// elsewhere, so "nothing outside dest" means `root` only ever holds `out`.
    struct Scratch {
        root: tempfile::TempDir,
        archives: tempfile::TempDir,
    }

    impl Scratch {
        fn new() -> Self {
            Scratch {
                root: tempfile::tempdir().unwrap(),
                archives: tempfile::tempdir().unwrap(),
            }
        }

        fn dest(&self) -> PathBuf {
            self.root.path().join("out")
        }

        fn archive(&self, gz: &[u8]) -> PathBuf {
            let p = self.archives.path().join("bucket.tar.gz");
            fs::write(&p, gz).unwrap();
            p
        }

        fn extract(&self, gz: &[u8]) -> Result<ExtractSummary, ExtractError> {
            let a = self.archive(gz);
            extract_safe(&a, &self.dest(), "top", &mut |_, _| {})
        }

        fn only_out_in_root(&self) {
            let names: Vec<_> = fs::read_dir(self.root.path())
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect();
            assert!(names.iter().all(|n| n == "out"), "{names:?}");
        }
    }

    fn assert_unsafe(r: Result<ExtractSummary, ExtractError>, entry: &str) -> String {
        match r {
            Err(ExtractError::Unsafe { entry: e, reason }) => {
                assert_eq!(e, entry, "{reason}");
                reason
            }
            other => panic!("expected Unsafe for {entry}, got {other:?}"),
        }
    }

    fn assert_corrupt(r: Result<ExtractSummary, ExtractError>) -> String {
        match r {
            Err(ExtractError::Corrupt { message, .. }) => message,
            other => panic!("expected Corrupt, got {other:?}"),
        }
    }

    fn normal_archive() -> Vec<u8> {
        gzip(&tar_bytes(&[
            dir("top"),
            dir("top/a"),
            file("top/a/b/c/deep.txt", b"deep"),
            M {
                mode: 0o4755,
                ..file("top/bin/run.sh", b"#!/bin/sh\necho hi\n")
            },
            M {
                mode: 0o640,
                ..file("./top/./private", b"secret")
            },
            file("top/b/f", b"target"),
            symlink("top/a/l", "../b/f"),
            symlink("top/a/up", "./../a/b"),
            hardlink("top/h", "top/b/f"),
            file("top/empty", b""),
        ]))
    }

    #[test]
    fn normal_archive_extracts() {
        let s = Scratch::new();
        let a = s.archive(&normal_archive());
        let mut calls = Vec::new();
        let sum = extract_safe(&a, &s.dest(), "top", &mut |n, b| calls.push((n, b))).unwrap();
        assert_eq!(
            sum,
            ExtractSummary {
                files: 5,
                dirs: 2,
                links: 3,
                bytes: 4 + 18 + 6 + 6
            }
        );
        assert_eq!(calls.len(), 10);
        assert_eq!(calls.last(), Some(&(10, 34)));
        assert!(calls
            .windows(2)
            .all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1));

        let top = s.dest().join("top");
        assert_eq!(fs::read(top.join("a/b/c/deep.txt")).unwrap(), b"deep");
        let run = fs::metadata(top.join("bin/run.sh")).unwrap();
        assert_eq!(
            run.permissions().mode() & 0o7777,
            0o755,
            "exec kept, setuid dropped"
        );
        assert_eq!(run.mtime(), MTIME as i64);
        let private = fs::metadata(top.join("private")).unwrap();
        assert_eq!(private.permissions().mode() & 0o7777, 0o640);
        assert_eq!(fs::read(top.join("private")).unwrap(), b"secret");
        let implicit = fs::metadata(top.join("bin")).unwrap();
        assert!(implicit.is_dir());

        let l = top.join("a/l");
        assert!(fs::symlink_metadata(&l).unwrap().file_type().is_symlink());
        assert_eq!(fs::read_link(&l).unwrap(), Path::new("../b/f"));
        assert_eq!(fs::read(&l).unwrap(), b"target");
        assert!(fs::metadata(top.join("a/up")).unwrap().is_dir());

        let h = fs::metadata(top.join("h")).unwrap();
        assert_eq!(h.ino(), fs::metadata(top.join("b/f")).unwrap().ino());
        assert_eq!(fs::read(top.join("empty")).unwrap(), b"");
        s.only_out_in_root();

        assert_eq!(inspect(&a, "top").unwrap(), sum);
    }

    #[test]
    fn gnu_long_names_and_pax_headers_are_fine() {
        let long = format!("top/{}/file.txt", "d".repeat(150));
        let mut b = Builder::new(Vec::new());
        // A PAX global header as `git archive` writes it: skipped.
        let comment = b"52 comment=0123456789012345678901234567890123456789\n";
        let mut g = Header::new_ustar();
        g.as_old_mut().name[..15].copy_from_slice(b"pax_global_head");
        g.set_entry_type(EntryType::XGlobalHeader);
        g.set_size(comment.len() as u64);
        g.set_cksum();
        b.append(&g, &comment[..]).unwrap();
        let mut h = Header::new_gnu();
        h.set_size(3);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, &long, &b"abc"[..]).unwrap();
        b.append_pax_extensions([("path", "top/pax-named".as_bytes())])
            .unwrap();
        let mut h = Header::new_ustar();
        h.set_path("top/ignored").unwrap();
        h.set_size(2);
        h.set_mode(0o644);
        h.set_cksum();
        b.append(&h, &b"xy"[..]).unwrap();
        let gz = gzip(&b.into_inner().unwrap());

        let s = Scratch::new();
        let sum = s.extract(&gz).unwrap();
        assert_eq!((sum.files, sum.dirs, sum.links, sum.bytes), (2, 0, 0, 5));
        assert_eq!(fs::read(s.dest().join(&long)).unwrap(), b"abc");
        assert_eq!(fs::read(s.dest().join("top/pax-named")).unwrap(), b"xy");
        assert!(!s.dest().join("top/ignored").exists());
        assert_eq!(inspect(&s.archive(&gz), "top").unwrap(), sum);
    }

    #[test]
    fn old_style_types() {
        let mut b = Builder::new(Vec::new());
        for (name, kind, data) in [
            (&b"top/olddir/"[..], b'\0', &b""[..]),
            (b"top/olddir/f", b'\0', b"old"),
            (b"top/contig", b'7', b"cont"),
        ] {
            let mut h = Header::new_old();
            h.as_old_mut().name[..name.len()].copy_from_slice(name);
            h.as_old_mut().linkflag[0] = kind;
            h.set_size(data.len() as u64);
            h.set_mode(0o600);
            h.set_cksum();
            b.append(&h, data).unwrap();
        }
        let s = Scratch::new();
        let sum = s.extract(&gzip(&b.into_inner().unwrap())).unwrap();
        assert_eq!((sum.files, sum.dirs, sum.bytes), (2, 1, 7));
        assert_eq!(fs::read(s.dest().join("top/olddir/f")).unwrap(), b"old");
        assert_eq!(fs::read(s.dest().join("top/contig")).unwrap(), b"cont");
    }

    #[test]
    fn duplicates_replace_without_writing_through() {
        let s = Scratch::new();
        let gz = gzip(&tar_bytes(&[
            file("top/f", b"one"),
            file("top/f", b"two"),
            file("top/target", b"keep"),
            symlink("top/l", "target"),
            file("top/l", b"replaced the link"),
            file("top/shared", b"shared"),
            hardlink("top/hl", "top/shared"),
            file("top/hl", b"new inode"),
        ]));
        s.extract(&gz).unwrap();
        let top = s.dest().join("top");
        assert_eq!(fs::read(top.join("f")).unwrap(), b"two");
        assert_eq!(fs::read(top.join("target")).unwrap(), b"keep");
        assert!(fs::symlink_metadata(top.join("l")).unwrap().is_file());
        assert_eq!(fs::read(top.join("l")).unwrap(), b"replaced the link");
        assert_eq!(fs::read(top.join("shared")).unwrap(), b"shared");
        assert_eq!(fs::read(top.join("hl")).unwrap(), b"new inode");
    }

    #[test]
    fn unsafe_entries_are_refused() {
        let s = Scratch::new();
        let victim = s.root.path().join("victim");
        let victim_str = victim.to_str().unwrap().to_string();
        let cases: Vec<(Vec<M>, &str, &str)> = vec![
            (vec![file("../evil", b"x")], "../evil", ".."),
            (vec![file(&victim_str, b"x")], &victim_str, "absolute"),
            (vec![file("/abs", b"x")], "/abs", "absolute"),
            (vec![file("top/../../x", b"x")], "top/../../x", ".."),
            (vec![file("other/x", b"x")], "other/x", "not under"),
            (vec![file("topx/y", b"x")], "topx/y", "not under"),
            (vec![file("./", b"x")], "./", "empty"),
            (vec![file("top", b"x")], "top", "must be a directory"),
            (vec![symlink("top", ".")], "top", "must be a directory"),
            (vec![symlink("top/l", "../../etc")], "top/l", "leaves"),
            (vec![symlink("top/l", "..")], "top/l", "leaves"),
            (vec![symlink("top/l", "/etc")], "top/l", "absolute"),
            (vec![symlink("top/l", &victim_str)], "top/l", "absolute"),
            (vec![symlink("top/l", "")], "top/l", "without a target"),
            (
                vec![symlink("top/d", "sub"), file("top/d/x", b"x")],
                "top/d/x",
                "symlink",
            ),
            (
                vec![dir("top/sub"), symlink("top/d", "sub"), dir("top/d/inner")],
                "top/d/inner",
                "symlink",
            ),
            (
                vec![
                    dir("top/a"),
                    symlink("top/a/s", ".."),
                    symlink("top/a/l", "s/../.."),
                ],
                "top/a/l",
                "not a directory",
            ),
            (
                vec![symlink("top/l", "nowhere/../..")],
                "top/l",
                "not a directory",
            ),
            (vec![hardlink("top/h", "/etc/passwd")], "top/h", "absolute"),
            (vec![hardlink("top/h", "../etc/passwd")], "top/h", ".."),
            (
                vec![hardlink("top/h", "top/missing")],
                "top/h",
                "not a regular",
            ),
            (
                vec![
                    file("top/f", b"x"),
                    symlink("top/l", "f"),
                    hardlink("top/h", "top/l"),
                ],
                "top/h",
                "not a regular",
            ),
            (
                vec![dir("top/d"), hardlink("top/h", "top/d")],
                "top/h",
                "not a regular",
            ),
            (
                vec![file("top/f", b"x"), hardlink("top/f", "top/f")],
                "top/f",
                "itself",
            ),
            (
                vec![dir("top/d"), file("top/d", b"x")],
                "top/d",
                "directory",
            ),
            (
                vec![file("top/f", b"x"), dir("top/f")],
                "top/f",
                "not a directory",
            ),
            (
                vec![file("top/f", b"x"), file("top/f/g", b"x")],
                "top/f/g",
                "not a directory",
            ),
            (
                vec![special("top/dev", EntryType::Char)],
                "top/dev",
                "character device",
            ),
            (
                vec![special("top/blk", EntryType::Block)],
                "top/blk",
                "block device",
            ),
            (
                vec![special("top/fifo", EntryType::Fifo)],
                "top/fifo",
                "FIFO",
            ),
            (
                vec![special("top/what", EntryType::new(b'Z'))],
                "top/what",
                "unknown",
            ),
        ];
        for (members, entry, why) in cases {
            let gz = gzip(&tar_bytes(&members));
            let s = Scratch::new();
            let reason = assert_unsafe(s.extract(&gz), entry);
            assert!(reason.contains(why), "{entry}: {reason}");
            assert_unsafe(inspect(&s.archive(&gz), "top"), entry);
            s.only_out_in_root();
            assert!(!victim.exists());
            // A refused member is never created (the cases that clash with an
            // earlier member excepted).
            let clash = members[..members.len() - 1]
                .iter()
                .any(|m| Some(m.name) == members.last().map(|l| l.name));
            if !clash && !entry.starts_with('/') && !entry.starts_with('.') {
                let p = s.dest().join(entry);
                assert!(fs::symlink_metadata(&p).is_err(), "{}", p.display());
            }
        }
    }

    #[test]
    fn gnu_sparse_is_refused() {
        let mut h = Header::new_gnu();
        h.set_path("top/sparse").unwrap();
        h.set_entry_type(EntryType::GNUSparse);
        h.set_size(0);
        h.as_gnu_mut().unwrap().realsize = *b"00000000000\0";
        h.set_cksum();
        let mut b = Builder::new(Vec::new());
        b.append(&h, &b""[..]).unwrap();
        let s = Scratch::new();
        let gz = gzip(&b.into_inner().unwrap());
        let reason = assert_unsafe(s.extract(&gz), "top/sparse");
        assert!(reason.contains("sparse"), "{reason}");
    }

    #[test]
    fn truncated_archives_are_corrupt() {
        // Incompressible, so the cuts land inside the member's data.
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let big: Vec<u8> = (0..300_000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect();
        let gz = gzip(&tar_bytes(&[
            file("top/a", b"small"),
            file("top/big", &big),
        ]));
        for cut in [
            gz.len() / 2,
            gz.len() - 4,
            gz.len() - 1,
            gz.len() - 8,
            10,
            0,
        ] {
            let s = Scratch::new();
            assert_corrupt(s.extract(&gz[..cut]));
            assert_corrupt(inspect(&s.archive(&gz[..cut]), "top"));
            s.only_out_in_root();
        }
        // The full archive is fine.
        Scratch::new().extract(&gz).unwrap();
    }

    #[test]
    fn truncated_tar_inside_a_complete_gzip_is_corrupt() {
        let tar = tar_bytes(&[file("top/a", &[7u8; 5000])]);
        // Member data cut short.
        let msg = assert_corrupt(Scratch::new().extract(&gzip(&tar[..512 + 1000])));
        assert!(msg.contains("truncated"), "{msg}");
        // Cut at a block boundary inside the data.
        assert_corrupt(Scratch::new().extract(&gzip(&tar[..512 + 1024])));
        // Cut inside a header.
        assert_corrupt(Scratch::new().extract(&gzip(&tar[..100])));
        // All members complete, but no end-of-archive marker.
        let end = 512 + 5120;
        let msg = assert_corrupt(Scratch::new().extract(&gzip(&tar[..end])));
        assert!(msg.contains("end-of-archive"), "{msg}");
        // One zero block is enough.
        Scratch::new().extract(&gzip(&tar[..end + 512])).unwrap();
    }

    #[test]
    fn garbage_is_corrupt() {
        let tar = tar_bytes(&[file("top/a", b"hello")]);
        // Data after the end-of-archive marker.
        let mut after = tar.clone();
        after.extend_from_slice(&tar_bytes(&[file("top/b", b"sneaky")])[..512]);
        let msg = assert_corrupt(Scratch::new().extract(&gzip(&after)));
        assert!(msg.contains("after the end-of-archive"), "{msg}");
        // Bytes after the gzip stream (e.g. a second member).
        let mut two = gzip(&tar);
        two.extend_from_slice(&gzip(&tar));
        let msg = assert_corrupt(Scratch::new().extract(&two));
        assert!(msg.contains("after the gzip stream"), "{msg}");
        // Bad header checksum.
        let mut bad = tar.clone();
        bad[0] = b'X';
        assert_corrupt(Scratch::new().extract(&gzip(&bad)));
        // Flipped payload byte: the gzip CRC catches it.
        let mut gz = gzip(&tar);
        let n = gz.len();
        gz[n - 6] ^= 0xff;
        assert_corrupt(Scratch::new().extract(&gz));
        // Not gzip at all.
        assert_corrupt(Scratch::new().extract(&tar));
        // Empty file.
        assert_corrupt(Scratch::new().extract(b""));
    }

    #[test]
    fn empty_archive_is_fine() {
        let s = Scratch::new();
        let gz = gzip(&tar_bytes(&[]));
        assert_eq!(s.extract(&gz).unwrap(), ExtractSummary::default());
        assert!(s.dest().is_dir());
    }

    #[test]
    fn destination_must_be_new_or_empty() {
        let s = Scratch::new();
        let gz = normal_archive();
        fs::create_dir(s.dest()).unwrap();
        s.extract(&gz).unwrap();
        match s.extract(&gz) {
            Err(ExtractError::Io { path, source }) => {
                assert_eq!(path, s.dest());
                assert_eq!(source.kind(), io::ErrorKind::DirectoryNotEmpty);
            }
            other => panic!("{other:?}"),
        }
        let nested = s.root.path().join("x/y/z");
        extract_safe(&s.archive(&gz), &nested, "top", &mut |_, _| {}).unwrap();
        assert!(nested.join("top/h").is_file());
    }

    #[test]
    fn bad_top_and_missing_archive_are_io_errors() {
        let s = Scratch::new();
        let a = s.archive(&normal_archive());
        for top in ["", ".", "..", "a/b", "/top"] {
            assert!(
                matches!(inspect(&a, top), Err(ExtractError::Io { .. })),
                "{top}"
            );
        }
        let missing = s.archives.path().join("missing.tar.gz");
        match inspect(&missing, "top") {
            Err(ExtractError::Io { path, source }) => {
                assert_eq!(path, missing);
                assert_eq!(source.kind(), io::ErrorKind::NotFound);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn read_errors_of_the_file_are_io_not_corrupt() {
        // A directory opens fine but fails to read (EISDIR).
        let s = Scratch::new();
        match inspect(s.archives.path(), "top") {
            Err(ExtractError::Io { source, .. }) => {
                assert_eq!(source.raw_os_error(), Some(21), "{source}");
            }
            other => panic!("{other:?}"),
        }
    }
}
