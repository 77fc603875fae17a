//! SFTP connections: URI parsing, TCP with timeouts, host-key verification against
//! known_hosts, authentication, and the remote listing. All blocking (ssh2): call it
//! from `spawn_blocking`.

use std::io::Read;
use std::net::{TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anchovy_core::SessionCtx;
use anchovy_core::connection::percent_decode;
use anchovy_core::secret::Secret;
use base64::Engine;
use ssh2::{CheckResult, HashType, KnownHostFileKind, Session, Sftp};

use crate::error::PluginError;

/// The `KNOWN_HOSTS` value that turns host-key verification off (logged on every use).
pub const INSECURE: &str = "insecure-skip";

/// Where and how to connect.
#[derive(Clone, Debug)]
pub struct SftpTarget {
    /// Connection id (for messages).
    pub id: String,
    /// Host name or address.
    pub host: String,
    /// Port (default 22).
    pub port: u16,
    /// Login user.
    pub user: String,
    password: Option<Secret>,
    key_path: Option<PathBuf>,
    passphrase: Option<Secret>,
    /// `None`: verification off (explicit opt-out).
    known_hosts: Option<PathBuf>,
    timeout: Duration,
}

/// A listed remote file.
#[derive(Debug, Clone, PartialEq)]
pub struct RemoteFile {
    /// The path as the server reports it (from the glob's base).
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// Modification time, nanoseconds since the epoch (SFTP has seconds).
    pub mtime_ns: u128,
}

fn opt_err(id: &str, attr: &str, message: impl Into<String>) -> PluginError {
    PluginError::Core(anchovy_core::Error::ConnectionAttr {
        id: id.to_string(),
        attr: attr.to_string(),
        message: message.into(),
    })
}

/// Splits `sftp://user[:password]@host[:port][/...]`.
pub fn parse_uri(uri: &str) -> Option<(String, Option<String>, String, u16)> {
    let rest = uri
        .strip_prefix("sftp://")
        .or_else(|| uri.strip_prefix("ssh://"))?;
    let authority = rest.split('/').next()?;
    let (userinfo, hostport) = authority.rsplit_once('@')?;
    let (user, password) = match userinfo.split_once(':') {
        Some((u, p)) => (u.to_string(), Some(percent_decode(p))),
        None => (userinfo.to_string(), None),
    };
    let (host, port) = if let Some(h) = hostport.strip_prefix('[') {
        let (h, rest) = h.split_once(']')?;
        (
            h.to_string(),
            rest.strip_prefix(':')
                .map(|p| p.parse().ok())
                .unwrap_or(Some(22))?,
        )
    } else {
        match hostport.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), p.parse().ok()?),
            None => (hostport.to_string(), 22),
        }
    };
    (!user.is_empty() && !host.is_empty()).then(|| (percent_decode(&user), password, host, port))
}

impl SftpTarget {
    /// Reads connection `id` (`default`: `ACHVY_CNXN__URI`, ...).
    ///
    /// # Errors
    /// A missing connection names the variables to set; a bad URI or timeout names
    /// the attribute.
    pub fn from_connection(ctx: &SessionCtx, id: &str) -> Result<SftpTarget, PluginError> {
        let c = ctx.connection(id)?;
        let uri = c.require("uri")?;
        let (user, pw, host, port) = parse_uri(uri)
            .ok_or_else(|| opt_err(id, "uri", "is not sftp://user[:password]@host[:port]"))?;
        let password = c
            .get("password")
            .map(str::to_string)
            .or(pw)
            .map(Secret::new);
        let key_path = c.get("ppk_path").or_else(|| c.get("key_path")).map(expand);
        let known_hosts = match c.get("known_hosts") {
            Some(INSECURE) => None,
            Some(p) => Some(expand(p)),
            None => Some(expand("~/.ssh/known_hosts")),
        };
        let timeout = match c.get("connect_timeout") {
            Some(t) => anchovy_core::config::parse_duration(t).ok_or_else(|| {
                opt_err(id, "connect_timeout", format!("`{t}` is not a duration"))
            })?,
            None => Duration::from_secs(15),
        };
        Ok(SftpTarget {
            id: id.to_string(),
            host,
            port,
            user,
            password,
            key_path,
            passphrase: c.get("passphrase").map(Secret::new),
            known_hosts,
            timeout,
        })
    }

