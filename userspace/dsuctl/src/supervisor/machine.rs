//! The supervisor's state machine: which version serves, which one is starting, which
//! ones drain, and what to do on each event. Pure: it never spawns, signals or sleeps;
//! it returns [`Action`]s for the driver (`supervisor/mod.rs`) to carry out, so that host tests
//! can play whole upgrades.
//!
//! States of a version: *candidate* (started, not yet `READY=1`; at most one at a time),
//! *current* (the one that serves; the first version becomes current when it is ready),
//! *retiring* (an old current after a newer candidate became ready: it drains by itself,
//! gets SIGTERM after the drain timeout and SIGKILL after the stop timeout).

use std::time::{Duration, Instant};

/// A process id.
pub type Pid = i32;

/// How a process ended, from `waitpid`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ended {
    /// `exit(code)`.
    Exited(i32),
    /// Killed by this signal.
    Signaled(i32),
}

impl std::fmt::Display for Ended {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            Ended::Exited(c) => write!(f, "exited with status {c}"),
            Ended::Signaled(s) => match nix::sys::signal::Signal::try_from(s) {
                Ok(sig) => write!(f, "was killed by signal {s} ({})", sig.as_str()),
                Err(_) => write!(f, "was killed by signal {s}"),
            },
        }
    }
}

/// What the driver must do, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Send this state to the supervisor's own `NOTIFY_SOCKET`, if it has one.
    Notify(String),
    /// Print this line on stderr.
    Log(String),
    /// Answer the waiting `dsuctl upgrade`, if any.
    Reply {
        /// Whether the upgrade succeeded.
        ok: bool,
        /// What happened.
        message: String,
    },
    /// Send this signal to this process.
    Signal(Pid, i32),
    /// Every version is gone: end the supervisor the way this version ended.
    Exit(Ended),
}

/// The supervisor's timeouts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    /// How long a candidate has to send `READY=1`.
    pub ready: Duration,
    /// How long a retiring version may drain before it gets SIGTERM.
    pub drain: Duration,
    /// How long after SIGTERM a version gets SIGKILL.
    pub stop: Duration,
}

#[derive(Debug)]
struct Candidate {
    pid: Pid,
    name: String,
    started: Instant,
    deadline: Instant,
    /// Set when the ready timeout passed and SIGKILL was sent.
    timed_out: bool,
}

/// A version past its candidacy: the current one, or a retiring one.
#[derive(Debug)]
struct Running {
    pid: Pid,
    name: String,
    /// When it became current, or began to retire.
    since: Instant,
    /// When the next signal is due (SIGTERM after the drain timeout, then SIGKILL after
    /// the stop timeout); `None` while none is due.
    deadline: Option<Instant>,
    /// The last signal sent by the supervisor.
    sent: Option<i32>,
}

/// The supervisor's state.
#[derive(Debug)]
pub struct Machine {
    timeouts: Timeouts,
    current: Option<Running>,
    candidate: Option<Candidate>,
    retiring: Vec<Running>,
    /// Set by SIGTERM or SIGINT, or when nothing serves any more: no more upgrades, and
    /// the supervisor exits once every version is gone.
    stopping: bool,
    /// How the supervisor ends: as the serving version ended.
    exit_as: Option<Ended>,
    /// Set once [`Action::Exit`] was returned.
    done: bool,
}

const SIGTERM: i32 = libc::SIGTERM;
const SIGKILL: i32 = libc::SIGKILL;

impl Machine {
    /// A supervisor with no version yet.
    pub fn new(timeouts: Timeouts) -> Machine {
        Machine {
            timeouts,
            current: None,
            candidate: None,
            retiring: Vec::new(),
            stopping: false,
            exit_as: None,
            done: false,
        }
    }

    /// The pid of the version that serves, if one does.
    pub fn current_pid(&self) -> Option<Pid> {
        self.current.as_ref().map(|c| c.pid)
    }

