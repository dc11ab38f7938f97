//! `dsuctl`: inspect and manage the segments of the dsu kernel module.
//!
//! ```text
//! dsuctl list                      segments with owner, mode, pages, variables, versions
//! dsuctl show SEG [-v]             a segment's variables (with types; -v: fields) and versions
//! dsuctl create SEG [--mode 0660]  create an empty segment
//! dsuctl chmod SEG MODE            change a segment's permission bits (owner or root)
//! dsuctl chown SEG UID[:GID]       change a segment's owner and group (owner or root)
//! dsuctl destroy SEG               remove a segment's name
//! dsuctl dump SEG VAR              hex and ASCII of a variable (read-only)
//! dsuctl watch SEG                 print version arrivals and ends until Ctrl-C
//! dsuctl run --segment SEG --listen ADDR:PORT -- BINARY ARGS...
//!                                  supervise a service: hold its sockets, upgrade it live
//! dsuctl upgrade SEG [BINARY ARGS...]
//!                                  ask the supervisor of SEG to upgrade in place
//! dsuctl check SEG BINARY          what BINARY's attach would do to SEG, without running it
//! dsuctl save SEG FILE [--compress] write a point-in-time snapshot of SEG to FILE
//! dsuctl save SEG DIR --every SECS [--keep N]
//!                                  snapshot every SECS into DIR, keeping the newest N
//! dsuctl restore FILE [--name SEG] recreate a segment from a snapshot
//! dsuctl inspect FILE              a snapshot's variables and heap usage, without restoring
//! ```
//!
//! `--json` prints JSON on stdout for the read commands and `check`. Exit status: 0 on
//! success, 1 on an error (the message is on stderr), 2 on a usage error; `check`: 3 when
//! a variable conflicts, 4 when none does but one looks renamed. Names are checked before the
//! device is opened. The hidden `dsuctl generate man DIR` and `dsuctl generate completions
//! SHELL` write the man pages (clap_mangen) and shell completions (clap_complete) that
//! `make install` installs.

mod check;
mod format;
mod snapshot;
mod supervisor;

use clap::{CommandFactory, Parser, Subcommand};
use dsu::sys::{Create, Device, SetAttr};
use dsu::typedesc::TypeDesc;
use std::io::Write;
use std::process::ExitCode;

const AFTER_HELP: &str = "\
A segment is a named set of pages holding the shared global variables of the versions of a
program (see the dsu crate). Segments are created by the first version that attaches (or by
`dsuctl create`) and live until `dsuctl destroy` and the last version is gone.

Examples:
  dsuctl list
  dsuctl show counter --json
  dsuctl create app --mode 0660
  dsuctl chmod app 0640
  dsuctl chown app 1000:100
  dsuctl dump app 'app::COUNTER'
  dsuctl watch app
  dsuctl run --segment app --listen 127.0.0.1:6379 -- /usr/bin/app_v1
  dsuctl upgrade app /usr/bin/app_v2
  dsuctl check app ./target/release/app-v2 --json
  dsuctl save app /var/lib/app/app.dsusnap --compress
  dsuctl save app /var/lib/app/snapshots --every 300 --keep 12
  dsuctl restore /var/lib/app/app.dsusnap
  dsuctl inspect /var/lib/app/app.dsusnap --json

Exit status: 0 success, 1 error, 2 usage error; check: 3 conflict, 4 probable rename.";

/// Inspect and manage dsu segments (shared globals for live update).
#[derive(Parser, Debug, PartialEq)]
#[command(name = "dsuctl", version, about, after_help = AFTER_HELP)]
pub struct Cli {
    /// Print JSON on stdout instead of text (list, show, dump, watch, check, save, restore,
    /// inspect).
    #[arg(long, global = true)]
    json: bool,

    /// The dsu device node.
    #[arg(long, global = true, value_name = "PATH", default_value = dsu::sys::DEVICE_PATH)]
    device: String,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug, PartialEq)]
