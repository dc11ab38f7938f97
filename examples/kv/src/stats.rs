//! The server's statistics, all in dsu shared globals so that every version running during
//! an update counts into the same place.
//!
//! - [`Stats`] (all versions): totals for INFO, e.g. `total_commands_processed`.
//! - [`CmdCalls`] (new in v2): calls per command; v1 has no such global, so v2 finds none
//!   in the segment and starts it at its initialiser (zeros) while [`Stats`] keeps counting.
//! - [`CmdStats`] (v3): the same global changed type: calls *and* microseconds per command.
//!   v3 declares it with `#[dsu(migrate(from = CmdCalls, with = CmdStats::from_calls))]`:
//!   attach reads v2's `CmdCalls`, converts it, and v3 continues from v2's counts.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Totals shared by every version (the INFO `# Stats` section).
#[derive(dsu::Shared)]
#[repr(C)]
pub struct Stats {
    /// Commands executed by all versions together (`total_commands_processed`).
    pub total_commands: AtomicU64,
    /// Connections accepted by all versions together (`total_connections_received`).
    pub total_connections: AtomicU64,
    /// GETs that found their key.
    pub keyspace_hits: AtomicU64,
    /// GETs that did not.
    pub keyspace_misses: AtomicU64,
    /// Server processes that attached to the keyspace so far (1 for v1 alone, 3 after v3).
    pub versions_started: AtomicU64,
}

impl Stats {
    /// All counters zero.
    pub const fn new() -> Self {
        Stats {
            total_commands: AtomicU64::new(0),
            total_connections: AtomicU64::new(0),
            keyspace_hits: AtomicU64::new(0),
            keyspace_misses: AtomicU64::new(0),
            versions_started: AtomicU64::new(0),
        }
    }
}

impl Default for Stats {
    fn default() -> Self {
        Self::new()
    }
}

/// The commands the server knows (in some version), as indexes into per-command counters.
/// The list is fixed across versions so that counter arrays keep their layout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(usize)]
pub enum Cmd {
    /// PING
    Ping,
    /// ECHO
    Echo,
    /// GET
    Get,
    /// SET
    Set,
    /// DEL
    Del,
    /// EXISTS
    Exists,
    /// INCR
    Incr,
    /// DBSIZE
    Dbsize,
    /// INFO
    Info,
    /// CONFIG
    Config,
    /// COMMAND
    Command,
    /// SELECT
    Select,
    /// QUIT
    Quit,
    /// INCRBY (v2)
    Incrby,
    /// APPEND (v2)
    Append,
    /// Anything else (an error reply).
    Unknown,
}

/// Number of [`Cmd`] values: the length of per-command counter arrays.
pub const NCMD: usize = 16;

impl Cmd {
    /// Every command, in index order.
    pub const ALL: [Cmd; NCMD] = [
        Cmd::Ping,
        Cmd::Echo,
        Cmd::Get,
        Cmd::Set,
        Cmd::Del,
        Cmd::Exists,
        Cmd::Incr,
        Cmd::Dbsize,
        Cmd::Info,
        Cmd::Config,
        Cmd::Command,
        Cmd::Select,
        Cmd::Quit,
        Cmd::Incrby,
        Cmd::Append,
        Cmd::Unknown,
    ];

    /// The lower-case name, as in INFO's `cmdstat_<name>`.
    pub fn name(self) -> &'static str {
        match self {
            Cmd::Ping => "ping",
            Cmd::Echo => "echo",
            Cmd::Get => "get",
            Cmd::Set => "set",
            Cmd::Del => "del",
            Cmd::Exists => "exists",
            Cmd::Incr => "incr",
            Cmd::Dbsize => "dbsize",
            Cmd::Info => "info",
            Cmd::Config => "config",
            Cmd::Command => "command",
            Cmd::Select => "select",
            Cmd::Quit => "quit",
            Cmd::Incrby => "incrby",
            Cmd::Append => "append",
            Cmd::Unknown => "unknown",
        }
    }

    /// The command named `name` (any case); [`Cmd::Unknown`] if none.
    ///
    /// ```
    /// use dsu_kv::stats::Cmd;
    /// assert_eq!(Cmd::parse(b"gEt"), Cmd::Get);
    /// assert_eq!(Cmd::parse(b"FLUSHALL"), Cmd::Unknown);
    /// ```
    pub fn parse(name: &[u8]) -> Cmd {
        Cmd::ALL[..NCMD - 1]
            .iter()
            .copied()
            .find(|c| c.name().as_bytes().eq_ignore_ascii_case(name))
            .unwrap_or(Cmd::Unknown)
    }
}

