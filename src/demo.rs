//! The demo feed of `huddle serve --demo` (PROTOCOL.md §14): simulated NFL games, sportsbook
//! odds and model predictions, as the publish bodies a real publisher would send.
//!
//! Sans-IO and deterministic: [`Demo::step`] advances the simulation by one step and returns
//! that step's publishes; the same seed gives the same messages, whatever the machine or the
//! wall clock (`updated_at` is the simulation's own clock, from a fixed kickoff time). The
//! server feeds them through the ordinary publish path, so every one is validated (§3) and
//! sequenced like any other.
//!
//! Invariants: a game's scores never decrease; its quarter only moves forward (1–4, 5 for
//! overtime) and it ends `final`; home and away win probabilities sum to exactly 1; American
//! odds are at least 100 in magnitude.

use serde_json::{json, Value};

/// Teams the weekly schedule is drawn from.
const TEAMS: [&str; 16] = [
    "Kansas City Chiefs",
    "Buffalo Bills",
    "Baltimore Ravens",
    "Cincinnati Bengals",
    "San Francisco 49ers",
    "Dallas Cowboys",
    "Philadelphia Eagles",
    "Detroit Lions",
    "Miami Dolphins",
    "Green Bay Packers",
    "Los Angeles Rams",
    "Seattle Seahawks",
    "Houston Texans",
    "Jacksonville Jaguars",
    "New York Jets",
    "Pittsburgh Steelers",
];

const BOOKS: [&str; 4] = ["fanduel", "draftkings", "betmgm", "caesars"];
const GAMES_PER_WEEK: usize = 4;
const QUARTER_SECS: i64 = 900;
/// Simulated game seconds per step (on average; each step draws 20–40).
const STEP_SECS: i64 = 30;
/// Chance that a team scores in one step of [`STEP_SECS`] (before its edge).
const SCORE_CHANCE: f64 = 0.035;
/// Steps between the last final whistle of a week and the next week's kickoffs.
const WEEK_BREAK: u32 = 6;
/// The simulation clock's start: Sunday 2026-11-29 18:00:00 UTC, in Unix seconds.
const KICKOFF_UNIX: i64 = 1_795_975_200;
const MODEL: &str = "huddle-demo-1";

/// splitmix64: a tiny PRNG whose sequence is fixed forever (unlike library RNGs across versions).
#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in `lo..=hi`.
    fn range(&mut self, lo: i64, hi: i64) -> i64 {
        lo + (self.next_u64() % (hi - lo + 1) as u64) as i64
    }

    fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    Scheduled,
    InProgress,
    Halftime,
    Final,
}

impl Status {
    fn as_str(self) -> &'static str {
        match self {
            Status::Scheduled => "scheduled",
            Status::InProgress => "in_progress",
            Status::Halftime => "halftime",
            Status::Final => "final",
        }
    }
}

/// One sportsbook's line on a game.
#[derive(Debug, Clone)]
struct Line {
    /// Points the home team is favoured by, negative when it is the favourite (as books show it).
    spread: f64,
    over_under: f64,
    /// The book's own lean, in win probability.
    lean: f64,
}

#[derive(Debug, Clone)]
struct Game {
    id: String,
    home: &'static str,
    away: &'static str,
    home_score: i64,
    away_score: i64,
    quarter: i64,
    clock: i64,
    status: Status,
    /// The home team's pregame edge, in points.
    edge: f64,
    lines: Vec<Line>,
    /// Steps to wait before kickoff.
    kickoff_in: u32,
}

/// The feed: this week's games and the simulation clock.
#[derive(Debug, Clone)]
pub struct Demo {
    rng: Rng,
    week: u32,
    games: Vec<Game>,
    steps: u64,
    /// Steps left in the break after a week's last final.
    resting: u32,
}

