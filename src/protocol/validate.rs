//! Typed payload checks of PROTOCOL.md §3, with the strict RFC 3339 and `MM:SS` checkers.

use serde_json::{Map, Value};

use super::filter::as_int;
use super::names::{is_valid_event_type, quoted, MAX_EVENT_TYPE_LEN, SERVER_ONLY_EVENTS};

/// Validates `data` for `event_type` per PROTOCOL.md §3. Known types are checked field by field; any
/// other event_type matching [a-z][a-z0-9_]{0,63} is custom (data must be an object, nothing else checked).
/// Server-only types (connection_ack, heartbeat, error, user_subscription, user_unsubscription, publish, refresh) are refused for publishing.
/// Err message names the field path: "data.home_score: must be an integer >= 0", "data.quarter: must be an integer 0-5",
/// "data.game_status: must be one of scheduled|in_progress|halftime|final|postponed", "data.updated_at: must be an RFC 3339 timestamp",
/// "data.time_remaining: must be MM:SS", "data.moneyline_home: must be an integer with |v| >= 100",
/// "data.home_win_probability: ...", "data.home_win_probability + data.away_win_probability: must sum to 1 (±0.001)", "data.level: must be one of info|warning|error", "event_type: ..." etc.
/// Missing required field → "data.FIELD: required".
pub fn validate_payload(event_type: &str, data: &Map<String, Value>) -> Result<(), String> {
    if !is_valid_event_type(event_type) {
        return Err(format!(
            "event_type: {} must match [a-z][a-z0-9_]{{0,63}}",
            quoted(event_type, MAX_EVENT_TYPE_LEN)
        ));
    }
    if SERVER_ONLY_EVENTS.contains(&event_type) {
        return Err(format!(
            "event_type: {event_type} is reserved for the server and cannot be published"
        ));
    }
    let d = Fields(data);
    match event_type {
        "game_update" => {
            d.game_id()?;
            d.string("home_team")?;
            d.string("away_team")?;
            d.int("home_score", "must be an integer >= 0", |v| v >= 0)?;
            d.int("away_score", "must be an integer >= 0", |v| v >= 0)?;
            d.int("quarter", "must be an integer 0-5", |v| {
                (0..=5).contains(&v)
            })?;
            d.check("time_remaining", "must be MM:SS", |v| {
                v.as_str().is_some_and(is_mm_ss)
            })?;
            d.check(
                "game_status",
                "must be one of scheduled|in_progress|halftime|final|postponed",
                |v| {
                    matches!(
                        v.as_str(),
                        Some("scheduled" | "in_progress" | "halftime" | "final" | "postponed")
                    )
                },
            )?;
            d.updated_at()
        }
        "odds_update" => {
            d.game_id()?;
            d.string("sportsbook")?;
            d.string("home_team")?;
            d.string("away_team")?;
            d.number("spread", "must be a number", |_| true)?;
            let american = |v: i128| v.unsigned_abs() >= 100;
            d.int(
                "moneyline_home",
                "must be an integer with |v| >= 100",
                american,
            )?;
            d.int(
                "moneyline_away",
                "must be an integer with |v| >= 100",
                american,
            )?;
            d.number("over_under", "must be a number > 0", |v| v > 0.0)?;
            d.updated_at()
        }
        "prediction_update" => {
            d.game_id()?;
            d.string("home_team")?;
            d.string("away_team")?;
            let unit = |v: f64| (0.0..=1.0).contains(&v);
            let home = d.number("home_win_probability", "must be a number in [0, 1]", unit)?;
            let away = d.number("away_win_probability", "must be a number in [0, 1]", unit)?;
            if (home + away - 1.0).abs() > 0.001 + 1e-9 {
                return Err(
                    "data.home_win_probability + data.away_win_probability: must sum to 1 (±0.001)"
                        .into(),
                );
            }
            d.number("predicted_spread", "must be a number", |_| true)?;
            d.number("confidence_level", "must be a number in [0, 1]", unit)?;
            d.string("model_version")?;
            d.updated_at()
        }
        "notification" => {
            d.string("message")?;
            d.check("level", "must be one of info|warning|error", |v| {
                matches!(v.as_str(), Some("info" | "warning" | "error"))
            })?;
            if let Some(title) = data.get("title") {
                if !matches!(title, Value::String(_) | Value::Null) {
                    return Err("data.title: must be a string".into());
                }
            }
            if let Some(flag) = data.get("action_required") {
                if !flag.is_boolean() {
                    return Err("data.action_required: must be a boolean".into());
                }
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

/// Field-by-field checks over a payload, producing "data.FIELD: …" messages.
struct Fields<'a>(&'a Map<String, Value>);

impl Fields<'_> {
    /// The field, or "data.NAME: required".
    fn get(&self, name: &str) -> Result<&Value, String> {
        self.0
            .get(name)
            .ok_or_else(|| format!("data.{name}: required"))
    }

    /// The field must exist and satisfy `ok`, else "data.NAME: RULE".
    fn check(&self, name: &str, rule: &str, ok: impl Fn(&Value) -> bool) -> Result<(), String> {
        if ok(self.get(name)?) {
            Ok(())
        } else {
            Err(format!("data.{name}: {rule}"))
        }
    }

    /// A required string.
    fn string(&self, name: &str) -> Result<(), String> {
        self.check(name, "must be a string", Value::is_string)
    }

    /// `game_id`: a required non-empty string (it names the default channels).
    fn game_id(&self) -> Result<(), String> {
        self.check("game_id", "must be a non-empty string", |v| {
            v.as_str().is_some_and(|s| !s.is_empty())
        })
    }

    /// `updated_at`: a required RFC 3339 timestamp.
    fn updated_at(&self) -> Result<(), String> {
        self.check("updated_at", "must be an RFC 3339 timestamp", |v| {
            v.as_str().is_some_and(is_rfc3339)
        })
    }

    /// A required JSON integer (no fraction or exponent) satisfying `ok`.
    fn int(&self, name: &str, rule: &str, ok: impl Fn(i128) -> bool) -> Result<(), String> {
        self.check(name, rule, |v| match v {
            Value::Number(n) => as_int(n).is_some_and(&ok),
            _ => false,
        })
    }

    /// A required JSON number (integer or float) satisfying `ok`; returns its value.
    fn number(&self, name: &str, rule: &str, ok: impl Fn(f64) -> bool) -> Result<f64, String> {
        match self.get(name)?.as_f64() {
            Some(v) if v.is_finite() && ok(v) => Ok(v),
            _ => Err(format!("data.{name}: {rule}")),
        }
    }
}

/// `MM:SS`: two digits, a colon, two digits with seconds 00–59.
fn is_mm_ss(s: &str) -> bool {
    matches!(
        s.as_bytes(),
        [b'0'..=b'9', b'0'..=b'9', b':', b'0'..=b'5', b'0'..=b'9']
    )
}

/// Strict RFC 3339 `date-time`: `YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM)`, calendar-checked.
pub(super) fn is_rfc3339(s: &str) -> bool {
    let b = s.as_bytes();
    let num = |from: usize, to: usize| -> Option<u32> {
        b.get(from..to)?.iter().try_fold(0u32, |acc, &c| {
            c.is_ascii_digit().then(|| acc * 10 + u32::from(c - b'0'))
        })
    };
    let fields = (
        num(0, 4),
        num(5, 7),
        num(8, 10),
        num(11, 13),
        num(14, 16),
        num(17, 19),
    );
    let (Some(year), Some(month), Some(day), Some(hour), Some(minute), Some(second)) = fields
    else {
        return false;
    };
    let separators = (b.get(4), b.get(7), b.get(10), b.get(13), b.get(16));
    if !matches!(
        separators,
        (
            Some(b'-'),
            Some(b'-'),
            Some(b'T' | b't'),
            Some(b':'),
            Some(b':')
        )
    ) {
        return false;
    }
    if !(1..=12).contains(&month)
        || day == 0
        || day > days_in_month(year, month)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return false;
    }
    let mut rest = b.get(19..).unwrap_or_default();
    if let [b'.', tail @ ..] = rest {
        let digits = tail.iter().take_while(|c| c.is_ascii_digit()).count();
        if digits == 0 {
            return false;
        }
        rest = tail.get(digits..).unwrap_or_default();
    }
    match rest {
        [b'Z' | b'z'] => true,
        [b'+' | b'-', h1, h2, b':', m1, m2] => {
            let digit = |c: &u8| c.is_ascii_digit().then(|| u32::from(c - b'0'));
            match (digit(h1), digit(h2), digit(m1), digit(m2)) {
                (Some(a), Some(b), Some(c), Some(d)) => a * 10 + b <= 23 && c * 10 + d <= 59,
                _ => false,
            }
        }
        _ => false,
    }
}

/// Days in `month` (1–12) of `year` in the proleptic Gregorian calendar.
fn days_in_month(year: u32, month: u32) -> u32 {
    match month {
        2 if year.is_multiple_of(4) && (!year.is_multiple_of(100) || year.is_multiple_of(400)) => {
            29
        }
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::tests::{game, notification, obj, odds, prediction};
    use serde_json::json;

    /// Validates `base` with `field` replaced (`None` = removed).
    fn check_with(
        event: &str,
        base: &Value,
        field: &str,
        value: Option<Value>,
    ) -> Result<(), String> {
        let mut data = obj(base.clone());
        match value {
            Some(v) => {
                data.insert(field.to_owned(), v);
            }
            None => {
                data.remove(field);
            }
        }
        validate_payload(event, &data)
    }

    /// Asserts the good values pass and the bad ones fail with "data.FIELD: ", and absence → required.
    fn rule(event: &str, base: &Value, field: &str, good: &[Value], bad: &[Value]) {
        for g in good {
            assert_eq!(
                check_with(event, base, field, Some(g.clone())),
                Ok(()),
                "{event}.{field} = {g} should pass"
            );
        }
        let prefix = format!("data.{field}: ");
        for b in bad {
            let err = check_with(event, base, field, Some(b.clone())).unwrap_err();
            assert!(
                err.starts_with(&prefix),
                "{event}.{field} = {b}: got {err:?}"
            );
        }
        assert_eq!(
            check_with(event, base, field, None),
            Err(format!("data.{field}: required"))
        );
    }

    #[test]
    fn typed_examples_pass() {
        assert_eq!(validate_payload("game_update", &obj(game())), Ok(()));
        assert_eq!(validate_payload("odds_update", &obj(odds())), Ok(()));
        assert_eq!(
            validate_payload("prediction_update", &obj(prediction())),
            Ok(())
        );
        assert_eq!(
            validate_payload("notification", &obj(notification())),
            Ok(())
        );
        assert_eq!(validate_payload("my_custom_event", &Map::new()), Ok(()));
    }

    #[test]
    fn game_update_rules() {
        let g = game();
        let e = "game_update";
        rule(
            e,
            &g,
            "game_id",
            &[json!("7"), json!("2026_W12")],
            &[json!(""), json!(7), json!(null)],
        );
        rule(
            e,
            &g,
            "home_team",
            &[json!("KC")],
            &[json!(1), json!(null), json!(["KC"])],
        );
        rule(e, &g, "away_team", &[json!("BUF")], &[json!(true)]);
        rule(
            e,
            &g,
            "home_score",
            &[json!(0), json!(45)],
            &[json!(-1), json!(1.5), json!(3.0), json!("3")],
        );
        rule(e, &g, "away_score", &[json!(0)], &[json!(-7), json!(null)]);
        rule(
            e,
            &g,
            "quarter",
            &[json!(0), json!(5)],
            &[json!(6), json!(-1), json!(2.5)],
        );
        rule(
            e,
            &g,
            "time_remaining",
            &[json!("15:00"), json!("00:00"), json!("99:59")],
            &[
                json!("2:05"),
                json!("02:60"),
                json!("02-05"),
                json!("02:05 "),
                json!(125),
            ],
        );
        rule(
            e,
            &g,
            "game_status",
            &["scheduled", "in_progress", "halftime", "final", "postponed"].map(|s| json!(s)),
            &[json!("live"), json!("Final"), json!(1)],
        );
        rule(
            e,
            &g,
            "updated_at",
            &[
                json!("2026-11-25T18:04:05Z"),
                json!("2026-11-25T18:04:05.123Z"),
                json!("2026-11-25T18:04:05+01:00"),
                json!("2026-11-25T18:04:05.123456-05:30"),
                json!("2024-02-29t23:59:60z"),
            ],
            &[
                json!("2026-11-25T18:04:05"),
                json!("2026-11-25 18:04:05Z"),
                json!("2026-02-29T18:04:05Z"),
                json!("2026-13-01T00:00:00Z"),
                json!("2026-11-25T24:00:00Z"),
                json!("2026-11-25T18:04:05.Z"),
                json!("2026-11-25T18:04:05+1:00"),
                json!("2026-11-25T18:04:05+24:00"),
                json!("2026-11-25"),
                json!("yesterday"),
                json!(1_764_093_845),
            ],
        );
        assert_eq!(
            check_with(e, &g, "home_score", Some(json!(-1))),
            Err("data.home_score: must be an integer >= 0".into())
        );
        assert_eq!(
            check_with(e, &g, "quarter", Some(json!(9))),
            Err("data.quarter: must be an integer 0-5".into())
        );
        assert_eq!(
            check_with(e, &g, "game_status", Some(json!("x"))),
            Err(
                "data.game_status: must be one of scheduled|in_progress|halftime|final|postponed"
                    .into()
            )
        );
        assert_eq!(
            check_with(e, &g, "updated_at", Some(json!("x"))),
            Err("data.updated_at: must be an RFC 3339 timestamp".into())
        );
        assert_eq!(
            check_with(e, &g, "time_remaining", Some(json!("x"))),
            Err("data.time_remaining: must be MM:SS".into())
        );
    }

    #[test]
    fn odds_update_rules() {
        let o = odds();
        let e = "odds_update";
        rule(e, &o, "game_id", &[json!("7")], &[json!(""), json!(7)]);
        rule(e, &o, "sportsbook", &[json!("draftkings")], &[json!(1)]);
        rule(e, &o, "home_team", &[json!("KC")], &[json!(null)]);
        rule(e, &o, "away_team", &[json!("BUF")], &[json!({})]);
        rule(
            e,
            &o,
            "spread",
            &[json!(-3.5), json!(0), json!(7)],
            &[json!("-3.5"), json!(null)],
        );
        rule(
            e,
            &o,
            "moneyline_home",
            &[json!(-150), json!(100), json!(-100), json!(250)],
            &[
                json!(99),
                json!(-99),
                json!(0),
                json!(150.5),
                json!(-150.0),
                json!("-150"),
            ],
        );
        rule(e, &o, "moneyline_away", &[json!(130)], &[json!(50)]);
        rule(
            e,
            &o,
            "over_under",
            &[json!(47.5), json!(40)],
            &[json!(0), json!(-1.5), json!("47")],
        );
        rule(
            e,
            &o,
            "updated_at",
            &[json!("2026-11-25T18:04:05Z")],
            &[json!("nope")],
        );
        assert_eq!(
            check_with(e, &o, "moneyline_home", Some(json!(5))),
            Err("data.moneyline_home: must be an integer with |v| >= 100".into())
        );
        // i64::MIN must not overflow the |v| computation.
        assert_eq!(
            check_with(e, &o, "moneyline_home", Some(json!(i64::MIN))),
            Ok(())
        );
    }

    #[test]
    fn prediction_update_rules() {
        let p = prediction();
        let e = "prediction_update";
        rule(e, &p, "game_id", &[json!("7")], &[json!([])]);
        rule(e, &p, "home_team", &[json!("KC")], &[json!(0)]);
        rule(e, &p, "away_team", &[json!("BUF")], &[json!(0)]);
        // Changing one probability alone breaks the sum, so test the range with its partner adjusted.
        let mut both = obj(p.clone());
        both.insert("home_win_probability".into(), json!(1));
        both.insert("away_win_probability".into(), json!(0));
        assert_eq!(validate_payload(e, &both), Ok(()));
        rule(
            e,
            &p,
            "home_win_probability",
            &[json!(0.6205)],
            &[json!(1.5), json!(-0.1), json!("0.6")],
        );
        rule(
            e,
            &p,
            "away_win_probability",
            &[json!(0.379)],
            &[json!(2), json!(null)],
        );
        let sum = "data.home_win_probability + data.away_win_probability: must sum to 1 (±0.001)";
        assert_eq!(
            check_with(e, &p, "away_win_probability", Some(json!(0.3))),
            Err(sum.into())
        );
        assert_eq!(
            check_with(e, &p, "away_win_probability", Some(json!(0.381))),
            Ok(())
        );
        assert_eq!(
            check_with(e, &p, "away_win_probability", Some(json!(0.3785))),
            Err(sum.into())
        );
        rule(
            e,
            &p,
            "predicted_spread",
            &[json!(-3.5), json!(0)],
            &[json!("x")],
        );
        rule(
            e,
            &p,
            "confidence_level",
            &[json!(0), json!(1), json!(0.5)],
            &[json!(1.01), json!(-0.5)],
        );
        rule(e, &p, "model_version", &[json!("v3")], &[json!(3)]);
        rule(
            e,
            &p,
            "updated_at",
            &[json!("2026-11-25T18:04:05-08:00")],
            &[json!("2026-11-25")],
        );
        assert_eq!(
            check_with(e, &p, "confidence_level", Some(json!(2))),
            Err("data.confidence_level: must be a number in [0, 1]".into())
        );
    }

    #[test]
    fn notification_rules() {
        let n = notification();
        let e = "notification";
        rule(
            e,
            &n,
            "message",
            &[json!(""), json!("hi")],
            &[json!(1), json!(null)],
        );
        rule(
            e,
            &n,
            "level",
            &[json!("info"), json!("warning"), json!("error")],
            &[json!("debug"), json!("INFO")],
        );
        assert_eq!(
            check_with(e, &n, "level", Some(json!("fatal"))),
            Err("data.level: must be one of info|warning|error".into())
        );
        // Optional fields: absent or valid pass; wrong types fail.
        assert_eq!(check_with(e, &n, "title", None), Ok(()));
        assert_eq!(check_with(e, &n, "title", Some(json!(null))), Ok(()));
        assert_eq!(
            check_with(e, &n, "title", Some(json!(5))),
            Err("data.title: must be a string".into())
        );
        assert_eq!(check_with(e, &n, "action_required", None), Ok(()));
        assert_eq!(
            check_with(e, &n, "action_required", Some(json!(true))),
            Ok(())
        );
        assert_eq!(
            check_with(e, &n, "action_required", Some(json!("yes"))),
            Err("data.action_required: must be a boolean".into())
        );
    }

    #[test]
    fn event_type_rules() {
        let err = validate_payload("Bad-Type", &Map::new()).unwrap_err();
        assert!(err.starts_with("event_type: "), "{err}");
        for reserved in SERVER_ONLY_EVENTS {
            let err = validate_payload(reserved, &Map::new()).unwrap_err();
            assert!(
                err.starts_with("event_type: ") && err.contains("reserved"),
                "{err}"
            );
        }
        // Custom events: anything goes inside the object.
        assert_eq!(
            validate_payload("bets_settled", &obj(json!({"x":[1,{"y":null}]}))),
            Ok(())
        );
    }
}
