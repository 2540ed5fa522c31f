//! The keys, the Lua script every node runs, and its reply.
//!
//! One script does everything (so every heartbeat is one round trip and atomic): `hb`
//! refreshes the node's deadline, writes its record if it changed or is missing, takes or
//! renews the reaper lease and reaps as its holder, then reads the changes since the caller's
//! last one; `watch` is the same for a guest, without registering; `sync` only reads
//! (catch-ups); `leave` deregisters and gives the lease up.

use std::time::Duration;

use redis::Value;

use super::conn::{Link, LinkError};

/// Entries of the change log kept (approximately: `XADD MAXLEN ~`).
pub(super) const LOG_MAXLEN: usize = 4096;
/// Most changes one reply carries; a client further behind gets a full snapshot.
pub(super) const MAX_LOG_READ: usize = 1000;
/// Most members one reaping call removes.
pub(super) const REAP_LIMIT: usize = 256;

/// The names of one prefix's keys and channel (all in the hash tag `{prefix}`).
#[derive(Debug, Clone)]
pub(super) struct Keys {
    keys: [String; 10],
    /// The pub/sub channel of changes.
    pub(super) channel: String,
}

impl Keys {
    pub(super) fn new(prefix: &str) -> Keys {
        let k = |name: &str| format!("{{{prefix}}}:{name}");
        Keys {
            keys: [
                k("hb"),
                k("nodes"),
                k("seq"),
                k("log"),
                k("epoch"),
                k("lease"),
                k("alive"),
                k("grace"),
                k("maxgrace"),
                k("orphanscan"),
            ],
            channel: k("chg"),
        }
    }
}

/// KEYS: 1 hb, 2 nodes, 3 seq, 4 log, 5 epoch, 6 lease, 7 alive, 8 grace, 9 maxgrace,
/// 10 orphan-scan cursor.
/// ARGV: 1 op (hb|watch|sync|leave), 2 id, 3 record, 4 expiry ms, 5 lease ms (0: never reap),
/// 6 reap limit, 7 caller's epoch, 8 caller's seq, 9 max log entries, 10 epoch candidate,
/// 11 channel, 12 log maxlen, 13 outage gap ms, 14 grace ms, 15 tag of the caller's last
/// change to verify ('' = do not).
/// Returns {epoch, seq, held, next_reap_ms, mode (none|log|full), data, tag of change seq};
/// `leave` returns {epoch, seq}.
const LUA: &str = r#"
pcall(redis.replicate_commands)
local hb, nodes, seqk, log, epk, lease, alive, gracek, maxgk, scank =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7], KEYS[8], KEYS[9], KEYS[10]
local op, id, rec = ARGV[1], ARGV[2], ARGV[3]
local expiry, lease_ms, reap_limit = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local cepoch, cseq, max_log = ARGV[7], tonumber(ARGV[8]), tonumber(ARGV[9])
local channel, maxlen = ARGV[11], ARGV[12]
local gap_ms, grace_ms, ctag = tonumber(ARGV[13]), tonumber(ARGV[14]), ARGV[15]

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local epoch = redis.call('GET', epk)
if not epoch then
  epoch = ARGV[10]
  redis.call('SET', epk, epoch)
end

-- Every change carries a tag (the server time of the script that made it): with the seq it
-- names the change, so a client can check its last change is the one this server has.
local tag = t[1] .. '.' .. t[2]
local function change(kind, who, data)
  local seq = redis.call('INCR', seqk)
  redis.pcall('XADD', log, 'MAXLEN', '~', maxlen, '0-' .. seq,
    'tag', tag, 'op', kind, 'id', who, 'rec', data)
  redis.call('PUBLISH', channel,
    epoch .. '\n' .. seq .. '\n' .. tag .. '\n' .. kind .. '\n' .. who .. '\n' .. data)
end