enum Command {
    /// List the segments: owner (uid:gid), mode, pages, variables, live versions, handles.
    List,
    /// Show a segment's variables (name, size, pages, fingerprint, creator, creation time)
    /// and live versions (id, label, pid, age, pages mapped, state: candidate or ready).
    Show {
        /// Segment name.
        segment: String,
        /// Also list each struct variable's fields (offset, size, name, type), from the
        /// type description stored in the segment (--json always includes them).
        #[arg(long, short)]
        verbose: bool,
    },
    /// Create an empty segment owned by you. Fails if it exists.
    Create {
        /// Segment name: 1-63 characters of [A-Za-z0-9._-].
        segment: String,
        /// Permission bits in octal, like a file's (read: inspect and attach; write: bind).
        #[arg(long, default_value = "0600", value_parser = parse_mode)]
        mode: u32,
    },
    /// Change a segment's permission bits (owner or root only). The next operation of
    /// every program sees the new mode; existing mappings stay.
    Chmod {
        /// Segment name.
        segment: String,
        /// Permission bits in octal, e.g. 0660 (read: inspect and attach; write: bind).
        #[arg(value_name = "MODE", value_parser = parse_mode)]
        mode: u32,
    },
    /// Change a segment's owner and group: USER, USER:GROUP or :GROUP, each a name or a
    /// number (in your user namespace). As with chown(1), only root may change the owner;
    /// the owner may change the group to one of its groups.
    Chown {
        /// Segment name.
        segment: String,
        /// New owner and group: USER, USER:GROUP or :GROUP.
        #[arg(value_name = "USER[:GROUP]", value_parser = parse_owner)]
        owner: Owner,
    },
    /// Remove a segment's name (owner or root only). Running versions keep their pages;
    /// the memory is freed when the last one is gone.
    Destroy {
        /// Segment name.
        segment: String,
    },
    /// Print a variable's bytes, or bytes of the segment's shared heap, in hex and ASCII
    /// (read-only; needs read permission).
    Dump {
        /// Segment name.
        segment: String,
        /// Variable name, e.g. 'app::COUNTER' (see `dsuctl show SEG`); not with --heap.
        #[arg(required_unless_present = "heap", conflicts_with = "heap")]
        variable: Option<String>,
        /// Read the entry with this fingerprint (hex) instead of the newest of that name.
        #[arg(long, value_parser = parse_hex, conflicts_with = "heap")]
        fingerprint: Option<u64>,
        /// Dump LEN bytes of the shared heap at address ADDR (hex, as pointers in the heap
        /// print; see `dsuctl show SEG` for its range). LEN is decimal or 0x-prefixed hex.
        #[arg(long, num_args = 2, value_names = ["ADDR", "LEN"])]
        heap: Option<Vec<String>>,
    },
    /// Reclaim variables that no live version declares and that no ready version has used
    /// for --min-age updates (READYs): globals an update retired, the old side of a
    /// migration, leftovers of a start-up that never got ready. A variable any version
    /// still maps, or that a starting version has resolved, is never reclaimed. Needs read
    /// and write permission (read with --dry-run).
    Gc {
        /// Segment name.
        segment: String,
        /// Only list what would be reclaimed.
        #[arg(long)]
        dry_run: bool,
        /// Updates a variable must have gone unused (default: the module parameter
        /// gc_min_age, 1 unless changed; 0: everything unused now).
        #[arg(long, value_name = "N")]
        min_age: Option<u32>,
    },
    /// Print each version that binds to, becomes ready in, aborts or leaves the segment,
    /// until Ctrl-C.
    Watch {
        /// Segment name.
        segment: String,
    },
    /// Supervise a service: hold its listening sockets, pass them to each version as
    /// systemd socket activation does (LISTEN_FDS, fds from 3), and upgrade it in place.
    ///
    /// On `dsuctl upgrade SEG` (or SIGUSR2: the serving version's command line again) the
    /// new version starts beside the old one; once it sends READY=1 on its NOTIFY_SOCKET,
    /// the old one drains (it learns of the newer version from dsu itself) and gets
    /// SIGTERM after --drain-timeout, SIGKILL after --stop-timeout more. A new version
    /// that exits or misses --ready-timeout is killed and the old one keeps serving.
    /// SIGTERM and SIGINT are forwarded to every version. The supervisor exits, as the
    /// serving version did, when that version ends with no upgrade in progress. With
    /// NOTIFY_SOCKET set it speaks the notify protocol itself (Type=notify: MAINPID=,
    /// READY=1, RELOADING=1, STATUS=).
    #[command(after_help = RUN_AFTER_HELP)]
    Run {
        /// The segment the versions share: names the control socket
        /// ($XDG_RUNTIME_DIR/dsu/SEG.sock, or /run/dsu/SEG.sock).
        #[arg(long, value_name = "SEG")]
        segment: String,
        /// A socket to listen on and pass to every version: [NAME=]ADDR:PORT (IPv6 in
        /// brackets); NAME goes in LISTEN_FDNAMES (default tcp-PORT). Repeatable: fds 3, 4,
        /// ... in this order.
        #[arg(long, value_name = "[NAME=]ADDR:PORT", value_parser = supervisor::spawn::parse_listen)]
        listen: Vec<supervisor::spawn::Listen>,
        /// How long a new version has to send READY=1, in seconds.
        #[arg(long, value_name = "SECS", default_value = "90", value_parser = parse_secs)]
        ready_timeout: std::time::Duration,
        /// How long an old version may drain before it gets SIGTERM, in seconds.
        #[arg(long, value_name = "SECS", default_value = "300", value_parser = parse_secs)]
        drain_timeout: std::time::Duration,
        /// How long after SIGTERM a version gets SIGKILL, in seconds.
        #[arg(long, value_name = "SECS", default_value = "10", value_parser = parse_secs)]
        stop_timeout: std::time::Duration,
        /// The control socket, instead of the segment's default.
        #[arg(long, value_name = "PATH")]
        control: Option<std::path::PathBuf>,
        /// The first version's program and arguments (after --).
        #[arg(required = true, last = true, value_name = "BINARY ARGS")]
        command: Vec<std::ffi::OsString>,
    },
    /// Ask the supervisor of SEG (`dsuctl run`) to upgrade: start BINARY ARGS (without
    /// them, the serving version's command line again) beside the serving version, and
    /// wait until it is ready (exit 0) or has failed and was killed (exit 1, with why).
    Upgrade {
        /// Segment name (as given to `dsuctl run --segment`).
        segment: String,
        /// The control socket, instead of the segment's default.
        #[arg(long, value_name = "PATH")]
        control: Option<std::path::PathBuf>,
        /// The new version's program and arguments (a relative path is taken from the
        /// current directory, a bare name from the supervisor's PATH).
        #[arg(
            trailing_var_arg = true,
            allow_hyphen_values = true,
            value_name = "BINARY ARGS"
        )]
        command: Vec<std::ffi::OsString>,
    },
    /// Say what a built program's attach would do to a segment, without running it: which
    /// of its variables are common, added, migrated (from which type, with or without a
    /// merge step) or in conflict (with the differing field), and which of the segment's
    /// variables it no longer declares ("renamed?" when one it adds has the same type).
    /// Reads the binary's global descriptors (Rust and C) from its ELF file.
    ///
    /// Exit status: 0 compatible, 3 a conflict (attach would fail), 4 no conflict but a
    /// probable rename (that variable's state would start over), 1 an error.
    ///
    /// JSON (--json): one object with "segment", "segment_exists", "binary", "variables"
    /// (each: "name", "type", "size", "fingerprint" as a hex string, "status" one of
    /// common, added, migrated, conflict; "from" and "merge" when migrated; "conflict" one
    /// of type, size, migration, with "segment_type" and "detail"), "undeclared" (each:
    /// "name", "type", "size", "fingerprint", "renamed_to": a list of names), "conflicts"
    /// and "probable_renames" (counts).
    Check {
        /// Segment name.
        segment: String,
        /// The program's executable (x86_64 ELF, built with dsu or libdsu).
        binary: std::path::PathBuf,
    },
    /// Write a point-in-time snapshot of a segment to FILE: every variable's bytes, the
    /// directory (names, sizes, fingerprints, type descriptions, labels), the shared heap,
    /// its address and the segment's mode, as they were at one instant, while its versions
    /// keep running. Needs read permission. The file is written atomically (a temporary
    /// file beside it, fsync, rename, fsync of the directory): a crash leaves the old file
    /// or the new one. Zero pages are not stored.
    ///
    /// With --every SECS, TARGET is a directory and a snapshot is written every SECS seconds
    /// until dsuctl is killed (or --count saves), each named
    /// SEG.<UTC time, RFC 3339 with milliseconds>.dsusnap (e.g.
    /// kv.2026-12-01T06:31:28.123Z.dsusnap), so that the names sort by time; --keep N then
    /// removes the oldest files of that pattern beyond the newest N (no other file). A
    /// failed save is reported on stderr and the next one is tried; with --count the exit
    /// status is 1 if any failed. A machine crash loses at most one interval. With --json,
    /// each save prints one JSON object on one line ("segment", "path", "bytes",
    /// "pages_stored", "segment_pages", "heap_pages", "raw_bytes", "variables",
    /// "generation", "taken_ns", "taken", "snapshot_call_us", "duration_us", "attempts",
    /// "held_locks", and "pruned":
    /// the files --keep removed).
    #[command(after_help = SAVE_AFTER_HELP)]
    Save {
        /// Segment name.
        segment: String,
        /// The snapshot file to write (replaced if it exists); with --every, a directory.
        #[arg(value_name = "FILE|DIR")]
        target: std::path::PathBuf,
        /// Compress blocks with zstd (level 3; blocks it does not shrink stay as they are).
        #[arg(long)]
        compress: bool,
        /// Save every SECS seconds into the directory TARGET.
        #[arg(long, value_name = "SECS", value_parser = parse_secs)]
        every: Option<std::time::Duration>,
        /// With --every: keep the newest N saves of the segment in TARGET (default: all).
        #[arg(long, value_name = "N", requires = "every", value_parser = clap::value_parser!(u64).range(1..))]
        keep: Option<u64>,
        /// With --every: stop after N saves (default: run until killed).
        #[arg(long, value_name = "N", requires = "every", value_parser = clap::value_parser!(u64).range(1..))]
        count: Option<u64>,
        /// Take up to N snapshots to find an instant at which no dsu lock of the segment is
        /// held (an image taken mid-update shows what a SIGKILL would leave); 1 keeps the
        /// first instant whatever it shows.
        #[arg(long, value_name = "N", default_value_t = dsu::snapshot::LOCK_ATTEMPTS, value_parser = clap::value_parser!(u32).range(1..))]
        lock_attempts: u32,
    },
    /// Recreate a segment from a snapshot, before any version attaches: every variable
    /// with its bytes, type description and label, and the shared heap at its address. The
    /// new segment is owned by you, with the image's mode (or --mode). A version that
    /// attaches then finds its globals common, as they were at the snapshot.
    ///
    /// The whole file is checked (every block's checksum, the trailer) before the segment
    /// appears: a truncated, corrupt or newer-format file is refused, saying what is wrong,
    /// and nothing is created. A segment of that name already existing is refused too,
    /// with nothing changed (restore under --name, or `dsuctl destroy` it first).
    Restore {
        /// The snapshot file.
        file: std::path::PathBuf,
        /// Restore under this name instead of the one it was saved under.
        #[arg(long, value_name = "SEG")]
        name: Option<String>,
        /// Permission bits of the new segment in octal (default: the image's).
        #[arg(long, value_parser = parse_mode)]
        mode: Option<u32>,
    },
    /// Show what a snapshot holds without restoring it (no module needed): the segment's
    /// name, owner, mode, generation and time; each variable's size, pages, fingerprint,
    /// creator label, creation time and type; the heap's range and its allocated and free
    /// bytes (the allocator's walk over the image's heap). Checks the whole file as a
    /// restore would, and fails the same way on a bad one.
    ///
    /// JSON (--json): "path", "format_version", "bytes", "blocks", "compressed_blocks",
    /// "raw_bytes", "stored_bytes", "segment", "uid", "gid", "mode" (octal string),
    /// "generation", "taken_ns", "taken", "pages", "segment_pages_stored", "variables"
    /// (each: "name", "size", "align", "first_page", "pages", "fingerprint" as hex,
    /// "created_label", "created_ns", "type" as in show --json) and "heap" ("base",
    /// "reserve", "size", "pages_stored", "allocator": "allocated_bytes",
    /// "allocated_blocks", "free_bytes", "free_blocks", "largest_free").
    Inspect {
        /// The snapshot file.
        file: std::path::PathBuf,
    },
    /// Write the man pages or a shell's completions (used by `make install`).
    #[command(hide = true, subcommand)]
    Generate(Generate),
}

