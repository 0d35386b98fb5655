//! systemd's service notification protocol (sd_notify(3)) for `Type=notify`: one datagram
//! with `READY=1` when every listener is bound and serving, `STOPPING=1` when draining
//! starts. Without `$NOTIFY_SOCKET` (not started by systemd) nothing is sent. The protocol is a line of text on a Unix datagram
//! socket, so no crate is needed.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixDatagram;

/// Tell systemd `state` (e.g. `READY=1`), if it is listening.
pub(crate) fn notify(state: &str) {
    if let Some(path) = std::env::var_os("NOTIFY_SOCKET")
        && let Err(e) = notify_to(&path, state)
    {
        tracing::warn!(socket = %path.to_string_lossy(), error = %e, "sd_notify failed");
    }
}

/// Send `state` to the socket at `path` (`@name`: Linux's abstract namespace).
pub(crate) fn notify_to(path: &OsStr, state: &str) -> std::io::Result<()> {
    let sock = UnixDatagram::unbound()?;
    let bytes = path.as_bytes();
    match bytes.strip_prefix(b"@") {
        Some(name) => {
            use std::os::linux::net::SocketAddrExt;
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
            sock.send_to_addr(state.as_bytes(), &addr)?;
        }
        None => {
            sock.send_to(state.as_bytes(), path)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sends_the_state_to_a_path_socket() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("notify");
        let listener = UnixDatagram::bind(&path).expect("bind");
        notify_to(path.as_os_str(), "READY=1").expect("sent");
        let mut buf = [0u8; 64];
        let n = listener.recv(&mut buf).expect("received");
        assert_eq!(&buf[..n], b"READY=1");
    }

    #[test]
    fn a_missing_socket_is_an_error_not_a_panic() {
        assert!(notify_to(OsStr::new("/nonexistent/filterd-notify"), "READY=1").is_err());
    }
}
