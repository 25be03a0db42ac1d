//! A recording proxy in front of moto: every request the collector makes to "AWS" is
//! kept (so tests can assert on what the client sent, which moto does not check, such
//! as batch limits), and the proxy can play AWS refusing the caller's credentials.

use super::fakes::{HttpFake, Received, Reply, Request};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

pub struct AwsProxy {
    fake: HttpFake,
    deny: Arc<AtomicBool>,
    accept_metric_data: Arc<AtomicBool>,
}

impl AwsProxy {
    /// Forwards to moto on `moto_port`.
    pub fn start(moto_port: u16) -> AwsProxy {
        let deny = Arc::new(AtomicBool::new(false));
        let accept_metric_data = Arc::new(AtomicBool::new(false));
        let (d, a) = (deny.clone(), accept_metric_data.clone());
        let fake = HttpFake::start(move |req, _| {
            if d.load(Ordering::Acquire) {
                return invalid_token(req);
            }
            if a.load(Ordering::Acquire)
                && operation(&decompressed(req.clone())).as_deref() == Some("PutMetricData")
            {
                return Reply::new(
                    200,
                    "<PutMetricDataResponse xmlns=\"http://monitoring.amazonaws.com/doc/2010-08-01/\">\
                     <ResponseMetadata><RequestId>1</RequestId></ResponseMetadata></PutMetricDataResponse>",
                )
                .header("content-type", "text/xml");
            }
            forward(req, moto_port)
        });
        AwsProxy {
            fake,
            deny,
            accept_metric_data,
        }
    }

    /// `http://127.0.0.1:PORT`: the collector's `endpoint_url`.
    pub fn url(&self) -> String {
        self.fake.base_url()
    }

    /// From now on, accept PutMetricData calls here without passing them to moto, whose
    /// parsing of a request grows with the square of its data (seconds per 1,000 data).
    pub fn accept_metric_data_here(&self, on: bool) {
        self.accept_metric_data.store(on, Ordering::Release);
    }

    /// From now on, answer every call as AWS answers unknown credentials.
    pub fn deny_credentials(&self, on: bool) {
        self.deny.store(on, Ordering::Release);
    }

    pub fn received(&self) -> Vec<Received> {
        self.fake.received()
    }

    /// The requests whose `X-Amz-Target` (JSON protocols) or `Action=` (query protocol)
    /// names `op`.
    /// The calls of `op` that were answered 200 (accepted), in order. Bodies are given
    /// decompressed (the SDK gzips large PutMetricData bodies).
    pub fn calls(&self, op: &str) -> Vec<Request> {
        self.calls_answered(op)
            .into_iter()
            .filter(|(_, status)| *status == 200)
            .map(|(r, _)| r)
            .collect()
    }

    /// Every call of `op`, with the status it was answered.
    pub fn calls_answered(&self, op: &str) -> Vec<(Request, u16)> {
        self.received()
            .into_iter()
            .map(|r| (decompressed(r.request), r.status))
            .filter(|(r, _)| operation(r).as_deref() == Some(op))
            .collect()
    }
}

/// The request with its body un-gzipped, if it was gzipped.
fn decompressed(mut r: Request) -> Request {
    let gz = r
        .headers
        .iter()
        .any(|(k, v)| k == "content-encoding" && v.contains("gzip"));
    if gz {
        let mut out = Vec::new();
        if flate2::read::GzDecoder::new(&r.body[..])
            .read_to_end(&mut out)
            .is_ok()
        {
            r.body = out;
        }
    }
    r
}

/// The operation a request calls.
pub fn operation(r: &Request) -> Option<String> {
    if let Some((_, t)) = r.headers.iter().find(|(k, _)| k == "x-amz-target") {
        return t.rsplit('.').next().map(str::to_string);
    }
    let body = String::from_utf8_lossy(&r.body);
    body.split('&')
        .find_map(|kv| kv.strip_prefix("Action="))
        .map(str::to_string)
}

/// AWS's answer to an unknown access key, in the protocol of the request.
fn invalid_token(req: &Request) -> Reply {
    let text = "The security token included in the request is invalid.";
    if req.headers.iter().any(|(k, _)| k == "x-amz-target") {
        Reply::new(
            400,
            format!(r#"{{"__type":"UnrecognizedClientException","message":"{text}"}}"#),
        )
        .header("content-type", "application/x-amz-json-1.1")
        .header("x-amzn-errortype", "UnrecognizedClientException")
    } else {
        Reply::new(
            403,
            format!(
                "<ErrorResponse><Error><Type>Sender</Type><Code>InvalidClientTokenId</Code>\
                 <Message>{text}</Message></Error><RequestId>1</RequestId></ErrorResponse>"
            ),
        )
        .header("content-type", "text/xml")
    }
}

/// Sends `req` to moto (one connection per request) and returns its answer.
fn forward(req: &Request, port: u16) -> Reply {
    let fail = |e: String| Reply::new(502, format!("proxy: {e}"));
    let mut s = match TcpStream::connect(("127.0.0.1", port)) {
        Ok(s) => s,
        Err(e) => return fail(format!("moto unreachable: {e}")),
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(30)));
    let mut head = format!("{} {} HTTP/1.1\r\n", req.method, req.path);
    for (k, v) in &req.headers {
        if !matches!(
            k.as_str(),
            "connection" | "content-length" | "transfer-encoding"
        ) {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
    }
    head.push_str(&format!(
        "content-length: {}\r\nconnection: close\r\n\r\n",
        req.body.len()
    ));
    if let Err(e) = s
        .write_all(head.as_bytes())
        .and_then(|_| s.write_all(&req.body))
    {
        return fail(e.to_string());
    }
    let mut raw = Vec::new();
    if let Err(e) = s.read_to_end(&mut raw) {
        return fail(e.to_string());
    }
    let Some(split) = raw.windows(4).position(|w| w == b"\r\n\r\n") else {
        return fail("no response head".into());
    };
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let mut body = raw[split + 4..].to_vec();
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(502);
    let mut headers = Vec::new();
    let mut chunked = false;
    for l in lines {
        if let Some((k, v)) = l.split_once(':') {
            let (k, v) = (k.trim().to_ascii_lowercase(), v.trim().to_string());
            if k == "transfer-encoding" {
                chunked = v.contains("chunked");
                continue;
            }
            if matches!(
                k.as_str(),
                "content-length" | "connection" | "date" | "server"
            ) {
                continue;
            }
            headers.push((k, v));
        }
    }
    if chunked {
        body = dechunk(&body);
    }
    let mut reply = Reply::new(status, String::from_utf8_lossy(&body).to_string());
    for (k, v) in headers {
        reply = reply.header(&k, &v);
    }
    reply
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = b.windows(2).position(|w| w == b"\r\n") {
        let size =
            usize::from_str_radix(String::from_utf8_lossy(&b[..eol]).trim(), 16).unwrap_or(0);
        if size == 0 {
            break;
        }
        let start = eol + 2;
        out.extend_from_slice(&b[start..(start + size).min(b.len())]);
        b = &b[(start + size + 2).min(b.len())..];
    }
    out
}