#[derive(Subcommand, Debug, PartialEq)]
enum Generate {
    /// Write dsuctl.1 and one dsuctl-COMMAND.1 per command into DIR.
    Man {
        /// Output directory (created if missing).
        dir: std::path::PathBuf,
    },
    /// Print the completion script of SHELL on stdout.
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
}

const RUN_AFTER_HELP: &str = "\
Example (the kv server of examples/kv, updated from v1 to v2):
  dsuctl run --segment kv --listen 127.0.0.1:6379 -- kv_v1 --segment kv
  dsuctl upgrade kv kv_v2 --segment kv

Versions must send READY=1 to $NOTIFY_SOCKET once they serve (dsu::notify::ready in
Rust, sd_notify(3) or any datagram in C) and take their sockets from LISTEN_FDS
(sd_listen_fds(3)). Exit status: that of the serving version when it ends (a version
killed by a signal ends the supervisor by the same signal); when no version could start,
that of the failed one, or 1 if it exited with 0 or missed the ready timeout.";

const SAVE_AFTER_HELP: &str = "\
Examples:
  dsuctl save kv /var/lib/kv/kv.dsusnap
  dsuctl save kv /var/lib/kv/snapshots --every 60 --keep 10 --compress
  dsuctl restore /var/lib/kv/snapshots/kv.2026-12-01T06:31:28.123Z.dsusnap

