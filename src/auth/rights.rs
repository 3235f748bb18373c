//! What a connection may subscribe to and publish (PROTOCOL.md §9).
//!
//! Subscribe, in this order:
//! 1. `bets` and `bankroll` are per user: they resolve to the user's own stream (see
//!    [`crate::protocol::user_channel_key`]), and a connection without a user gets `forbidden`.
//!    No claim, pattern or key reaches another user's stream.
//! 2. `huddle:…` channels (the server's own, e.g. `huddle:stats`) need the API key, whatever
//!    the token setting.
//! 3. With tokens off (development) every other channel is open.
//! 4. An API-key connection may subscribe to any channel.
//! 5. Otherwise the channel must match `--public-channels` or the token's `channels` claim.
//!
//! Publish over the WebSocket: the API key (every channel) or the token's `publish` claim
//! (matching channels); nothing else, whatever the token setting.

use std::borrow::Cow;

use crate::glob::Pattern;
use crate::protocol::{is_server_channel, is_user_channel, user_channel_key};

/// The `channels` and `publish` claims of a token, compiled once. A shard keeps one copy per
/// distinct pair of claims, shared by every connection that presented it.
#[derive(Debug, Default, Clone, PartialEq, Eq, Hash)]
pub struct Grants {
    pub channels: Vec<Pattern>,
    pub publish: Vec<Pattern>,
}

impl Grants {
    pub fn new(channels: &[String], publish: &[String]) -> Grants {
        Grants {
            channels: channels.iter().map(|p| Pattern::new(p)).collect(),
            publish: publish.iter().map(|p| Pattern::new(p)).collect(),
        }
    }

    /// No claim grants anything beyond the public channels.
    pub fn is_empty(&self) -> bool {
        self.channels.is_empty() && self.publish.is_empty()
    }

    pub fn may_subscribe(&self, channel: &str) -> bool {
        self.channels.iter().any(|p| p.matches(channel))
    }

    pub fn may_publish(&self, channel: &str) -> bool {
        self.publish.iter().any(|p| p.matches(channel))
    }
}

/// What one connection holds.
#[derive(Debug, Clone, Copy, Default)]
pub struct Rights<'a> {
    /// The user: the token's `sub`, or (tokens off) the `user_id` query parameter.
    pub user: Option<&'a str>,
    pub grants: Option<&'a Grants>,
    /// Connected with an API key.
    pub api_key: bool,
}

/// The server-wide part: whether tokens are on, and the public channels.
#[derive(Debug, Clone)]
pub struct Policy {
    pub tokens: bool,
    pub public: Vec<Pattern>,
}

impl Policy {
    pub fn new(tokens: bool, public_channels: &[String]) -> Policy {
        Policy {
            tokens,
            public: public_channels.iter().map(|p| Pattern::new(p)).collect(),
        }
    }

