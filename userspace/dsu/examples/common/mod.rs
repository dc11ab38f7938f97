//! The command loop shared by the counter examples: every build exposes its globals by a
//! short name, and tests drive it from the command line or through stdin.
//!
//! ```text
//! counter_vN [--segment S] [--label L] [--prefault] [--must-exist] [--candidate]
//!            [--restore-from FILE] COMMAND
//! COMMAND: status | read | get VAR | write VAR VALUE | lock | hold-lock
//!        | wait-newer MS | newer | ready | restored | gc [dry] [AGE]
//!        | serve (commands on stdin, one per line, answered by "ok ..." lines)
//! ```
//!
//! The version is ready at attach (`Attach::ready_on_attach(true)`) unless `--candidate`
//! is given; then it is a candidate until the `ready` command. `--restore-from FILE`
//! restores the segment from that snapshot if it is missing (`Attach::restore_from`);
//! `restored` says whether this attach did.

use dsu::sync::Mutex;
use std::io::{BufRead, Write};
use std::time::Duration;

/// One global as the command loop sees it.
pub struct Var {
    pub name: &'static str,
    pub get: fn() -> String,
    pub set: fn(u64),
}

pub struct Program {
    pub default_label: &'static str,
    pub vars: Vec<Var>,
    /// A mutex-protected counter, common to every build.
    pub lock: &'static Mutex<u64>,
}

fn usage() -> ! {
    eprintln!(
        "usage: counter_vN [--segment S] [--label L] [--prefault] [--must-exist] [--candidate] \
         [--restore-from FILE] (status | read | get VAR | write VAR VALUE | lock | hold-lock | wait-newer MS | newer \
         | ready | restored | gc [dry] [AGE] | serve)"
    );
    std::process::exit(2)
}

pub fn main(p: Program) {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let mut segment = "counter".to_string();
    let mut label = p.default_label.to_string();
    let mut must_exist = false;
    let mut prefault = false;
    let mut candidate = false;
    let mut restore_from = None;
    while let Some(a) = args.first().cloned() {
        match a.as_str() {
            "--segment" if args.len() > 1 => {
                segment = args[1].clone();
                args.drain(..2);
            }
            "--label" if args.len() > 1 => {
                label = args[1].clone();
                args.drain(..2);
            }
            "--prefault" => {
                prefault = true;
                args.remove(0);
            }
            "--must-exist" => {
                must_exist = true;
                args.remove(0);
            }
            "--candidate" => {
                candidate = true;
                args.remove(0);
            }
            "--restore-from" if args.len() > 1 => {
                restore_from = Some(args[1].clone());
                args.drain(..2);
            }
            _ => break,
        }
    }
    if args.is_empty() {
        usage();
    }
    let mut attach = dsu::Attach::new(segment, label)
        .prefault(prefault)
        .ready_on_attach(!candidate);
    if must_exist {
        attach = attach.must_exist();
    }
    if let Some(path) = restore_from {
        attach = attach.restore_from(path);
    }
    let version = match attach.attach() {
        Ok(v) => v,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    };
    if args[0] == "serve" {
        println!("ready {}", version.id().unwrap_or(0));
        let _ = std::io::stdout().flush();
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            let words: Vec<String> = line.split_whitespace().map(String::from).collect();
            if words.is_empty() {
                continue;
            }
            if words[0] == "exit" {
                println!("ok bye");
                let _ = std::io::stdout().flush();
                return;
            }
            match command(&p, &version, &words) {
                Ok(out) => println!("ok {out}"),
                Err(e) => println!("err {e}"),
            }
            let _ = std::io::stdout().flush();
        }
        return;
    }
    match command(&p, &version, &args) {
        Ok(out) => println!("{out}"),
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(if e.starts_with("usage") { 2 } else { 1 });
        }
    }
}

fn find<'a>(p: &'a Program, name: &str) -> Result<&'a Var, String> {
    p.vars
        .iter()
        .find(|v| v.name == name)
        .ok_or_else(|| format!("no variable {name} in this build"))
}

fn command(p: &Program, version: &dsu::Version, args: &[String]) -> Result<String, String> {
    let arg = |i: usize| {
        args.get(i)
            .map(String::as_str)
            .ok_or_else(|| "usage: missing argument".to_string())
    };
    match args[0].as_str() {
        "status" => Ok(version
            .variables()
            .iter()
            .map(|v| format!("{}={}", v.name, format!("{:?}", v.status).to_lowercase()))
            .collect::<Vec<_>>()
            .join(" ")),
        "read" => Ok(p
            .vars
            .iter()
            .map(|v| format!("{}={}", v.name, (v.get)()))
            .collect::<Vec<_>>()
            .join(" ")),
        "get" => Ok((find(p, arg(1)?)?.get)()),
        "write" => {
            let v = find(p, arg(1)?)?;
            let value: u64 = arg(2)?
                .parse()
                .map_err(|_| "usage: VALUE must be a number".to_string())?;
            (v.set)(value);
            Ok(format!("{}={}", v.name, (v.get)()))
        }
        "lock" => {
            let (mut g, died) = match p.lock.lock() {
                Ok(g) => (g, String::new()),
                Err(e) => {
                    let d = format!(" owner-died={}", e.dead_owner());
                    (e.into_inner(), d)
                }
            };
            *g += 1;
            Ok(format!("lock={}{died}", *g))
        }
        "hold-lock" => {
            let g = p.lock.lock().unwrap_or_else(|e| e.into_inner());
            println!("locked {}", *g);
            let _ = std::io::stdout().flush();
            loop {
                std::thread::sleep(Duration::from_secs(3600));
            }
        }
        "wait-newer" => {
            let ms: u64 = arg(1)?
                .parse()
                .map_err(|_| "usage: MS must be a number".to_string())?;
            match version
                .wait_for_newer(Some(Duration::from_millis(ms)))
                .map_err(|e| e.to_string())?
            {
                Some(e) => Ok(format!("newer {} {}", e.label, e.pid)),
                None => Ok("timeout".into()),
            }
        }
        "ready" => {
            version.ready().map_err(|e| e.to_string())?;
            Ok("ready".into())
        }
        "restored" => Ok(format!("restored={}", version.restored_segment())),
        "gc" => {
            let dry_run = args.get(1).is_some_and(|w| w == "dry");
            let age = args.get(if dry_run { 2 } else { 1 });
            let min_age = match age {
                Some(a) => Some(a.parse().map_err(|_| "usage: gc [dry] [AGE]".to_string())?),
                None => None,
            };
            let r = version
                .collect_garbage(dsu::sys::GcOptions { dry_run, min_age })
                .map_err(|e| e.to_string())?;
            let names: Vec<&str> = r.variables.iter().map(|v| v.name.as_str()).collect();
            Ok(format!("gc {} {} {}", r.total, r.pages, names.join(",")))
        }
        "newer" => match version.newer_version().map_err(|e| e.to_string())? {
            Some(e) => Ok(format!("newer {} {}", e.label, e.pid)),
            None => Ok("none".into()),
        },
        other => Err(format!("usage: unknown command {other}")),
    }
}

/// A `Var` for an atomic global.
#[macro_export]
macro_rules! atomic_var {
    ($name:literal, $global:expr, $t:ty) => {
        common::Var {
            name: $name,
            get: || {
                $global
                    .load(std::sync::atomic::Ordering::SeqCst)
                    .to_string()
            },
            set: |v| $global.store(v as $t, std::sync::atomic::Ordering::SeqCst),
        }
    };
}