    /// `sftp://user@host:port` (no secrets).
    pub fn display(&self) -> String {
        format!("sftp://{}@{}:{}", self.user, self.host, self.port)
    }

    /// Connects, verifies the host key, authenticates and opens the SFTP channel.
    /// Network errors while connecting are retried three times with backoff.
    ///
    /// # Errors
    /// Unreachable host, refused or unknown host key, failed authentication.
    pub fn connect(&self) -> Result<(Session, Sftp), PluginError> {
        self.connect_within(CONNECT_ATTEMPTS)
    }

    /// [`SftpTarget::connect`] with at most `attempts` connection attempts. A handshake
    /// the server cuts off before its banner (OpenSSH drops connections beyond
    /// `MaxStartups` while many clients connect at once: many workers starting
    /// together) is retried like a refused connection.
    pub(crate) fn connect_within(&self, attempts: u32) -> Result<(Session, Sftp), PluginError> {
        let mut backoff =
            crate::source::Backoff::new(Duration::from_millis(500), attempts.saturating_sub(1));
        let s = loop {
            let tcp = self.tcp_within(&mut backoff)?;
            let mut s = Session::new().map_err(|e| ssh_err(self, "start an SSH session", e))?;
            s.set_tcp_stream(tcp);
            s.set_timeout(self.timeout.as_millis().min(u32::MAX as u128) as u32);
            prefer_fast_ciphers(&s);
            match s.handshake() {
                Ok(()) => break s,
                // -13: the socket closed (no banner, cut off mid key exchange).
                Err(e) if matches!(e.code(), ssh2::ErrorCode::Session(-13)) => {
                    match backoff.failed() {
                        Some(wait) => {
                            tracing::warn!(target = %self.display(), attempt = backoff.failures(), error = %e, "the server closed the connection during the SSH handshake (too many connecting at once?); retrying");
                            std::thread::sleep(wait);
                        }
                        None => return Err(ssh_err(self, "SSH handshake", e)),
                    }
                }
                Err(e) => return Err(ssh_err(self, "SSH handshake", e)),
            }
        };
        self.verify_host_key(&s)?;
        self.authenticate(&s)?;
        let sftp = s
            .sftp()
            .map_err(|e| ssh_err(self, "open the SFTP subsystem", e))?;
        Ok((s, sftp))
    }

    /// A TCP connection, retried with `backoff`.
    fn tcp_within(&self, backoff: &mut crate::source::Backoff) -> Result<TcpStream, PluginError> {
        loop {
            match self.tcp() {
                Ok(t) => return Ok(t),
                Err(e) => match backoff.failed() {
                    Some(wait) => {
                        tracing::warn!(target = %self.display(), attempt = backoff.failures(), error = %e, "connect failed; retrying");
                        std::thread::sleep(wait);
                    }
                    None => {
                        return Err(PluginError::Io {
                            op: "connect to",
                            path: format!(
                                "{} (after {} attempts; check the host, the port and the firewall)",
                                self.display(),
                                backoff.failures()
                            ),
                            source: e,
                        });
                    }
                },
            }
        }
    }

