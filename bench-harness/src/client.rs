//! A minimal HTTP/1.1 client over raw TCP, for the few requests wrk cannot make: obtaining
//! a session cookie, and the 50-concurrent-writes trials. One request per connection
//! (`Connection: close`), so the response ends when the server closes the socket.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Any one request must finish within this, or the run fails loudly instead of hanging.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

pub struct Response {
    pub status: u16,
    /// `name=value` of every `Set-Cookie`, attributes dropped.
    pub cookies: Vec<String>,
    pub body: String,
}

impl Response {
    /// The cookies as one `Cookie` request header value.
    pub fn cookie_header(&self) -> String {
        self.cookies.join("; ")
    }
}

/// An open connection with its request written but not yet sent, so that a caller can
/// line up many requests and release them together.
pub struct Prepared {
    stream: TcpStream,
    request: Vec<u8>,
}

pub async fn prepare(
    addr: SocketAddr,
    path: &str,
    cookie: Option<&str>,
) -> std::io::Result<Prepared> {
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let mut request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    if let Some(cookie) = cookie {
        request.push_str(&format!("Cookie: {cookie}\r\n"));
    }
    request.push_str("\r\n");
    Ok(Prepared {
        stream,
        request: request.into_bytes(),
    })
}

impl Prepared {
    pub async fn send(mut self) -> std::io::Result<Response> {
        tokio::time::timeout(REQUEST_TIMEOUT, async {
            self.stream.write_all(&self.request).await?;
            let mut raw = Vec::new();
            self.stream.read_to_end(&mut raw).await?;
            parse(&raw)
        })
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "request timed out"))?
    }
}

pub async fn get(addr: SocketAddr, path: &str, cookie: Option<&str>) -> std::io::Result<Response> {
    prepare(addr, path, cookie).await?.send().await
}

fn parse(raw: &[u8]) -> std::io::Result<Response> {
    let invalid =
        |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_owned());
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| invalid("no header end"))?;
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|line| line.split(' ').nth(1))
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| invalid("bad status line"))?;
    let cookies = lines
        .filter_map(|line| line.split_once(':'))
        .filter(|(name, _)| name.eq_ignore_ascii_case("set-cookie"))
        .map(|(_, value)| value.trim().split(';').next().unwrap_or("").to_owned())
        .collect();
    // Bodies here are tiny and never chunked by axum for a fixed string.
    Ok(Response {
        status,
        cookies,
        body: body.to_owned(),
    })
}