After a reboot, restore the newest save before starting the service (or let the program
call dsu::Attach::restore_from):
  dsuctl restore \"$(ls /var/lib/kv/snapshots/kv.*.dsusnap | tail -n 1)\"";

/// Parses seconds, fractions allowed.
fn parse_secs(s: &str) -> Result<std::time::Duration, String> {
    let secs: f64 = s
        .parse()
        .map_err(|_| format!("{s:?} is not a number of seconds"))?;
    std::time::Duration::try_from_secs_f64(secs)
        .map_err(|_| format!("{s:?} is not a number of seconds >= 0"))
}

/// The new owner and group of `dsuctl chown`; `None` leaves one unchanged.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Owner {
    uid: Option<u32>,
    gid: Option<u32>,
}

/// Parses `USER`, `USER:GROUP`, `USER:` (not supported: say so) or `:GROUP`, each a number
/// or a name looked up in the user and group databases.
fn parse_owner(s: &str) -> Result<Owner, String> {
    let (user, group) = match s.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (s, None),
    };
    let uid = match user {
        "" => None,
        u => Some(match u.parse::<u32>() {
            Ok(n) => n,
            Err(_) => nix::unistd::User::from_name(u)
                .ok()
                .flatten()
                .map(|p| p.uid.as_raw())
                .ok_or_else(|| format!("no user named {u:?}"))?,
        }),
    };
    let gid = match group {
        None => None,
        Some("") => return Err(format!("{s:?}: give the group after the colon")),
        Some(g) => Some(match g.parse::<u32>() {
            Ok(n) => n,
            Err(_) => nix::unistd::Group::from_name(g)
                .ok()
                .flatten()
                .map(|gr| gr.gid.as_raw())
                .ok_or_else(|| format!("no group named {g:?}"))?,
        }),
    };
    if uid.is_none() && gid.is_none() {
        return Err("give an owner, an owner and a group (USER:GROUP) or a group (:GROUP)".into());
    }
    Ok(Owner { uid, gid })
}

/// Parses an octal mode such as `0660` or `660`.
fn parse_mode(s: &str) -> Result<u32, String> {
    let digits = s.strip_prefix("0o").unwrap_or(s);
    match u32::from_str_radix(digits, 8) {
        Ok(m) if m <= 0o777 => Ok(m),
        Ok(_) => Err(format!("mode {s} is above 0777")),
        Err(_) => Err(format!("mode {s} is not an octal number like 0660")),
    }
}