if op == 'leave' then
  local removed = redis.call('ZREM', hb, id)
  local old = redis.call('HGET', nodes, id)
  if old then redis.call('HDEL', nodes, id) end
  if removed == 1 or old then change('leave', id, old or '') end
  if redis.call('GET', lease) == id then redis.call('DEL', lease) end
  return {epoch, tostring(redis.call('GET', seqk) or '0')}
end

local held, next_reap = 0, -1
if op == 'hb' then
  -- The grace after an outage must suit the slowest node: the largest any node asked for
  -- lately (its holders keep it alive; it lapses ten graces after they are gone).
  local maxg = tonumber(redis.call('GET', maxgk) or '') or 0
  if grace_ms >= maxg then
    redis.call('SET', maxgk, grace_ms, 'PX', grace_ms * 10)
    maxg = grace_ms
  end
  local last = tonumber(redis.call('GET', alive) or '')
  if last and now - last > gap_ms then
    redis.call('SET', gracek, tostring(now + maxg), 'PX', maxg)
  end
  redis.call('SET', alive, tostring(now))
  redis.call('ZADD', hb, now + expiry, id)
  local cur = redis.call('HGET', nodes, id)
  if cur ~= rec then
    redis.call('HSET', nodes, id, rec)
    if cur then change('update', id, rec) else change('join', id, rec) end
  end
end
if (op == 'hb' or op == 'watch') and lease_ms > 0 then
  local holder = redis.call('GET', lease)
  if holder == id then
    redis.call('PEXPIRE', lease, lease_ms)
    held = 1
  elseif not holder then
    redis.call('SET', lease, id, 'PX', lease_ms)
    held = 1
  end
end
if held == 1 then
  local grace_until = tonumber(redis.call('GET', gracek) or '')
  if grace_until and grace_until > now then
    next_reap = grace_until - now
  else
    local dead = redis.call('ZRANGEBYSCORE', hb, '-inf', now, 'LIMIT', 0, reap_limit)
    for _, d in ipairs(dead) do
      redis.call('ZREM', hb, d)
      local old = redis.call('HGET', nodes, d)
      if old then redis.call('HDEL', nodes, d) end
      change('expire', d, old or '')
    end
    -- A record without a heartbeat entry was not written by this script (every op here
    -- writes or removes both at once): a forged or stray one. Each reaping run checks the
    -- next few records, so every one is looked at within a few intervals, and removes those.
    local scan = redis.call('HSCAN', nodes, redis.call('GET', scank) or '0', 'COUNT', 64)
    redis.call('SET', scank, scan[1])
    local found = scan[2]
    for i = 1, #found, 2 do
      local who = found[i]
      if not redis.call('ZSCORE', hb, who) then
        redis.call('HDEL', nodes, who)
        change('expire', who, found[i + 1])
      end
    end
    if #dead >= reap_limit then
      next_reap = 0
    else
      local first = redis.call('ZRANGE', hb, 0, 0, 'WITHSCORES')
      if first[2] then next_reap = tonumber(first[2]) - now end
    end
  end
end

local seq = tonumber(redis.call('GET', seqk) or '0')
local mode, data, last_tag = 'none', {}, ''
local function entry_fields(e)
  local f, out = e[2], {}
  for i = 1, #f, 2 do out[f[i]] = f[i + 1] end
  return out
end
local function tag_of(n)
  local e = redis.pcall('XRANGE', log, '0-' .. n, '0-' .. n)
  if type(e) ~= 'table' or e.err or #e == 0 then return '' end
  return entry_fields(e[1]).tag or ''
end
local function full()
  mode = 'full'
  data = redis.call('HGETALL', nodes)
  last_tag = tag_of(seq)
end
if cepoch ~= epoch or cseq > seq or seq - cseq > max_log then
  full()
elseif ctag ~= '' and cseq > 0 and tag_of(cseq) ~= ctag then
  -- The caller's last change is not this server's (a promoted replica lost it).
  full()