impl Demo {
    pub fn new(seed: u64) -> Demo {
        let mut d = Demo {
            rng: Rng(seed),
            week: 12,
            games: Vec::new(),
            steps: 0,
            resting: 0,
        };
        d.schedule();
        d
    }

    /// This week's matchups, drawn from the teams without repeats.
    fn schedule(&mut self) {
        let mut teams: Vec<&'static str> = TEAMS.to_vec();
        for i in (1..teams.len()).rev() {
            let j = self.rng.range(0, i as i64) as usize;
            teams.swap(i, j);
        }
        self.games = (0..GAMES_PER_WEEK)
            .map(|g| {
                let (home, away) = (teams[2 * g], teams[2 * g + 1]);
                let edge = (self.rng.unit() * 14.0 - 7.0 + 1.5).clamp(-10.0, 10.0);
                let total = 38.0 + (self.rng.unit() * 16.0).round();
                let lines = BOOKS
                    .iter()
                    .map(|_| Line {
                        spread: half(-edge + (self.rng.unit() - 0.5)),
                        over_under: total + half(self.rng.unit() - 0.5),
                        lean: (self.rng.unit() - 0.5) * 0.04,
                    })
                    .collect();
                Game {
                    id: format!("2026_W{}_{}_{}", self.week, short(away), short(home)),
                    home,
                    away,
                    home_score: 0,
                    away_score: 0,
                    quarter: 0,
                    clock: QUARTER_SECS,
                    status: Status::Scheduled,
                    edge,
                    lines,
                    kickoff_in: self.rng.range(1, 4) as u32,
                }
            })
            .collect();
    }

    /// The simulation clock as RFC 3339 UTC with milliseconds.
    fn now(&self) -> String {
        let t = KICKOFF_UNIX + self.steps as i64 * STEP_SECS;
        let (days, secs) = (t.div_euclid(86_400), t.rem_euclid(86_400));
        let (y, m, d) = civil_from_days(days);
        format!(
            "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.000Z",
            secs / 3600,
            secs % 3600 / 60,
            secs % 60
        )
    }

    /// One step: every game moves on, and the publishes it makes (publish bodies: `event_type`,
    /// `data`, and `channel` for notifications; typed events are routed by `game_id`).
    pub fn step(&mut self) -> Vec<Value> {
        self.steps += 1;
        let at = self.now();
        let mut out = Vec::new();
        if self.resting > 0 {
            self.resting -= 1;
            if self.resting == 0 {
                self.week += 1;
                self.schedule();
                out.push(notification(
                    &format!("Week {} kicks off soon", self.week),
                    "info",
                    "New week",
                ));
            }
            return out;
        }
        for i in 0..self.games.len() {
            self.advance(i, &at, &mut out);
        }
        if self.games.iter().all(|g| g.status == Status::Final) {
            self.resting = WEEK_BREAK;
        }
        out
    }

