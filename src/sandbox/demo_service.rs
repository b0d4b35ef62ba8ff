//! A tiny HTTP service (hidden `serve-demo`): listens on 127.0.0.1:PORT and answers every
//! request `200 ok` (or the `--status` it was given, to play a listening but unhealthy service). It is the example service of `selfheal demo`, the tests and the benchmark,
//! so none of them needs anything installed beyond selfheal itself.

use std::io::{Read, Write};
use std::net::TcpListener;

use anyhow::Context as _;

/// Serves until killed.
pub(crate) fn serve(port: u16, say: Option<&str>, status: u16) -> anyhow::Result<()> {
    let listener = TcpListener::bind(("127.0.0.1", port))
        .with_context(|| format!("binding 127.0.0.1:{port}"))?;
    if let Some(line) = say {
        println!("{line}");
    }
    println!("listening on 127.0.0.1:{port}");
    let response = format!("HTTP/1.0 {status} selfheal-demo\r\nContent-Length: 3\r\n\r\nok\n");
    for connection in listener.incoming() {
        let Ok(mut connection) = connection else {
            continue;
        };
        let mut request = [0u8; 1024];
        let _ = connection.read(&mut request);
        let _ = connection.write_all(response.as_bytes());
    }
    Ok(())
}