elseif cseq < seq then
  local from = '0-' .. (cseq + 1)
  local entries = redis.pcall('XRANGE', log, from, '+', 'COUNT', max_log)
  if type(entries) ~= 'table' or entries.err or #entries == 0 or entries[1][1] ~= from then
    full()
  else
    mode = 'log'
    for _, e in ipairs(entries) do
      local f = entry_fields(e)
      data[#data + 1] = string.sub(e[1], 3)
      data[#data + 1] = f.tag or ''
      data[#data + 1] = f.op or ''
      data[#data + 1] = f.id or ''
      data[#data + 1] = f.rec or ''
    end
  end
end
return {epoch, tostring(seq), held, next_reap, mode, data, last_tag}
"#;

/// What a script run does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Op {
    /// Heartbeat, publish the record, reap as lease holder, read changes.
    Heartbeat,
    /// A guest's heartbeat: reap as lease holder, read changes (not registered).
    Watch,
    /// Only read changes.
    Sync,
    /// Deregister.
    Leave,
}

impl Op {
    fn as_str(self) -> &'static str {
        match self {
            Op::Heartbeat => "hb",
            Op::Watch => "watch",
            Op::Sync => "sync",
            Op::Leave => "leave",
        }
    }
}

/// The arguments of one run.
#[derive(Debug)]
pub(super) struct Call<'a> {
    pub(super) op: Op,
    /// The node id (registered by `hb`; the lease holder's name for `hb` and `watch`).
    pub(super) id: &'a str,
    /// The record JSON (`hb` only).
    pub(super) record: &'a str,
    pub(super) expiry: Duration,
    /// Lease TTL; zero: do not take the lease nor reap.
    pub(super) lease: Duration,
    /// The caller's epoch (empty: unknown, asks for a full snapshot).
    pub(super) epoch: &'a str,
    /// The last change the caller applied.
    pub(super) seq: u64,
    /// The tag of that change, to check it is this server's (after a reconnect); empty: no
    /// check.
    pub(super) verify_tag: &'a str,
    /// A silence longer than this in Redis's record of heartbeats is an outage.
    pub(super) outage_gap: Duration,
    /// How long nobody is reaped after an outage.
    pub(super) grace: Duration,
}

/// What the caller must apply.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Changes {
    /// Nothing new.
    None,
    /// The changes after the caller's seq, in order.
    Log(Vec<LogEntry>),
    /// Everything: `(id, record JSON)` pairs.
    Full(Vec<(String, String)>),
}

/// One change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct LogEntry {
    pub(super) seq: u64,
    /// Names the change together with `seq` (the server time it was made).
    pub(super) tag: String,
    pub(super) op: String,
    pub(super) id: String,
    pub(super) rec: String,
}

impl LogEntry {
    /// Parses a pub/sub payload `epoch\nseq\ntag\nop\nid\nrecord` into its epoch and
    /// entry.
    pub(super) fn parse_message(payload: &[u8]) -> Option<(String, LogEntry)> {
        let text = std::str::from_utf8(payload).ok()?;
        let mut parts = text.splitn(6, '\n');
        let epoch = parts.next()?.to_string();
        let seq = parts.next()?.parse().ok()?;
        let tag = parts.next()?.to_string();
        let op = parts.next()?.to_string();
        let id = parts.next()?.to_string();
        let rec = parts.next()?.to_string();
        Some((
            epoch,
            LogEntry {
                seq,
                tag,
                op,
                id,
                rec,
            },
        ))
    }
}

/// The reply to `hb` and `sync`.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Reply {
    pub(super) epoch: String,
    pub(super) seq: u64,
    /// The caller holds the reaper lease.
    pub(super) lease_held: bool,
    /// As lease holder: milliseconds until the next member's deadline (0: more to reap now).
    pub(super) next_reap_ms: Option<u64>,
    pub(super) changes: Changes,
    /// The tag of change `seq` (empty if unknown; log entries carry their own).
    pub(super) tag: String,
}

