//! Runs the selected figures, prints the tables, checks the goals and writes the JSON
//! (and optionally the SVG plot).

use crate::figures::{self, PauseRow, Phases, Plan, ResolveRow, Touch, VariablesRow, VersionsRow};
use crate::stats::{clock_resolution, fmt_ns, fmt_size};
use crate::{Options, access, raw, svg};
use serde::Serialize;
use std::io::{self, Write};

/// Where and how the figures were taken.
#[derive(Serialize, Debug, Default)]
pub struct Meta {
    /// `--label` (the scripts name the kernel config and the accelerator here).
    pub label: String,
    /// `--quick`.
    pub quick: bool,
    /// /proc/version.
    pub kernel: String,
    /// /proc/cpuinfo "model name".
    pub cpu: String,
    /// Online CPUs.
    pub cpus: usize,
    /// The clocksource in use.
    pub clocksource: String,
    /// Smallest clock step seen, ns.
    pub clock_step_ns: f64,
    /// Cost of one clock reading, ns.
    pub clock_read_ns: f64,
    /// The module's parameters (name=value), if loaded.
    pub module_params: Vec<String>,
    /// Whether /dev/dsu was there (else only baselines ran).
    pub dsu: bool,
    /// Unix time of the run.
    pub unix_time: u64,
    /// The plan.
    pub plan: Option<Plan>,
}

/// The goals of the issue and whether this run met them.
#[derive(Serialize, Debug, Default)]
pub struct Goals {
    /// Figure 1: shared/static fetch_add ratio (goal 1.00; met within ±5 %).
    pub access_ratio: Option<f64>,
    /// Whether |ratio - 1| <= 0.05 for both loops.
    pub access_met: Option<bool>,
    /// Figure 2: dsu pause at the largest size / at the smallest (goal <= 2).
    pub pause_flatness: Option<f64>,
    /// Whether flatness <= 2.
    pub pause_flat_met: Option<bool>,
    /// Figure 2: copy / dsu at the largest size (goal > 50).
    pub copy_over_dsu_largest: Option<f64>,
    /// Whether copy/dsu > 50 at 256 MiB (only judged when the largest size is 256 MiB).
    pub copy_speedup_met: Option<bool>,
    /// Figure 2: serialise / dsu at the largest size.
    pub serialise_over_dsu_largest: Option<f64>,
}

/// Everything one run measured.
#[derive(Serialize, Debug, Default)]
pub struct Report {
    /// Machine and run.
    pub meta: Meta,
    /// Figure 1.
    pub access: Option<access::Access>,
    /// Figure 2 (and fault-on-demand against DSU_BIND_PREFAULT).
    pub pause: Vec<PauseRow>,
    /// Figure 3.
    pub first_touch: Option<Touch>,
    /// Figure 4.
    pub versions: Vec<VersionsRow>,
    /// Figure 5.
    pub variables: Vec<VariablesRow>,
    /// Figure 6.
    pub resolve: Vec<ResolveRow>,
    /// The goals.
    pub goals: Goals,
}

fn read(path: &str) -> String {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .trim()
        .to_string()
}

