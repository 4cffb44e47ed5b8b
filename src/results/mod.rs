//! Results on the user's side: the resumable HTTP download of an archive ([`fetch`]), a
//! SHA-256 whose state survives in a cursor ([`sha`]), safe extraction of a results archive
//! ([`extract`]), and the one classification of local I/O errors as transient or permanent
//! ([`io`]). No cluster code: the steps in `ops::download` wire these to the port-forward and
//! the pod, and show their progress through [`crate::progress`].

pub mod extract;
pub mod fetch;
pub mod io;
pub mod sha;