    /// Whether a version may be started now; the error says why not.
    pub fn may_start(&self, now: Instant) -> Result<(), String> {
        if self.stopping {
            return Err("the supervisor is stopping: no upgrade".into());
        }
        if let Some(c) = &self.candidate {
            return Err(format!(
                "an upgrade is in progress: {} (pid {}) started {:.1} s ago and has {:.1} s \
                 to send READY=1; try again once it is ready or has failed",
                c.name,
                c.pid,
                now.duration_since(c.started).as_secs_f64(),
                self.timeouts.ready.as_secs_f64()
            ));
        }
        Ok(())
    }

    /// What to announce before starting `name`: `RELOADING=1` when it is to replace a
    /// serving version (with `monotonic_usec`, CLOCK_MONOTONIC, as systemd >= 253 wants),
    /// `MAINPID=` (the supervisor's own pid: it stays the main process) for the first.
    pub fn starting(&self, name: &str, my_pid: Pid, monotonic_usec: u64) -> Vec<Action> {
        match &self.current {
            Some(cur) => vec![
                Action::Notify(format!(
                    "RELOADING=1\nMONOTONIC_USEC={monotonic_usec}\nSTATUS=upgrading: starting \
                     {name} beside {} (pid {})",
                    cur.name, cur.pid
                )),
                Action::Log(format!("upgrade: starting {name}")),
            ],
            None => vec![
                Action::Notify(format!("MAINPID={my_pid}\nSTATUS=starting {name}")),
                Action::Log(format!("starting {name}")),
            ],
        }
    }

    /// `name` was started as `pid`: it is the candidate until it sends `READY=1`.
    pub fn started(&mut self, pid: Pid, name: &str, now: Instant) -> Vec<Action> {
        self.candidate = Some(Candidate {
            pid,
            name: name.into(),
            started: now,
            deadline: now + self.timeouts.ready,
            timed_out: false,
        });
        vec![Action::Log(format!(
            "{name} started as pid {pid}, waiting up to {} s for READY=1",
            self.timeouts.ready.as_secs_f64()
        ))]
    }

    /// Starting `name` failed before it ran (`why`: the exec error).
    pub fn start_failed(&mut self, name: &str, why: &str, now: Instant) -> Vec<Action> {
        let mut out = self.failed(format!("cannot start {name}: {why}"), None, now);
        out.extend(self.exit_if_done());
        out
    }

    /// The candidate failed (`reason`); `ended` is how, if it ran.
    fn failed(&mut self, reason: String, ended: Option<Ended>, now: Instant) -> Vec<Action> {
        let mut out = vec![Action::Log(format!("upgrade failed: {reason}"))];
        if self.stopping {
            // The caller was answered when the stop began; the candidate's end decides
            // the supervisor's status only if nothing else served.
            if self.current.is_none() {
                self.exit_as
                    .get_or_insert(ended.unwrap_or(Ended::Exited(1)));
            }
            return out;
        }
        match &self.current {
            Some(cur) => {
                let msg = format!(
                    "upgrade failed: {reason}; {} (pid {}) still serves",
                    cur.name, cur.pid
                );
                out.push(Action::Notify(format!("READY=1\nSTATUS={msg}")));
                out.push(Action::Reply {
                    ok: false,
                    message: msg,
                });
            }
            None => {
                // Nothing serves: the first version failed, or the old one ended meanwhile.
                let msg = format!("{reason}; no version serves, the supervisor exits");
                out.push(Action::Notify(format!("STATUS={msg}")));
                out.push(Action::Reply {
                    ok: false,
                    message: msg,
                });
                self.stopping = true;
                self.exit_as.get_or_insert(match ended {
                    Some(e @ Ended::Exited(c)) if c != 0 => e,
                    Some(e @ Ended::Signaled(s)) if s != SIGKILL => e,
                    _ => Ended::Exited(1),
                });
                out.extend(self.signal_running(SIGTERM, now));
            }
        }
        out
    }