/// Parses a hex fingerprint, with or without `0x`.
/// The allocator's counters of `segment`'s heap, read page by page with
/// `DSU_IOC_READ_HEAP` and walked by the heap's own code ([`dsu::heap::stats_from_bytes`]).
/// No lock is taken (dsuctl only reads): `None` if the heap is not formatted, or changed
/// under the walk three times in a row.
fn heap_stats(dev: &Device, segment: &str, h: &dsu::sys::HeapInfo) -> Option<dsu::heap::HeapStats> {
    const PAGE: u64 = 4096;
    (0..3).find_map(|_| {
        let mut pages: std::collections::HashMap<u64, Vec<u8>> = Default::default();
        dsu::heap::stats_from_bytes(h.base as usize, h.size as usize, |off, buf| {
            let page = off / PAGE;
            if (off % PAGE) as usize + buf.len() > PAGE as usize {
                return false;
            }
            let bytes = pages.entry(page).or_insert_with(|| {
                let mut b = vec![0u8; PAGE as usize];
                match dev.read_heap(segment, page * PAGE, &mut b) {
                    Ok(n) => b.truncate(n),
                    Err(_) => b.clear(),
                }
                b
            });
            let at = (off % PAGE) as usize;
            match bytes.get(at..at + buf.len()) {
                Some(src) => {
                    buf.copy_from_slice(src);
                    true
                }
                None => false,
            }
        })
    })
}

/// `--heap ADDR LEN`: a hex address and a length (decimal, or hex with `0x`), at most
/// 16 MiB so that a typo does not print gigabytes.
fn heap_range(args: &[String]) -> Result<(u64, u64), Failure> {
    let [addr, len] = args else {
        return Err(Failure::Usage("--heap takes ADDR and LEN".into()));
    };
    let addr = parse_hex(addr).map_err(Failure::Usage)?;
    let len = match len.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => len.parse().ok(),
    }
    .filter(|l| (1..=16 << 20).contains(l))
    .ok_or_else(|| Failure::Usage(format!("LEN {len} is not a length of 1 byte to 16 MiB")))?;
    Ok((addr, len))
}

fn parse_hex(s: &str) -> Result<u64, String> {
    u64::from_str_radix(s.trim_start_matches("0x"), 16)
        .map_err(|_| format!("{s} is not a hex number"))
}

fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

fn json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string_pretty(v).expect("serialisable") + "\n"
}

/// A failure of dsuctl: the library's error, or the device node missing.
#[derive(Debug)]
enum Failure {
    Dsu(dsu::Error),
    /// The device node does not exist; names the path actually used.
    NoDevice(String),
    Io(String, std::io::Error),
    /// An argument that parses but cannot be used (e.g. an address outside the heap).
    Usage(String),
    /// `dsuctl run` could not start, or `dsuctl upgrade` failed: what happened.
    Supervisor(String),
}

impl From<dsu::Error> for Failure {
    fn from(e: dsu::Error) -> Self {
        Failure::Dsu(e)
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Dsu(e) => write!(f, "{e}"),
            Failure::NoDevice(path) if path == dsu::sys::DEVICE_PATH => write!(
                f,
                "{path} does not exist: the dsu kernel module is not loaded (load it with \
                 `modprobe dsu`, or `insmod kmod/dsu.ko` from a build)"
            ),
            Failure::NoDevice(path) => write!(
                f,
                "{path} does not exist: --device must name the dsu module's character device \
                 (it is {} when the module is loaded)",
                dsu::sys::DEVICE_PATH
            ),
            Failure::Io(what, e) => write!(f, "{what}: {e}"),
            Failure::Usage(why) => f.write_str(why),
            Failure::Supervisor(what) => write!(f, "{what}"),
        }
    }
}

/// Maps the library's "module not loaded" to the device path actually used.
fn device_failure(device: &str) -> impl Fn(dsu::Error) -> Failure + '_ {
    move |e| match e {
        dsu::Error::ModuleNotLoaded => Failure::NoDevice(device.into()),
        e => Failure::Dsu(e),
    }
}

/// Checks every name the command carries, so that a bad name is reported as such whether
/// or not the module is loaded.
fn check_names(command: &Command) -> Result<(), dsu::Error> {
    use dsu::names::{check_segment, check_variable};
    match command {
        Command::List | Command::Generate(_) | Command::Inspect { .. } => Ok(()),
        Command::Restore { name, .. } => name.as_deref().map_or(Ok(()), check_segment),
        Command::Save { segment, .. } => check_segment(segment),
        Command::Run { segment, .. } | Command::Upgrade { segment, .. } => check_segment(segment),
        Command::Show { segment, .. }
        | Command::Create { segment, .. }
        | Command::Chmod { segment, .. }
        | Command::Chown { segment, .. }
        | Command::Destroy { segment }
        | Command::Gc { segment, .. }
        | Command::Watch { segment }
        | Command::Check { segment, .. } => check_segment(segment),
        Command::Dump {
            segment, variable, ..
        } => check_segment(segment).and_then(|()| match variable {
            Some(v) => check_variable(v),
            None => Ok(()),
        }),
    }
}

/// Writes the man pages or a completion script.
fn generate(what: &Generate) -> Result<(), Failure> {
    let cmd = Cli::command();
    match what {
        Generate::Man { dir } => {
            std::fs::create_dir_all(dir)
                .map_err(|e| Failure::Io(format!("cannot create {}", dir.display()), e))?;
            clap_mangen::generate_to(cmd, dir)
                .map_err(|e| Failure::Io(format!("cannot write man pages to {}", dir.display()), e))
        }
        Generate::Completions { shell } => {
            let mut cmd = cmd;
            clap_complete::generate(*shell, &mut cmd, "dsuctl", &mut std::io::stdout());
            Ok(())
        }
    }
}