fn meta(opts: &Options, plan: &Plan) -> Meta {
    let (clock_step_ns, clock_read_ns) = clock_resolution();
    let cpu = read("/proc/cpuinfo")
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_string())
        .unwrap_or_default();
    let mut module_params: Vec<String> = std::fs::read_dir("/sys/module/dsu/parameters")
        .map(|d| {
            d.flatten()
                .map(|e| {
                    format!(
                        "{}={}",
                        e.file_name().to_string_lossy(),
                        read(&e.path().to_string_lossy())
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    module_params.sort();
    Meta {
        label: opts.label.clone(),
        quick: opts.quick,
        kernel: read("/proc/version"),
        cpu,
        cpus: std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        clocksource: read("/sys/devices/system/clocksource/clocksource0/current_clocksource"),
        clock_step_ns,
        clock_read_ns,
        module_params,
        dsu: raw::available(),
        unix_time: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
        plan: Some(plan.clone()),
    }
}

fn progress(msg: &str) {
    eprintln!("dsu-bench: {msg}");
}

/// Runs the figures `opts` selects and writes the results.
pub fn run(opts: &Options) -> io::Result<()> {
    let plan = if opts.quick {
        Plan::quick()
    } else {
        Plan::full()
    };
    let dsu = raw::available();
    if !dsu {
        progress("no /dev/dsu: only the baselines run");
    }
    let mut r = Report {
        meta: meta(opts, &plan),
        ..Default::default()
    };
    if opts.wants("access") {
        progress("access");
        let (iterations, trials) = if opts.quick {
            (100_000, 3)
        } else {
            (10_000_000, plan.trials)
        };
        r.access = Some(access::run(dsu, iterations, trials)?);
    }
    if opts.wants("pause") {
        r.pause = figures::pause(&plan, dsu, &progress)?;
    }
    if dsu {
        if opts.wants("touch") {
            progress("first touch");
            r.first_touch = Some(figures::first_touch(&plan)?);
        }
        if opts.wants("versions") {
            progress("versions");
            r.versions = figures::versions(&plan)?;
        }
        if opts.wants("variables") {
            progress("variables");
            r.variables = figures::variables(&plan)?;
        }
        if opts.wants("resolve") {
            progress("resolve");
            r.resolve = figures::resolve(&plan)?;
        }
    }
    r.goals = goals(&r);
    let mut out = io::stdout().lock();
    print_tables(&r, &mut out)?;
    std::fs::write(
        &opts.json,
        serde_json::to_string_pretty(&r).map_err(io::Error::other)? + "\n",
    )?;
    writeln!(out, "raw figures: {}", opts.json)?;
    if let Some(path) = &opts.svg {
        plot_file(&opts.json, path)?;
        writeln!(out, "plot: {path}")?;
    }
    Ok(())
}

fn goals(r: &Report) -> Goals {
    let mut g = Goals::default();
    if let Some(a) = r.access.as_ref().filter(|a| a.ratio_fetch_add > 0.0) {
        g.access_ratio = Some(a.ratio_fetch_add);
        g.access_met = Some(
            (a.ratio_fetch_add - 1.0).abs() <= 0.05 && (a.ratio_load_store - 1.0).abs() <= 0.05,
        );
    }
    if let (Some(first), Some(last)) = (r.pause.first(), r.pause.last())
        && last.dsu.total.median_ns > 0.0
    {
        let flat = last.dsu.total.median_ns / first.dsu.total.median_ns;
        g.pause_flatness = Some(flat);
        g.pause_flat_met = Some(flat <= 2.0);
        let copy = last.copy.median_ns / last.dsu.total.median_ns;
        g.copy_over_dsu_largest = Some(copy);
        g.serialise_over_dsu_largest = Some(last.serialise.median_ns / last.dsu.total.median_ns);
        if last.bytes == 256 << 20 {
            g.copy_speedup_met = Some(copy > 50.0);
        }
    }
    g
}

fn ratio(a: f64, b: f64) -> String {
    if a > 0.0 && b > 0.0 {
        format!("{:.1}×", a / b)
    } else {
        "-".into()
    }
}

fn t(ns: f64) -> String {
    if ns > 0.0 { fmt_ns(ns) } else { "-".into() }
}

fn phases_line(p: &Phases) -> String {
    format!(
        "open {} · attach {} · resolve {} · bind {} · mmap {} · serve {}",
        t(p.open.median_ns),
        t(p.attach.median_ns),
        t(p.resolve.median_ns),
        t(p.bind.median_ns),
        t(p.mmap.median_ns),
        t(p.serve.median_ns)
    )
}

/// Prints every table of the report.
pub fn print_tables(r: &Report, out: &mut dyn Write) -> io::Result<()> {
    let m = &r.meta;
    writeln!(
        out,
        "dsu-bench{}{}",
        if m.quick { " --quick" } else { "" },
        if m.label.is_empty() {
            String::new()
        } else {
            format!(" — {}", m.label)
        }
    )?;
    writeln!(out, "kernel: {}", m.kernel)?;
    writeln!(
        out,
        "cpu: {} × {}; clock {} (step {}, read {})",
        m.cpus,
        m.cpu,
        m.clocksource,
        fmt_ns(m.clock_step_ns),
        fmt_ns(m.clock_read_ns)
    )?;
    if m.clock_step_ns > 1000.0 {
        writeln!(
            out,
            "WARNING: the clock steps by {}: figures below a few of its steps are noise \
             (a kernel without a usable TSC or HPET; see scripts/kernel-bench.config)",
            fmt_ns(m.clock_step_ns)
        )?;
    }
    if !m.module_params.is_empty() {
        writeln!(out, "module: {}", m.module_params.join(" "))?;
    }
    if let Some(a) = &r.access {
        writeln!(
            out,
            "\n1. Access cost, ns per operation (median of {}, {} operations each)",
            a.static_fetch_add.ns.len(),
            a.iterations
        )?;
        writeln!(
            out,
            "   {:<22}{:>12}{:>14}{:>9}",
            "loop", "static", "dsu global", "ratio"
        )?;
        for (name, s, d, q) in [
            (
                "atomic fetch_add",
                &a.static_fetch_add,
                &a.shared_fetch_add,
                a.ratio_fetch_add,
            ),
            (
                "load + store",
                &a.static_load_store,
                &a.shared_load_store,
                a.ratio_load_store,
            ),
        ] {
            let q = if q > 0.0 {
                format!("{q:.3}")
            } else {
                "-".into()
            };
            writeln!(
                out,
                "   {:<22}{:>12.3}{:>14.3}{:>9}",
                name, s.median_ns, d.median_ns, q
            )?;
        }
        writeln!(
            out,
            "   control, ordinary static alone in its page: fetch_add {:.3}, load + store {:.3}",
            a.aligned_fetch_add.median_ns, a.aligned_load_store.median_ns
        )?;
        writeln!(out, "   shared global: {}", a.shared)?;
    }
    if !r.pause.is_empty() {
        writeln!(
            out,
            "\n2. Update pause against state size (median; new version attached until it serves)"
        )?;
        writeln!(
            out,
            "   {:<9}{:>11}{:>13}{:>14}{:>11}{:>12}{:>10}{:>11}",
            "state",
            "dsu",
            "dsu prefault",
            "dsu+touch all",
            "copy",
            "serialise",
            "copy/dsu",
            "serial/dsu"
        )?;
        for p in &r.pause {
            let d = p.dsu.total.median_ns;
            writeln!(
                out,
                "   {:<9}{:>11}{:>13}{:>14}{:>11}{:>12}{:>10}{:>11}",
                fmt_size(p.bytes),
                t(d),
                t(p.dsu_prefault.total.median_ns),
                t(p.dsu_touch_all.total.median_ns),
                t(p.copy.median_ns),
                t(p.serialise.median_ns),
                ratio(p.copy.median_ns, d),
                ratio(p.serialise.median_ns, d)
            )?;
        }
        for p in r.pause.iter().filter(|p| p.dsu.total.median_ns > 0.0) {
            writeln!(
                out,
                "   {:<9}dsu: {}",
                fmt_size(p.bytes),
                phases_line(&p.dsu)
            )?;
            writeln!(
                out,
                "   {:<9}prefault: {}",
                "",
                phases_line(&p.dsu_prefault)
            )?;
            writeln!(
                out,
                "   {:<9}per-page map: {}",
                "",
                phases_line(&p.dsu_per_page)
            )?;
        }
    }
    if let Some(tch) = &r.first_touch {
        writeln!(
            out,
            "\n3. First touch, ns per page ({} pages, median)",
            tch.pages
        )?;
        writeln!(
            out,
            "   bound page, read (fault on demand)   {:>10.0}",
            tch.dsu_read.median_ns
        )?;
        writeln!(
            out,
            "   bound page, write (fault on demand)  {:>10.0}",
            tch.dsu_write.median_ns
        )?;
        writeln!(
            out,
            "   bound page, write (prefaulted)       {:>10.0}",
            tch.dsu_prefault_write.median_ns
        )?;
        writeln!(
            out,
            "   anonymous page, write                {:>10.0}",
            tch.anon_write.median_ns
        )?;
        writeln!(
            out,
            "   anonymous page, read (zero page)     {:>10.0}",
            tch.anon_read.median_ns
        )?;
        writeln!(
            out,
            "   bound write / anonymous write        {:>10}",
            ratio(tch.dsu_write.median_ns, tch.anon_write.median_ns)
        )?;
    }
    if !r.versions.is_empty() {
        writeln!(
            out,
            "\n4. Attach latency against versions already bound (median)"
        )?;
        for v in &r.versions {
            writeln!(
                out,
                "   {:>3} bound: {:>10}   {}",
                v.bound,
                t(v.attach.total.median_ns),
                phases_line(&v.attach)
            )?;
        }
    }
    if !r.variables.is_empty() {
        writeln!(
            out,
            "\n5. Attach latency against number of globals (median)"
        )?;
        for v in &r.variables {
            writeln!(
                out,
                "   {:>6} globals: {:>10}   {}",
                v.variables,
                t(v.attach.total.median_ns),
                phases_line(&v.attach)
            )?;
        }
    }
    if !r.resolve.is_empty() {
        writeln!(out, "\n6. RESOLVE cost per variable (median)")?;
        for v in &r.resolve {
            writeln!(
                out,
                "   batch {:>5}: added {:>10}   common {:>10}",
                v.batch,
                t(v.added_per_var.median_ns),
                t(v.common_per_var.median_ns)
            )?;
        }
    }
    let g = &r.goals;
    writeln!(out, "\nGoals")?;
    let verdict = |m: Option<bool>| match m {
        Some(true) => "met",
        Some(false) => "MISSED",
        None => "not measured",
    };
    if let Some(x) = g.access_ratio {
        writeln!(
            out,
            "   access ratio {x:.3} (goal 1.00 ± 0.05): {}",
            verdict(g.access_met)
        )?;
    }
    if let Some(x) = g.pause_flatness {
        writeln!(
            out,
            "   dsu pause largest/smallest state {x:.2} (goal ≤ 2): {}",
            verdict(g.pause_flat_met)
        )?;
    }
    if let Some(x) = g.copy_over_dsu_largest {
        writeln!(
            out,
            "   copy/dsu at the largest state {x:.1}× (goal > 50× at 256 MiB): {}",
            verdict(g.copy_speedup_met)
        )?;
    }
    if let Some(x) = g.serialise_over_dsu_largest {
        writeln!(out, "   serialise/dsu at the largest state {x:.1}×")?;
    }
    Ok(())
}

const COLORS: [&str; 5] = ["#1f77b4", "#17becf", "#9467bd", "#d62728", "#ff7f0e"];

/// `--plot JSON SVG`: renders the pause plot of an earlier run's JSON.
pub fn plot_file(json: &str, out: &str) -> io::Result<()> {
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(json)?).map_err(io::Error::other)?;
    let med = |row: &serde_json::Value, path: &[&str]| -> f64 {
        let mut x = row;
        for p in path {
            x = &x[*p];
        }
        x["median_ns"].as_f64().unwrap_or(0.0)
    };
    let rows = v["pause"].as_array().cloned().unwrap_or_default();
    let pick = |path: &[&str]| {
        rows.iter()
            .map(|r| (r["bytes"].as_f64().unwrap_or(0.0), med(r, path)))
            .collect::<Vec<_>>()
    };
    let series = vec![
        svg::Series {
            label: "dsu (fault on demand)".into(),
            color: COLORS[0],
            points: pick(&["dsu", "total"]),
        },
        svg::Series {
            label: "dsu prefault".into(),
            color: COLORS[1],
            points: pick(&["dsu_prefault", "total"]),
        },
        svg::Series {
            label: "dsu + touch every page".into(),
            color: COLORS[2],
            points: pick(&["dsu_touch_all", "total"]),
        },
        svg::Series {
            label: "copy (Kitsune/Ekiden)".into(),
            color: COLORS[3],
            points: pick(&["copy"]),
        },
        svg::Series {
            label: "serialise (Envoy)".into(),
            color: COLORS[4],
            points: pick(&["serialise"]),
        },
    ];
    let label = v["meta"]["label"].as_str().unwrap_or("");
    let title = if label.is_empty() {
        "Update pause against state size".to_string()
    } else {
        format!("Update pause against state size ({label})")
    };
    std::fs::write(out, svg::pause_plot(&title, &series))
}
