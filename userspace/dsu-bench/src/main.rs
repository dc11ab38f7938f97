//! `dsu-bench`: the figures of BENCHMARKS.md, each taken in the same run as its comparison
//! (median of repeated trials).
//!
//! ```text
//! dsu-bench [--quick] [--json FILE] [--svg FILE] [--only LIST] [--label TEXT]
//! dsu-bench --plot JSON SVG        render the pause plot of an earlier run
//! dsu-bench heap [--quick] [--segment]  the shared heap against glibc malloc and std's HashMap
//! dsu-bench heap-pause [--trials T] [--serialise] N...  the update pause with N heap objects
//! dsu-bench snapshot [--quick] [--trials T] [--no-redis] [--no-throughput] [SIZE...]
//!                                   snapshot pause vs redis BGSAVE's fork, save/restore speed
//! ```
//!
//! `heap --segment` puts the heap in a fresh segment's heap window (the module's) instead of
//! a memfd. `heap-pause` runs itself as the old version (`heap-pause-old SEGMENT N`) and as
//! each new version (`heap-pause-new SEGMENT N`); see `heap_pause.rs`.
//!
//! `--only` takes a comma-separated subset of `access,pause,touch,versions,variables,resolve`.
//! Without `/dev/dsu` only the baselines of figure 2 and the static loop of figure 1 run.
//! The figures:
//! 1. access cost of a `dsu::global!` against an ordinary static;
//! 2. update pause against state size: dsu against copy and serialise-and-send;
//! 3. first touch per page of a bound page against anonymous memory;
//! 4. attach latency with 1, 8, 32, 64 versions bound;
//! 5. attach latency for 1, 100, 1000, 10 000 globals;
//! 6. RESOLVE cost per variable, added and common.

mod access;
mod baselines;
mod figures;
mod heap;
mod heap_pause;
mod raw;
mod report;
mod snapshot;
mod stats;
mod svg;

use std::process::ExitCode;

/// Command-line options.
pub struct Options {
    /// Tiny sizes (the VM suite).
    pub quick: bool,
    /// Where the raw figures go.
    pub json: String,
    /// Where the pause plot goes (none: not written).
    pub svg: Option<String>,
    /// Figures to run (empty: all).
    pub only: Vec<String>,
    /// Free text describing the machine/kernel, stored in the JSON.
    pub label: String,
}

impl Options {
    /// Whether figure `name` is selected.
    pub fn wants(&self, name: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|o| o == name)
    }
}

const FIGURES: [&str; 6] = [
    "access",
    "pause",
    "touch",
    "versions",
    "variables",
    "resolve",
];