    /// `pid` sent `READY=1`. The candidate becomes current; the old current retires.
    pub fn ready(&mut self, pid: Pid, now: Instant) -> Vec<Action> {
        let is_candidate = self
            .candidate
            .as_ref()
            .is_some_and(|c| c.pid == pid && !c.timed_out);
        if !is_candidate || self.stopping {
            return Vec::new(); // a repeated READY=1, or one too late
        }
        let c = self.candidate.take().expect("checked");
        let took = now.duration_since(c.started);
        let msg = match self.current.take() {
            Some(old) => {
                let msg = format!(
                    "upgraded to {} (pid {}), ready after {} ms; {} (pid {}) drains (SIGTERM \
                     after {} s)",
                    c.name,
                    c.pid,
                    took.as_millis(),
                    old.name,
                    old.pid,
                    self.timeouts.drain.as_secs_f64()
                );
                self.retiring.push(Running {
                    since: now,
                    deadline: Some(now + self.timeouts.drain),
                    ..old
                });
                msg
            }
            None => format!(
                "{} (pid {}) is ready after {} ms",
                c.name,
                c.pid,
                took.as_millis()
            ),
        };
        let out = vec![
            Action::Log(msg.clone()),
            Action::Notify(format!(
                "READY=1\nSTATUS=serving: {} (pid {})",
                c.name, c.pid
            )),
            Action::Reply {
                ok: true,
                message: msg,
            },
        ];
        self.current = Some(Running {
            pid: c.pid,
            name: c.name,
            since: now,
            deadline: None,
            sent: None,
        });
        out
    }

    /// `pid`, a child, ended.
    pub fn exited(&mut self, pid: Pid, ended: Ended, now: Instant) -> Vec<Action> {
        let mut out = Vec::new();
        if self.candidate.as_ref().is_some_and(|c| c.pid == pid) {
            let c = self.candidate.take().expect("checked");
            let reason = if c.timed_out {
                format!(
                    "{} (pid {pid}) did not send READY=1 within {} s: killed",
                    c.name,
                    self.timeouts.ready.as_secs_f64()
                )
            } else {
                format!("{} (pid {pid}) {ended} before READY=1", c.name)
            };
            out.extend(self.failed(reason, Some(ended), now));
        } else if self.current.as_ref().is_some_and(|c| c.pid == pid) {
            let cur = self.current.take().expect("checked");
            if self.stopping {
                out.push(Action::Log(format!("{} (pid {pid}) {ended}", cur.name)));
                self.exit_as.get_or_insert(ended);
            } else if let Some(c) = &self.candidate {
                out.push(Action::Log(format!(
                    "{} (pid {pid}) {ended} while {} (pid {}) starts: waiting for it",
                    cur.name, c.name, c.pid
                )));
            } else {
                let msg = format!("{} (pid {pid}) {ended}: the service ended", cur.name);
                out.push(Action::Log(msg.clone()));
                out.push(Action::Notify(format!("STOPPING=1\nSTATUS={msg}")));
                self.stopping = true;
                self.exit_as.get_or_insert(ended);
                out.extend(self.signal_running(SIGTERM, now));
            }
        } else if let Some(i) = self.retiring.iter().position(|r| r.pid == pid) {
            let r = self.retiring.remove(i);
            out.push(Action::Log(format!(
                "old version {} (pid {pid}) {ended} after draining for {} ms",
                r.name,
                now.duration_since(r.since).as_millis()
            )));
        }
        out.extend(self.exit_if_done());
        out
    }

    /// SIGTERM or SIGINT (`signal`) reached the supervisor: it forwards the signal to
    /// every version (SIGKILL after the stop timeout) and, once all are gone, ends as the
    /// serving version ended.
    pub fn terminate(&mut self, signal: i32, now: Instant) -> Vec<Action> {
        let mut out = vec![
            Action::Notify("STOPPING=1\nSTATUS=stopping".into()),
            Action::Log(format!("signal {signal}: forwarding it to every version")),
        ];
        if let Some(c) = &self.candidate
            && !self.stopping
        {
            out.push(Action::Reply {
                ok: false,
                message: format!(
                    "the supervisor is stopping: the upgrade to {} (pid {}) is cancelled",
                    c.name, c.pid
                ),
            });
        }
        self.stopping = true;
        if self.current.is_none() && self.exit_as.is_none() && self.candidate.is_none() {
            self.exit_as = Some(Ended::Signaled(signal));
        }
        if let Some(c) = &mut self.candidate {
            out.push(Action::Signal(c.pid, signal));
            c.deadline = c.deadline.min(now + self.timeouts.stop);
        }
        out.extend(self.signal_running(signal, now));
        out.extend(self.exit_if_done());
        out
    }