    fn advance(&mut self, i: usize, at: &str, out: &mut Vec<Value>) {
        let rng = &mut self.rng;
        let g = &mut self.games[i];
        let before = (g.home_score, g.away_score);
        match g.status {
            Status::Final => return,
            Status::Scheduled => {
                g.kickoff_in = g.kickoff_in.saturating_sub(1);
                if g.kickoff_in > 0 {
                    return;
                }
                g.status = Status::InProgress;
                g.quarter = 1;
                out.push(notification(
                    &format!("{} at {} has kicked off", g.away, g.home),
                    "info",
                    "Kickoff",
                ));
            }
            Status::Halftime => {
                g.status = Status::InProgress;
                g.quarter = 3;
                g.clock = QUARTER_SECS;
            }
            Status::InProgress => {
                g.clock -= rng.range(STEP_SECS - 10, STEP_SECS + 10);
                // A drive ends in points now and then (about four scores a team a game, as in
                // the NFL); the better team a little more often.
                let home_edge = g.edge / 800.0;
                for home in [true, false] {
                    let p = SCORE_CHANCE + if home { home_edge } else { -home_edge };
                    if rng.chance(p.max(0.01)) {
                        let pts = match rng.range(0, 9) {
                            0..=3 => 3,
                            4 => 6,
                            5 => 8,
                            _ => 7,
                        };
                        if home {
                            g.home_score += pts;
                        } else {
                            g.away_score += pts;
                        }
                    }
                }
                if g.quarter == 5 && g.home_score != g.away_score {
                    // Overtime: the first score wins.
                    g.clock = 0;
                    g.status = Status::Final;
                } else if g.clock <= 0 {
                    g.clock = 0;
                    match g.quarter {
                        2 => g.status = Status::Halftime,
                        4 if g.home_score == g.away_score => {
                            g.quarter = 5;
                            g.clock = 600;
                        }
                        1 | 3 => {
                            g.quarter += 1;
                            g.clock = QUARTER_SECS;
                        }
                        _ => g.status = Status::Final,
                    }
                }
            }
        }
        let scored = (g.home_score, g.away_score) != before;
        let done = g.status == Status::Final;
        out.push(game_update(g, at));
        let p_home = win_probability(g);
        let margin = expected_margin(g);
        for (b, book) in BOOKS.iter().enumerate() {
            // Every book moves on a score; otherwise some drift a little.
            if scored || done || self.rng.chance(0.4) {
                let drift = (self.rng.unit() - 0.5) * 0.5;
                let nudge = self.rng.chance(0.3).then(|| half(self.rng.unit() - 0.5));
                let line = &mut self.games[i].lines[b];
                line.spread = half(-margin + drift);
                if let Some(n) = nudge {
                    line.over_under = (line.over_under + n).max(20.5);
                }
                let p = (p_home + line.lean).clamp(0.01, 0.99);
                out.push(odds_update(&self.games[i], b, book, p, at));
            }
        }
        out.push(prediction_update(&self.games[i], p_home, at));
        let g = &self.games[i];
        if scored && (g.home_score - g.away_score).abs() >= 21 {
            out.push(notification(
                &format!(
                    "{} {}, {} {}: a blowout",
                    g.home, g.home_score, g.away, g.away_score
                ),
                "info",
                "Score alert",
            ));
        }
        if g.status == Status::Final {
            out.push(notification(
                &format!(
                    "Final: {} {}, {} {}",
                    g.away, g.away_score, g.home, g.home_score
                ),
                "info",
                "Final",
            ));
        }
    }
}

/// Seconds of play left, 0 at the end of regulation (overtime counts as its clock).
fn seconds_left(g: &Game) -> f64 {
    match (g.status, g.quarter) {
        (Status::Final, _) => 0.0,
        (_, 0) => 4.0 * QUARTER_SECS as f64,
        (_, 5) => g.clock as f64,
        (Status::Halftime, _) => 2.0 * QUARTER_SECS as f64,
        (_, q) => ((4 - q) * QUARTER_SECS + g.clock) as f64,
    }
}

/// The home team's expected final margin: the lead plus what is left of the pregame edge.
fn expected_margin(g: &Game) -> f64 {
    let frac = seconds_left(g) / (4.0 * QUARTER_SECS as f64);
    (g.home_score - g.away_score) as f64 + g.edge * frac
}

/// The home team's win probability: a normal model of the remaining margin (σ ≈ 13.5 points
/// over a whole game), decided once the game is final.
fn win_probability(g: &Game) -> f64 {
    if g.status == Status::Final {
        return match g.home_score.cmp(&g.away_score) {
            std::cmp::Ordering::Greater => 1.0,
            std::cmp::Ordering::Less => 0.0,
            std::cmp::Ordering::Equal => 0.5,
        };
    }
    let frac = seconds_left(g) / (4.0 * QUARTER_SECS as f64);
    let sigma = 13.5 * frac.max(0.002).sqrt();
    normal_cdf(expected_margin(g) / sigma).clamp(0.0, 1.0)
}

