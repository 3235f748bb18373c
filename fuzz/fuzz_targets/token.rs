//! Invariant: `auth::Auth::verify` (HMAC secret, leeway and `--jwt-audience`/`--jwt-issuer`
//! settings from small tables, a fake `now`) accepts exactly the tokens this model of PROTOCOL.md
//! §9, RFC 7515 and RFC 7519 accepts, and refuses the others for a reason they really have.
//!
//! The model, layer by layer (each layer is reached only when the ones before pass):
//!
//! 1. Longer than `MAX_TOKEN_LEN` bytes: exactly `TooLarge`.
//! 2. Not three `.`-separated parts, or a header that is not canonical unpadded base64url
//!    (RFC 7515 §2, RFC 4648 §5, nonzero trailing bits refused; decoded by this file's own
//!    decoder) of a JSON object: `Malformed`.
//! 3. Header `alg` (after JSON unescaping) `none` in any case: exactly `AlgNone`. Missing, not a
//!    string, or not a JWA name jsonwebtoken knows (names are case-sensitive, RFC 7515 §4.1.1):
//!    `Malformed`. RS*/PS*/ES256/ES384/EdDSA: `AlgorithmNotAllowed(alg)` (only a secret is
//!    configured). Unregistered header parameters of any type are ignored (RFC 7515 §4); a
//!    registered one of the wrong type (`kid`/`typ` not a string, `crit` not an array) may be
//!    ignored or refused (`Malformed`); `crit` naming an extension huddle does not implement must
//!    be refused (RFC 7515 §4.1.11).
//! 4. The signature part must decode (else `Malformed`) to the HMAC (SHA-256/384/512 as `alg`
//!    says) of the first two parts as sent, with `SECRET` (else `BadSignature`). No claim is
//!    looked at before this.
//! 5. The payload must decode (else `Malformed`) to a JSON object (else `BadClaim` or
//!    `Malformed`). Then every rule it breaks is an acceptable answer, and it is accepted only if
//!    it breaks none: `sub` a non-empty string; `exp` a number; NumericDates (`exp`, `nbf`) in
//!    huddle's range [0, 1e15) s (`BadClaim`/`MissingClaim`); `now < floor(exp) + leeway`
//!    (`Expired`); `floor(nbf) <= now + leeway` (`NotYetValid`; `nbf` absent or null: no check);
//!    with audiences configured, `aud` a string or an array of strings with one configured
//!    (missing or mistyped: `MissingClaim`/`BadClaim`, else `Audience`), likewise `iss`, which is
//!    a single string (RFC 7519 §4.1.1; `Issuer`); `channels`/`publish` absent, null, or arrays
//!    of at most 256 strings of 1 to 256 bytes (`BadClaim`). Claims are case-sensitive strings.
//!    A duplicated header or claim name may be refused or read as its last occurrence (RFC 7515
//!    §4, RFC 7519 §4). On `Ok`: `user == sub`, `exp == floor(exp)`, `valid_for == (exp +
//!    leeway) - now` (saturating at `Duration::MAX`), `expires_in == exp - now_secs` (saturating
//!    at 0), and the grants are `Grants::new(channels, publish)` in token order.
//!
//! Changing any single character of a token (to any other, including `.` or a non-ASCII one)
//! makes it refused. Raw inputs (any bytes, read lossily as UTF-8) never panic, `TooLarge` means
//! exactly "too long", and anything accepted really carries a valid HS* MAC and a matching `sub`.
//!
//! Disagreements this target found in huddle's first verifier (on `jsonwebtoken::decode`), each a
//! switch in `HUDDLE`. All four are fixed (huddle now reads the header and claims itself and
//! leaves only the keys and the signature to `jsonwebtoken`), so every switch is off, and the
//! seeds `seed-k1-…` to `seed-k4-…` check they stay fixed:
//!
//! - K1 header type errors are `BadClaim`: a header parameter jsonwebtoken's `Header` cannot
//!   read (`kid`/`typ` not strings, `crit` not an array, a header that is a JSON array) is
//!   refused as `BadClaim("claims do not have the expected types")`, not `Malformed` (the
//!   header is not a claim). `header_alg` reads a one-element array `["none"]` as a header, so
//!   that one is `AlgNone`. Refusals either way; only the reason is off.
//! - K2 non-string unregistered header parameters are refused (`BadClaim`): `{"alg":"HS256",
//!   "x":1}` signed with the secret is valid per RFC 7515 §4 ("MUST be ignored"), but
//!   jsonwebtoken keeps extra parameters in a `HashMap<String, String>`.
//! - K3 `crit` is not enforced: `{"alg":"HS256","crit":["x"],"x":"v"}` is accepted although
//!   RFC 7515 §4.1.11 says a JWS with a critical extension the recipient does not understand
//!   is invalid.
//! - K4 `iss` as an array is accepted when one element is a configured issuer (jsonwebtoken's
//!   `Issuer::Multiple`); RFC 7519 §4.1.1 makes `iss` a single StringOrURI.
//!
//! Input: structured (`arbitrary`): `Input { leeway, audience, issuer, now, token }`. `token` is
//! `Built { header, claims, sign, size }` (JSON written by hand from the choices, so numbers
//! like `1e400` or `999999999999999.5`, escapes, duplicates and whitespace are exact; `size`
//! pads the payload to land the token at `MAX_TOKEN_LEN - 2 ..= + 2` bytes), or `Raw(bytes)`.

#![no_main]

use std::sync::OnceLock;
use std::time::Duration;

use arbitrary::Arbitrary;
use base64::engine::general_purpose::{STANDARD, URL_SAFE, URL_SAFE_NO_PAD};
use base64::Engine as _;
use huddle::auth::{Auth, AuthError, Grants, KeySet, Settings, MAX_TOKEN_LEN};
use jsonwebtoken::{Algorithm, EncodingKey};
use libfuzzer_sys::fuzz_target;

const SECRET: &[u8] = b"huddle-fuzz-secret";
/// 2026-12-01T00:00:00Z.
const BASE: u64 = 1_796_083_200;
const LIMIT: u128 = 1_000_000_000_000_000; // huddle's NumericDate range, seconds
const NS: u128 = 1_000_000_000;