    /// Sends `signal` to the current and retiring versions, SIGKILL due after the stop
    /// timeout.
    fn signal_running(&mut self, signal: i32, now: Instant) -> Vec<Action> {
        let stop = self.timeouts.stop;
        self.current
            .iter_mut()
            .chain(self.retiring.iter_mut())
            .map(|r| {
                r.sent = Some(signal);
                r.deadline = Some(now + stop);
                Action::Signal(r.pid, signal)
            })
            .collect()
    }

    /// Sends the signals that are due at `now`.
    pub fn tick(&mut self, now: Instant) -> Vec<Action> {
        let mut out = Vec::new();
        if let Some(c) = &mut self.candidate
            && !c.timed_out
            && now >= c.deadline
        {
            c.timed_out = true;
            out.push(Action::Log(format!(
                "{} (pid {}) did not send READY=1 within {} s: SIGKILL",
                c.name,
                c.pid,
                self.timeouts.ready.as_secs_f64()
            )));
            out.push(Action::Signal(c.pid, SIGKILL));
        }
        let stop = self.timeouts.stop;
        for r in self.current.iter_mut().chain(self.retiring.iter_mut()) {
            let Some(deadline) = r.deadline else { continue };
            if now < deadline {
                continue;
            }
            let next = if r.sent.is_none() { SIGTERM } else { SIGKILL };
            out.push(Action::Log(format!(
                "{} (pid {}) still runs after {} ms: signal {next}",
                r.name,
                r.pid,
                now.duration_since(r.since).as_millis()
            )));
            out.push(Action::Signal(r.pid, next));
            r.sent = Some(next);
            r.deadline = (next == SIGTERM).then_some(now + stop);
        }
        out
    }

    /// When [`tick`](Machine::tick) is next due, if ever.
    pub fn next_deadline(&self) -> Option<Instant> {
        let candidate = self
            .candidate
            .as_ref()
            .filter(|c| !c.timed_out)
            .map(|c| c.deadline);
        self.current
            .iter()
            .chain(self.retiring.iter())
            .filter_map(|r| r.deadline)
            .chain(candidate)
            .min()
    }