/// Φ(x) by the Abramowitz–Stegun 7.1.26 approximation of erf (error < 1.5e-7).
fn normal_cdf(x: f64) -> f64 {
    let z = x / std::f64::consts::SQRT_2;
    let t = 1.0 / (1.0 + 0.327_591_1 * z.abs());
    let poly = t
        * (0.254_829_592
            + t * (-0.284_496_736
                + t * (1.421_413_741 + t * (-1.453_152_027 + t * 1.061_405_429))));
    let erf = 1.0 - poly * (-z * z).exp();
    0.5 * (1.0 + if z >= 0.0 { erf } else { -erf })
}

/// American odds for a win probability: −(100·p/(1−p)) for a favourite, +100·(1−p)/p for an
/// underdog, at least 100 in magnitude.
fn american(p: f64) -> i64 {
    let p = p.clamp(0.01, 0.99);
    if p >= 0.5 {
        -((100.0 * p / (1.0 - p)).round() as i64).max(100)
    } else {
        ((100.0 * (1.0 - p) / p).round() as i64).max(100)
    }
}

fn half(x: f64) -> f64 {
    (x * 2.0).round() / 2.0
}

/// The team's last word, upper-cased to three letters (`Chiefs` → `CHI`), for game ids.
fn short(team: &str) -> String {
    let word = team.rsplit(' ').next().unwrap_or(team);
    word.chars()
        .filter(char::is_ascii_alphanumeric)
        .take(3)
        .collect::<String>()
        .to_ascii_uppercase()
}

fn clock_text(secs: i64) -> String {
    format!("{:02}:{:02}", secs / 60, secs % 60)
}

fn game_update(g: &Game, at: &str) -> Value {
    json!({"event_type": "game_update", "data": {
        "game_id": g.id, "home_team": g.home, "away_team": g.away,
        "home_score": g.home_score, "away_score": g.away_score,
        "quarter": g.quarter, "time_remaining": clock_text(g.clock),
        "game_status": g.status.as_str(), "updated_at": at,
    }})
}

fn odds_update(g: &Game, b: usize, book: &str, p_home: f64, at: &str) -> Value {
    let line = &g.lines[b];
    json!({"event_type": "odds_update", "data": {
        "game_id": g.id, "sportsbook": book, "home_team": g.home, "away_team": g.away,
        "spread": line.spread,
        "moneyline_home": american(p_home), "moneyline_away": american(1.0 - p_home),
        "over_under": line.over_under, "updated_at": at,
    }})
}

fn prediction_update(g: &Game, p_home: f64, at: &str) -> Value {
    let frac = seconds_left(g) / (4.0 * QUARTER_SECS as f64);
    let p_home = (p_home * 10_000.0).round() / 10_000.0;
    json!({"event_type": "prediction_update", "data": {
        "game_id": g.id, "home_team": g.home, "away_team": g.away,
        "home_win_probability": p_home, "away_win_probability": 1.0 - p_home,
        "predicted_spread": half(-expected_margin(g)),
        "confidence_level": ((1.0 - frac) * 0.9 + 0.1).clamp(0.0, 1.0),
        "model_version": MODEL, "updated_at": at,
    }})
}

fn notification(message: &str, level: &str, title: &str) -> Value {
    json!({"event_type": "notification", "channel": "games", "data": {
        "message": message, "level": level, "title": title, "action_required": false,
    }})
}

