//! One `SO_REUSEPORT` listener per shard on the same address: the kernel spreads new
//! connections over the shards, and no thread hands sockets to another.
//!
//! `SO_REUSEPORT` alone would let a second `huddle` (same user) join the group of a running one
//! and silently take half of its clients. PROTOCOL.md §1 wants that start to fail instead, so the
//! first listener is bound *without* `SO_REUSEPORT`: Linux refuses that bind with `EADDRINUSE`
//! when any socket listens on the address, a reuseport group included. Only after that exclusive
//! bind succeeds is `SO_REUSEPORT` switched on for it (before `listen`), and the other shards'
//! listeners join it on the port it got (which also covers port 0).
//!
//! There is no window in which another process can slip in: the first socket stays bound from the
//! exclusive check on, so any later exclusive bind (another `huddle`) fails. Two starts racing
//! between `bind` and `listen` are settled by the kernel, which checks the port again in `listen`:
//! at most one of them gets to listen. What this cannot stop is a program that itself sets
//! `SO_REUSEPORT` under the same user id (an older `huddle`, say): joining a group is what that
//! option is for.

use std::io;
use std::net::{SocketAddr, TcpListener};

use socket2::{Domain, Protocol, Socket, Type};

/// Accept backlog; bursts of connects stall with the usual 128.
const BACKLOG: i32 = 4096;

/// Binds `n` listeners to `addr`. The first binds exclusively (see the module doc) and picks the
/// port when it is 0; the rest join it. An address someone already listens on is an
/// [`io::ErrorKind::AddrInUse`] error that says so.
pub fn bind(addr: SocketAddr, n: usize) -> io::Result<Vec<TcpListener>> {
    let first = bind_first(addr).map_err(|e| describe(addr, e))?;
    let actual = first.local_addr()?;
    let mut all = vec![first];
    for _ in 1..n {
        all.push(bind_shared(actual).map_err(|e| describe(actual, e))?);
    }
    Ok(all)
}

fn new_socket(addr: SocketAddr) -> io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    // Lets a restarted server bind while connections of the previous one sit in TIME_WAIT; on
    // Linux it never allows binding next to a listening socket.
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    Ok(socket)
}

/// Exclusive bind, then `SO_REUSEPORT` so the other shards can join, then listen.
fn bind_first(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = new_socket(addr)?;
    socket.bind(&addr.into())?;
    socket.set_reuse_port(true)?;
    socket.listen(BACKLOG)?;
    Ok(socket.into())
}

fn bind_shared(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = new_socket(addr)?;
    socket.set_reuse_port(true)?;
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    Ok(socket.into())
}

fn describe(addr: SocketAddr, e: io::Error) -> io::Error {
    match e.kind() {
        io::ErrorKind::AddrInUse => io::Error::new(
            io::ErrorKind::AddrInUse,
            format!("address {addr} is already in use (another process listens on it)"),
        ),
        _ => io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_bind_of_a_listening_address_fails() {
        let first = bind("127.0.0.1:0".parse().unwrap(), 2).unwrap();
        let addr = first[0].local_addr().unwrap();
        assert_eq!(
            first[1].local_addr().unwrap(),
            addr,
            "shards share the port"
        );
        let err = bind(addr, 2).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
        assert!(err.to_string().contains("in use"), "{err}");
        // Still refused for a plain (non-reuseport) listener, so nobody joins by accident.
        assert!(TcpListener::bind(addr).is_err());
    }

    #[test]
    fn port_is_free_again_after_close() {
        let first = bind("127.0.0.1:0".parse().unwrap(), 3).unwrap();
        let addr = first[0].local_addr().unwrap();
        drop(first);
        let again = bind(addr, 3).unwrap();
        assert_eq!(again.len(), 3);
    }
}
