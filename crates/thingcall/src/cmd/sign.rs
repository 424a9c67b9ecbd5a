//! `thingcall sign v1|v3`.

use std::process::ExitCode;

use clap::{Args, Subcommand, ValueEnum};
use thingcall_sign::{v1, v3};
use thingcall_wire::form;

use super::Outcome;

#[derive(Subcommand)]
pub(crate) enum SignCommand {
    /// v1 RPC signature (SignatureMethod=HMAC-SHA1). Prints the base64 signature.
    V1(V1Args),
    /// v3 signature (ACS3-HMAC-SHA256). Prints the hex signature.
    V3(V3Args),
}

#[derive(Clone, Copy, ValueEnum)]
pub(crate) enum Method {
    #[value(name = "GET")]
    Get,
    #[value(name = "POST")]
    Post,
}

impl Method {
    fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Post => "POST",
        }
    }
}

#[derive(Args)]
pub(crate) struct V1Args {
    /// The HTTP method.
    #[arg(long, value_enum)]
    method: Method,
    /// The AccessKey secret.
    #[arg(long)]
    secret: String,
    /// Every parameter, URL-encoded as on the wire (`k=v&k2=v2`); any `Signature` is ignored.
    #[arg(long)]
    query: String,
    /// Print the canonical string and the string-to-sign first.
    #[arg(long)]
    explain: bool,
}

#[derive(Args)]
pub(crate) struct V3Args {
    /// The HTTP method.
    #[arg(long)]
    method: String,
    /// The request path.
    #[arg(long, default_value = "/")]
    path: String,
    /// The query string as sent (`+` counts as a space).
    #[arg(long, default_value = "")]
    query: String,
    /// The AccessKey secret.
    #[arg(long)]
    secret: String,
    /// A signed header, `name:value`; repeat for each.
    #[arg(long = "header", value_name = "NAME:VALUE")]
    headers: Vec<String>,
    /// A file holding the request body (hashed when no x-acs-content-sha256 header is given).
    #[arg(long)]
    body_file: Option<std::path::PathBuf>,
    /// Print the canonical request and the string-to-sign first.
    #[arg(long)]
    explain: bool,
}

impl SignCommand {
    pub(crate) fn run(self) -> Outcome {
        match self {
            SignCommand::V1(a) => v1_cmd(a),
            SignCommand::V3(a) => v3_cmd(a),
        }
    }
}

fn v1_cmd(a: V1Args) -> Outcome {
    let mut params = Vec::new();
    form::decode_pairs(a.query.as_bytes(), &mut params)
        .map_err(|e| format!("--query: {}", e.message()))?;
    let method = a.method.as_str();
    if a.explain {
        let canonical = v1::canonical_query(&params);
        out!("{canonical}");
        out!("{}", v1::string_to_sign(method, &canonical));
    }
    out!("{}", v1::sign(method, &params, &a.secret));
    Ok(ExitCode::SUCCESS)
}

fn v3_cmd(a: V3Args) -> Outcome {
    let mut headers: Vec<(String, String)> = Vec::new();
    for h in &a.headers {
        let (name, value) = h
            .split_once(':')
            .ok_or_else(|| format!("--header {h:?} must be NAME:VALUE"))?;
        let name = name.trim().to_ascii_lowercase();
        if name.is_empty() {
            return Err(format!("--header {h:?} has an empty name"));
        }
        if headers.iter().any(|(n, _)| *n == name) {
            return Err(format!("--header {name} is given twice"));
        }
        headers.push((name, value.trim().to_owned()));
    }
    headers.sort();
    let body = match &a.body_file {
        Some(path) => {
            std::fs::read(path).map_err(|e| format!("--body-file {}: {e}", path.display()))?
        }
        None => Vec::new(),
    };
    let hashed = headers
        .iter()
        .find(|(n, _)| n == "x-acs-content-sha256")
        .map_or_else(|| v3::content_sha256(&body), |(_, v)| v.clone());
    let canonical_query = v3::canonical_query(&a.query).map_err(|e| format!("--query: {e}"))?;
    let parts = v3::SignedParts {
        method: &a.method,
        path: &a.path,
        canonical_query: &canonical_query,
        headers: &headers,
        hashed_payload: &hashed,
    };
    let canonical = v3::canonical_request(&parts);
    let sts = v3::string_to_sign(&canonical);
    if a.explain {
        out!("{canonical}");
        out!("{sts}");
    }
    out!("{}", v3::signature_of(&sts, &a.secret));
    Ok(ExitCode::SUCCESS)
}