    fn tcp(&self) -> std::io::Result<TcpStream> {
        let mut last = None;
        for addr in (self.host.as_str(), self.port).to_socket_addrs()? {
            match TcpStream::connect_timeout(&addr, self.timeout) {
                Ok(t) => {
                    t.set_read_timeout(Some(self.timeout))?;
                    t.set_write_timeout(Some(self.timeout))?;
                    return Ok(t);
                }
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, "no address")))
    }

    fn verify_host_key(&self, s: &Session) -> Result<(), PluginError> {
        let fp = s
            .host_key_hash(HashType::Sha256)
            .map(|h| {
                format!(
                    "SHA256:{}",
                    base64::engine::general_purpose::STANDARD_NO_PAD.encode(h)
                )
            })
            .unwrap_or_else(|| "unknown".into());
        let Some(path) = &self.known_hosts else {
            tracing::warn!(target = %self.display(), fingerprint = %fp, "host key NOT verified (KNOWN_HOSTS={INSECURE})");
            return Ok(());
        };
        let (key, _) = s.host_key().ok_or_else(|| {
            opt_err(
                &self.id,
                "known_hosts",
                format!("{} sent no host key", self.display()),
            )
        })?;
        let mut kh = s
            .known_hosts()
            .map_err(|e| ssh_err(self, "read known hosts", e))?;
        if path.exists() {
            kh.read_file(path, KnownHostFileKind::OpenSSH)
                .map_err(|e| ssh_err(self, &format!("read {}", path.display()), e))?;
        }
        let trust = format!(
            "if this is the right server, trust it with: ssh-keyscan -p {} {} >> {}",
            self.port,
            self.host,
            path.display()
        );
        match kh.check_port(&self.host, self.port, key) {
            CheckResult::Match => Ok(()),
            CheckResult::NotFound => Err(PluginError::HostKey {
                message: format!(
                    "unknown host key for {}:{} ({fp}): it is not in {}; {trust} (or set {} to {INSECURE} to skip verification)",
                    self.host,
                    self.port,
                    path.display(),
                    anchovy_core::connection::var_name(&self.id, "KNOWN_HOSTS"),
                ),
            }),
            CheckResult::Mismatch => Err(PluginError::HostKey {
                message: format!(
                    "the host key of {}:{} CHANGED ({fp} does not match {}): someone may be intercepting the connection, or the server was reinstalled; if you are sure, remove the old line from {} and {trust}",
                    self.host,
                    self.port,
                    path.display(),
                    path.display()
                ),
            }),
            CheckResult::Failure => Err(PluginError::HostKey {
                message: format!(
                    "cannot check the host key of {}:{} against {}",
                    self.host,
                    self.port,
                    path.display()
                ),
            }),
        }
    }

    fn authenticate(&self, s: &Session) -> Result<(), PluginError> {
        let mut tried: Vec<&str> = Vec::new();
        if let Some(key) = &self.key_path {
            tried.push("key");
            if let Err(e) = s.userauth_pubkey_file(
                &self.user,
                None,
                key,
                self.passphrase.as_ref().map(Secret::expose),
            ) {
                tracing::debug!(error = %e, "key authentication failed");
            }
        }
        if !s.authenticated()
            && let Some(pw) = &self.password
        {
            tried.push("password");
            if s.userauth_password(&self.user, pw.expose()).is_err() {
                // Some servers only offer keyboard-interactive for passwords.
                tried.push("keyboard-interactive");
                let mut p = Prompter(pw.expose().to_string());
                let _ = s.userauth_keyboard_interactive(&self.user, &mut p);
            }
        }
        if s.authenticated() {
            return Ok(());
        }
        let fix = match (&self.key_path, &self.password) {
            (None, None) => format!(
                "no credentials: set {} (a private key) or a password in the URI",
                anchovy_core::connection::var_name(&self.id, "PPK_PATH")
            ),
            _ => "check the user, the password, the key file and its passphrase".to_string(),
        };
        Err(PluginError::Auth {
            message: format!(
                "authentication failed for {} (tried: {}); {fix}",
                self.display(),
                if tried.is_empty() {
                    "nothing".into()
                } else {
                    tried.join(", ")
                }
            ),
        })
    }
}

struct Prompter(String);

impl ssh2::KeyboardInteractivePrompt for Prompter {
    fn prompt<'a>(
        &mut self,
        _user: &str,
        _instructions: &str,
        prompts: &[ssh2::Prompt<'a>],
    ) -> Vec<String> {
        prompts.iter().map(|_| self.0.clone()).collect()
    }
}

fn expand(p: &str) -> PathBuf {
    match p.strip_prefix("~/") {
        Some(rest) => {
            PathBuf::from(std::env::var("HOME").unwrap_or_else(|_| "/".into())).join(rest)
        }
        None => PathBuf::from(p),
    }
}

