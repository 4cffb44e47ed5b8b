//! Output rendering shared by commands: text vs JSON, progress. Data goes to stdout; logs and
//! progress go to stderr.