/// `dsuctl run` (returns only on a set-up error) and `dsuctl upgrade`.
fn supervise(command: Command) -> Result<(), Failure> {
    match command {
        Command::Run {
            segment,
            listen,
            ready_timeout,
            drain_timeout,
            stop_timeout,
            control,
            command,
        } => {
            let config = supervisor::Config {
                segment,
                listen,
                timeouts: supervisor::machine::Timeouts {
                    ready: ready_timeout,
                    drain: drain_timeout,
                    stop: stop_timeout,
                },
                control,
                command,
            };
            match supervisor::run(config) {
                Err(e) => Err(Failure::Supervisor(e)),
            }
        }
        Command::Upgrade {
            segment,
            control,
            mut command,
        } => {
            // A path with a slash is the caller's: make it absolute here, since the
            // supervisor runs elsewhere.
            if let Some(p) = command.first_mut()
                && std::path::Path::new(p).components().count() > 1
            {
                *p = std::path::absolute(&p)
                    .map_err(|e| Failure::Io(format!("{}", p.to_string_lossy()), e))?
                    .into_os_string();
            }
            let request = supervisor::control::Request {
                upgrade: command
                    .into_iter()
                    .map(|a| {
                        a.into_string().map_err(|a| {
                            Failure::Supervisor(format!("{a:?}: arguments must be UTF-8"))
                        })
                    })
                    .collect::<Result<_, _>>()?,
            };
            let path = supervisor::control::path(&segment, control.as_deref());
            let reply =
                supervisor::control::upgrade(&path, &request).map_err(Failure::Supervisor)?;
            if reply.ok {
                println!("{}", reply.message);
                Ok(())
            } else {
                Err(Failure::Supervisor(reply.message))
            }
        }
        _ => unreachable!("only run and upgrade"),
    }
}

/// `dsuctl check`: reads the binary, then the segment, and prints the report; returns the
/// exit status.
fn check(
    dev: &Device,
    segment: &str,
    binary: &std::path::Path,
    json_out: bool,
) -> Result<u8, Failure> {
    let bytes = std::fs::read(binary)
        .map_err(|e| Failure::Io(format!("cannot read {}", binary.display()), e))?;
    let vars = check::read_binary(&bytes).map_err(|why| {
        Failure::Io(
            format!("cannot read the dsu globals of {}", binary.display()),
            std::io::Error::new(std::io::ErrorKind::InvalidData, why),
        )
    })?;
    let exists = dev
        .list_segments()?
        .iter()
        .any(|s| s.name == segment && !s.destroyed);
    let mut entries = Vec::new();
    if exists {
        for v in dev.list_variables(segment)? {
            let ty = dev
                .read_type_desc(segment, &v.name, Some(v.fingerprint))
                .ok()
                .flatten()
                .and_then(|text| TypeDesc::parse(&text).ok());
            entries.push(check::SegmentEntry {
                name: v.name,
                size: v.size,
                fingerprint: v.fingerprint,
                ty,
            });
        }
    }
    let report = check::plan(
        segment,
        exists,
        &binary.display().to_string(),
        &vars,
        &entries,
    );
    let text = if json_out {
        json(&report)
    } else {
        check::text(&report)
    };
    let _ = std::io::stdout().lock().write_all(text.as_bytes());
    Ok(report.exit_code())
}

