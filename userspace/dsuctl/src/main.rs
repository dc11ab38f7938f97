//! `dsuctl`: inspect and manage the segments of the dsu kernel module.
//!
//! ```text
//! dsuctl list                      segments with owner, mode, pages, variables, versions
//! dsuctl show SEG [-v]             a segment's variables (with types; -v: fields) and versions
//! dsuctl create SEG [--mode 0660]  create an empty segment
//! dsuctl destroy SEG               remove a segment's name
//! dsuctl dump SEG VAR              hex and ASCII of a variable (read-only)
//! dsuctl watch SEG                 print version arrivals and ends until Ctrl-C
//! ```
//!
//! `--json` prints JSON on stdout for the read commands. Exit status: 0 on success, 1 on
//! an error (the message is on stderr), 2 on a usage error.

mod format;

use clap::{Parser, Subcommand};
use dsu::sys::{Create, Device};
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
  dsuctl dump app 'app::COUNTER'
  dsuctl watch app

Exit status: 0 success, 1 error, 2 usage error.";

/// Inspect and manage dsu segments (shared globals for live update).
#[derive(Parser, Debug, PartialEq)]
#[command(name = "dsuctl", version, about, after_help = AFTER_HELP)]
pub struct Cli {
    /// Print JSON on stdout instead of text (list, show, dump, watch).
    #[arg(long, global = true)]
    json: bool,

    /// The dsu device node.
    #[arg(long, global = true, default_value = dsu::sys::DEVICE_PATH, hide = true)]
    device: String,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug, PartialEq)]
enum Command {
    /// List the segments: owner (uid:gid), mode, pages, variables, live versions, handles.
    List,
    /// Show a segment's variables (name, size, pages, fingerprint, creator, creation time)
    /// and live versions (id, label, pid, age, pages mapped).
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
    /// Remove a segment's name (owner or root only). Running versions keep their pages;
    /// the memory is freed when the last one is gone.
    Destroy {
        /// Segment name.
        segment: String,
    },
    /// Print a variable's bytes in hex and ASCII (read-only; needs read permission).
    Dump {
        /// Segment name.
        segment: String,
        /// Variable name, e.g. 'app::COUNTER' (see `dsuctl show SEG`).
        variable: String,
        /// Read the entry with this fingerprint (hex) instead of the newest of that name.
        #[arg(long, value_parser = parse_hex)]
        fingerprint: Option<u64>,
    },
    /// Print each version that binds to or leaves the segment, until Ctrl-C.
    Watch {
        /// Segment name.
        segment: String,
    },
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

fn run(cli: Cli) -> Result<(), dsu::Error> {
    let mut dev = Device::open_path(&cli.device)?;
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
            if cli.json {
                json(&format::show_json(&seg, &vars, &types, &versions, now_ns()))
            } else {
                format::show_text(&seg, &vars, &types, &versions, now_ns(), *verbose)
            }
        }
        Command::Create { segment, mode } => {
            dev.attach(segment, Create::MustCreate, *mode)?;
            format!("created segment {segment} (mode {mode:04o})\n")
        }
        Command::Destroy { segment } => {
            dev.destroy(segment)?;
            format!("destroyed segment {segment}\n")
        }
        Command::Dump {
            segment,
            variable,
            fingerprint,
        } => {
            let (bytes, fp) = dev.read_var_all(segment, variable, *fingerprint)?;
            if cli.json {
                json(&format::DumpJson {
                    segment: segment.clone(),
                    name: variable.clone(),
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
                        return Ok(()); // stdout closed
                    }
                }
            }
        }
    };
    let _ = out.write_all(text.as_bytes());
    Ok(())
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
        Ok(()) => ExitCode::SUCCESS,
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
                variable: "app::X".into(),
                fingerprint: Some(255)
            }
        );
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