/// Which of the documented disagreements (see the top of the file) the implementation has.
struct Mode {
    k1_header_types_as_claims: bool,
    k2_nonstring_params_refused: bool,
    k3_crit_ignored: bool,
    k4_iss_array: bool,
}

const HUDDLE: Mode = Mode {
    k1_header_types_as_claims: false,
    k2_nonstring_params_refused: false,
    k3_crit_ignored: false,
    k4_iss_array: false,
};

const LEEWAYS: [Duration; 8] = [
    Duration::ZERO,
    Duration::from_secs(1),
    Duration::from_secs(30),
    Duration::from_secs(60),
    Duration::from_millis(500),
    Duration::from_millis(1500),
    Duration::from_nanos(999_999_999),
    Duration::MAX,
];
const AUDIENCES: [&[&str]; 3] = [&[], &["huddle"], &["huddle", "mobile"]];
const ISSUER_SETS: [&[&str]; 3] = [
    &[],
    &["https://auth.example"],
    &["https://auth.example", "https://other.example"],
];
const AUD_NAMES: [&str; 5] = ["huddle", "mobile", "HUDDLE", "", "other"];
const ISS_NAMES: [&str; 5] = [
    "https://auth.example",
    "https://auth.example/",
    "https://evil.example",
    "",
    "HTTPS://AUTH.EXAMPLE",
];
const HS: [Algorithm; 3] = [Algorithm::HS256, Algorithm::HS384, Algorithm::HS512];
const NONE_SPELLINGS: [&str; 4] = ["none", "NONE", "None", "nOnE"];
const ASYM: [Algorithm; 9] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];
const UNKNOWN_ALGS: [&str; 9] = [
    "hs256", "HS257", "", "none ", " HS256", "ES512", "EdDsa", "HS256\0", "RS1",
];
const NAMES: [&str; 7] = ["u1", "admin", "é", "用户 😀", "a b", "\"q\"\\", "x.y"];
const GLOBS: [&str; 5] = ["odds_*", "vip", "*", "a*b", "é*"];
const SECRETS: [&[u8]; 4] = [
    b"huddle-fuzz-secreT",
    b"",
    b"huddle-fuzz-secre",
    b"huddle-fuzz-secret-2",
];
/// Characters a garbage or mutated signature is drawn from: base64url, separators, padding,
/// the standard alphabet's extra two, a space and a two-byte char.
const CHARSET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.=+/ \xff";

// ---------------------------------------------------------------- input

#[derive(Arbitrary, Debug)]
struct Input {
    leeway: u8,
    audience: u8,
    issuer: u8,
    now: Now,
    token: TokenChoice,
}

#[derive(Arbitrary, Debug)]
enum Now {
    Base { offset: i32, nanos: u32 },
    Early { secs: u16, nanos: u32 },
    Far { which: u8, nanos: u32 },
    Max,
}

#[derive(Arbitrary, Debug)]
enum TokenChoice {
    Built(Built),
    Raw(Vec<u8>),
}