fn run(cli: Cli) -> Result<u8, Failure> {
    check_names(&cli.command)?;
    if let Command::Generate(what) = &cli.command {
        return generate(what).map(|()| 0);
    }
    if matches!(cli.command, Command::Run { .. } | Command::Upgrade { .. }) {
        return supervise(cli.command).map(|()| 0);
    }
    // Snapshots: inspect needs no module; save and restore open the device themselves.
    let text = match &cli.command {
        Command::Save {
            segment,
            target,
            compress,
            every,
            keep,
            count,
            lock_attempts,
        } => {
            return snapshot::save(&snapshot::Save {
                lock_attempts: *lock_attempts,
                device: &cli.device,
                segment,
                target,
                compress: *compress,
                every: *every,
                keep: keep.map(|k| k as usize),
                count: *count,
                json: cli.json,
            });
        }
        Command::Restore { file, name, mode } => Some(snapshot::restore(
            &cli.device,
            file,
            name.as_deref(),
            *mode,
            cli.json,
        )?),
        Command::Inspect { file } => Some(snapshot::inspect(file, cli.json)?),
        _ => None,
    };
    if let Some(text) = text {
        let _ = std::io::stdout().lock().write_all(text.as_bytes());
        return Ok(0);
    }
    let mut dev = match Device::open_path(&cli.device) {
        Err(dsu::Error::ModuleNotLoaded) => return Err(Failure::NoDevice(cli.device.clone())),
        r => r?,
    };
    if let Command::Check { segment, binary } = &cli.command {
        return check(&dev, segment, binary, cli.json);
    }
    let mut out = std::io::stdout().lock();
    let text = match &cli.command {
        Command::List => {
            let segs = dev.list_segments()?;
            if cli.json {
                json(
                    &segs
                        .iter()
                        .map(format::SegmentJson::from)
                        .collect::<Vec<_>>(),
                )
            } else {
                format::segments_text(&segs)
            }
        }
        Command::Show { segment, verbose } => {
            dsu::names::check_segment(segment)?;
            let seg = dev
                .list_segments()?
                .into_iter()
                .find(|s| &s.name == segment && !s.destroyed)
                .ok_or_else(|| dsu::Error::SegmentNotFound {
                    segment: segment.clone(),
                })?;
            let vars = dev.list_variables(segment)?;
            let versions = dev.list_versions(segment)?;
            // Best effort: an entry without a description (or a module without
            // DSU_READ_TYPE_DESC) shows no type.
            let types: Vec<Option<TypeDesc>> = vars
                .iter()
                .map(|v| {
                    dev.read_type_desc(segment, &v.name, Some(v.fingerprint))
                        .ok()
                        .flatten()
                        .and_then(|text| TypeDesc::parse(&text).ok())
                })
                .collect();
            let heap_stats = seg.heap.as_ref().and_then(|h| heap_stats(&dev, segment, h));
            if cli.json {
                json(&format::show_json(
                    &seg,
                    &vars,
                    &types,
                    &versions,
                    now_ns(),
                    heap_stats.as_ref(),
                ))
            } else {
                format::show_text(
                    &seg,
                    &vars,
                    &types,
                    &versions,
                    now_ns(),
                    *verbose,
                    heap_stats.as_ref(),
                )
            }
        }
        Command::Create { segment, mode } => {
            dev.attach(segment, Create::MustCreate, *mode)?;
            format!("created segment {segment} (mode {mode:04o})\n")
        }
        Command::Chmod { segment, mode } => {
            let attrs = SetAttr {
                mode: Some(*mode),
                ..Default::default()
            };
            dev.set_attr(segment, attrs)?;
            format!("segment {segment}: mode {mode:04o}\n")
        }
        Command::Chown { segment, owner } => {
            let attrs = SetAttr {
                uid: owner.uid,
                gid: owner.gid,
                ..Default::default()
            };
            dev.set_attr(segment, attrs)?;
            let show = |id: Option<u32>| id.map_or("unchanged".to_string(), |i| i.to_string());
            format!(
                "segment {segment}: owner {}, group {}\n",
                show(owner.uid),
                show(owner.gid)
            )
        }
        Command::Generate(_) | Command::Run { .. } | Command::Upgrade { .. } => {
            unreachable!("handled before the device is opened")
        }
        Command::Check { .. }
        | Command::Save { .. }
        | Command::Restore { .. }
        | Command::Inspect { .. } => unreachable!("handled before"),
        Command::Destroy { segment } => {
            dev.destroy(segment)?;
            format!("destroyed segment {segment}\n")
        }
        Command::Dump {
            segment,
            heap: Some(range),
            ..
        } => {
            let (addr, len) = heap_range(range)?;
            let seg = dev
                .list_segments()?
                .into_iter()
                .find(|s| &s.name == segment && !s.destroyed)
                .ok_or_else(|| dsu::Error::SegmentNotFound {
                    segment: segment.clone(),
                })?;
            let heap = seg
                .heap
                .ok_or_else(|| Failure::Usage(format!("segment {segment} has no shared heap")))?;
            let end = heap.base + heap.size;
            if addr < heap.base || addr >= end {
                return Err(Failure::Usage(format!(
                    "address {addr:#x} is outside the heap's backed range {:#x}..{end:#x}",
                    heap.base
                )));
            }
            let mut bytes = vec![0u8; len.min(end - addr) as usize];
            let n = dev.read_heap(segment, addr - heap.base, &mut bytes)?;
            bytes.truncate(n);
            if cli.json {
                json(&format::HeapDumpJson {
                    segment: segment.clone(),
                    address: format!("{addr:#x}"),
                    size: bytes.len(),
                    hex: bytes.iter().map(|b| format!("{b:02x}")).collect(),
                })
            } else {
                format!(
                    "heap {addr:#x}: {} bytes\n{}",
                    bytes.len(),
                    format::hexdump(&bytes)
                )
            }
        }
        Command::Dump {
            segment,
            variable,
            fingerprint,
            ..
        } => {
            let variable = variable.as_deref().unwrap_or_default();
            let (bytes, fp) = dev.read_var_all(segment, variable, *fingerprint)?;
            if cli.json {
                json(&format::DumpJson {
                    segment: segment.clone(),
                    name: variable.into(),
                    size: bytes.len(),
                    fingerprint: format!("{fp:016x}"),
                    hex: bytes.iter().map(|b| format!("{b:02x}")).collect(),
                })
            } else {
                format!(
                    "{variable}: {} bytes, fingerprint {fp:016x}\n{}",
                    bytes.len(),
                    format::hexdump(&bytes)
                )
            }
        }
        Command::Gc {
            segment,
            dry_run,
            min_age,
        } => {
            let options = dsu::sys::GcOptions {
                dry_run: *dry_run,
                min_age: *min_age,
            };
            let r = dev.gc(segment, options)?;
            if cli.json {
                json(&format::GcJson {
                    segment: segment.clone(),
                    dry_run: *dry_run,
                    generation: r.generation,
                    total: r.total,
                    pages: r.pages,
                    variables: r.variables.iter().map(Into::into).collect(),
                })
            } else {
                format::gc_text(segment, &r, *dry_run)
            }
        }
        Command::Watch { segment } => {
            dev.attach(segment, Create::MustExist, 0)?;
            if !cli.json {
                let _ = writeln!(out, "watching segment {segment} (Ctrl-C to stop)");
                let _ = out.flush();
            }
            loop {
                for e in dev.read_events()? {
                    let line = if cli.json {
                        serde_json::to_string(&format::EventJson::from(&e)).expect("serialisable")
                    } else {
                        format::event_text(&e)
                    };
                    if writeln!(out, "{line}").and_then(|_| out.flush()).is_err() {
                        return Ok(0); // stdout closed
                    }
                }
            }
        }
    };
    let _ = out.write_all(text.as_bytes());
    Ok(0)
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
        }
    };
    match run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("dsuctl: {e}");
            ExitCode::from(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("dsuctl").chain(args.iter().copied()))
    }

    #[test]
    fn parses_commands() {
        assert_eq!(parse(&["list"]).unwrap().command, Command::List);
        let c = parse(&["show", "app", "--json"]).unwrap();
        assert!(c.json);
        assert_eq!(
            c.command,
            Command::Show {
                segment: "app".into(),
                verbose: false
            }
        );
        assert_eq!(
            parse(&["show", "app", "-v"]).unwrap().command,
            Command::Show {
                segment: "app".into(),
                verbose: true
            }
        );
        assert!(parse(&["--json", "list"]).unwrap().json);
        assert_eq!(
            parse(&["create", "app"]).unwrap().command,
            Command::Create {
                segment: "app".into(),
                mode: 0o600
            }
        );
        assert_eq!(
            parse(&["create", "app", "--mode", "0660"]).unwrap().command,
            Command::Create {
                segment: "app".into(),
                mode: 0o660
            }
        );
        assert_eq!(
            parse(&["dump", "app", "app::X", "--fingerprint", "0xff"])
                .unwrap()
                .command,
            Command::Dump {
                segment: "app".into(),
                variable: Some("app::X".into()),
                fingerprint: Some(255),
                heap: None,
            }
        );
        assert_eq!(
            parse(&["dump", "app", "--heap", "0x300000001000", "64"])
                .unwrap()
                .command,
            Command::Dump {
                segment: "app".into(),
                variable: None,
                fingerprint: None,
                heap: Some(vec!["0x300000001000".into(), "64".into()]),
            }
        );
        assert_eq!(
            heap_range(&["300000001000".into(), "0x40".into()]).ok(),
            Some((0x3000_0000_1000, 64))
        );
        assert!(heap_range(&["xyz".into(), "64".into()]).is_err());
        assert!(heap_range(&["1000".into(), "0".into()]).is_err());
        assert_eq!(
            parse(&["watch", "app"]).unwrap().command,
            Command::Watch {
                segment: "app".into()
            }
        );
        assert_eq!(
            parse(&["destroy", "app"]).unwrap().command,
            Command::Destroy {
                segment: "app".into()
            }
        );
    }

    #[test]
    fn usage_errors() {
        for bad in [
            &["show"][..],
            &["create", "a", "--mode", "999"],
            &["create", "a", "--mode", "1000"],
            &["frob"],
            &[],
        ] {
            let e = parse(bad).unwrap_err();
            assert!(e.use_stderr(), "{bad:?} must be a usage error (exit 2)");
        }
        let e = parse(&["create", "a", "--mode", "0999"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("not an octal number"), "{e}");
        assert!(
            !parse(&["--help"]).unwrap_err().use_stderr(),
            "--help goes to stdout, exit 0"
        );
    }

    #[test]
    fn chmod_and_chown() {
        assert_eq!(
            parse(&["chmod", "app", "0640"]).unwrap().command,
            Command::Chmod {
                segment: "app".into(),
                mode: 0o640
            }
        );
        assert!(parse(&["chmod", "app", "1777"]).unwrap_err().use_stderr());
        assert!(parse(&["chmod", "app"]).unwrap_err().use_stderr());
        let owner = |s: &str| match parse(&["chown", "app", s]).map(|c| c.command) {
            Ok(Command::Chown { owner, .. }) => Ok((owner.uid, owner.gid)),
            Ok(other) => panic!("{other:?}"),
            Err(e) => Err(e.to_string()),
        };
        assert_eq!(owner("1000"), Ok((Some(1000), None)));
        assert_eq!(owner("1000:100"), Ok((Some(1000), Some(100))));
        assert_eq!(owner(":100"), Ok((None, Some(100))));
        assert_eq!(owner("root:root"), Ok((Some(0), Some(0))));
        assert!(owner("1000:").unwrap_err().contains("give the group"));
        assert!(owner(":").is_err());
        assert!(
            owner("no-such-user-dsu")
                .unwrap_err()
                .contains("no user named")
        );
        assert!(
            owner("0:no-such-group-dsu")
                .unwrap_err()
                .contains("no group named")
        );
    }

    #[test]
    fn names_are_checked_before_the_device() {
        let cli = parse(&["show", "bad/name", "--device", "/nonexistent/dsu"]).unwrap();
        match run(cli) {
            Err(Failure::Dsu(dsu::Error::InvalidName { .. })) => {}
            other => panic!("{other:?}"),
        }
        let cli = parse(&["list", "--device", "/nonexistent/dsu"]).unwrap();
        let e = run(cli).unwrap_err().to_string();
        assert!(e.starts_with("/nonexistent/dsu does not exist"), "{e}");
    }

    #[test]
    fn modes() {
        assert_eq!(parse_mode("0660"), Ok(0o660));
        assert_eq!(parse_mode("755"), Ok(0o755));
        assert_eq!(parse_mode("0o644"), Ok(0o644));
        assert!(parse_mode("01000").is_err());
    }

    #[test]
    fn cli_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