/// The script, run by its SHA1 (falling back to its text once per connection when Redis
/// does not know it yet).
#[derive(Debug)]
pub(super) struct Script {
    sha: String,
}

impl Script {
    pub(super) fn new() -> Script {
        Script {
            sha: redis::Script::new(LUA).get_hash().to_string(),
        }
    }

    /// Runs one call.
    pub(super) async fn run(
        &self,
        link: &mut Link,
        keys: &Keys,
        call: &Call<'_>,
    ) -> Result<Value, LinkError> {
        let epoch_candidate = format!("{:016x}", rand::random::<u64>());
        let build = |name: &str, body: &str| {
            let mut c = redis::cmd(name);
            c.arg(body).arg(keys.keys.len()).arg(&keys.keys[..]);
            c.arg(call.op.as_str())
                .arg(call.id)
                .arg(call.record)
                .arg(ms(call.expiry))
                .arg(ms(call.lease))
                .arg(REAP_LIMIT)
                .arg(call.epoch)
                .arg(call.seq)
                .arg(MAX_LOG_READ)
                .arg(&epoch_candidate)
                .arg(&keys.channel)
                .arg(LOG_MAXLEN)
                .arg(ms(call.outage_gap))
                .arg(ms(call.grace))
                .arg(call.verify_tag);
            c
        };
        match link.query(&build("EVALSHA", &self.sha)).await {
            Err(LinkError::Redis(e)) if e.code() == Some("NOSCRIPT") => {
                link.query(&build("EVAL", LUA)).await
            }
            other => other,
        }
    }
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        Value::VerbatimString { text, .. } => Some(text.clone()),
        Value::Int(i) => Some(i.to_string()),
        Value::Okay => Some("OK".to_string()),
        _ => None,
    }
}

fn int(v: &Value) -> Option<i64> {
    match v {
        Value::Int(i) => Some(*i),
        Value::Double(d) => Some(*d as i64),
        other => text(other)?.parse().ok(),
    }
}

fn bad(what: &str, v: &Value) -> LinkError {
    let mut s = format!("{v:?}");
    s.truncate(200);
    LinkError::Protocol(format!("unexpected script reply ({what}): {s}"))
}