fn parse(args: &[String]) -> Result<Options, String> {
    let mut o = Options {
        quick: false,
        json: "dsu-bench.json".into(),
        svg: None,
        only: Vec::new(),
        label: String::new(),
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = || it.next().cloned().ok_or(format!("{a} needs a value"));
        match a.as_str() {
            "--quick" => o.quick = true,
            "--json" => o.json = value()?,
            "--svg" => o.svg = Some(value()?),
            "--label" => o.label = value()?,
            "--only" => {
                o.only = value()?
                    .split(',')
                    .filter(|s| !s.is_empty())
                    .map(String::from)
                    .collect();
                if let Some(bad) = o.only.iter().find(|f| !FIGURES.contains(&f.as_str())) {
                    return Err(format!(
                        "--only: unknown figure {bad} (one of {})",
                        FIGURES.join(",")
                    ));
                }
            }
            _ => return Err(format!("unknown argument {a}")),
        }
    }
    Ok(o)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--plot") {
        let [_, json, out] = &args[..] else {
            eprintln!("usage: dsu-bench --plot JSON SVG");
            return ExitCode::from(2);
        };
        return match report::plot_file(json, out) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("dsu-bench: {e}");
                ExitCode::FAILURE
            }
        };
    }
    match args.first().map(String::as_str) {
        Some("heap") => {
            let (mut quick, mut segment) = (false, false);
            for a in &args[1..] {
                match a.as_str() {
                    "--quick" => quick = true,
                    "--segment" => segment = true,
                    _ => {
                        eprintln!("usage: dsu-bench heap [--quick] [--segment]");
                        return ExitCode::from(2);
                    }
                }
            }
            return done("heap", heap::run(quick, segment, &mut std::io::stdout()));
        }
        Some("heap-pause") => {
            let (mut trials, mut serialise, mut counts) = (5, false, Vec::new());
            let mut it = args[1..].iter();
            while let Some(a) = it.next() {
                match (a.as_str(), a.parse::<usize>()) {
                    ("--serialise", _) => serialise = true,
                    ("--trials", _) => match it.next().map(|t| t.parse()) {
                        Some(Ok(t)) if t > 0 => trials = t,
                        _ => counts.clear(),
                    },
                    (_, Ok(n)) if n > 0 => counts.push(n),
                    _ => {
                        counts.clear();
                        break;
                    }
                }
            }
            if counts.is_empty() {
                eprintln!("usage: dsu-bench heap-pause [--trials T] [--serialise] N...");
                return ExitCode::from(2);
            }
            return done(
                "heap-pause",
                heap_pause::run(&counts, trials, serialise, &mut std::io::stdout()),
            );
        }
        Some("snapshot") => {
            let usage = "usage: dsu-bench snapshot [--quick] [--trials T] [--no-redis] \
                         [--no-throughput] [SIZE...]   (SIZE: 4K, 64M, 256M, ...)";
            let mut o = snapshot::Options {
                sizes: Vec::new(),
                trials: 5,
                redis: true,
                throughput: true,
            };
            let mut quick = false;
            let mut it = args[1..].iter();
            while let Some(a) = it.next() {
                match a.as_str() {
                    "--quick" => quick = true,
                    "--no-redis" => o.redis = false,
                    "--no-throughput" => o.throughput = false,
                    "--trials" => match it.next().map(|t| t.parse()) {
                        Some(Ok(t)) if t > 0 => o.trials = t,
                        _ => {
                            eprintln!("{usage}");
                            return ExitCode::from(2);
                        }
                    },
                    s => match snapshot::parse_size(s) {
                        Some(n) => o.sizes.push(n),
                        None => {
                            eprintln!("{usage}");
                            return ExitCode::from(2);
                        }
                    },
                }
            }
            if o.sizes.is_empty() {
                o.sizes = if quick {
                    vec![4 << 10, 1 << 20]
                } else {
                    snapshot::DEFAULT_SIZES.to_vec()
                };
            }
            if quick {
                o.trials = o.trials.min(2);
            }
            return done("snapshot", snapshot::run(&o, &mut std::io::stdout()));
        }
        Some(role @ ("heap-pause-old" | "heap-pause-new")) => {
            let (Some(seg), Some(Ok(n))) = (args.get(1), args.get(2).map(|n| n.parse())) else {
                eprintln!("usage: dsu-bench {role} SEGMENT N");
                return ExitCode::from(2);
            };
            let r = if role == "heap-pause-old" {
                heap_pause::old(seg, n)
            } else {
                heap_pause::new(seg, n)
            };
            return done(role, r);
        }
        _ => {}
    }
    let opts = match parse(&args) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("dsu-bench: {e}");
            return ExitCode::from(2);
        }
    };
    match report::run(&opts) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("dsu-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

fn done(what: &str, r: std::io::Result<()>) -> ExitCode {
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("dsu-bench {what}: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn parses_options() {
        let o = parse(&args("--quick --json x.json --only pause,touch --label vm")).unwrap();
        assert!(o.quick && o.json == "x.json" && o.label == "vm");
        assert!(o.wants("pause") && !o.wants("access"));
        assert!(parse(&args("")).unwrap().wants("resolve"));
        assert!(parse(&args("--only nope")).is_err());
        assert!(parse(&args("--json")).is_err());
        assert!(parse(&args("--bogus")).is_err());
    }
}