#[derive(Arbitrary, Debug)]
struct Built {
    header: HeaderSpec,
    claims: ClaimsSpec,
    sign: Sign,
    size: Option<i8>,
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Alg {
    Hs(u8),
    None(u8),
    Asym(u8),
    Unknown(u8),
    Number,
    Null,
    Missing,
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Typ {
    Jwt,
    AtJwt,
    Number,
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Kid {
    Str,
    Number,
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Param {
    Str,
    Number,
    Null,
    Object,
    Crit,
    CritNotArray,
}

#[derive(Arbitrary, Debug, Clone, Copy, PartialEq, Eq)]
enum Enc {
    Normal,
    Padded,
    Std,
}

#[derive(Arbitrary, Debug, Clone)]
struct HeaderSpec {
    alg: Alg,
    escape_alg: bool,
    typ: Option<Typ>,
    kid: Option<Kid>,
    param: Option<Param>,
    /// A second `alg` member after everything else.
    dup_alg: Option<Alg>,
    alg_last: bool,
    ws: bool,
    /// The header is the JSON array `[alg]` instead of an object.
    array: bool,
    enc: Enc,
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Form {
    Int,
    Half,
    DotZero,
    ExpZero,
    ExpUpper,
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Num {
    /// `now_secs + delta`.
    Near(i8, Form),
    /// `now_secs - leeway` (`past`) or `+ leeway`, then -1, 0 or +1: the `exp`/`nbf` edges.
    Edge {
        past: bool,
        d: u8,
    },
    Far(i32, Form),
    Abs(u8),
    Str,
    Null,
    Bool,
    Array,
}

#[derive(Arbitrary, Debug, Clone)]
enum Sub {
    Missing,
    Null,
    Name(u8),
    /// Every char as a `\uXXXX` escape.
    Escaped(u8),
    Bytes(Vec<u8>),
    Number,
    Array,
}

#[derive(Arbitrary, Debug, Clone)]
enum Aud {
    Name(u8),
    List(Vec<u8>),
    Number,
    Null,
    Mixed,
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Item {
    Glob(u8),
    /// `a` repeated (see `boundary`: often 255 to 257 bytes).
    Run(u16),
    /// `é` repeated (2 bytes each).
    Wide(u8),
    Empty,
    Number,
    Null,
    Nested,
}

#[derive(Arbitrary, Debug, Clone)]
enum Pats {
    Null,
    NotArray(u8),
    List {
        count: u16,
        item: Item,
        odd: Option<(u16, Item)>,
    },
}

#[derive(Arbitrary, Debug, Clone, Copy, PartialEq, Eq)]
enum Dup {
    Sub,
    Exp,
    Nbf,
    Aud,
    Iss,
    Channels,
    Custom,
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Shape {
    Object,
    Array,
    Garbage(u8),
}

#[derive(Arbitrary, Debug, Clone)]
struct ClaimsSpec {
    sub: Sub,
    exp: Option<Num>,
    nbf: Option<Num>,
    aud: Option<Aud>,
    iss: Option<Aud>,
    channels: Option<Pats>,
    publish: Option<Pats>,
    /// Ignored claims: bit 0 `iat`, 1 `jti`, 2 a nested object, 3 a string `scope`.
    extras: u8,
    dup: Option<Dup>,
    rotate: u8,
    shape: Shape,
    ws: bool,
    enc: Enc,
}

#[derive(Arbitrary, Debug)]
enum Sign {
    Correct,
    OtherHs(u8),
    Secret(u8),
    Truncate(u8),
    Extend(u8),
    Padded,
    Empty,
    Garbage(Vec<u8>),
    Mutate { pos: u16, ch: u8 },
}

// ---------------------------------------------------------------- JSON writing

fn json_str(s: &str, escape_all: bool) -> String {
    if !escape_all {
        return serde_json::to_string(s).unwrap();
    }
    let mut out = String::from("\"");
    let mut buf = [0u16; 2];
    for c in s.chars() {
        for u in c.encode_utf16(&mut buf) {
            out.push_str(&format!("\\u{u:04x}"));
        }
    }
    out.push('"');
    out
}

/// The value a number choice means, as the model reads it.
#[derive(Debug, Clone, Copy, PartialEq)]
enum NumV {
    Absent,
    Null,
    /// Exactly `halves / 2`.
    Halves(i128),
    /// A finite number of at least 1e15.
    Huge,
    /// A number out of f64 range (`1e400`).
    Invalid,
    WrongType,
}

const ABS: [(&str, NumV); 17] = [
    ("0", NumV::Halves(0)),
    ("-0", NumV::Halves(0)),
    ("-0.0", NumV::Halves(0)),
    ("-1", NumV::Halves(-2)),
    ("1e-400", NumV::Halves(0)),
    ("999999999999999", NumV::Halves(1_999_999_999_999_998)),
    ("999999999999999.5", NumV::Halves(1_999_999_999_999_999)),
    ("1e15", NumV::Huge),
    ("1000000000000000", NumV::Huge),
    ("18446744073709551615", NumV::Huge),
    ("18446744073709551616", NumV::Huge),
    ("1.7976931348623157e308", NumV::Huge),
    ("1e400", NumV::Invalid),
    ("-1e400", NumV::Invalid),
    ("4e9", NumV::Halves(8_000_000_000)),
    ("2.5e9", NumV::Halves(5_000_000_000)),
    ("-2.5", NumV::Halves(-5)),
];

fn num(n: Num, now_secs: u64, leeway_secs: u64) -> (String, NumV) {
    let rel = |delta: i64, form: Form| {
        let v = i128::from(now_secs) + i128::from(delta);
        let h = 2 * v + i128::from(matches!(form, Form::Half));
        let text = match form {
            Form::Int => format!("{v}"),
            Form::DotZero => format!("{v}.0"),
            Form::ExpZero => format!("{v}e0"),
            Form::ExpUpper => format!("{v}E+0"),
            Form::Half => {
                let a = h.abs();
                format!("{}{}.5", if h < 0 { "-" } else { "" }, a / 2)
            }
        };
        (text, NumV::Halves(h))
    };
    match n {
        Num::Near(d, f) => rel(i64::from(d), f),
        Num::Edge { past, d } => {
            let l = i64::try_from(leeway_secs).unwrap_or(i64::MAX / 2);
            rel(if past { -l } else { l } + i64::from(d % 3) - 1, Form::Int)
        }
        Num::Far(d, f) => rel(i64::from(d), f),
        Num::Abs(i) => {
            let (t, v) = ABS[usize::from(i) % ABS.len()];
            (t.to_string(), v)
        }
        Num::Str => (format!("\"{now_secs}\""), NumV::WrongType),
        Num::Null => ("null".into(), NumV::Null),
        Num::Bool => ("true".into(), NumV::WrongType),
        Num::Array => (format!("[{now_secs}]"), NumV::WrongType),
    }
}

#[derive(Debug, Clone, PartialEq)]
enum SubV {
    Absent,
    Str(String),
    WrongType,
}

fn sub(s: &Sub) -> (Option<String>, SubV) {
    let name = |i: u8| NAMES[usize::from(i) % NAMES.len()].to_string();
    match s {
        Sub::Missing => (None, SubV::Absent),
        Sub::Null => (Some("null".into()), SubV::Absent),
        Sub::Name(i) => (Some(json_str(&name(*i), false)), SubV::Str(name(*i))),
        Sub::Escaped(i) => (Some(json_str(&name(*i), true)), SubV::Str(name(*i))),
        Sub::Bytes(b) => {
            let s: String = String::from_utf8_lossy(b).chars().take(64).collect();
            (Some(json_str(&s, false)), SubV::Str(s))
        }
        Sub::Number => (Some("7".into()), SubV::WrongType),
        Sub::Array => (Some("[\"u1\"]".into()), SubV::WrongType),
    }
}

#[derive(Debug, Clone, PartialEq)]
enum AudV {
    Absent,
    Str(String),
    List(Vec<String>),
    WrongType,
}

fn aud(a: &Option<Aud>, names: &[&str]) -> (Option<String>, AudV) {
    let name = |i: u8| names[usize::from(i) % names.len()].to_string();
    match a {
        None => (None, AudV::Absent),
        Some(Aud::Name(i)) => (Some(json_str(&name(*i), false)), AudV::Str(name(*i))),
        Some(Aud::List(l)) => {
            let l: Vec<String> = l.iter().take(4).map(|i| name(*i)).collect();
            (Some(serde_json::to_string(&l).unwrap()), AudV::List(l))
        }
        Some(Aud::Number) => (Some("1".into()), AudV::WrongType),
        Some(Aud::Null) => (Some("null".into()), AudV::Absent),
        Some(Aud::Mixed) => (
            Some(format!("[{},5]", json_str(&name(0), false))),
            AudV::WrongType,
        ),
    }
}

#[derive(Debug, Clone, PartialEq)]
enum PatV {
    Absent,
    NotArray,
    /// `None`: an element that is not a string.
    List(Vec<Option<String>>),
}

fn item(i: Item) -> (String, Option<String>) {
    let s = match i {
        Item::Glob(g) => GLOBS[usize::from(g) % GLOBS.len()].to_string(),
        Item::Run(n) => "a".repeat(boundary(n, 256)),
        Item::Wide(n) => "é".repeat(usize::from(n)),
        Item::Empty => String::new(),
        Item::Number => return ("1".into(), None),
        Item::Null => return ("null".into(), None),
        Item::Nested => return ("[\"odds\"]".into(), None),
    };
    (json_str(&s, false), Some(s))
}

/// A length or count: `limit - 1 ..= limit + 1` a quarter of the time, 0..300 a quarter, else
/// 0..4 (so a few long patterns still fit in a token).
fn boundary(n: u16, limit: usize) -> usize {
    let k = usize::from(n / 4);
    match n % 4 {
        0 => limit - 1 + k % 3,
        1 => k % 300,
        _ => k % 4,
    }
}

fn pats(p: &Option<Pats>) -> (Option<String>, PatV) {
    match p {
        None => (None, PatV::Absent),
        Some(Pats::Null) => (Some("null".into()), PatV::Absent),
        Some(Pats::NotArray(i)) => {
            let t = ["\"odds\"", "5", "{}", "true"][usize::from(*i) % 4];
            (Some(t.into()), PatV::NotArray)
        }
        Some(Pats::List {
            count,
            item: it,
            odd,
        }) => {
            let n = boundary(*count, 256);
            let mut texts = Vec::with_capacity(n);
            let mut vals = Vec::with_capacity(n);
            let mut bytes = 0;
            for k in 0..n {
                if bytes > 7_000 {
                    // Already far over `MAX_TOKEN_LEN` once base64-encoded: stop building.
                    break;
                }
                let i = match odd {
                    Some((at, other)) if usize::from(*at) % n == k => *other,
                    _ => *it,
                };
                let (t, v) = item(i);
                bytes += t.len() + 1;
                texts.push(t);
                vals.push(v);
            }
            (Some(format!("[{}]", texts.join(","))), PatV::List(vals))
        }
    }
}

/// What the claims mean to the model (the last occurrence of a duplicated name).
#[derive(Debug, Clone)]
struct Claims {
    sub: SubV,
    exp: NumV,
    nbf: NumV,
    aud: AudV,
    iss: AudV,
    channels: PatV,
    publish: PatV,
}

/// The payload JSON and its meaning, plus the last-occurrence meaning when a claim name is
/// duplicated.
fn payload(
    c: &ClaimsSpec,
    now_secs: u64,
    leeway_secs: u64,
    pad: Option<usize>,
) -> (String, Claims, Option<Claims>) {
    let (sub_t, sub_v) = sub(&c.sub);
    let (exp_t, exp_v) = c.exp.map_or((None, NumV::Absent), |n| {
        let (t, v) = num(n, now_secs, leeway_secs);
        (Some(t), v)
    });
    let (nbf_t, nbf_v) = c.nbf.map_or((None, NumV::Absent), |n| {
        let (t, v) = num(n, now_secs, leeway_secs);
        (Some(t), v)
    });
    let (aud_t, aud_v) = aud(&c.aud, &AUD_NAMES);
    let (iss_t, iss_v) = aud(&c.iss, &ISS_NAMES);
    let (ch_t, ch_v) = pats(&c.channels);
    let (pu_t, pu_v) = pats(&c.publish);
    let mut claims = Claims {
        sub: sub_v,
        exp: exp_v,
        nbf: nbf_v,
        aud: aud_v,
        iss: iss_v,
        channels: ch_v,
        publish: pu_v,
    };
    let mut members: Vec<(String, String)> = Vec::new();
    let mut push = |k: &str, v: Option<String>| {
        if let Some(v) = v {
            members.push((k.to_string(), v));
        }
    };
    let had = [
        sub_t.is_some(),
        exp_t.is_some(),
        nbf_t.is_some(),
        aud_t.is_some(),
        iss_t.is_some(),
        ch_t.is_some(),
    ];
    push("sub", sub_t);
    push("exp", exp_t);
    push("nbf", nbf_t);
    push("aud", aud_t);
    push("iss", iss_t);
    push("channels", ch_t);
    push("publish", pu_t);
    if c.extras & 1 != 0 {
        push("iat", Some(now_secs.to_string()));
    }
    if c.extras & 2 != 0 {
        push("jti", Some("\"01JDX8V4T0Q6M2\"".into()));
    }
    if c.extras & 4 != 0 {
        push(
            "ctx",
            Some(r#"{"roles":["a"],"n":null,"exp":"never"}"#.into()),
        );
    }
    if c.extras & 8 != 0 {
        push("scope", Some("\"read write\"".into()));
    }
    if let Some(p) = pad {
        push("pad", Some(json_str(&"p".repeat(p), false)));
    }
    let n = members.len().max(1);
    members.rotate_left(usize::from(c.rotate) % n);
    // The duplicate goes last, so "last occurrence" is the duplicate.
    let mut last = None;
    if let Some(d) = c.dup {
        let mut l = claims.clone();
        let (k, v, present) = match d {
            Dup::Sub => {
                l.sub = SubV::Str("evil".into());
                ("sub", "\"evil\"".to_string(), had[0])
            }
            Dup::Exp => {
                l.exp = NumV::Halves(2 * (i128::from(now_secs) - 10));
                ("exp", format!("{}", i128::from(now_secs) - 10), had[1])
            }
            Dup::Nbf => {
                l.nbf = NumV::Halves(2 * (i128::from(now_secs) + 1000));
                ("nbf", format!("{}", i128::from(now_secs) + 1000), had[2])
            }
            Dup::Aud => {
                l.aud = AudV::Str("other".into());
                ("aud", "\"other\"".to_string(), had[3])
            }
            Dup::Iss => {
                l.iss = AudV::Str("https://evil.example".into());
                ("iss", "\"https://evil.example\"".to_string(), had[4])
            }
            Dup::Channels => {
                l.channels = PatV::List(vec![Some("dup_*".into())]);
                ("channels", "[\"dup_*\"]".to_string(), had[5])
            }
            Dup::Custom => {
                members.push(("x-dup".into(), "1".into()));
                ("x-dup", "2".to_string(), true)
            }
        };
        members.push((k.to_string(), v));
        if present {
            last = Some(l);
        } else {
            // Not a duplicate: its one occurrence is the value.
            claims = l;
        }
    }
    let json = object(&members, c.ws);
    (shape(c, json, &members), claims, last)
}

fn object(members: &[(String, String)], ws: bool) -> String {
    let (sep, colon, open, close) = if ws {
        (" ,\n\t", " : ", "\r\n{ ", " }\n")
    } else {
        (",", ":", "{", "}")
    };
    let body: Vec<String> = members
        .iter()
        .map(|(k, v)| format!("{}{colon}{v}", json_str(k, false)))
        .collect();
    format!("{open}{}{close}", body.join(sep))
}

fn shape(c: &ClaimsSpec, json: String, members: &[(String, String)]) -> String {
    match c.shape {
        Shape::Object => json,
        Shape::Array => {
            let vals: Vec<&str> = members.iter().map(|(_, v)| v.as_str()).collect();
            format!("[{}]", vals.join(","))
        }
        Shape::Garbage(i) => ["", "{", "null", "\"x\"", "{}x", "1", "{\"sub\":\"u1\",}"]
            [usize::from(i) % 7]
            .to_string(),
    }
}

fn is_object(c: &ClaimsSpec) -> bool {
    matches!(c.shape, Shape::Object)
}

/// What an `alg` choice means.
#[derive(Debug, Clone, Copy, PartialEq)]
enum AlgV {
    Hs(Algorithm),
    None,
    Asym(Algorithm),
    /// Missing, null, a number or an unknown name.
    Bad,
}

fn alg(a: Alg, escape: bool) -> (Option<String>, AlgV) {
    let s = |t: &str| Some(json_str(t, escape));
    match a {
        Alg::Hs(i) => {
            let a = HS[usize::from(i) % 3];
            (s(&format!("{a:?}")), AlgV::Hs(a))
        }
        Alg::None(i) => (s(NONE_SPELLINGS[usize::from(i) % 4]), AlgV::None),
        Alg::Asym(i) => {
            let a = ASYM[usize::from(i) % ASYM.len()];
            (s(&format!("{a:?}")), AlgV::Asym(a))
        }
        Alg::Unknown(i) => (
            s(UNKNOWN_ALGS[usize::from(i) % UNKNOWN_ALGS.len()]),
            AlgV::Bad,
        ),
        Alg::Number => (Some("256".into()), AlgV::Bad),
        Alg::Null => (Some("null".into()), AlgV::Bad),
        Alg::Missing => (None, AlgV::Bad),
    }
}

fn header(h: &HeaderSpec) -> String {
    let (alg_t, _) = alg(h.alg, h.escape_alg);
    if h.array {
        return format!("[{}]", alg_t.unwrap_or_default());
    }
    let mut members: Vec<(String, String)> = Vec::new();
    match h.typ {
        Some(Typ::Jwt) => members.push(("typ".into(), "\"JWT\"".into())),
        Some(Typ::AtJwt) => members.push(("typ".into(), "\"at+jwt\"".into())),
        Some(Typ::Number) => members.push(("typ".into(), "1".into())),
        None => {}
    }
    match h.kid {
        Some(Kid::Str) => members.push(("kid".into(), "\"k1\"".into())),
        Some(Kid::Number) => members.push(("kid".into(), "1".into())),
        None => {}
    }
    match h.param {
        Some(Param::Str) => members.push(("x-custom".into(), "\"v\"".into())),
        Some(Param::Number) => members.push(("x-custom".into(), "1".into())),
        Some(Param::Null) => members.push(("x-custom".into(), "null".into())),
        Some(Param::Object) => members.push(("x-custom".into(), "{\"a\":[1]}".into())),
        Some(Param::Crit) => {
            members.push(("crit".into(), "[\"x-custom\"]".into()));
            members.push(("x-custom".into(), "\"v\"".into()));
        }
        Some(Param::CritNotArray) => members.push(("crit".into(), "\"x-custom\"".into())),
        None => {}
    }
    if let Some(a) = alg_t {
        if h.alg_last {
            members.push(("alg".into(), a));
        } else {
            members.insert(0, ("alg".into(), a));
        }
    }
    if let Some(d) = h.dup_alg {
        if let (Some(a), _) = alg(d, false) {
            members.push(("alg".into(), a));
        }
    }
    object(&members, h.ws)
}

fn encode(json: &[u8], enc: Enc) -> String {
    match enc {
        Enc::Normal => URL_SAFE_NO_PAD.encode(json),
        Enc::Padded => URL_SAFE.encode(json),
        Enc::Std => STANDARD.encode(json).trim_end_matches('=').to_string(),
    }
}

fn mac(message: &str, secret: &[u8], alg: Algorithm) -> String {
    jsonwebtoken::crypto::sign(message.as_bytes(), &EncodingKey::from_secret(secret), alg).unwrap()
}

/// The algorithm the correct signature is made with: the last `alg` if it is HS*, else HS256.
fn signing_alg(h: &HeaderSpec) -> Algorithm {
    let (first, second) = algs(h);
    match second.or(first).map(|a| alg(a, false).1) {
        Some(AlgV::Hs(a)) => a,
        _ => Algorithm::HS256,
    }
}

struct Token {
    text: String,
    mutated: bool,
    claims: Claims,
    last: Option<Claims>,
}

fn build(b: &Built, now_secs: u64, leeway_secs: u64) -> Token {
    let head = encode(header(&b.header).as_bytes(), b.header.enc);
    let alg = signing_alg(&b.header);
    let make = |pad: Option<usize>| {
        let (json, claims, last) = payload(&b.claims, now_secs, leeway_secs, pad);
        let body = encode(json.as_bytes(), b.claims.enc);
        let message = format!("{head}.{body}");
        let good = mac(&message, SECRET, alg);
        let sig = match &b.sign {
            Sign::Correct | Sign::Mutate { .. } => good,
            Sign::OtherHs(i) => {
                let others: Vec<Algorithm> = HS.iter().copied().filter(|a| *a != alg).collect();
                mac(&message, SECRET, others[usize::from(*i) % 2])
            }
            Sign::Secret(i) => mac(&message, SECRETS[usize::from(*i) % SECRETS.len()], alg),
            Sign::Truncate(n) => {
                good[..good.len() - (usize::from(*n) % good.len() + 1)].to_string()
            }
            Sign::Extend(n) => good + &"A".repeat(usize::from(n % 8) + 1),
            Sign::Padded => good + "=",
            Sign::Empty => String::new(),
            Sign::Garbage(g) => g.iter().take(128).map(|c| charset(*c)).collect::<String>(),
        };
        (format!("{message}.{sig}"), json.len() as i64, claims, last)
    };
    let (mut text, _, mut claims, mut last) = make(None);
    if let (Some(d), true) = (b.size, is_object(&b.claims)) {
        let target = MAX_TOKEN_LEN as i64 + i64::from(d).rem_euclid(5) - 2;
        if target - text.len() as i64 > 12 {
            // The token is `fixed + b64(json)` bytes long, and each pad byte is one JSON byte.
            let (t0, j0, _, _) = make(Some(0));
            let b64 = |l: i64| match b.claims.enc {
                Enc::Padded => (l + 2) / 3 * 4,
                Enc::Normal | Enc::Std => (4 * l + 2) / 3,
            };
            let fixed = t0.len() as i64 - b64(j0);
            let est = ((target - fixed) * 3 / 4 - j0).max(0);
            let p = ((est - 2).max(0)..=est + 2)
                .min_by_key(|p| (fixed + b64(j0 + p) - target).abs())
                .unwrap();
            (text, _, claims, last) = make(Some(p as usize));
        }
    }
    let mut mutated = false;
    if let Sign::Mutate { pos, ch } = b.sign {
        let new = charset(ch).chars().next().unwrap();
        let n = text.chars().count();
        let (at, old) = text.char_indices().nth(usize::from(pos) % n).unwrap();
        if old != new {
            mutated = true;
            text.replace_range(at..at + old.len_utf8(), new.encode_utf8(&mut [0; 4]));
        }
    }
    Token {
        text,
        mutated,
        claims,
        last,
    }
}

fn charset(b: u8) -> String {
    let c = CHARSET[usize::from(b) % (CHARSET.len())];
    if c == 0xff {
        "é".into()
    } else {
        char::from(c).to_string()
    }
}

// ---------------------------------------------------------------- model

/// Strict base64url without padding (RFC 4648 §5): its own alphabet only, no `=`, no length
/// of 4n+1, zero trailing bits.
fn b64url(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    if s.len() % 4 == 1 {
        return None;
    }
    for c in s.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'-' => 62,
            b'_' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    (acc == 0).then_some(out)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    TooLarge,
    Malformed,
    AlgNone,
    AlgNotAllowed(Algorithm),
    BadSignature,
    Expired,
    NotYetValid,
    Audience,
    Issuer,
    /// `MissingClaim` or `BadClaim`.
    Claims,
    Other,
}

fn class(e: &AuthError) -> Class {
    match e {
        AuthError::TooLarge { .. } => Class::TooLarge,
        AuthError::Malformed(_) => Class::Malformed,
        AuthError::AlgNone => Class::AlgNone,
        AuthError::AlgorithmNotAllowed(a) => Class::AlgNotAllowed(*a),
        AuthError::BadSignature => Class::BadSignature,
        AuthError::Expired => Class::Expired,
        AuthError::NotYetValid => Class::NotYetValid,
        AuthError::Audience => Class::Audience,
        AuthError::Issuer => Class::Issuer,
        AuthError::MissingClaim(_) | AuthError::BadClaim(_) => Class::Claims,
        _ => Class::Other,
    }
}

#[derive(Debug, Clone, PartialEq)]
struct Want {
    user: String,
    exp: u64,
    valid_for: Duration,
    expires_in: u64,
    channels: Vec<String>,
    publish: Vec<String>,
}

/// The acceptable outcomes.
#[derive(Debug, Default)]
struct Expect {
    oks: Vec<Want>,
    errs: Vec<Class>,
    /// Any refusal but `TooLarge` (a mutated token).
    any_err: bool,
}

impl Expect {
    fn err(c: &[Class]) -> Expect {
        Expect {
            errs: c.to_vec(),
            ..Expect::default()
        }
    }

    fn or(mut self, o: Expect) -> Expect {
        self.oks.extend(o.oks);
        self.errs.extend(o.errs);
        self.any_err |= o.any_err;
        self
    }
}

struct Ctx {
    now_ns: u128,
    now_secs: u64,
    leeway_ns: u128,
    audience: &'static [&'static str],
    issuer: &'static [&'static str],
}

const MAX_NS: u128 = u64::MAX as u128 * NS + 999_999_999;

fn duration(ns: u128) -> Duration {
    Duration::new((ns / NS) as u64, (ns % NS) as u32)
}

/// The header's verdict: the refusals it allows, and the HS algorithms with which verification
/// may go on (both when the RFCs leave the choice to the recipient).
#[derive(Debug, Default)]
struct HeaderOut {
    errs: Vec<Class>,
    go: Vec<Algorithm>,
}

/// The header's `alg` members: the first, and a second one if there is one.
fn algs(h: &HeaderSpec) -> (Option<Alg>, Option<Alg>) {
    let present = |a: Alg| alg(a, false).0.is_some().then_some(a);
    match (present(h.alg), h.dup_alg.and_then(present)) {
        (None, second) => (second, None),
        pair => pair,
    }
}

fn header_verdict(h: &HeaderSpec, mode: &Mode) -> HeaderOut {
    let refuse = |c: &[Class]| HeaderOut {
        errs: c.to_vec(),
        go: Vec::new(),
    };
    let a = match algs(h) {
        _ if h.array => alg(h.alg, false).1,
        (None, _) => AlgV::Bad,
        (Some(_), Some(second)) => {
            // A duplicate name: refused, or read as its last occurrence.
            let last = HeaderSpec {
                alg: second,
                escape_alg: false,
                dup_alg: None,
                ..h.clone()
            };
            let mut out = header_verdict(&last, mode);
            out.errs.push(Class::Malformed);
            return out;
        }
        (Some(first), None) => alg(first, false).1,
    };
    if h.array {
        if !mode.k1_header_types_as_claims {
            return refuse(&[Class::Malformed]);
        }
        // K1: `header_alg` reads `[alg]` as `{"alg": alg}`; jsonwebtoken refuses any array.
        return refuse(match a {
            AlgV::None => &[Class::AlgNone],
            AlgV::Hs(_) | AlgV::Asym(_) => &[Class::Claims],
            AlgV::Bad => &[Class::Malformed],
        });
    }
    match a {
        AlgV::None => return refuse(&[Class::AlgNone]),
        AlgV::Bad => return refuse(&[Class::Malformed]),
        _ => {}
    }
    let mut out = HeaderOut::default();
    if let AlgV::Asym(a) = a {
        out.errs.push(Class::AlgNotAllowed(a));
    }
    let registered_bad = matches!(h.typ, Some(Typ::Number))
        || matches!(h.kid, Some(Kid::Number))
        || matches!(h.param, Some(Param::CritNotArray));
    let unregistered_nonstring =
        matches!(h.param, Some(Param::Number | Param::Null | Param::Object));
    let crit = matches!(h.param, Some(Param::Crit));
    let mut may_go = true;
    if registered_bad {
        // The RFCs let a recipient that does not use `kid`/`typ` ignore them (or refuse).
        if mode.k1_header_types_as_claims {
            out.errs.push(Class::Claims);
            may_go = false;
        } else {
            out.errs.push(Class::Malformed);
        }
    }
    if unregistered_nonstring && mode.k2_nonstring_params_refused {
        out.errs.push(Class::Claims);
        may_go = false;
    }
    if crit && !mode.k3_crit_ignored {
        out.errs.push(Class::Malformed);
        may_go = false;
    }
    if let (AlgV::Hs(a), true) = (a, may_go) {
        out.go.push(a);
    }
    out
}

fn claims_verdict(c: &Claims, ctx: &Ctx, mode: &Mode) -> Expect {
    let mut errs = Vec::new();
    let user = match &c.sub {
        SubV::Str(s) if !s.is_empty() => Some(s.clone()),
        _ => {
            errs.push(Class::Claims);
            None
        }
    };
    let exp = match c.exp {
        NumV::Halves(h) if h < 0 => {
            errs.extend([Class::Claims, Class::Expired]);
            None
        }
        NumV::Halves(h) if h / 2 >= LIMIT as i128 => {
            errs.push(Class::Claims);
            None
        }
        NumV::Halves(h) => Some((h / 2) as u64),
        _ => {
            errs.push(Class::Claims);
            None
        }
    };
    let end = exp.map(|e| (u128::from(e) * NS + ctx.leeway_ns).min(MAX_NS));
    if let Some(end) = end {
        if ctx.now_ns >= end {
            errs.push(Class::Expired);
        }
    }
    let latest = (ctx.now_ns + ctx.leeway_ns).min(MAX_NS);
    match c.nbf {
        NumV::Absent | NumV::Null => {}
        NumV::Halves(h) if h < 0 => errs.push(Class::Claims),
        NumV::Halves(h) if h / 2 >= LIMIT as i128 => {
            errs.extend([Class::Claims, Class::NotYetValid])
        }
        NumV::Halves(h) => {
            if (h / 2) as u128 * NS > latest {
                errs.push(Class::NotYetValid);
            }
        }
        NumV::Huge => errs.extend([Class::Claims, Class::NotYetValid]),
        NumV::Invalid | NumV::WrongType => errs.push(Class::Claims),
    }
    let names = |set: &[&str], a: &AudV, wrong: Class, arrays: bool| -> Vec<Class> {
        match a {
            AudV::Absent => vec![Class::Claims],
            AudV::Str(s) if set.contains(&s.as_str()) => vec![],
            AudV::Str(_) => vec![wrong],
            AudV::List(l) if arrays && l.iter().any(|s| set.contains(&s.as_str())) => vec![],
            AudV::List(_) if arrays => vec![wrong],
            AudV::List(_) | AudV::WrongType => vec![Class::Claims, wrong],
        }
    };
    if !ctx.audience.is_empty() {
        errs.extend(names(ctx.audience, &c.aud, Class::Audience, true));
    }
    if !ctx.issuer.is_empty() {
        errs.extend(names(ctx.issuer, &c.iss, Class::Issuer, mode.k4_iss_array));
    }
    let patterns = |p: &PatV, errs: &mut Vec<Class>| -> Vec<String> {
        match p {
            PatV::Absent => Vec::new(),
            PatV::NotArray => {
                errs.push(Class::Claims);
                Vec::new()
            }
            PatV::List(l) => {
                let ok = l.len() <= 256
                    && l.iter()
                        .all(|s| s.as_ref().is_some_and(|s| (1..=256).contains(&s.len())));
                if !ok {
                    errs.push(Class::Claims);
                }
                l.iter().flatten().cloned().collect()
            }
        }
    };
    let channels = patterns(&c.channels, &mut errs);
    let publish = patterns(&c.publish, &mut errs);
    if !errs.is_empty() {
        return Expect::err(&errs);
    }
    let (exp, end) = (exp.unwrap(), end.unwrap());
    Expect {
        oks: vec![Want {
            user: user.unwrap(),
            exp,
            valid_for: duration(end - ctx.now_ns),
            expires_in: exp.saturating_sub(ctx.now_secs),
            channels,
            publish,
        }],
        ..Expect::default()
    }
}

fn model(b: &Built, t: &Token, ctx: &Ctx, mode: &Mode) -> Expect {
    let token = t.text.as_str();
    if token.len() > MAX_TOKEN_LEN {
        return Expect::err(&[Class::TooLarge]);
    }
    if t.mutated {
        return Expect {
            any_err: true,
            ..Expect::default()
        };
    }
    let parts: Vec<&str> = token.split('.').collect();
    if parts.len() != 3 {
        return Expect::err(&[Class::Malformed]);
    }
    let Some(head) = b64url(parts[0]) else {
        return Expect::err(&[Class::Malformed]);
    };
    assert_eq!(head, header(&b.header).into_bytes(), "header encoding");
    let h = header_verdict(&b.header, mode);
    let mut out = Expect::err(&h.errs);
    for alg in h.go {
        out = out.or(after_header(b, t, &parts, alg, ctx, mode));
    }
    out
}

fn after_header(
    b: &Built,
    t: &Token,
    parts: &[&str],
    alg: Algorithm,
    ctx: &Ctx,
    mode: &Mode,
) -> Expect {
    if b64url(parts[2]).is_none() {
        return Expect::err(&[Class::Malformed]);
    }
    if parts[2] != mac(&format!("{}.{}", parts[0], parts[1]), SECRET, alg) {
        return Expect::err(&[Class::BadSignature]);
    }
    if b64url(parts[1]).is_none() {
        return Expect::err(&[Class::Malformed]);
    }
    if !is_object(&b.claims) {
        return Expect::err(&[Class::Claims, Class::Malformed]);
    }
    match &t.last {
        None => claims_verdict(&t.claims, ctx, mode),
        Some(last) => Expect::err(&[Class::Claims]).or(claims_verdict(last, ctx, mode)),
    }
}

// ---------------------------------------------------------------- raw tokens

/// What can be said of any string: size, structure, and that an accepted one is genuine.
fn check_raw(token: &str, got: &Result<huddle::auth::Identity, AuthError>, ctx: &Ctx) {
    assert_eq!(
        matches!(got, Err(AuthError::TooLarge { .. })),
        token.len() > MAX_TOKEN_LEN,
        "{got:?}"
    );
    if token.len() > MAX_TOKEN_LEN {
        return;
    }
    let parts: Vec<&str> = token.split('.').collect();
    if parts.len() != 3 {
        assert!(matches!(got, Err(AuthError::Malformed(_))), "{got:?}");
        return;
    }
    let json =
        |p: &str| b64url(p).and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok());
    match got {
        Err(AuthError::AlgNone) => {
            let h = json(parts[0]).expect("AlgNone for a header that does not decode");
            let alg = h.get("alg").or_else(|| h.get(0)).and_then(|a| a.as_str());
            assert!(alg.is_some_and(|a| a.eq_ignore_ascii_case("none")), "{h}");
        }
        Ok(id) => {
            let h = json(parts[0]).expect("accepted an undecodable header");
            let alg: Algorithm = h["alg"].as_str().expect("alg").parse().expect("alg name");
            assert!(HS.contains(&alg), "{alg:?}");
            assert_eq!(
                parts[2],
                mac(&format!("{}.{}", parts[0], parts[1]), SECRET, alg)
            );
            let c = json(parts[1]).expect("accepted an undecodable payload");
            assert_eq!(c["sub"].as_str(), Some(id.user.as_str()));
            assert!(!id.user.is_empty());
            let exp = c["exp"].as_f64().expect("numeric exp");
            assert_eq!(exp.floor() as u64, id.exp);
            assert!(ctx.now_ns < u128::from(id.exp) * NS + ctx.leeway_ns);
        }
        Err(_) => {}
    }
}

// ---------------------------------------------------------------- target

fn verifiers() -> &'static Vec<Auth> {
    static V: OnceLock<Vec<Auth>> = OnceLock::new();
    V.get_or_init(|| {
        let mut v = Vec::new();
        for leeway in LEEWAYS {
            for audience in AUDIENCES {
                for issuer in ISSUER_SETS {
                    let settings = Settings {
                        leeway,
                        audience: audience.iter().map(|s| s.to_string()).collect(),
                        issuer: issuer.iter().map(|s| s.to_string()).collect(),
                        ..Settings::default()
                    };
                    v.push(Auth::with_keys(settings, KeySet::from_secret(SECRET)));
                }
            }
        }
        v
    })
}

fn nanos(n: u32) -> u32 {
    match n % 4 {
        0 => 0,
        1 => 999_999_999,
        2 => 500_000_000,
        _ => (n >> 2) % 1_000_000_000,
    }
}

fn check(want: &Expect, got: &Result<huddle::auth::Identity, AuthError>) -> bool {
    match got {
        Ok(id) => want.oks.iter().any(|w| {
            id.user == w.user
                && id.exp == w.exp
                && id.valid_for == w.valid_for
                && id.expires_in == w.expires_in
                && id.grants == Grants::new(&w.channels, &w.publish)
        }),
        Err(e) => {
            let c = class(e);
            want.errs.contains(&c) || (want.any_err && c != Class::TooLarge && c != Class::Other)
        }
    }
}

fuzz_target!(|input: Input| {
    let li = usize::from(input.leeway) % LEEWAYS.len();
    let ai = usize::from(input.audience) % AUDIENCES.len();
    let ii = usize::from(input.issuer) % ISSUER_SETS.len();
    let auth = &verifiers()[(li * AUDIENCES.len() + ai) * ISSUER_SETS.len() + ii];
    let now = match input.now {
        Now::Base { offset, nanos: n } => {
            Duration::new(BASE.saturating_add_signed(i64::from(offset)), nanos(n))
        }
        Now::Early { secs, nanos: n } => Duration::new(u64::from(secs), nanos(n)),
        Now::Far { which, nanos: n } => Duration::new(
            [999_999_999_999_999, 1_000_000_000_000_000, u64::MAX][usize::from(which) % 3],
            nanos(n),
        ),
        Now::Max => Duration::MAX,
    };
    let ctx = Ctx {
        now_ns: now.as_nanos(),
        now_secs: now.as_secs(),
        leeway_ns: LEEWAYS[li].as_nanos(),
        audience: AUDIENCES[ai],
        issuer: ISSUER_SETS[ii],
    };
    match &input.token {
        TokenChoice::Raw(bytes) => {
            let token = String::from_utf8_lossy(bytes);
            let got = auth.verify(&token, now);
            check_raw(&token, &got, &ctx);
        }
        TokenChoice::Built(b) => {
            let t = build(b, ctx.now_secs, LEEWAYS[li].as_secs());
            let got = auth.verify(&t.text, now);
            let want = model(b, &t, &ctx, &HUDDLE);
            assert!(
                check(&want, &got),
                "token {:?}\nverify: {got:?}\nmodel: {want:?}",
                t.text
            );
        }
    }
});
