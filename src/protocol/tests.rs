//! Fixtures shared by the protocol's unit tests (valid payloads of the typed events), and the
//! tests that cut across its files.

use serde_json::{json, Map, Value};

use super::{parse_client_message, DirectMessage, PublishRequest};

pub(super) fn obj(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => panic!("test value is not an object"),
    }
}

pub(super) fn game() -> Value {
    json!({"game_id":"7","home_team":"KC","away_team":"BUF","home_score":21,"away_score":17,
           "quarter":4,"time_remaining":"02:05","game_status":"in_progress",
           "updated_at":"2026-11-25T18:04:05Z","extra":{"any":"thing"}})
}

pub(super) fn odds() -> Value {
    json!({"game_id":"7","sportsbook":"fanduel","home_team":"KC","away_team":"BUF",
           "spread":-3.5,"moneyline_home":-150,"moneyline_away":130,"over_under":47.5,
           "updated_at":"2026-11-25T18:04:05.123Z"})
}

pub(super) fn prediction() -> Value {
    json!({"game_id":"7","home_team":"KC","away_team":"BUF","home_win_probability":0.62,
           "away_win_probability":0.38,"predicted_spread":-3,"confidence_level":0.8,
           "model_version":"v2.1","updated_at":"2026-11-25T18:04:05+01:00"})
}

pub(super) fn notification() -> Value {
    json!({"message":"Kickoff soon","level":"info","title":"Heads up","action_required":false})
}

/// Deterministic xorshift so the mutation test is reproducible.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

#[test]
fn mutated_input_never_panics() {
    let seeds: Vec<Vec<u8>> = vec![
        br#"{"event_type":"user_subscription","message_id":"c1","data":{"channels":["odds",{"channel":"games","filter":{"game_id":[7,"7",7.0]}}],"filter":{"sportsbook":"fanduel"}}}"#.to_vec(),
        br#"{"event_type":"heartbeat","message_id":"h"}"#.to_vec(),
        json!({"event_type":"publish","message_id":"p","data":{"event_type":"prediction_update","data":prediction()}}).to_string().into_bytes(),
        json!({"channels":["odds","odds_7"],"event_type":"odds_update","data":odds(),"message_id":"m"}).to_string().into_bytes(),
        json!({"event_type":"game_update","data":game()}).to_string().into_bytes(),
        json!({"user_id":"u1","event_type":"notification","data":notification(),"channel":"bankroll"}).to_string().into_bytes(),
    ];
    let specials: &[u8] = b"{}[]\":,\\ 0-1.eE\xff\xc3\x00tfnu";
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut outcomes = [0usize; 2];
    for round in 0..800 {
        let mut bytes = seeds[round % seeds.len()].clone();
        match round % 5 {
            0 => bytes.truncate(rng.below(bytes.len() + 1)),
            1 => {
                for _ in 0..1 + rng.below(4) {
                    let i = rng.below(bytes.len());
                    bytes[i] = specials[rng.below(specials.len())];
                }
            }
            2 => {
                let i = rng.below(bytes.len() + 1);
                bytes.insert(i, specials[rng.below(specials.len())]);
            }
            3 => {
                let i = rng.below(bytes.len());
                bytes.remove(i);
            }
            _ => {
                let i = rng.below(bytes.len());
                bytes[i] = (rng.next() & 0xff) as u8;
                let j = rng.below(bytes.len() + 1);
                bytes.truncate(j);
            }
        }
        let ok = parse_client_message(&mut bytes.clone(), 8).is_ok();
        outcomes[usize::from(ok)] += 1;
        let _ = PublishRequest::parse(&mut bytes.clone());
        let _ = DirectMessage::parse_send(&mut bytes.clone());
        let _ = DirectMessage::parse_broadcast(&mut bytes);
    }
    // Sanity: the mutations exercised both accepting and refusing paths.
    assert!(outcomes[0] > 100 && outcomes[1] > 10, "{outcomes:?}");
}