/// Parses the reply of `hb`/`sync`.
pub(super) fn parse_reply(v: &Value) -> Result<Reply, LinkError> {
    let Value::Array(items) = v else {
        return Err(bad("not an array", v));
    };
    let [epoch, seq, held, next_reap, mode, data, tag] = &items[..] else {
        return Err(bad("length", v));
    };
    let epoch = text(epoch).ok_or_else(|| bad("epoch", v))?;
    let seq = int(seq)
        .and_then(|s| u64::try_from(s).ok())
        .ok_or_else(|| bad("seq", v))?;
    let lease_held = int(held).ok_or_else(|| bad("held", v))? == 1;
    let next_reap_ms = int(next_reap)
        .ok_or_else(|| bad("next reap", v))
        .map(|n| u64::try_from(n).ok())?;
    let mode = text(mode).ok_or_else(|| bad("mode", v))?;
    let data: &[Value] = match data {
        Value::Array(d) => d,
        Value::Nil => &[],
        _ => return Err(bad("data", v)),
    };
    let changes = match mode.as_str() {
        "none" => Changes::None,
        "log" => {
            let mut out = Vec::with_capacity(data.len() / 5);
            for c in data.chunks(5) {
                let [seq, tag, op, id, rec] = c else {
                    return Err(bad("log entry", v));
                };
                out.push(LogEntry {
                    seq: int(seq)
                        .and_then(|s| u64::try_from(s).ok())
                        .ok_or_else(|| bad("log seq", v))?,
                    tag: text(tag).unwrap_or_default(),
                    op: text(op).unwrap_or_default(),
                    id: text(id).unwrap_or_default(),
                    // A record that is not UTF-8 is garbled: keep it so it is counted.
                    rec: text(rec).unwrap_or_else(|| "\u{fffd}".to_string()),
                });
            }
            Changes::Log(out)
        }
        "full" => {
            let mut out = Vec::with_capacity(data.len() / 2);
            for c in data.chunks(2) {
                let [id, rec] = c else {
                    return Err(bad("snapshot entry", v));
                };
                out.push((
                    text(id).unwrap_or_default(),
                    text(rec).unwrap_or_else(|| "\u{fffd}".to_string()),
                ));
            }
            Changes::Full(out)
        }
        _ => return Err(bad("mode", v)),
    };
    Ok(Reply {
        epoch,
        seq,
        lease_held,
        next_reap_ms,
        changes,
        tag: text(tag).unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    #[test]
    fn keys_share_one_hash_tag() {
        let k = Keys::new("game");
        assert!(k.keys.iter().all(|k| k.starts_with("{game}:")));
        assert_eq!(k.keys.len(), 10);
        assert_eq!(k.channel, "{game}:chg");
        assert_eq!(k.keys[1], "{game}:nodes");
    }

    #[test]
    fn replies_parse() {
        let v = Value::Array(vec![
            bulk("e1"),
            bulk("7"),
            Value::Int(1),
            Value::Int(250),
            bulk("log"),
            Value::Array(vec![
                bulk("7"),
                bulk("1.2"),
                bulk("join"),
                bulk("a#1"),
                bulk("{}"),
            ]),
            bulk(""),
        ]);
        let r = parse_reply(&v).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.epoch, "e1");
        assert_eq!(r.seq, 7);
        assert!(r.lease_held);
        assert_eq!(r.next_reap_ms, Some(250));
        assert_eq!(
            r.changes,
            Changes::Log(vec![LogEntry {
                seq: 7,
                tag: "1.2".into(),
                op: "join".into(),
                id: "a#1".into(),
                rec: "{}".into()
            }])
        );
        let v = Value::Array(vec![
            bulk("e1"),
            Value::Int(0),
            Value::Int(0),
            Value::Int(-1),
            bulk("full"),
            Value::Array(vec![bulk("a"), Value::BulkString(vec![0xff])]),
            bulk("9.9"),
        ]);
        let r = parse_reply(&v).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.next_reap_ms, None);
        assert_eq!(r.tag, "9.9");
        assert!(matches!(r.changes, Changes::Full(ref f) if f.len() == 1));
        for junk in [
            Value::Nil,
            Value::Array(vec![]),
            Value::Array(vec![
                bulk("e"),
                bulk("x"),
                Value::Int(0),
                Value::Int(0),
                bulk("none"),
                Value::Nil,
                bulk(""),
            ]),
            Value::Array(vec![
                bulk("e"),
                bulk("1"),
                Value::Int(0),
                Value::Int(0),
                bulk("what"),
                Value::Nil,
                bulk(""),
            ]),
            Value::Array(vec![
                bulk("e"),
                bulk("1"),
                Value::Int(0),
                Value::Int(0),
                bulk("log"),
                Value::Array(vec![bulk("1")]),
                bulk(""),
            ]),
        ] {
            assert!(parse_reply(&junk).is_err(), "{junk:?}");
        }
    }

    #[test]
    fn messages_parse() {
        let (e, m) =
            LogEntry::parse_message(b"ep\n12\n5.6\nupdate\n127.0.0.1:1#01\n{\"a\":\"x\ny\"}")
                .unwrap_or_else(|| panic!("parse"));
        assert_eq!(e, "ep");
        assert_eq!(m.seq, 12);
        assert_eq!(m.tag, "5.6");
        assert_eq!(m.op, "update");
        assert_eq!(m.rec, "{\"a\":\"x\ny\"}");
        assert!(LogEntry::parse_message(b"ep\nx\nt\nupdate\nid\n").is_none());
        assert!(LogEntry::parse_message(b"ep\n1\nt\nupdate").is_none());
        assert!(LogEntry::parse_message(&[0xff, b'\n']).is_none());
    }
}
