//! Just enough HTTP/1.1 to tell where each request on a keep-alive connection starts and ends:
//! the request head (request line and headers) and the body framing that follows it
//! (`Content-Length`, `Transfer-Encoding: chunked`, or none). Responses are never parsed: the
//! counting front forwards them as bytes, the scripted server writes its own.
//!
//! Counting requests by reading the framing, rather than by searching the byte stream for
//! request lines, is what makes the counts exact: a blob body that happens to contain
//! `GET /v2/` is never taken for a request, and requests pipelined in one packet are all seen.

use std::io;

use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Longest request head accepted (distribution and Trow accept less).
const MAX_HEAD: usize = 64 << 10;

/// One request head as it arrived.
#[derive(Clone, Debug)]
pub struct RequestHead {
    pub method: String,
    /// The request target: path and query, as sent.
    pub target: String,
    pub headers: Vec<(String, String)>,
    /// The head's bytes exactly as received (request line to the empty line).
    pub raw: Vec<u8>,
}

/// How the body after a request head is delimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    None,
    Length(u64),
    Chunked,
}

impl RequestHead {
    /// The first header called `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The target without its query.
    pub fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or("")
    }

    /// RFC 9112 6.3: chunked if it is the last transfer coding, else Content-Length, else none
    /// (a request without either has no body).
    pub fn framing(&self) -> io::Result<Framing> {
        if let Some(te) = self.header("transfer-encoding") {
            let last = te.rsplit(',').next().unwrap_or("").trim();
            return if last.eq_ignore_ascii_case("chunked") {
                Ok(Framing::Chunked)
            } else {
                Err(bad(format!("unsupported Transfer-Encoding {te:?}")))
            };
        }
        match self.header("content-length") {
            Some(v) => v
                .trim()
                .parse()
                .map(Framing::Length)
                .map_err(|_| bad(format!("bad Content-Length {v:?}"))),
            None => Ok(Framing::None),
        }
    }

    /// Whether the client asked to close the connection after this request.
    pub fn wants_close(&self) -> bool {
        self.header("connection")
            .is_some_and(|c| c.split(',').any(|t| t.trim().eq_ignore_ascii_case("close")))
    }
}

fn bad(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

/// Reads one request head. `Ok(None)` at a clean end of stream between requests.
pub async fn read_head<R: AsyncBufRead + Unpin>(r: &mut R) -> io::Result<Option<RequestHead>> {
    let mut raw = Vec::new();
    let mut line = Vec::new();
    let mut lines: Vec<String> = Vec::new();
    loop {
        line.clear();
        let n = r.read_until(b'\n', &mut line).await?;
        if n == 0 {
            return if raw.is_empty() {
                Ok(None)
            } else {
                Err(io::ErrorKind::UnexpectedEof.into())
            };
        }
        let text = String::from_utf8_lossy(&line)
            .trim_end_matches(['\r', '\n'])
            .to_string();
        // RFC 9112 2.2: empty lines before a request line are ignored.
        if raw.is_empty() && text.is_empty() {
            continue;
        }
        raw.extend_from_slice(&line);
        if raw.len() > MAX_HEAD {
            return Err(bad("request head too long".into()));
        }
        if text.is_empty() {
            break;
        }
        lines.push(text);
    }
    let mut parts = lines[0].splitn(3, ' ');
    let (method, target) = match (parts.next(), parts.next(), parts.next()) {
        (Some(m), Some(t), Some(_version)) => (m.to_string(), t.to_string()),
        _ => return Err(bad(format!("bad request line {:?}", lines[0]))),
    };
    let headers = lines[1..]
        .iter()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    Ok(Some(RequestHead {
        method,
        target,
        headers,
        raw,
    }))
}

/// Copies the body that follows `head` from `r` to `w` exactly as it arrived (chunk sizes,
/// extensions and trailers included). `w` may be `tokio::io::sink()` to skip it.
pub async fn copy_body<R, W>(head: &RequestHead, r: &mut R, w: &mut W) -> io::Result<()>
where
    R: AsyncBufRead + Unpin,
    W: AsyncWrite + Unpin,
{
    match head.framing()? {
        Framing::None => Ok(()),
        Framing::Length(n) => copy_exact(r, w, n).await,
        Framing::Chunked => {
            let mut line = Vec::new();
            loop {
                read_line(r, &mut line).await?;
                w.write_all(&line).await?;
                let text = String::from_utf8_lossy(&line);
                let size = text.split(';').next().unwrap_or("").trim();
                let size = u64::from_str_radix(size, 16)
                    .map_err(|_| bad(format!("bad chunk size line {text:?}")))?;
                if size == 0 {
                    // Trailer fields, up to the empty line.
                    loop {
                        read_line(r, &mut line).await?;
                        w.write_all(&line).await?;
                        if line == b"\r\n" || line == b"\n" {
                            return Ok(());
                        }
                    }
                }
                copy_exact(r, w, size).await?;
                read_line(r, &mut line).await?; // the CRLF after the chunk data
                w.write_all(&line).await?;
            }
        }
    }
}

async fn read_line<R: AsyncBufRead + Unpin>(r: &mut R, line: &mut Vec<u8>) -> io::Result<()> {
    line.clear();
    if r.read_until(b'\n', line).await? == 0 {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    Ok(())
}

async fn copy_exact<R, W>(r: &mut R, w: &mut W, n: u64) -> io::Result<()>
where
    R: AsyncBufRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let copied = tokio::io::copy(&mut (&mut *r).take(n), w).await?;
    if copied < n {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    Ok(())
}
