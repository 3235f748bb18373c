//! One `SO_REUSEPORT` listener per shard on the same address: the kernel spreads new
//! connections over the shards, and no thread hands sockets to another.

use std::io;
use std::net::{SocketAddr, TcpListener};

use socket2::{Domain, Protocol, Socket, Type};

/// Accept backlog; bursts of connects stall with the usual 128.
const BACKLOG: i32 = 4096;

/// Binds `n` listeners to `addr`. With port 0 the first picks the port and the rest join it.
pub fn bind(addr: SocketAddr, n: usize) -> io::Result<Vec<TcpListener>> {
    let first = bind_one(addr)?;
    let actual = first.local_addr()?;
    let mut all = vec![first];
    for _ in 1..n {
        all.push(bind_one(actual)?);
    }
    Ok(all)
}

fn bind_one(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    Ok(socket.into())
}