/// Per-command statistics, as a version keeps them (none in v1).
pub trait CommandStats: Sync {
    /// Counts one call of `cmd` that took `nsec` nanoseconds.
    fn record(&self, cmd: Cmd, nsec: u64);
    /// Appends INFO's `# Commandstats` lines.
    fn render(&self, out: &mut String);
}

/// v2's per-command counters: calls only.
#[derive(dsu::Shared)]
#[repr(C)]
pub struct CmdCalls {
    /// Calls per [`Cmd`] index.
    pub calls: [AtomicU64; NCMD],
}

impl CmdCalls {
    /// All zero.
    pub const fn new() -> Self {
        CmdCalls {
            calls: [const { AtomicU64::new(0) }; NCMD],
        }
    }
}

impl Default for CmdCalls {
    fn default() -> Self {
        Self::new()
    }
}

impl CommandStats for CmdCalls {
    fn record(&self, cmd: Cmd, _nsec: u64) {
        self.calls[cmd as usize].fetch_add(1, Relaxed);
    }

    fn render(&self, out: &mut String) {
        for c in Cmd::ALL {
            let calls = self.calls[c as usize].load(Relaxed);
            if calls > 0 {
                out.push_str(&format!("cmdstat_{}:calls={calls}\r\n", c.name()));
            }
        }
    }
}

/// v3's per-command statistics: calls and total time, like Redis' commandstats (kept in
/// nanoseconds, shown in microseconds).
#[derive(dsu::Shared)]
#[repr(C)]
pub struct CmdStats {
    /// Calls per [`Cmd`] index.
    pub calls: [AtomicU64; NCMD],
    /// Nanoseconds spent per [`Cmd`] index.
    pub nsec: [AtomicU64; NCMD],
}

impl CmdStats {
    /// All zero.
    pub const fn new() -> Self {
        CmdStats {
            calls: [const { AtomicU64::new(0) }; NCMD],
            nsec: [const { AtomicU64::new(0) }; NCMD],
        }
    }

    /// The migration transform from v2's [`CmdCalls`]: keeps the calls, starts the times
    /// at zero.
    ///
    /// ```
    /// use dsu_kv::stats::{CmdCalls, CmdStats, Cmd};
    /// use std::sync::atomic::Ordering::Relaxed;
    /// let old = CmdCalls::new();
    /// old.calls[Cmd::Get as usize].store(7, Relaxed);
    /// let new = CmdStats::from_calls(old);
    /// assert_eq!(new.calls[Cmd::Get as usize].load(Relaxed), 7);
    /// assert_eq!(new.nsec[Cmd::Get as usize].load(Relaxed), 0);
    /// ```
    pub fn from_calls(old: CmdCalls) -> CmdStats {
        CmdStats {
            calls: old.calls,
            nsec: [const { AtomicU64::new(0) }; NCMD],
        }
    }
}

impl Default for CmdStats {
    fn default() -> Self {
        Self::new()
    }
}

impl CommandStats for CmdStats {
    fn record(&self, cmd: Cmd, nsec: u64) {
        self.calls[cmd as usize].fetch_add(1, Relaxed);
        self.nsec[cmd as usize].fetch_add(nsec, Relaxed);
    }

    fn render(&self, out: &mut String) {
        for c in Cmd::ALL {
            let calls = self.calls[c as usize].load(Relaxed);
            if calls > 0 {
                let nsec = self.nsec[c as usize].load(Relaxed);
                out.push_str(&format!(
                    "cmdstat_{}:calls={calls},usec={},usec_per_call={:.2}\r\n",
                    c.name(),
                    nsec / 1000,
                    nsec as f64 / 1000.0 / calls as f64
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_roundtrip() {
        for (i, c) in Cmd::ALL.iter().enumerate() {
            assert_eq!(*c as usize, i);
            if *c != Cmd::Unknown {
                assert_eq!(Cmd::parse(c.name().to_uppercase().as_bytes()), *c);
            }
        }
        assert_eq!(Cmd::parse(b"unknown"), Cmd::Unknown);
    }

    #[test]
    fn fingerprints_differ() {
        use dsu::Shared;
        assert_ne!(CmdCalls::FINGERPRINT, CmdStats::FINGERPRINT);
    }

    #[test]
    fn render() {
        let s = CmdStats::new();
        s.record(Cmd::Get, 10_000);
        s.record(Cmd::Get, 20_500);
        let mut out = String::new();
        s.render(&mut out);
        assert_eq!(out, "cmdstat_get:calls=2,usec=30,usec_per_call=15.25\r\n");
        let c = CmdCalls::new();
        c.record(Cmd::Set, 5);
        out.clear();
        c.render(&mut out);
        assert_eq!(out, "cmdstat_set:calls=1\r\n");
    }
}