/// (year, month, day) of a day count since 1970-01-01 (Howard Hinnant's civil_from_days).
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::protocol::PublishRequest;

    fn messages(seed: u64, n: usize) -> Vec<Value> {
        let mut d = Demo::new(seed);
        let mut out = Vec::new();
        while out.len() < n {
            out.extend(d.step());
        }
        out.truncate(n);
        out
    }

    #[test]
    fn every_message_passes_publish_validation() {
        for seed in [0, 1, 7, 42, u64::MAX] {
            for m in messages(seed, 5_000) {
                let req = PublishRequest::from_value(m.clone());
                assert!(req.is_ok(), "seed {seed}: {m}: {:?}", req.err());
            }
        }
    }

    #[test]
    fn the_same_seed_gives_the_same_first_thousand_messages() {
        assert_eq!(messages(7, 1_000), messages(7, 1_000));
        assert_ne!(messages(7, 1_000), messages(8, 1_000));
    }

    #[test]
    fn probabilities_sum_to_one_and_scores_never_decrease() {
        let mut scores: HashMap<String, (i64, i64, i64)> = HashMap::new();
        let mut finals = 0;
        for m in messages(3, 20_000) {
            let d = &m["data"];
            match m["event_type"].as_str() {
                Some("prediction_update") => {
                    let (h, a) = (
                        d["home_win_probability"].as_f64().unwrap(),
                        d["away_win_probability"].as_f64().unwrap(),
                    );
                    assert!((0.0..=1.0).contains(&h) && (0.0..=1.0).contains(&a), "{m}");
                    assert!((h + a - 1.0).abs() < 1e-9, "{m}");
                }
                Some("game_update") => {
                    let id = d["game_id"].as_str().unwrap().to_owned();
                    let now = (
                        d["home_score"].as_i64().unwrap(),
                        d["away_score"].as_i64().unwrap(),
                        d["quarter"].as_i64().unwrap(),
                    );
                    if let Some(prev) = scores.get(&id) {
                        assert!(now.0 >= prev.0 && now.1 >= prev.1, "scores fell: {m}");
                        assert!(now.2 >= prev.2, "quarter went back: {m}");
                    }
                    if d["game_status"] == "final" {
                        finals += 1;
                    }
                    scores.insert(id, now);
                }
                Some("odds_update") => {
                    for k in ["moneyline_home", "moneyline_away"] {
                        assert!(d[k].as_i64().unwrap().abs() >= 100, "{m}");
                    }
                }
                _ => {}
            }
        }
        assert!(finals >= GAMES_PER_WEEK, "games reach their final whistle");
        assert!(scores.len() > GAMES_PER_WEEK, "a new week brings new games");
    }

    #[test]
    fn final_scores_look_like_football() {
        let mut finals: HashMap<String, (i64, i64)> = HashMap::new();
        for seed in [1, 2, 3, 4, 5] {
            for m in messages(seed, 20_000) {
                let d = &m["data"];
                if m["event_type"] == "game_update" && d["game_status"] == "final" {
                    let id = format!("{seed}/{}", d["game_id"].as_str().unwrap());
                    let score = (
                        d["home_score"].as_i64().unwrap(),
                        d["away_score"].as_i64().unwrap(),
                    );
                    finals.insert(id, score);
                }
            }
        }
        assert!(finals.len() >= 20, "{} finals", finals.len());
        let points: Vec<i64> = finals.values().flat_map(|&(h, a)| [h, a]).collect();
        let mean = points.iter().sum::<i64>() as f64 / points.len() as f64;
        assert!(
            (12.0..=32.0).contains(&mean),
            "mean score {mean}: {finals:?}"
        );
        assert!(points.iter().all(|&p| p <= 70), "{finals:?}");
        assert!(finals.values().all(|(h, a)| h != a), "no game ends tied");
    }

    #[test]
    fn the_clock_reads_as_rfc3339() {
        let d = Demo::new(0);
        assert_eq!(d.now(), "2026-11-29T18:00:00.000Z");
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(american(0.5), -100);
        assert_eq!(american(0.75), -300);
        assert_eq!(american(0.25), 300);
        assert!((normal_cdf(0.0) - 0.5).abs() < 1e-7);
        assert!((normal_cdf(1.96) - 0.975).abs() < 1e-3);
    }
}