    /// [`Action::Exit`] once stopping and every version is gone.
    fn exit_if_done(&mut self) -> Option<Action> {
        let gone = self.current.is_none() && self.candidate.is_none() && self.retiring.is_empty();
        if self.stopping && gone && !self.done {
            self.done = true;
            return Some(Action::Exit(self.exit_as.unwrap_or(Ended::Exited(0))));
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Timeouts = Timeouts {
        ready: Duration::from_secs(10),
        drain: Duration::from_secs(60),
        stop: Duration::from_secs(5),
    };

    fn notices(actions: &[Action]) -> Vec<&str> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Notify(s) => Some(s.as_str()),
                _ => None,
            })
            .collect()
    }

    fn reply(actions: &[Action]) -> Option<(bool, &str)> {
        actions.iter().find_map(|a| match a {
            Action::Reply { ok, message } => Some((*ok, message.as_str())),
            _ => None,
        })
    }

    fn signals(actions: &[Action]) -> Vec<(Pid, i32)> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Signal(p, s) => Some((*p, *s)),
                _ => None,
            })
            .collect()
    }

    fn exit(actions: &[Action]) -> Option<Ended> {
        actions.iter().find_map(|a| match a {
            Action::Exit(e) => Some(*e),
            _ => None,
        })
    }

    /// The first version (pid 10) is started and ready at `t0`.
    fn serving(t0: Instant) -> Machine {
        let mut m = Machine::new(T);
        let pre = m.starting("v1", 1, 7);
        assert_eq!(notices(&pre), ["MAINPID=1\nSTATUS=starting v1"]);
        m.started(10, "v1", t0);
        assert!(m.may_start(t0).unwrap_err().contains("in progress"));
        let a = m.ready(10, t0 + Duration::from_millis(300));
        assert_eq!(notices(&a), ["READY=1\nSTATUS=serving: v1 (pid 10)"]);
        assert_eq!(m.current_pid(), Some(10));
        m
    }

    #[test]
    fn upgrade_then_drain_then_exit_with_the_service() {
        let t0 = Instant::now();
        let mut m = serving(t0);
        m.may_start(t0).unwrap();
        let pre = m.starting("v2", 1, 123);
        assert_eq!(
            notices(&pre),
            ["RELOADING=1\nMONOTONIC_USEC=123\nSTATUS=upgrading: starting v2 beside v1 (pid 10)"]
        );
        m.started(20, "v2", t0);
        assert!(
            m.ready(10, t0).is_empty(),
            "a repeated READY=1 of v1 is ignored"
        );
        let a = m.ready(20, t0 + Duration::from_secs(1));
        assert_eq!(notices(&a), ["READY=1\nSTATUS=serving: v2 (pid 20)"]);
        let (ok, msg) = reply(&a).unwrap();
        assert!(ok && msg.contains("v1 (pid 10) drains"), "{msg}");
        assert_eq!(m.current_pid(), Some(20));
        // v3 may start while v1 still drains.
        m.may_start(t0).unwrap();
        // v1 drains by itself.
        let a = m.exited(10, Ended::Exited(0), t0 + Duration::from_secs(2));
        assert!(exit(&a).is_none() && signals(&a).is_empty());
        // The service ends on its own: the supervisor exits with its status.
        let a = m.exited(20, Ended::Exited(4), t0 + Duration::from_secs(3));
        assert_eq!(exit(&a), Some(Ended::Exited(4)));
        assert!(notices(&a)[0].starts_with("STOPPING=1"));
        assert!(m.may_start(t0).is_err());
    }

    #[test]
    fn a_new_version_that_exits_before_ready_leaves_the_old_one_serving() {
        let t0 = Instant::now();
        let mut m = serving(t0);
        m.started(20, "v2", t0);
        let a = m.exited(20, Ended::Exited(3), t0 + Duration::from_secs(1));
        let (ok, msg) = reply(&a).unwrap();
        assert!(!ok);
        assert!(
            msg.contains("v2 (pid 20) exited with status 3 before READY=1")
                && msg.contains("v1 (pid 10) still serves"),
            "{msg}"
        );
        // systemd leaves the reloading state on READY=1.
        assert!(notices(&a)[0].starts_with("READY=1\nSTATUS=upgrade failed"));
        assert!(exit(&a).is_none() && signals(&a).is_empty());
        assert_eq!(m.current_pid(), Some(10));
        m.may_start(t0).unwrap();
        let a = m.exited(21, Ended::Signaled(9), t0);
        assert!(a.is_empty(), "an unknown pid changes nothing: {a:?}");
    }

    #[test]
    fn a_new_version_that_is_never_ready_is_killed() {
        let t0 = Instant::now();
        let mut m = serving(t0);
        m.started(20, "v2", t0);
        assert_eq!(m.next_deadline(), Some(t0 + T.ready));
        assert!(m.tick(t0 + Duration::from_secs(9)).is_empty());
        let a = m.tick(t0 + T.ready);
        assert_eq!(signals(&a), [(20, SIGKILL)]);
        assert_eq!(m.next_deadline(), None);
        assert!(m.ready(20, t0 + T.ready).is_empty(), "too late");
        let a = m.exited(20, Ended::Signaled(SIGKILL), t0 + T.ready);
        let (ok, msg) = reply(&a).unwrap();
        assert!(
            !ok && msg.contains("did not send READY=1 within 10 s"),
            "{msg}"
        );
        assert_eq!(m.current_pid(), Some(10));
    }

    #[test]
    fn an_old_version_that_does_not_drain_gets_sigterm_then_sigkill() {
        let t0 = Instant::now();
        let mut m = serving(t0);
        m.started(20, "v2", t0);
        m.ready(20, t0);
        assert_eq!(m.next_deadline(), Some(t0 + T.drain));
        let a = m.tick(t0 + T.drain);
        assert_eq!(signals(&a), [(10, SIGTERM)]);
        let a = m.tick(t0 + T.drain + T.stop);
        assert_eq!(signals(&a), [(10, SIGKILL)]);
        assert_eq!(m.next_deadline(), None);
        let a = m.exited(10, Ended::Signaled(SIGKILL), t0 + T.drain + T.stop);
        assert!(exit(&a).is_none());
        assert_eq!(m.current_pid(), Some(20));
    }

    #[test]
    fn sigterm_is_forwarded_and_the_supervisor_ends_as_the_service() {
        let t0 = Instant::now();
        let mut m = serving(t0);
        m.started(20, "v2", t0);
        let a = m.terminate(SIGTERM, t0);
        let (ok, msg) = reply(&a).unwrap();
        assert!(!ok && msg.contains("cancelled"), "{msg}");
        assert_eq!(signals(&a), [(20, SIGTERM), (10, SIGTERM)]);
        assert_eq!(notices(&a), ["STOPPING=1\nSTATUS=stopping"]);
        assert!(m.may_start(t0).unwrap_err().contains("stopping"));
        let a = m.exited(20, Ended::Signaled(SIGTERM), t0);
        assert!(notices(&a).is_empty() && reply(&a).is_none(), "{a:?}");
        let a = m.exited(10, Ended::Signaled(SIGTERM), t0);
        assert_eq!(exit(&a), Some(Ended::Signaled(SIGTERM)));
        // Who ignores the signal gets SIGKILL after the stop timeout.
        let mut m = serving(t0);
        m.terminate(libc::SIGINT, t0);
        assert_eq!(signals(&m.tick(t0 + T.stop)), [(10, SIGKILL)]);
    }

    #[test]
    fn the_first_version_failing_ends_the_supervisor() {
        let t0 = Instant::now();
        let mut m = Machine::new(T);
        m.started(10, "v1", t0);
        let a = m.exited(10, Ended::Exited(2), t0);
        assert_eq!(exit(&a), Some(Ended::Exited(2)));
        let mut m = Machine::new(T);
        let a = m.start_failed("v1", "No such file or directory", t0);
        assert_eq!(exit(&a), Some(Ended::Exited(1)));
        let mut m = Machine::new(T);
        m.started(10, "v1", t0);
        m.tick(t0 + T.ready);
        let a = m.exited(10, Ended::Signaled(SIGKILL), t0 + T.ready);
        assert_eq!(exit(&a), Some(Ended::Exited(1)), "a timeout ends with 1");
    }

    #[test]
    fn an_old_version_that_ends_during_the_upgrade_waits_for_the_new_one() {
        let t0 = Instant::now();
        let mut m = serving(t0);
        m.started(20, "v2", t0);
        let a = m.exited(10, Ended::Exited(0), t0);
        assert!(exit(&a).is_none(), "{a:?}");
        let a = m.ready(20, t0);
        assert_eq!(reply(&a).map(|r| r.0), Some(true));
        assert_eq!(m.current_pid(), Some(20));
        // If the new one fails instead, nothing serves: the supervisor exits.
        let mut m = serving(t0);
        m.started(20, "v2", t0);
        m.exited(10, Ended::Exited(0), t0);
        let a = m.exited(20, Ended::Exited(3), t0);
        assert_eq!(exit(&a), Some(Ended::Exited(3)));
    }

    #[test]
    fn repeated_upgrades() {
        let t0 = Instant::now();
        let mut m = serving(t0);
        for (i, pid) in [20, 30, 40].into_iter().enumerate() {
            let now = t0 + Duration::from_secs(i as u64);
            m.may_start(now).unwrap();
            m.started(pid, &format!("v{}", i + 2), now);
            assert!(m.may_start(now).is_err());
            assert_eq!(reply(&m.ready(pid, now)).map(|r| r.0), Some(true));
        }
        assert_eq!(m.current_pid(), Some(40));
        for pid in [10, 20, 30] {
            assert!(exit(&m.exited(pid, Ended::Exited(0), t0)).is_none());
        }
    }

    #[test]
    fn endings_are_described() {
        assert_eq!(Ended::Exited(3).to_string(), "exited with status 3");
        assert_eq!(
            Ended::Signaled(9).to_string(),
            "was killed by signal 9 (SIGKILL)"
        );
    }
}
