// One client under test, driven by commands and observed through reports (tests/support/jsprobe.rs).
// No imports: the host hands in the Huddle class and a report callback, so the same file runs in
// Node (node_probe.mjs) and in a browser page.
//
// Commands (each answered by {"ack": <cmd>} once done):
//   {"cmd":"start","url":…,"options":{…},"channel":…}  new Huddle(url, options), then subscribe(channel)
//   {"cmd":"publish","channel":…,"event_type":…,"data":{…}}  h.publish(); the ack carries an id, the
//       outcome follows later as {"event":"published","id",…} or {"event":"publish_failed","id",…}
//   {"cmd":"close"}
// Reports, besides acks: {"event":"state"|"connected"|"disconnected"|"subscribed"|"lost"|"message"|
// "error"|"get_token", …}.

export class Probe {
  constructor(Huddle, report) {
    this.Huddle = Huddle;
    this.report = report;
    this.h = null;
    this.publishes = 0;
  }

  async command(cmd) {
    switch (cmd.cmd) {
      case "start":
        this.start(cmd);
        return this.report({ ack: "start" });
      case "publish": {
        const id = ++this.publishes;
        this.h
          .publish(cmd.channel, cmd.event_type, cmd.data ?? {})
          .then((results) => this.report({ event: "published", id, results }))
          .catch((e) => this.report({ event: "publish_failed", id, code: e.code, message: e.message }));
        return this.report({ ack: "publish", id });
      }
      case "close":
        this.h?.close();
        return this.report({ ack: "close" });
      default:
        return this.report({ ack: cmd.cmd, error: `unknown command ${JSON.stringify(cmd.cmd)}` });
    }
  }

  start({ url, options = {}, channel }) {
    const report = this.report;
    const opts = { ...options };
    // With a token, hand it out through getToken too, so reconnects take the refresh path.
    if (opts.token) {
      const token = opts.token;
      opts.getToken = async () => {
        report({ event: "get_token" });
        return token;
      };
    }
    const h = new this.Huddle(url, { ...opts, autoConnect: false });
    this.h = h;
    h.on("state", ({ state, previous }) => report({ event: "state", state, previous }));
    h.on("connected", (ack) => report({ event: "connected", connection_id: ack.connection_id }));
    h.on("disconnected", ({ code, reason }) => report({ event: "disconnected", code, reason }));
    h.on("error", (e) => report({ event: "error", code: e.code, message: e.message }));
    h.on("message", (m) =>
      report({ event: "message", channel: m.channel, offset: m.offset, event_type: m.event_type, data: m.data }),
    );
    if (channel) {
      const sub = h.subscribe(channel);
      sub.on("subscribed", (s) => report({ event: "subscribed", channel, ...s }));
      sub.on("lost", (p) => report({ event: "lost", channel, ...p }));
      sub.on("error", (e) => report({ event: "sub_error", channel, code: e.code, message: e.message }));
    }
    h.connect();
  }
}