/// Wraps an ssh2 error with what was being done and where.
pub fn ssh_err(t: &SftpTarget, what: &str, e: ssh2::Error) -> PluginError {
    PluginError::Io {
        op: "sftp",
        path: format!("{what} on {}", t.display()),
        source: std::io::Error::other(e.to_string()),
    }
}

/// Size and mtime of one remote file.
///
/// # Errors
/// [`PluginError::Io`] naming the path.
pub fn stat(sftp: &Sftp, path: &str) -> Result<RemoteFile, PluginError> {
    let st = sftp.stat(Path::new(path)).map_err(|e| PluginError::Io {
        op: "stat",
        path: path.to_string(),
        source: std::io::Error::other(e.to_string()),
    })?;
    Ok(RemoteFile {
        path: path.to_string(),
        size: st.size.unwrap_or(0),
        mtime_ns: st.mtime.unwrap_or(0) as u128 * 1_000_000_000,
    })
}

/// The regular files matching a glob, sorted by path. The walk starts at the longest
/// directory prefix without wildcards and descends only where the pattern can match.
///
/// # Errors
/// An invalid glob, or a listing error naming the directory.
pub fn list(sftp: &Sftp, pattern: &str) -> Result<Vec<RemoteFile>, PluginError> {
    let pat = glob::Pattern::new(pattern).map_err(|e| PluginError::Option {
        key: "path".into(),
        message: format!("`{pattern}` is not a valid glob: {e}"),
    })?;
    let opts = glob::MatchOptions {
        case_sensitive: true,
        require_literal_separator: true,
        require_literal_leading_dot: false,
    };
    let is_glob = |s: &str| s.contains(['*', '?', '[']);
    let parts: Vec<&str> = pattern.split('/').collect();
    let fixed: Vec<&str> = parts.iter().take_while(|p| !is_glob(p)).copied().collect();
    let base = if fixed.len() == parts.len() {
        // No wildcard: a single file.
        return match stat(sftp, pattern) {
            Ok(f) => Ok(vec![f]),
            Err(_) => Ok(vec![]),
        };
    } else {
        fixed.join("/")
    };
    let recursive = pattern.contains("**");
    let max_depth = if recursive {
        32
    } else {
        parts.len() - fixed.len()
    };
    let mut out = Vec::new();
    let mut stack: Vec<(String, usize)> = vec![(
        if base.is_empty() {
            ".".into()
        } else {
            base.clone()
        },
        0,
    )];
    while let Some((dir, depth)) = stack.pop() {
        let entries = sftp.readdir(Path::new(&dir)).map_err(|e| PluginError::Io {
            op: "list",
            path: dir.clone(),
            source: std::io::Error::other(e.to_string()),
        })?;
        for (p, st) in entries {
            let name = p
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            if name == "." || name == ".." {
                continue;
            }
            let full = if dir == "." && base.is_empty() {
                name.clone()
            } else {
                format!("{}/{name}", dir.trim_end_matches('/'))
            };
            if st.is_dir() {
                if depth + 1 < max_depth {
                    stack.push((full, depth + 1));
                }
            } else if st.is_file() && pat.matches_with(&full, opts) {
                out.push(RemoteFile {
                    path: full,
                    size: st.size.unwrap_or(0),
                    mtime_ns: st.mtime.unwrap_or(0) as u128 * 1_000_000_000,
                });
            }
        }
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(out)
}

/// Deletes or moves loaded files; returns how many were handled. A file already gone
/// is fine (an earlier run got to it first).
///
/// # Errors
/// A failed delete/move naming the file.
pub(crate) fn after_load(
    sftp: &Sftp,
    paths: &[&str],
    action: &crate::source::AfterLoad,
) -> Result<u64, PluginError> {
    use crate::source::AfterLoad;
    let mut n = 0;
    for path in paths {
        let src = Path::new(path);
        let r = match action {
            AfterLoad::Keep => continue,
            AfterLoad::Delete => sftp.unlink(src),
            AfterLoad::Move(dir) => {
                let name = src
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                // Only to a free name (SFTP v3 renames refuse an existing target; the
                // stat makes sure on servers that would replace it).
                let mut r = Err(ssh2::Error::new(
                    ssh2::ErrorCode::Session(-31),
                    "no free name in the archive directory",
                ));
                for candidate in crate::source::move_names(&name) {
                    let to = format!("{dir}/{candidate}");
                    if sftp.stat(Path::new(&to)).is_ok() {
                        continue;
                    }
                    r = sftp.rename(
                        src,
                        Path::new(&to),
                        Some(ssh2::RenameFlags::ATOMIC | ssh2::RenameFlags::NATIVE),
                    );
                    if r.is_ok() || sftp.stat(Path::new(&to)).is_err() {
                        break;
                    }
                }
                r
            }
        };
        match r {
            Ok(()) => n += 1,
            Err(_) if sftp.stat(src).is_err() => {}
            Err(e) => {
                return Err(PluginError::Io {
                    op: "after_load",
                    path: format!("{path} ({action:?})"),
                    source: std::io::Error::other(e.to_string()),
                });
            }
        }
    }
    Ok(n)
}

/// Offers AES-GCM (hardware accelerated on every current x86 and ARM server CPU) ahead
/// of chacha20-poly1305 (OpenSSH's default, software only): decrypting a download is
/// most of the CPU an SFTP read costs. Every cipher libssh2 supports stays on offer,
/// so a server without AES-GCM negotiates whatever it did before.
fn prefer_fast_ciphers(s: &Session) {
    const FIRST: [&str; 4] = [
        "aes128-gcm@openssh.com",
        "aes256-gcm@openssh.com",
        "aes128-ctr",
        "aes256-ctr",
    ];
    for kind in [ssh2::MethodType::CryptSc, ssh2::MethodType::CryptCs] {
        let Ok(supported) = s.supported_algs(kind) else {
            continue;
        };
        let mut prefs: Vec<&str> = FIRST
            .iter()
            .copied()
            .filter(|c| supported.contains(c))
            .collect();
        prefs.extend(supported.iter().copied().filter(|c| !FIRST.contains(c)));
        // Best effort: on failure libssh2 keeps its default order.
        let _ = s.method_pref(kind, &prefs.join(","));
    }
}

/// Checks that `f` still has the size and mtime it was listed with.
///
/// # Errors
/// [`PluginError::Data`] when it changed (it is read again on the next run),
/// [`PluginError::Io`] when it cannot be stat'ed.
pub(crate) fn unchanged(sftp: &Sftp, f: &RemoteFile) -> Result<(), PluginError> {
    let now = stat(sftp, &f.path)?;
    if now.size != f.size || now.mtime_ns != f.mtime_ns {
        return Err(PluginError::Data {
            location: f.path.clone(),
            message: "the file changed while it was being read; nothing of it is committed, it is read again on the next run".into(),
        });
    }
    Ok(())
}

/// TCP connection attempts (with 0.5 s, 1 s, 2 s between them) before a table fails.
const CONNECT_ATTEMPTS: u32 = 4;

/// Reads a whole small remote file (for tests and tools).
///
/// # Errors
/// [`PluginError::Io`].
pub fn read_to_string(sftp: &Sftp, path: &str) -> Result<String, PluginError> {
    let mut f = sftp.open(Path::new(path)).map_err(|e| PluginError::Io {
        op: "open",
        path: path.to_string(),
        source: std::io::Error::other(e.to_string()),
    })?;
    let mut s = String::new();
    f.read_to_string(&mut s).map_err(|source| PluginError::Io {
        op: "read",
        path: path.to_string(),
        source,
    })?;
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris() {
        assert_eq!(
            parse_uri("sftp://user:password@example.com:22"),
            Some((
                "user".into(),
                Some("password".into()),
                "example.com".into(),
                22
            ))
        );
        assert_eq!(
            parse_uri("sftp://bob@h"),
            Some(("bob".into(), None, "h".into(), 22))
        );
        assert_eq!(
            parse_uri("sftp://b%40x:p%3Aw@[::1]:2222/x"),
            Some(("b@x".into(), Some("p:w".into()), "::1".into(), 2222))
        );
        assert_eq!(parse_uri("http://x"), None);
        assert_eq!(parse_uri("sftp://host-only"), None);
    }
}