    /// The stream a subscription to `channel` reads (the channel itself, or the user's own
    /// stream of a per-user channel), or why the connection may not subscribe.
    pub fn subscribe_key<'c>(
        &self,
        channel: &'c str,
        rights: &Rights<'_>,
    ) -> Result<Cow<'c, str>, String> {
        if is_user_channel(channel) {
            return match rights.user {
                Some(user) => Ok(Cow::Owned(user_channel_key(channel, user))),
                None if self.tokens => Err(format!(
                    "{channel} is per user: connect with a token (its sub is the user)"
                )),
                None => Err(format!(
                    "{channel} is per user: connect with ?user_id= (or a token)"
                )),
            };
        }
        if is_server_channel(channel) {
            return match rights.api_key {
                true => Ok(Cow::Borrowed(channel)),
                false => Err(format!(
                    "{channel} is the server's own: it needs the API key (?api_key=, or a refresh with api_key)"
                )),
            };
        }
        if !self.tokens
            || rights.api_key
            || self.public.iter().any(|p| p.matches(channel))
            || rights.grants.is_some_and(|g| g.may_subscribe(channel))
        {
            return Ok(Cow::Borrowed(channel));
        }
        Err(format!(
            "{channel} is not public and not in this connection's channels claim"
        ))
    }

    /// The stream an unsubscribe of `channel` leaves (no right needed to leave).
    pub fn unsubscribe_key<'c>(&self, channel: &'c str, rights: &Rights<'_>) -> Cow<'c, str> {
        match rights.user {
            Some(user) if is_user_channel(channel) => Cow::Owned(user_channel_key(channel, user)),
            _ => Cow::Borrowed(channel),
        }
    }

    /// Whether the connection may publish to every one of `channels` over the WebSocket.
    pub fn may_publish(&self, channels: &[String], rights: &Rights<'_>) -> Result<(), String> {
        if rights.api_key {
            return Ok(());
        }
        let Some(grants) = rights.grants.filter(|g| !g.publish.is_empty()) else {
            return Err(
                "publishing needs the API key (?api_key= or X-API-Key) or a token with a publish claim"
                    .into(),
            );
        };
        match channels.iter().find(|c| !grants.may_publish(c)) {
            None => Ok(()),
            Some(c) => Err(format!("{c} is not in this connection's publish claim")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(tokens: bool) -> Policy {
        Policy::new(
            tokens,
            &["games", "odds", "game_*", "lines"].map(String::from),
        )
    }

    #[test]
    fn per_user_channels_resolve_to_the_user() {
        let p = policy(true);
        let g = Grants::new(&["*".into()], &[]);
        let u1 = Rights {
            user: Some("u1"),
            grants: Some(&g),
            api_key: true,
        };
        assert_eq!(p.subscribe_key("bankroll", &u1).unwrap(), "bankroll/u1");
        assert_eq!(p.subscribe_key("bets", &u1).unwrap(), "bets/u1");
        let anon = Rights {
            api_key: true,
            ..Rights::default()
        };
        assert!(p.subscribe_key("bankroll", &anon).is_err());
        assert!(policy(false).subscribe_key("bets", &anon).is_err());
        assert_eq!(p.unsubscribe_key("bets", &u1), "bets/u1");
        assert_eq!(p.unsubscribe_key("odds", &u1), "odds");
    }

    #[test]
    fn public_claims_and_keys() {
        let p = policy(true);
        let anon = Rights::default();
        assert!(p.subscribe_key("odds", &anon).is_ok());
        assert!(p.subscribe_key("game_7", &anon).is_ok());
        assert!(p.subscribe_key("predictions", &anon).is_err());
        let g = Grants::new(&["pred*".into()], &["odds_*".into()]);
        let user = Rights {
            user: Some("u"),
            grants: Some(&g),
            api_key: false,
        };
        assert!(p.subscribe_key("predictions", &user).is_ok());
        assert!(p.subscribe_key("vip", &user).is_err());
        let keyed = Rights {
            api_key: true,
            ..Rights::default()
        };
        assert!(p.subscribe_key("vip", &keyed).is_ok());
        assert!(
            policy(false).subscribe_key("vip", &anon).is_ok(),
            "tokens off: open"
        );
    }

    #[test]
    fn server_channels_need_the_api_key_whatever_the_tokens() {
        let g = Grants::new(&["*".into()], &["*".into()]);
        let claims_all = Rights {
            user: Some("u"),
            grants: Some(&g),
            api_key: false,
        };
        let keyed = Rights {
            api_key: true,
            ..Rights::default()
        };
        for tokens in [false, true] {
            let p = policy(tokens);
            assert!(p.subscribe_key("huddle:stats", &Rights::default()).is_err());
            assert!(p.subscribe_key("huddle:stats", &claims_all).is_err());
            assert_eq!(
                p.subscribe_key("huddle:stats", &keyed).unwrap(),
                "huddle:stats"
            );
        }
    }

    #[test]
    fn publish_needs_a_key_or_a_claim_for_every_channel() {
        let p = policy(false);
        let ch = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(p.may_publish(&ch(&["odds"]), &Rights::default()).is_err());
        let g = Grants::new(&[], &["odds*".into()]);
        let user = Rights {
            grants: Some(&g),
            ..Rights::default()
        };
        assert!(p.may_publish(&ch(&["odds", "odds_7"]), &user).is_ok());
        let e = p.may_publish(&ch(&["odds", "games"]), &user).unwrap_err();
        assert!(e.contains("games"), "{e}");
        let keyed = Rights {
            api_key: true,
            ..Rights::default()
        };
        assert!(p.may_publish(&ch(&["anything"]), &keyed).is_ok());
    }
}
